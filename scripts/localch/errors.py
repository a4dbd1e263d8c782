"""ClickHouse exceptions and their HTTP rendering.

The engine raises ``RuntimeError("Code: N. DB::Exception: ... (NAME)")``; the
launcher raises :class:`ClickHouseError` for protocol-level failures. Both are
rendered the way a ClickHouse server renders them: the HTTP status chosen by
error name (the same grouping ClickHouse's HTTP handler uses), the
``X-ClickHouse-Exception-Code`` header, and a ``Code: N. DB::Exception: ...``
text body.
"""

from __future__ import annotations

import re

# Filled in at start-up from the engine (SELECT version()).
SERVER_VERSION = "unknown"

_AUTH_FORBIDDEN = {"UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"}
_BAD_REQUEST = {
    "BAD_ARGUMENTS",
    "CANNOT_COMPILE_REGEXP",
    "CANNOT_PARSE_TEXT",
    "CANNOT_PARSE_ESCAPE_SEQUENCE",
    "CANNOT_PARSE_QUOTED_STRING",
    "CANNOT_PARSE_DATE",
    "CANNOT_PARSE_DATETIME",
    "CANNOT_PARSE_NUMBER",
    "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
    "CANNOT_PARSE_IPV4",
    "CANNOT_PARSE_IPV6",
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    "CANNOT_PARSE_UUID",
    "DUPLICATE_COLUMN",
    "ILLEGAL_COLUMN",
    "UNKNOWN_ELEMENT_IN_AST",
    "UNKNOWN_TYPE_OF_AST_NODE",
    "THERE_IS_NO_COLUMN",
    "TOO_DEEP_AST",
    "TOO_BIG_AST",
    "UNEXPECTED_AST_STRUCTURE",
    "SYNTAX_ERROR",
    "INCORRECT_DATA",
    "TYPE_MISMATCH",
    "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
}
_NOT_FOUND = {
    "UNKNOWN_TABLE",
    "UNKNOWN_FUNCTION",
    "UNKNOWN_IDENTIFIER",
    "UNKNOWN_TYPE",
    "UNKNOWN_STORAGE",
    "UNKNOWN_DATABASE",
    "UNKNOWN_SETTING",
    "UNKNOWN_DIRECTION_OF_SORTING",
    "UNKNOWN_AGGREGATE_FUNCTION",
    "UNKNOWN_FORMAT",
    "UNKNOWN_DATABASE_ENGINE",
    "UNKNOWN_TYPE_OF_QUERY",
    "UNKNOWN_ROLE",
}
_OTHER = {
    "REQUIRED_PASSWORD": 401,
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "CANNOT_SCHEDULE_TASK": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}


def http_status(name: str) -> int:
    if name in _AUTH_FORBIDDEN:
        return 403
    if name in _BAD_REQUEST:
        return 400
    if name in _NOT_FOUND:
        return 404
    return _OTHER.get(name, 500)


_ENGINE_ERROR = re.compile(r"Code: (\d+)\. (?:DB::Exception: )?(.*?)\s*\(([A-Z][A-Z0-9_]*)\)(?: \(version [^)]*\))?\s*$", re.S)


class ClickHouseError(Exception):
    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message

    @property
    def status(self) -> int:
        return http_status(self.name)

    def render(self) -> str:
        """The exception text exactly as a server prints it (with the newline)."""
        return f"Code: {self.code}. DB::Exception: {self.message} ({self.name}) (version {SERVER_VERSION})\n"

    @classmethod
    def from_engine(cls, err: BaseException) -> "ClickHouseError":
        if isinstance(err, ClickHouseError):
            return err
        text = str(err)
        # The Python wrappers sometimes prefix the engine's text.
        start = text.find("Code: ")
        match = _ENGINE_ERROR.match(text[start:]) if start >= 0 else None
        if match is None:
            return cls(1001, "STD_EXCEPTION", text.strip() or type(err).__name__)
        return cls(int(match.group(1)), match.group(3), match.group(2))
