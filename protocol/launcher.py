"""Starting the backend from a host plugin (Krita's docker, GIMP's plug-in): one launcher for both.

Stdlib only (it runs in the hosts' Python; the installers vendor ``protocol/`` into each plugin). The
installer writes a small JSON config next to the plugin (project root + venv python); the launcher spawns
``<venv python> -m backend serve`` detached from the host (it outlives the plugin, so the next run is fast,
and one backend serves both hosts), with its output in a log file whose tail is shown when starting fails.

Two ways to wait: ``poll()`` never blocks (Krita calls it from a QTimer), ``wait()`` blocks with a deadline
(GIMP's plug-in is its own process). Every wait here is bounded: a launcher never hangs its host.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import connection
from .errors import ErrorCode, ProtocolError

START_TIMEOUT_S = 120.0  # the first start imports torch: slow on a cold disk
PROJECT_ENV = "LAYEREDIT_PROJECT"  # override the config's project root (tests, development)
PYTHON_ENV = "LAYEREDIT_PYTHON"  # override the config's venv python
READY, STARTING, FAILED = "ready", "starting", "failed"


@dataclass(frozen=True)
class LaunchConfig:
    """Where the backend is installed, as the installer recorded it."""

    project_root: Path | None
    venv_python: Path | None

    @property
    def usable(self) -> bool:
        return bool(self.project_root and self.venv_python and self.venv_python.exists())

    def serve_command(self) -> list[str]:
        return [str(self.venv_python), "-m", "backend", "serve"]


def ask_schemas(config: LaunchConfig, timeout: float = 120.0) -> list[dict] | None:
    """The product ops' parameter schemas (``OpSpec.to_json``), asked from the project's venv without starting
    a backend (GIMP registers its procedures' arguments before any backend runs); None when that fails."""
    if config.venv_python is None:
        return None
    try:
        out = subprocess.run(
            [str(config.venv_python), "-m", "backend", "schemas"],
            cwd=str(config.project_root) if config.project_root else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
        schemas = json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return schemas if isinstance(schemas, list) and schemas else None


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> LaunchConfig:
    """The installer's JSON (``project_root``, ``venv_python``); a missing or damaged file gives an empty
    config. With ``environ``, $LAYEREDIT_PROJECT / $LAYEREDIT_PYTHON override the file."""
    data: Any = {}
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    env = environ or {}
    root = env.get(PROJECT_ENV) or data.get("project_root")
    py = env.get(PYTHON_ENV) or data.get("venv_python")
    return LaunchConfig(Path(root) if root else None, Path(py) if py else None)


def log_path(host: str) -> Path:
    return connection.runtime_dir() / "logs" / f"backend-started-by-{host}.log"


def detach_kwargs() -> dict[str, Any]:
    """Popen arguments that let the backend outlive the host (and not get its Ctrl+C / SIGKILL of the group)."""
    if sys.platform.startswith("win"):
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS}
    return {"start_new_session": True}


def remove_stale_connection_file() -> None:
    """A file left by a crashed backend would look like success; a live backend's file is left alone."""
    try:
        info = connection.read()
    except ProtocolError:  # missing or unreadable: nothing to keep
        connection.remove()
        return
    if not connection.pid_alive(info.pid):
        connection.remove()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Launcher:
    """Starts the backend once; ``poll``/``wait`` tell when it is ready, ``failure_text`` why it is not."""

    def __init__(
        self,
        config: LaunchConfig,
        *,
        host: str,
        install_hint: str,
        timeout: float = START_TIMEOUT_S,
    ):
        self.config = config
        self.host = host
        self.install_hint = install_hint  # e.g. "python3 install.py --krita"
        self.timeout = timeout
        self.log = log_path(host)
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.start_error = ""

    def start(self) -> None:
        """Spawn the backend detached; ProtocolError(NO_BACKEND) when the config is unusable or it cannot run."""
        if not self.config.usable:
            raise ProtocolError(
                ErrorCode.NO_BACKEND,
                "The plugin does not know where the backend is installed (its config is missing or its venv "
                f"python is gone); run: {self.install_hint}",
            )
        self.log.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_connection_file()
        with open(self.log, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.config.serve_command(),
                    cwd=str(self.config.project_root),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **detach_kwargs(),
                )
            except OSError as exc:
                self.start_error = str(exc)
                raise ProtocolError(
                    ErrorCode.NO_BACKEND,
                    f"Could not start the backend ({exc}); check the plugin's config ({self.install_hint} "
                    f"rewrites it) or run: {self.manual_command()}",
                ) from None
        self.started_at = time.monotonic()

    def poll(self) -> str:
        """READY once the connection file names a live backend, FAILED if it exited or timed out, else
        STARTING. Never blocks."""
        if self.proc is None or self.proc.poll() is not None:
            return FAILED
        try:
            info = connection.read()
        except ProtocolError:  # not written yet, or half-written: try again next time
            info = None
        if info is not None and (info.pid in (0, self.proc.pid) or connection.pid_alive(info.pid)):
            return READY
        return FAILED if self.timed_out() else STARTING

    def timed_out(self) -> bool:
        return time.monotonic() - self.started_at > self.timeout

    def wait(self, connect: Callable[[], Any] | None = None, interval: float = 0.25) -> Any:
        """Block until the backend answers ``connect()`` (default: ``Client.connect``, which pings it, for at most
        what is left of ``timeout``) and return what it returned; ProtocolError(NO_BACKEND) with the log tail once
        it exited or ``timeout`` passed."""
        if connect is None:
            from .client import Client  # pyzmq only when really connecting

            def connect() -> Any:  # a silent backend's ping would outlast ``timeout`` by up to its own 15 s
                return Client.connect(
                    check_limit=max(0.001, self.started_at + self.timeout - time.monotonic())
                )

        while True:
            state = self.poll()
            if state == FAILED:
                raise ProtocolError(ErrorCode.NO_BACKEND, self.failure_text())
            if state == READY:
                try:
                    return connect()
                except ProtocolError:  # bound but not answering yet (or the file is someone else's)
                    if self.timed_out():
                        raise ProtocolError(ErrorCode.NO_BACKEND, self.failure_text()) from None
            time.sleep(interval)

    def manual_command(self) -> str:
        return f"cd {self.config.project_root} && {' '.join(self.config.serve_command())}"

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log, lines)

    def failure_text(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        if code is not None:
            head = f"The backend did not start (it exited with code {code})."
        elif self.start_error:
            head = f"The backend did not start ({self.start_error})."
        else:
            head = f"The backend did not start in time ({self.timeout:.0f} s)."
        text = f"{head} Run it by hand to see why: {self.manual_command()}\nIts log ({self.log})"
        log_tail = self.log_tail()
        return f"{text}, last lines:\n{log_tail}" if log_tail else f"{text} is empty."


def wait_for_file(proc: subprocess.Popen, path: Path, timeout: float, interval: float = 0.1) -> str:
    """READY once ``path`` exists, FAILED when ``proc`` exited first or ``timeout`` passed (blocks, bounded)."""
    deadline = time.monotonic() + timeout
    while not Path(path).is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            return FAILED
        time.sleep(interval)
    return READY


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate, then kill if it does not go within ``timeout``; a process that already exited is left be."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


RETRY_CODES = (ErrorCode.BACKEND_GONE, ErrorCode.TIMEOUT, ErrorCode.NO_BACKEND)
HELLO_TIMEOUT_S = 60.0  # hello_check's hello with no --wait (Client.hello's own default)


def hello_check(
    connection_file: Path | str | None, wait: float, note: Callable[[str], None] = lambda text: None
) -> tuple[dict, int]:
    """(hello reply, tries): say hello to the backend named by ``connection_file``. A backend's very first start
    can keep it busy for a few seconds (cold caches, first imports) so that the client declares it gone; it is
    retried for ``wait`` seconds, each failed try passed to ``note``. ``wait`` bounds the whole check: each try's
    ping and hello get at most what is left of it (a live but silent backend made one try last the client's own
    15 s + 60 s); each try reads the connection file again (a restarted backend). ``wait`` <= 0: one try with
    the client's own timeouts, no retry."""
    from .client import Client  # pyzmq only when really connecting

    deadline = time.monotonic() + wait if wait > 0 else None
    attempt = 0
    while True:
        attempt += 1
        try:
            client = Client.connect(
                connection_file, check_limit=None if deadline is None else _left(deadline)
            )
            try:
                hello_s = HELLO_TIMEOUT_S if deadline is None else min(HELLO_TIMEOUT_S, _left(deadline))
                return client.hello(timeout=hello_s), attempt
            finally:  # linger 0: nothing is left to flush, and a silent backend would get a ping's 1 s more
                client.close(linger_ms=0)
        except ProtocolError as exc:
            if exc.code not in RETRY_CODES or deadline is None or time.monotonic() >= deadline:
                raise
            note(f"hello attempt {attempt}: {exc}; retrying")
            time.sleep(min(1.0, _left(deadline)))


def _left(deadline: float) -> float:
    """What is left until ``deadline``; a try past it still gets a moment (its greet raises TIMEOUT at once)."""
    return max(0.001, deadline - time.monotonic())


def check_main(argv: list[str] | None = None) -> int:
    """``python -m backend check``: hello to a running backend; prints ``{"hello": ..., "attempts": n}`` as JSON
    on its last line (install.py's self-check reads it), 1 with the error code when it does not answer."""
    parser = argparse.ArgumentParser(
        prog="python -m backend check", description="Say hello to a running backend and print its answer."
    )
    parser.add_argument("--connection-file", type=Path, help="default: <runtime dir>/backend.json")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="keep retrying a busy or not yet listening backend this long, s",
    )
    args = parser.parse_args(argv)

    def note(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        info, attempts = hello_check(args.connection_file, args.wait, note)
    except ProtocolError as exc:
        print(f"error [{exc.code.value}]: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps({"hello": info, "attempts": attempts}, default=str))
    return 0
