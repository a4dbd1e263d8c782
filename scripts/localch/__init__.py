"""The launcher behind scripts/local-clickhouse (see cli.py for the entry point)."""
