"""Output formats: which results can stream block by block, and how.

chDB's streaming query API (``send_query`` / ``streaming_fetch_result``) runs
the whole query pipeline once but formats every fetched block with a *fresh*
output-format instance. Each chunk is therefore a complete little document:
``prefix + rows [+ totals/extremes] + suffix``. A ClickHouse server formats the
whole result with one instance, writing the prefix once, the rows of all
blocks, then totals, extremes and the suffix once. What a chunk looks like,
measured on chDB 26.9:

* a chunk with rows: ``prefix + rows`` (header formats repeat their header);
* the last chunk always has ``rows_read() == 0`` (the engine ends the stream
  on it, whatever comes after is gone). It is empty for a plain result; with
  ``WITH TOTALS`` / ``extremes=1`` it carries the totals and extremes, and a
  header format then *appends* its header (the fresh instance writes its
  pending prefix when it is finalized): ``"\\n0\\t3000\\n" + "k\\tc\\n"``;
* an empty result is a single 0-row chunk holding exactly what a server sends
  for it (the header, or the totals and the header), which is why the last
  chunk must be kept rather than dropped.

So the formats fall in four groups:

* row formats with no prefix and no suffix (RowBinary, Native, TSV, CSV,
  JSONEachRow, ...): chunks concatenate into exactly the server's output;
* row formats with a header (``...WithNames[AndTypes]``): the header is kept
  from the first chunk and removed from every later one;
* ``Values``: rows are separated by ``,``, which a fresh instance does not
  write before its first row, so later blocks get it back;
* everything else (``JSON``, ``JSONCompact``, ``XML``, ``Pretty*``,
  ``Vertical`` (numbers rows across blocks), ``Markdown``, ``Parquet``,
  ``Arrow``, ``ORC``, ``Avro``, ``CustomSeparated``, ``Template``,
  ``SQLInsert``, formats this module does not know, ...): whole documents
  whose framing or per-block state cannot be stitched. They are not streamed:
  the engine's ordinary query builds the whole document, exactly as a server
  would, at the cost of holding it in memory. Unknown formats land here on
  purpose: buffered but correct beats streamed and corrupt.
"""

from __future__ import annotations

from typing import Callable

# A header parser returns the header's length in bytes at the start of a
# chunk. Raises ValueError when the chunk does not hold a whole header.
HeaderParser = Callable[[bytes], int]


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated LEB128")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("LEB128 too long")


def _rowbinary_header(with_types: bool) -> HeaderParser:
    """Column count, then the names, then (with types) the type names, each
    a LEB128 length followed by bytes."""

    def parse(data: bytes) -> int:
        count, pos = _leb128(data, 0)
        for _ in range(count * (2 if with_types else 1)):
            length, pos = _leb128(data, pos)
            pos += length
            if pos > len(data):
                raise ValueError("truncated RowBinary header")
        return pos

    return parse


def _line_header(lines: int) -> HeaderParser:
    """TSV and JSONCompact header lines: names and types are escaped, so a
    raw newline only ever ends a line."""

    def parse(data: bytes) -> int:
        pos = 0
        for _ in range(lines):
            end = data.find(b"\n", pos)
            if end < 0:
                raise ValueError("truncated header line")
            pos = end + 1
        return pos

    return parse


def _csv_header(lines: int) -> HeaderParser:
    """CSV header lines: names and types are always double-quoted (quotes
    doubled inside) and may contain raw newlines, so only a newline outside
    quotes ends a line. A doubled quote toggles twice, which is harmless."""

    def parse(data: bytes) -> int:
        pos = 0
        quoted = False
        for _ in range(lines):
            while True:
                if pos >= len(data):
                    raise ValueError("truncated CSV header line")
                c = data[pos]
                pos += 1
                if c == 0x22:  # "
                    quoted = not quoted
                elif c == 0x0A and not quoted:  # \n
                    break
        return pos

    return parse


_CONCAT = {
    "tabseparated",
    "tsv",
    "tabseparatedraw",
    "tsvraw",
    "raw",
    "csv",
    "jsoneachrow",
    "jsonlines",
    "ndjson",
    "jsonstringseachrow",
    "jsoncompacteachrow",
    "jsoncompactstringseachrow",
    "rowbinary",
    "native",
    "tskv",
    "msgpack",
    "bsoneachrow",
    "rawblob",
    "lineasstring",
    "null",
}

# TSVRaw...WithNames is not here: its header names are not escaped, so a name
# with a newline in it makes the header's end ambiguous. Rare, and correct
# (buffered) as a whole document.
_HEADERS: dict[str, HeaderParser] = {
    "rowbinarywithnames": _rowbinary_header(with_types=False),
    "rowbinarywithnamesandtypes": _rowbinary_header(with_types=True),
    "tabseparatedwithnames": _line_header(1),
    "tsvwithnames": _line_header(1),
    "tabseparatedwithnamesandtypes": _line_header(2),
    "tsvwithnamesandtypes": _line_header(2),
    "jsoncompacteachrowwithnames": _line_header(1),
    "jsoncompacteachrowwithnamesandtypes": _line_header(2),
    "jsoncompactstringseachrowwithnames": _line_header(1),
    "jsoncompactstringseachrowwithnamesandtypes": _line_header(2),
    "csvwithnames": _csv_header(1),
    "csvwithnamesandtypes": _csv_header(2),
}

# Settings that turn a streamable format into a whole document.
# output_format_json_array_of_rows wraps JSONEachRow in "[ ... ]".
FRAMING_SETTINGS: dict[str, tuple[str, ...]] = {
    name: ("output_format_json_array_of_rows",)
    for name in ("jsoneachrow", "jsonlines", "ndjson", "jsonstringseachrow")
}


class Stitcher:
    """Joins the engine's per-block chunks into one server-identical stream."""

    def feed(self, data: bytes, rows: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError


class _Concat(Stitcher):
    def feed(self, data: bytes, rows: int) -> bytes:
        return data


class _Values(Stitcher):
    def __init__(self) -> None:
        self._rows_sent = False

    def feed(self, data: bytes, rows: int) -> bytes:
        if rows == 0 or not data:
            return data
        if self._rows_sent:
            data = b"," + data
        self._rows_sent = True
        return data


class _Header(Stitcher):
    def __init__(self, parse: HeaderParser) -> None:
        self._parse = parse
        self._header: bytes | None = None

    def feed(self, data: bytes, rows: int) -> bytes:
        if self._header is None:
            # First chunk: sent as is. A 0-row first chunk is the whole
            # (empty) result, header included.
            if rows > 0:
                self._header = data[: self._parse(data)]
            else:
                self._header = b""
            return data
        header = self._header
        if not header:
            return data
        if rows > 0:
            if not data.startswith(header):
                raise RuntimeError("local-clickhouse: a result block does not start with the result's header")
            return data[len(header) :]
        # Last chunk: totals/extremes followed by the header, or the header
        # alone.
        if data.endswith(header):
            return data[: -len(header)]
        if data.startswith(header):
            return data[len(header) :]
        return data


def stitcher_for(fmt: str) -> Stitcher | None:
    """How to stream results in ``fmt``; None: run it as a whole document."""
    name = fmt.lower()
    if name in _CONCAT:
        return _Concat()
    if name == "values":
        return _Values()
    parse = _HEADERS.get(name)
    if parse is not None:
        return _Header(parse)
    return None


__all__ = ["FRAMING_SETTINGS", "Stitcher", "stitcher_for"]
