"""The ClickHouse HTTP interface, served from the embedded chDB engine.

Architecture: a threaded HTTP/1.1 server (one thread per client connection,
keep-alive, listen backlog 1024). A request's body is read from the socket in
chunks and pushed straight into the engine's streaming insert, and results are
pulled from the engine's streaming query block by block, so neither side is
ever held whole in memory. The engine releases the GIL while it works, so
threads give real parallelism where it matters; the Python side only moves
buffers around (no per-row work).

Slow or stuck clients: every socket read has a timeout (``receive_timeout``
while a request is being read, ``keep_alive_timeout`` between requests), so a
client cannot hold an engine connection forever.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable, Iterator
from urllib.parse import parse_qsl, urlsplit

from . import codecs, errors, formats
from .engine import Engine, quote_ident, quote_literal
from .errors import ClickHouseError
from .sql import Incomplete, InsertData, first_keyword, split_insert

log = logging.getLogger("local-clickhouse")

READ_CHUNK = 1 << 20
QUERY_IS_TOO_LARGE = 229  # error code
# Bound for bodies that must be read whole (multipart forms, a query text
# split between URL and body): far above ClickHouse's max_query_size.
MAX_BUFFERED_BODY = 64 << 20
# After a failed INSERT the rest of the body is read and discarded (up to this
# much) so the client sees the error instead of a connection reset.
MAX_DRAIN = 256 << 20

# URL parameters the HTTP handler consumes itself; every other parameter is a
# setting (param_* are query parameters).
HTTP_PARAMS = {
    "query",
    "database",
    "default_format",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "compress",
    "decompress",
    "user",
    "password",
    "quota_key",
    "buffer_size",
    "wait_end_of_query",
    "role",
    "stacktrace",
    "client_protocol_version",
}

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The output format named by a trailing FORMAT clause (a SETTINGS clause may
# follow it).
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)(?:\s+SETTINGS\s[^;]*)?\s*;?\s*$", re.I | re.S)
_FORMAT_WORD = re.compile(r"\bFORMAT\b", re.I)
# Statements whose results are streamed block by block; the engine's streaming
# API rejects the others (DESCRIBE, SHOW, ...), whose results are small anyway.
_STREAMING_QUERIES = {"SELECT", "WITH", ""}


def content_type_for(fmt: str) -> str:
    f = fmt.lower()
    if f.startswith("tabseparated") or f.startswith("tsv"):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8; header=" + ("present" if "names" in f else "absent")
    if f.startswith("json") and "eachrow" in f or f.startswith("jsoncompacteachrow") or f.startswith("jsonlines"):
        return "application/x-ndjson; charset=UTF-8"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f in ("pretty", "prettycompact", "vertical", "values", "markdown", "xml"):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


class Config:
    def __init__(
        self,
        user: str,
        password: str,
        receive_timeout: float,
        keep_alive_timeout: float,
        verbose: bool,
    ) -> None:
        self.user = user
        self.password = password
        self.receive_timeout = receive_timeout
        self.keep_alive_timeout = keep_alive_timeout
        self.verbose = verbose


class _ClientGone(Exception):
    """The client closed the connection or stopped reading/writing in time."""


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], engine: Engine, config: Config) -> None:
        self.engine = engine
        self.config = config
        self.display_name = socket.gethostname()
        self._active = 0
        self._active_cv = threading.Condition()
        # Set at shutdown: kept-alive connections then take no new request, as a
        # ClickHouse server does, so a busy client cannot keep the process alive.
        self.stopping = threading.Event()
        super().__init__(address, Handler)

    def begin_request(self) -> None:
        with self._active_cv:
            self._active += 1

    def end_request(self) -> None:
        with self._active_cv:
            self._active -= 1
            self._active_cv.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._active_cv:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._active_cv.wait(left)
        return True


class Body:
    """The raw request body as an iterator of chunks (Content-Length or
    chunked), tracking whether it was read to the end."""

    def __init__(self, handler: "Handler") -> None:
        self._rfile = handler.rfile
        te = (handler.headers.get("Transfer-Encoding") or "").lower()
        self.chunked = "chunked" in te
        length = handler.headers.get("Content-Length")
        self._left = int(length) if length and not self.chunked else 0
        if self._left < 0:
            raise ClickHouseError(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "Negative Content-Length")
        self._chunk_left = 0
        self.done = not self.chunked and self._left == 0
        self.bytes_read = 0

    def _read(self, n: int) -> bytes:
        try:
            data = self._rfile.read(n)
        except (TimeoutError, socket.timeout) as err:
            raise _ClientGone("timed out reading the request body") from err
        except OSError as err:
            raise _ClientGone(str(err)) from err
        if len(data) < n:
            raise _ClientGone("the client closed the connection in the middle of the request body")
        self.bytes_read += n
        return data

    def _readline(self) -> bytes:
        try:
            line = self._rfile.readline(4096)
        except (TimeoutError, socket.timeout, OSError) as err:
            raise _ClientGone("timed out reading the request body") from err
        if not line.endswith(b"\n"):
            raise _ClientGone("malformed chunked body")
        return line

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.done:
            raise StopIteration
        if not self.chunked:
            data = self._read(min(self._left, READ_CHUNK))
            self._left -= len(data)
            self.done = self._left == 0
            return data
        if self._chunk_left == 0:
            size_line = self._readline().split(b";", 1)[0].strip()
            try:
                self._chunk_left = int(size_line, 16)
            except ValueError:
                raise _ClientGone(f"malformed chunk size {size_line!r}") from None
            if self._chunk_left == 0:
                while self._readline() not in (b"\r\n", b"\n"):  # trailers
                    pass
                self.done = True
                raise StopIteration
        data = self._read(min(self._chunk_left, READ_CHUNK))
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._readline()  # CRLF after the chunk data
        return data

    def drain(self, limit: int) -> bool:
        """Discard the rest of the body; False if it was longer than ``limit``."""
        total = 0
        for chunk in self:
            total += len(chunk)
            if total > limit:
                return False
        return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def version_string(self) -> str:
        return "local-clickhouse"

    # --- connection plumbing ---------------------------------------------------

    def setup(self) -> None:
        self.timeout = self.server.config.keep_alive_timeout
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_one_request(self) -> None:
        if self.server.stopping.is_set():
            self.close_connection = True
            return
        self.connection.settimeout(self.server.config.keep_alive_timeout)
        try:
            super().handle_one_request()
            if self.server.stopping.is_set():
                self.close_connection = True
        except _ClientGone as err:
            log.info("closing connection from %s: %s", self.client_address[0], err)
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        if self.server.config.verbose:
            log.info("%s %s", self.client_address[0], format % args)

    def log_error(self, format: str, *args: object) -> None:  # noqa: A002
        log.warning("%s %s", self.client_address[0], format % args)

    def do_GET(self) -> None:
        self._dispatch(readonly=True)

    def do_POST(self) -> None:
        self._dispatch(readonly=False)

    def do_HEAD(self) -> None:
        self._dispatch(readonly=True)

    def _dispatch(self, readonly: bool) -> None:
        url = urlsplit(self.path)
        if url.path in ("/ping", "/replicas_status") or (url.path == "/" and self.command != "POST" and not url.query):
            body = Body(self)
            body.drain(MAX_DRAIN)
            self._send_simple(200, b"Ok.\n", "text/html; charset=UTF-8")
            return
        if url.path not in ("/", "/query"):
            self._send_simple(404, b"There is no handle " + url.path.encode() + b"\n", "text/plain; charset=UTF-8")
            return
        self.server.begin_request()
        try:
            self.connection.settimeout(self.server.config.receive_timeout)
            Request(self, url.query, readonly).run()
        finally:
            self.server.end_request()

    # --- response helpers ------------------------------------------------------

    def _send_simple(self, status: int, body: bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        else:
            self.send_header("Keep-Alive", f"timeout={int(self.server.config.keep_alive_timeout)}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Request:
    """One query request: authentication, body decoding, execution, response."""

    def __init__(self, handler: Handler, query_string: str, readonly: bool) -> None:
        self.h = handler
        self.engine = handler.server.engine
        self.config = handler.server.config
        self.params: dict[str, str] = dict(parse_qsl(query_string, keep_blank_values=True))
        self.readonly = readonly
        self.query_id = self.params.get("query_id") or str(uuid.uuid4())
        self.body = Body(handler)
        self.started = time.monotonic()
        self.headers_sent = False

    # --- top level -------------------------------------------------------------

    def run(self) -> None:
        try:
            self._authenticate()
            self._execute()
        except ClickHouseError as err:
            self._fail(err)
        except _ClientGone:
            raise
        except (BrokenPipeError, ConnectionResetError) as err:
            raise _ClientGone(str(err)) from err
        except Exception as err:  # engine errors arrive as RuntimeError
            self._fail(ClickHouseError.from_engine(err))

    def _fail(self, err: ClickHouseError) -> None:
        if self.headers_sent:
            raise _ClientGone(f"error after the response started: {err.message}")
        # Read what is left of the body so the client, which may still be
        # sending, sees this response rather than a reset connection.
        if not self.body.done:
            try:
                if not self.body.drain(MAX_DRAIN):
                    self.h.close_connection = True
            except _ClientGone:
                self.h.close_connection = True
        if self.config.verbose or err.status >= 500:
            log.info("query %s failed: %s", self.query_id, err.render().strip())
        self.h._send_simple(
            err.status,
            err.render().encode(),
            "text/plain; charset=UTF-8",
            [
                ("X-ClickHouse-Query-Id", self.query_id),
                ("X-ClickHouse-Exception-Code", str(err.code)),
                ("X-ClickHouse-Server-Display-Name", self.h.server.display_name),
            ],
        )

    # --- credentials -----------------------------------------------------------

    def _authenticate(self) -> None:
        headers = self.h.headers
        user = password = None
        if headers.get("X-ClickHouse-User") is not None or headers.get("X-ClickHouse-Key") is not None:
            user = headers.get("X-ClickHouse-User", "default")
            password = headers.get("X-ClickHouse-Key", "")
        auth = headers.get("Authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "basic":
                raise ClickHouseError(516, "AUTHENTICATION_FAILED", f"Unsupported HTTP authorization scheme: {scheme}")
            if user is not None:
                raise ClickHouseError(
                    516,
                    "AUTHENTICATION_FAILED",
                    "Invalid authentication: it is not allowed to use Authorization HTTP header "
                    "and X-ClickHouse-User/X-ClickHouse-Key simultaneously",
                )
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise ClickHouseError(516, "AUTHENTICATION_FAILED", "Malformed HTTP basic authorization") from None
        if "user" in self.params or "password" in self.params:
            if user is not None:
                raise ClickHouseError(
                    516,
                    "AUTHENTICATION_FAILED",
                    "Invalid authentication: it is not allowed to use HTTP headers and URL parameters "
                    "for authentication simultaneously",
                )
            user = self.params.get("user", "default")
            password = self.params.get("password", "")
        user = user or "default"
        password = password or ""
        ok_user = hmac.compare_digest(user.encode(), self.config.user.encode())
        ok_password = hmac.compare_digest(password.encode(), self.config.password.encode())
        if not (ok_user and ok_password):
            raise ClickHouseError(
                516,
                "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name.",
            )

    # --- request decoding ------------------------------------------------------

    def _form_fields(self) -> None:
        """multipart/form-data carrying `query` and `param_*` (what the
        clickhouse crate sends when a query has server-side parameters)."""
        ctype = self.h.headers.get("Content-Type", "")
        match = re.search(r'boundary="?([^";]+)"?', ctype)
        if not match:
            raise ClickHouseError(36, "BAD_ARGUMENTS", "multipart/form-data without a boundary")
        raw = bytearray()
        for chunk in self.body:
            raw += chunk
            if len(raw) > MAX_BUFFERED_BODY:
                raise ClickHouseError(QUERY_IS_TOO_LARGE, "QUERY_IS_TOO_LARGE", "multipart body is too large")
        delimiter = b"--" + match.group(1).encode()
        for part in bytes(raw).split(delimiter)[1:]:
            if part.startswith(b"--"):
                break
            head, sep, value = part.partition(b"\r\n\r\n")
            if not sep:
                continue
            value = value[:-2] if value.endswith(b"\r\n") else value
            disposition = re.search(rb'name="([^"]*)"', head)
            if not disposition:
                continue
            if re.search(rb'filename="', head):
                raise ClickHouseError(48, "NOT_IMPLEMENTED", "External data (file parts in multipart bodies) is not supported")
            name = disposition.group(1).decode()
            if name == "query" or name.startswith("param_"):
                self.params[name] = value.decode()

    def _decoded_body(self) -> Iterator[bytes]:
        chunks: Iterable[bytes] = self.body
        encoding = (self.h.headers.get("Content-Encoding") or "").strip().lower()
        if encoding and encoding != "identity":
            chunks = codecs.decode_content(encoding, chunks)
        if self.params.get("decompress") in ("1", "true"):
            verify = self.settings.get("http_native_compression_disable_checksumming_on_decompress", "0") in ("0", "false")
            chunks = codecs.decode_native_blocks(chunks, verify)
        return iter(chunks)

    # --- execution -------------------------------------------------------------

    def _execute(self) -> None:
        ctype = (self.h.headers.get("Content-Type") or "").lower()
        if ctype.startswith("multipart/form-data"):
            self._form_fields()
        self.query_params = {k[6:]: v for k, v in self.params.items() if k.startswith("param_")}
        self.settings = {
            k: v for k, v in self.params.items() if k not in HTTP_PARAMS and not k.startswith("param_")
        }
        for name in self.settings:
            if not _SETTING_NAME.match(name):
                raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
        if self.readonly:
            self.settings.setdefault("readonly", "2")
        data = self._decoded_body()

        # The query is the `query` parameter followed by the body, as on a
        # server. Read only as much of the body as needed to find where an
        # INSERT's data begins; the rest streams into the engine.
        url_query = self.params.get("query", "")
        head = bytearray((url_query + "\n").encode() if url_query else b"")
        insert: InsertData | None = None
        exhausted = False
        while True:
            text = head.decode("latin-1")
            if first_keyword(text) == "INSERT":
                try:
                    insert = split_insert(text)
                    break
                except Incomplete:
                    pass
            elif text.strip():
                # Not an INSERT: the whole body is query text, read below.
                break
            chunk = next(data, None)
            if chunk is None:
                exhausted = True
                break
            head += chunk
            if len(head) > MAX_BUFFERED_BODY:
                raise ClickHouseError(QUERY_IS_TOO_LARGE, "QUERY_IS_TOO_LARGE", "Query is too large")

        session = None
        conn = None
        self.engine.acquire_slot(self.config.receive_timeout)
        try:
            if "session_id" in self.params:
                try:
                    timeout = float(self.params.get("session_timeout", "60"))
                except ValueError:
                    raise ClickHouseError(36, "BAD_ARGUMENTS", "Invalid session timeout") from None
                session = self.engine.sessions.acquire(
                    self.params["session_id"], timeout, self.params.get("session_check") in ("1", "true")
                )
                conn = session.conn
            else:
                conn = self.engine.connect()
            self._prepare(conn)
            if insert is not None:
                rest = bytes(head[insert.data_offset :])
                self._run_insert(conn, insert, rest, data)
            else:
                if not exhausted:
                    for chunk in data:
                        head += chunk
                        if len(head) > MAX_BUFFERED_BODY:
                            raise ClickHouseError(QUERY_IS_TOO_LARGE, "QUERY_IS_TOO_LARGE", "Query is too large")
                query = head.decode("utf-8", errors="surrogateescape").strip()
                if not query:
                    raise ClickHouseError(62, "SYNTAX_ERROR", "Empty query")
                self._run_query(conn, query)
        finally:
            if session is not None:
                self.engine.sessions.release(session)
            elif conn is not None:
                conn.close()
            self.engine.release_slot()

    def _prepare(self, conn) -> None:
        if self.settings:
            assignments = ", ".join(f"{k} = {quote_literal(v)}" for k, v in self.settings.items())
            conn.query(f"SET {assignments}", "TSV")
        database = self.params.get("database")
        if database:
            conn.query(f"USE {quote_ident(database)}", "TSV")

    def _run_insert(self, conn, insert: InsertData, first: bytes, data: Iterator[bytes]) -> None:
        inserter = conn.send_insert(insert.statement, insert.format)
        try:
            if first:
                conn.insert_append(inserter, first)
            for chunk in data:
                conn.insert_append(inserter, chunk)
            result = conn.insert_done(inserter)
        except BaseException:
            try:
                conn.insert_cancel(inserter)
            except Exception:  # already failed/finished inside the engine
                pass
            raise
        summary = {
            "read_rows": result.rows_written(),
            "read_bytes": result.bytes_written(),
            "written_rows": result.rows_written(),
            "written_bytes": result.bytes_written(),
            "result_rows": 0,
            "result_bytes": 0,
        }
        self._send_empty(summary)

    def _summary(self, values: dict[str, int]) -> str:
        full = {
            "read_rows": 0,
            "read_bytes": 0,
            "written_rows": 0,
            "written_bytes": 0,
            "total_rows_to_read": 0,
            "result_rows": 0,
            "result_bytes": 0,
        }
        full.update(values)
        full["elapsed_ns"] = int((time.monotonic() - self.started) * 1e9)
        return json.dumps({k: str(v) for k, v in full.items()}, separators=(",", ":"))

    def _common_headers(self) -> list[tuple[str, str]]:
        return [
            ("X-ClickHouse-Query-Id", self.query_id),
            ("X-ClickHouse-Server-Display-Name", self.h.server.display_name),
            ("X-ClickHouse-Timezone", self.engine.timezone),
        ]

    def _send_empty(self, summary: dict[str, int]) -> None:
        self.h._send_simple(
            200,
            b"",
            "text/plain; charset=UTF-8",
            [*self._common_headers(), ("X-ClickHouse-Summary", self._summary(summary))],
        )

    def _run_query(self, conn, query: str) -> None:
        fmt = self.params.get("default_format") or "TabSeparated"
        match = _FORMAT_CLAUSE.search(query)
        out_format = match.group(1) if match else fmt
        stitcher = None
        # A FORMAT clause the pattern does not pin down (in the middle of the
        # text, or just the word in a literal) leaves the real format unknown:
        # never stitch it as if it were the default one.
        format_known = match is not None or not _FORMAT_WORD.search(query)
        if first_keyword(query) in _STREAMING_QUERIES and format_known:
            stitcher = formats.stitcher_for(out_format)
            if stitcher is not None and self._framing_changed(conn, query, out_format):
                stitcher = None
        if stitcher is None:
            # DDL, INSERT ... SELECT, ALTER, SET, SHOW, ... (small or empty
            # results, and the engine's streaming API rejects some of them),
            # and SELECTs in whole-document formats (JSON, XML, Pretty, ...;
            # see formats.py): the engine's ordinary query builds the
            # complete document, exactly as a server would, held in memory.
            result = conn.query(query, fmt, params=self.query_params)
            data = result.bytes()
            summary = {
                "read_rows": result.rows_read(),
                "read_bytes": result.bytes_read(),
                "written_rows": result.rows_written(),
                "written_bytes": result.bytes_written(),
                "result_rows": result.rows_read(),
            }
            if not data:
                self._send_empty(summary)
                return
            self._stream(out_format, iter([data]), summary)
            return

        # Row formats stream block by block. chDB formats every block on its
        # own; the stitcher turns the chunks into the server's byte stream
        # (one header, "," between Values blocks, ...; see formats.py).
        stream = conn.send_query(query, fmt, params=self.query_params)
        try:
            # Fetch the first block before answering (the first next() of
            # blocks() happens before the headers go out), so that errors
            # raised while planning or starting the query get a proper HTTP
            # status.
            first = conn.streaming_fetch_result(stream)
            summary = {"result_rows": 0, "read_rows": 0, "read_bytes": 0}
            ended = False

            def blocks() -> Iterator[bytes]:
                nonlocal ended
                result = first
                while True:
                    rows = result.rows_read() if result is not None else 0
                    data = (result.bytes() if result is not None else b"") or b""
                    summary["result_rows"] += rows
                    # The engine ends the stream on the first chunk without
                    # rows, but that chunk still carries bytes: the header of
                    # an empty result, totals and extremes. Never drop it.
                    out = stitcher.feed(data, rows)
                    if out:
                        yield out
                    if rows == 0:
                        ended = True
                        return
                    result = conn.streaming_fetch_result(stream)

            self._stream(out_format, blocks(), summary)
            if not ended:
                # HEAD, or a failure reported in the body: the engine may
                # still hold the query (and a session its connection).
                try:
                    conn.streaming_cancel_query(stream)
                except Exception:  # already ended inside the engine
                    pass
        except BaseException:
            try:
                conn.streaming_cancel_query(stream)
            except Exception:
                pass
            raise

    def _framing_changed(self, conn, query: str, out_format: str) -> bool:
        """Whether a setting that makes ``out_format`` a whole document (see
        formats.FRAMING_SETTINGS) may be on. Mentioned anywhere in the query
        (a SETTINGS clause) or in the URL: assume so. In a session it may have
        been SET earlier: ask the connection."""
        names = formats.FRAMING_SETTINGS.get(out_format.lower(), ())
        lowered = query.lower()
        for name in names:
            if name in lowered or name in self.settings:
                return True
            if "session_id" in self.params:
                value = conn.query(f"SELECT getSetting({quote_literal(name)})", "TSV").bytes() or b""
                if value.strip() not in (b"0", b"false", b""):
                    return True
        return False

    def _stream(self, out_format: str, blocks: Iterator[bytes], summary: dict[str, int]) -> None:
        level = int(self.settings.get("http_zlib_compression_level", "3") or 3)
        encoder: codecs.Encoder | None = None
        if self.params.get("compress") in ("1", "true"):
            encoder = codecs.NativeBlockEncoder()
        elif self.settings.get("enable_http_compression", "1") not in ("0", "false"):
            encoder = codecs.response_encoder(self.h.headers.get("Accept-Encoding", ""), level)
        tag = secrets.token_hex(8)

        first = next(blocks, None)
        h = self.h
        h.send_response(200)
        h.send_header("Content-Type", content_type_for(out_format))
        h.send_header("X-ClickHouse-Format", out_format)
        for k, v in self._common_headers():
            h.send_header(k, v)
        h.send_header("X-ClickHouse-Exception-Tag", tag)
        if encoder is not None and encoder.name != "native":
            h.send_header("Content-Encoding", encoder.name)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Keep-Alive", f"timeout={int(self.config.keep_alive_timeout)}")
        h.send_header("X-ClickHouse-Summary", self._summary(summary))
        h.end_headers()
        self.headers_sent = True
        if self.h.command == "HEAD":
            return
        write = self._chunk_writer()
        enc = encoder or codecs.Encoder()
        try:
            if first is not None:
                write(enc.write(first))
            for block in blocks:
                write(enc.write(block))
        except (BrokenPipeError, ConnectionResetError, TimeoutError, socket.timeout):
            raise
        except Exception as exc:
            # Mid-stream failure: ClickHouse (>= 25.11) appends a tagged
            # exception block and breaks the chunked encoding, so the client
            # cannot mistake the truncated result for a complete one.
            err = ClickHouseError.from_engine(exc)
            message = err.render().encode()
            trailer = (
                b"__exception__\r\n" + tag.encode() + b"\r\n" + message
                + str(len(message)).encode() + b" " + tag.encode() + b"\r\n__exception__\r\n"
            )
            write(enc.flush())
            write(enc.write(trailer) + enc.flush())
            h.close_connection = True
            log.info("query %s failed mid-stream: %s", self.query_id, message.decode(errors="replace").strip())
            return
        write(enc.finish())
        h.wfile.write(b"0\r\n\r\n")

    def _chunk_writer(self):
        wfile = self.h.wfile

        def write(data: bytes) -> None:
            if data:
                wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

        return write


def make_server(host: str, port: int, engine: Engine, config: Config) -> Server:
    errors.SERVER_VERSION = engine.version
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    Server.address_family = family
    return Server((host, port), engine, config)


__all__ = ["Config", "Server", "make_server"]
