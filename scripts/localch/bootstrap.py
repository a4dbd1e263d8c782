"""Create and keep up to date the launcher's private virtualenv.

Runs under the machine's plain ``python3`` (standard library only): it is what
makes the third-party packages importable in the first place.

Several processes may bootstrap at once (every Rust integration-test binary
starts its own launcher), so installation is serialised with an exclusive
``flock`` and the venv is only declared ready, by writing a stamp file, once
``pip`` has finished. The fast path (stamp present and matching) takes no lock
and costs one small file read.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent.parent
REQUIREMENTS = SCRIPTS_DIR / "requirements-clickhouse.txt"
STAMP_NAME = ".local-clickhouse-ready"


def venv_dir() -> Path:
    override = os.environ.get("LOCAL_CLICKHOUSE_VENV")
    return Path(override).resolve() if override else SCRIPTS_DIR / ".venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _wanted_stamp() -> str:
    """Identifies what the venv must contain: the pins and the interpreter."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(sys.version.encode())
    digest.update(os.path.realpath(sys.executable).encode())
    return digest.hexdigest()


def _is_ready(venv: Path, wanted: str) -> bool:
    try:
        return (venv / STAMP_NAME).read_text().strip() == wanted and venv_python(venv).exists()
    except OSError:
        return False


def _log(message: str) -> None:
    # stdout is reserved for the URL line that `run` prints; progress goes to stderr.
    print(f"local-clickhouse: {message}", file=sys.stderr, flush=True)


def ensure_venv() -> Path:
    """Return the venv's python, installing the pinned packages if needed."""
    venv = venv_dir()
    wanted = _wanted_stamp()
    if _is_ready(venv, wanted):
        return venv_python(venv)

    # The lock lives inside the (git-ignored) venv directory; `python -m venv`
    # is happy to populate an existing directory.
    venv.mkdir(parents=True, exist_ok=True)
    lock_path = venv / ".install.lock"
    with open(lock_path, "a+") as lock:
        started = time.monotonic()
        fcntl.flock(lock, fcntl.LOCK_EX)
        waited = time.monotonic() - started
        # Another process may have finished the install while we waited.
        if _is_ready(venv, wanted):
            if waited > 1:
                _log(f"waited {waited:.0f}s for another process to install the venv")
            return venv_python(venv)

        _log(f"installing the ClickHouse engine (chdb-core) into {venv}; first run only, ~1 min")
        (venv / STAMP_NAME).unlink(missing_ok=True)
        if not venv_python(venv).exists():
            _run([sys.executable, "-m", "venv", str(venv)])
        pip = [str(venv_python(venv)), "-m", "pip", "--disable-pip-version-check", "--no-input"]
        _run([*pip, "install", "--quiet", "--no-deps", "-r", str(REQUIREMENTS)])
        # Prove the engine loads before declaring the venv ready.
        _run([str(venv_python(venv)), "-c", "import chdb._chdb, lz4.block, zstandard, clickhouse_cityhash.cityhash"])
        (venv / STAMP_NAME).write_text(wanted + "\n")
        _log(f"venv ready after {time.monotonic() - started:.0f}s")
        return venv_python(venv)


def _run(argv: list[str]) -> None:
    # pip's output goes to our stderr, so a failed install is visible in the log.
    result = subprocess.run(argv, stdout=sys.stderr, stderr=sys.stderr, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise SystemExit(
            f"local-clickhouse: command failed with exit code {result.returncode}: {' '.join(argv)}\n"
            "Check network access to PyPI, or set LOCAL_CLICKHOUSE_VENV to a prepared virtualenv."
        )


def in_venv(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()
