"""The chDB engine: one data directory per process, one connection per request.

Why a fresh engine connection for every request instead of a reusable pool:
a chDB connection is a ClickHouse *session*, so ``SET``, ``USE`` and per-request
settings stick to it. A ClickHouse server gives every HTTP request without
``session_id`` a clean context; recycling connections would need to undo every
change, and ``SET x = DEFAULT`` restores chDB's own defaults, not a server's.
Opening a connection to the already-running engine costs ~0.1 ms, far below a
request's cost, so each request simply gets a new one (with the server-like
baseline settings below) and closes it afterwards. One long-lived connection
keeps the engine itself up between requests.

Concurrency: queries on different connections run in parallel; chDB releases
the GIL while it executes, so a thread per HTTP connection scales to the
engine's limits. A semaphore bounds the number of statements running at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from chdb import _chdb

from .errors import ClickHouseError

# chDB ships with defaults tuned for an embedded library; a ClickHouse server
# defaults differ. Every connection starts from the server's values so a test
# that passes against the launcher means the same against a server:
#   async_insert:      chDB 1, server 0 (inserts must be visible when they return)
#   mutations_sync:    chDB 1, server 0 (ALTER ... DELETE is asynchronous on a server)
#   implicit_select:   chDB 1, server 0 (`1+1` alone is a syntax error on a server)
#   allow_introspection_functions: chDB 1, server 0
# lightweight_deletes_sync (2), wait_for_async_insert (1), alter_sync (1) and
# enable_http_compression (1 since 25.10) already match a 26.9 server.
SERVER_BASELINE: dict[str, str] = {
    "async_insert": "0",
    "mutations_sync": "0",
    "implicit_select": "0",
    "allow_introspection_functions": "0",
}


def quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Engine:
    def __init__(self, data_dir: str, max_concurrent: int) -> None:
        options = "&".join(f"{k}={quote(v)}" for k, v in SERVER_BASELINE.items())
        self._dsn = f"file:{data_dir}?{options}"
        # Keeps the embedded engine running while no request is open.
        self._root = _chdb.connect(self._dsn)
        self.version = self._root.query("SELECT version()", "TSV").bytes().decode().strip()
        self.timezone = self._root.query("SELECT timezone()", "TSV").bytes().decode().strip()
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.max_concurrent = max_concurrent
        self.sessions = Sessions(self)

    def connect(self):  # -> _chdb connection
        return _chdb.connect(self._dsn)

    def acquire_slot(self, timeout: float) -> None:
        if not self._slots.acquire(timeout=timeout):
            raise ClickHouseError(
                202,
                "TOO_MANY_SIMULTANEOUS_QUERIES",
                f"Too many simultaneous queries. Maximum: {self.max_concurrent}",
            )

    def release_slot(self) -> None:
        self._slots.release()

    def close(self) -> None:
        self.sessions.close_all()
        root, self._root = self._root, None
        if root is not None:
            root.close()


@dataclass
class Session:
    conn: object
    timeout: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)


class Sessions:
    """HTTP sessions (``session_id``): a connection kept across requests."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def acquire(self, session_id: str, timeout: float, check: bool) -> Session:
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(session_id)
            if session is None:
                if check:
                    raise ClickHouseError(372, "SESSION_NOT_FOUND", f"Session {session_id} not found")
                session = Session(self._engine.connect(), timeout)
                self._sessions[session_id] = session
            session.timeout = timeout
        # The previous request of this session releases it just after its
        # response went out, so a client's next request can arrive first:
        # wait briefly before declaring the session busy.
        if not session.lock.acquire(timeout=5):
            raise ClickHouseError(373, "SESSION_IS_LOCKED", f"Session {session_id} is locked by a concurrent client")
        session.last_used = now
        return session

    def release(self, session: Session) -> None:
        session.last_used = time.monotonic()
        session.lock.release()

    def _expire(self, now: float) -> None:
        for sid, s in list(self._sessions.items()):
            if now - s.last_used > s.timeout and s.lock.acquire(blocking=False):
                del self._sessions[sid]
                s.conn.close()

    def close_all(self) -> None:
        with self._lock:
            for s in self._sessions.values():
                s.conn.close()
            self._sessions.clear()
