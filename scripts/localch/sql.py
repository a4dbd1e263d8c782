"""Just enough SQL lexing to split ``INSERT ... FORMAT x <data>`` from its data.

The engine's streaming insert wants the statement without its ``FORMAT`` clause
plus the format name, and then the data as raw bytes. A ClickHouse server
finds the data the same way: it parses the INSERT up to the format name, skips
blanks up to and including the first newline, and everything after is data.

Text is handled as latin-1 so that character offsets equal byte offsets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WS = " \t\r\n\f\v"


@dataclass(frozen=True)
class InsertData:
    statement: str  # "INSERT INTO t (a, b) [SETTINGS ...]" without FORMAT/VALUES
    format: str  # "RowBinary", "Values", ...
    data_offset: int  # where the data starts in the scanned text


class Incomplete(Exception):
    """The text ended before the INSERT's data start could be found."""


def _skip_blank(text: str, i: int) -> int:
    n = len(text)
    while i < n:
        c = text[i]
        if c in _WS:
            i += 1
        elif text.startswith("--", i) or c == "#":
            j = text.find("\n", i)
            if j < 0:
                raise Incomplete
            i = j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise Incomplete
            i = j + 2
        else:
            break
    return i


def _skip_quoted(text: str, i: int) -> int:
    quote = text[i]
    i += 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == quote:
            if i + 1 < n and text[i + 1] == quote:  # doubled quote escape
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise Incomplete


def first_keyword(text: str) -> str:
    try:
        i = _skip_blank(text, 0)
    except Incomplete:
        return ""
    m = _IDENT.match(text, i)
    return m.group(0).upper() if m else ""


def split_insert(text: str) -> InsertData | None:
    """Locate the data of an INSERT.

    Returns None when the statement is not an INSERT carrying data (e.g.
    ``INSERT ... SELECT`` or not an INSERT at all); raises :class:`Incomplete`
    if more text is needed to decide.
    """
    i = _skip_blank(text, 0)
    m = _IDENT.match(text, i)
    if not m or m.group(0).upper() != "INSERT":
        return None
    n = len(text)
    depth = 0
    i = m.end()
    while True:
        i = _skip_blank(text, i)
        if i >= n:
            raise Incomplete
        c = text[i]
        if c in "'\"`":
            i = _skip_quoted(text, i)
        elif c in "([{":
            depth += 1
            i += 1
        elif c in ")]}":
            depth -= 1
            i += 1
        elif c == ";":
            return None
        elif depth == 0 and (m := _IDENT.match(text, i)):
            word = m.group(0).upper()
            if word in ("SELECT", "WITH"):
                return None
            if word == "VALUES":
                # The data (the tuples) follows the keyword directly.
                return InsertData(text[:i].rstrip(), "Values", m.end())
            if word == "FORMAT":
                j = _skip_blank(text, m.end())
                fm = _IDENT.match(text, j)
                if not fm or fm.end() >= n:
                    # The name may continue past the text we have so far.
                    raise Incomplete
                k = fm.end()
                while k < n and text[k] in " \t\f\v":
                    k += 1
                if k < n and text[k] == "\r" and text.startswith("\r\n", k):
                    k += 2
                elif k < n and text[k] == "\n":
                    k += 1
                elif k >= n:
                    raise Incomplete
                return InsertData(text[:i].rstrip(), fm.group(0), k)
            i = m.end()
        else:
            i += 1
