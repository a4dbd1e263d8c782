"""Command line of scripts/local-clickhouse: start, stop, status, run.

``start``/``stop``/``status`` need only the standard library and run under the
machine's python3; ``run`` (the server itself) re-executes inside the private
venv, which is created on first use.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import bootstrap

PID_FILE = "local-clickhouse.pid"
URL_FILE = "local-clickhouse.url"
LOCK_FILE = "local-clickhouse.lock"
ENGINE_DIR = "chdb"
SCRIPT = Path(__file__).resolve().parent.parent / "local-clickhouse"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    common.add_argument("--port", type=int, default=8123, help="HTTP port; 0 picks a free one (default 8123)")
    common.add_argument(
        "--data-dir", default="./data/clickhouse", help="persistent data directory (default ./data/clickhouse)"
    )
    common.add_argument("--user", default="default", help="the one accepted user name (default 'default')")
    common.add_argument(
        "--password",
        default=os.environ.get("LOCAL_CLICKHOUSE_PASSWORD", ""),
        help="its password (default empty, or $LOCAL_CLICKHOUSE_PASSWORD)",
    )
    common.add_argument("--log-file", help="server log (default <data-dir>/local-clickhouse.log for start)")
    common.add_argument("--timeout", type=float, default=120, help="seconds start/stop wait (default 120)")

    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--url-file", help="write the server URL to this file once it answers")
    server.add_argument(
        "--exit-with-parent",
        type=int,
        metavar="PID",
        help="shut down when process PID exits (for test harnesses)",
    )
    server.add_argument("--max-concurrent-queries", type=int, default=64)
    server.add_argument("--receive-timeout", type=float, default=30, help="seconds a client may stall mid-request")
    server.add_argument("--keep-alive-timeout", type=float, default=30, help="seconds an idle connection stays open")
    server.add_argument("--verbose", action="store_true", help="log every request")
    server.add_argument(
        "--ephemeral",
        action="store_true",
        help="delete --data-dir on exit (for test instances on temporary directories)",
    )

    p = argparse.ArgumentParser(
        prog="local-clickhouse",
        description="A real ClickHouse engine (chDB) behind the ClickHouse HTTP interface, for one machine.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("start", parents=[common, server], help="start in the background; returns once /ping answers")
    sub.add_parser("stop", parents=[common], help="stop the server of --data-dir (SIGTERM, wait for a clean exit)")
    sub.add_parser("status", parents=[common], help="exit 0 if the server of --data-dir is up, 3 if not")
    sub.add_parser("run", parents=[common, server], help="run in the foreground; prints the URL on stdout")
    sub.add_parser("install", help="only install the engine's virtualenv (idempotent; CI does this up front)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "install":
        print(bootstrap.ensure_venv())
        return 0
    args.data_dir = str(Path(args.data_dir).resolve())
    if args.command in ("start", "run"):
        _check_bind(args.host, args.password)
    if args.command == "start":
        return cmd_start(args)
    if args.command == "stop":
        return cmd_stop(args)
    if args.command == "status":
        return cmd_status(args)
    return cmd_run(args)


def _check_bind(host: str, password: str) -> None:
    if password:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(
            f"local-clickhouse: refusing to listen on non-loopback address {host} without a password; "
            "pass --password (or LOCAL_CLICKHOUSE_PASSWORD)"
        )


# --- pid/url files ---------------------------------------------------------------


def _read_pid(data_dir: str) -> int | None:
    try:
        pid = int(Path(data_dir, PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _read_url(data_dir: str) -> str | None:
    try:
        return Path(data_dir, URL_FILE).read_text().strip() or None
    except OSError:
        return None


def _ping(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=timeout) as resp:
            return resp.status == 200 and resp.read() == b"Ok.\n"
    except (OSError, urllib.error.URLError):
        return False


def _log_tail(path: str | None, lines: int = 30) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n--- last lines of " + path + " ---\n" + "\n".join(text)


# --- commands --------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    pid = _read_pid(args.data_dir)
    url = _read_url(args.data_dir)
    if pid and url and _ping(url):
        print(f"running: pid {pid}, {url}")
        return 0
    if pid:
        print(f"process {pid} exists but does not answer /ping at {url}")
        return 1
    print("not running")
    return 3


def cmd_start(args: argparse.Namespace) -> int:
    pid = _read_pid(args.data_dir)
    url = _read_url(args.data_dir)
    if pid and url and _ping(url):
        print(url)
        print(f"local-clickhouse: already running (pid {pid})", file=sys.stderr)
        return 0
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    log_file = args.log_file or str(Path(args.data_dir, "local-clickhouse.log"))
    # Install the engine now, in the foreground, so its progress is visible
    # and its time does not count against the start-up wait.
    python = bootstrap.ensure_venv()
    url_file = Path(args.data_dir, URL_FILE)
    url_file.unlink(missing_ok=True)
    argv = [str(python), str(SCRIPT), "run", *_server_args(args), "--url-file", str(url_file), "--log-file", log_file]
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # detach from the terminal's process group
        close_fds=True,
    )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            print(f"local-clickhouse: server exited with code {code} during start-up{_log_tail(log_file)}", file=sys.stderr)
            return 1
        url = _read_url(args.data_dir)
        if url and _ping(url, timeout=1):
            print(url)
            print(f"local-clickhouse: started (pid {child.pid}), log {log_file}", file=sys.stderr)
            return 0
        time.sleep(0.05)
    child.terminate()
    print(
        f"local-clickhouse: server did not answer /ping within {args.timeout:.0f}s{_log_tail(log_file)}",
        file=sys.stderr,
    )
    return 1


def _server_args(args: argparse.Namespace) -> list[str]:
    out = ["--host", args.host, "--port", str(args.port), "--data-dir", args.data_dir, "--user", args.user]
    out += ["--max-concurrent-queries", str(args.max_concurrent_queries)]
    out += ["--receive-timeout", str(args.receive_timeout), "--keep-alive-timeout", str(args.keep_alive_timeout)]
    if args.verbose:
        out.append("--verbose")
    if args.ephemeral:
        out.append("--ephemeral")
    if args.exit_with_parent:
        out += ["--exit-with-parent", str(args.exit_with_parent)]
    return out


def cmd_stop(args: argparse.Namespace) -> int:
    pid = _read_pid(args.data_dir)
    if pid is None:
        print("local-clickhouse: not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"local-clickhouse: stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    print(f"local-clickhouse: pid {pid} did not exit within {args.timeout:.0f}s after SIGTERM", file=sys.stderr)
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    venv = bootstrap.venv_dir()
    if not bootstrap.in_venv(venv):
        python = bootstrap.ensure_venv()
        os.execv(str(python), [str(python), str(SCRIPT), *sys.argv[1:]])

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers = [logging.FileHandler(args.log_file)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers)
    log = logging.getLogger("local-clickhouse")

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # chDB supports one process per data directory; make a second launcher
    # fail clearly instead of corrupting the first one's data.
    lock = open(data_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            other = _read_pid(args.data_dir)
            log.error("data dir %s is in use by another local-clickhouse (pid %s)", data_dir, other)
            print(f"local-clickhouse: data dir {data_dir} is in use by another local-clickhouse (pid {other})", file=sys.stderr)
            return 1
        raise

    if args.exit_with_parent:
        _watch_parent(args.exit_with_parent)

    from .engine import Engine  # needs the venv
    from .server import Config, make_server

    started = time.monotonic()
    engine = Engine(str(data_dir / ENGINE_DIR), args.max_concurrent_queries)
    config = Config(args.user, args.password, args.receive_timeout, args.keep_alive_timeout, args.verbose)
    try:
        server = make_server(args.host, args.port, engine, config)
    except OSError as err:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, err)
        print(f"local-clickhouse: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        engine.close()
        return 1
    host, port = server.server_address[:2]
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{port}"

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            log.info("received signal %d, shutting down", signum)
            stopping.set()
            server.stopping.set()
            # shutdown() blocks until serve_forever returns: not from this thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    global _on_parent_exit
    _on_parent_exit = lambda: on_signal(signal.SIGTERM, None)  # noqa: E731

    Path(data_dir, PID_FILE).write_text(f"{os.getpid()}\n")
    if args.url_file:
        tmp = Path(args.url_file + ".tmp")
        tmp.write_text(url + "\n")
        tmp.replace(args.url_file)
    Path(data_dir, URL_FILE).write_text(url + "\n")
    log.info(
        "ClickHouse %s (chDB) on %s, data in %s, ready in %.2fs",
        engine.version,
        url,
        data_dir,
        time.monotonic() - started,
    )
    # The one line on stdout: harnesses that spawned us with --port 0 read it.
    print(url, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if not server.wait_idle(30):
            log.warning("requests still running after 30s; closing the engine anyway")
        engine.close()
        for name in (PID_FILE, URL_FILE):
            Path(data_dir, name).unlink(missing_ok=True)
        log.info("stopped")
        if args.ephemeral:
            shutil.rmtree(data_dir, ignore_errors=True)
    # Every acknowledged insert is a committed part on disk by now. Leave without the
    # interpreter's and the engine's exit-time teardown: chDB's process-wide
    # destructors wait for background merges, which under load can take minutes and
    # made SIGTERM look like a hang. An interrupted merge is discarded on the next
    # start, as after any server stop.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


_on_parent_exit = None


def _watch_parent(pid: int) -> None:
    """Shut down when ``pid`` exits. Polling rather than PR_SET_PDEATHSIG:
    the death signal fires when the spawning *thread* exits, and test
    harnesses spawn from short-lived test threads."""

    def watch() -> None:
        direct_child = os.getppid() == pid
        while True:
            time.sleep(0.2)
            if direct_child:
                alive = os.getppid() == pid
            else:
                try:
                    os.kill(pid, 0)
                    alive = True
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    alive = True
            if not alive:
                logging.getLogger("local-clickhouse").info("parent process %d exited, shutting down", pid)
                if _on_parent_exit is not None:
                    _on_parent_exit()
                return

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
