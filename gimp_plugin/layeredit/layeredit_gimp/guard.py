"""Cancel guard: cancels the backend job when GIMP kills the plug-in.

When the user presses cancel on a plug-in's progress bar, GIMP ends the plug-in process (SIGKILL on Unix,
TerminateProcess on Windows): no Python code runs, so the plug-in cannot send ``cancel`` itself. A small
guard process, in its own session so the kill does not reach it, holds the read end of a pipe from the
plug-in. The plug-in starts it before submitting (the spawn is the slow part), writes ``job <id>`` right
after the submit, and ``done`` once the job is over. End-of-file after a job id but without ``done`` means
the plug-in died: the guard sends ``cancel`` for that job, so the backend stops computing for nobody.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import IO

DONE = b"done"
JOB = b"job "


class CancelGuard:
    """The plug-in's side: ``start()`` before submitting, ``watch(job)`` after, ``done()`` at the end."""

    def __init__(self, process: subprocess.Popen):
        self._process = process

    @classmethod
    def start(cls, connection_file: Path, python: str | None = None) -> CancelGuard:
        import protocol  # the guard imports the same copy (vendored in the plug-in, or the project's)

        plugin_dir = Path(protocol.__file__).resolve().parents[1]
        cmd = [python or sys.executable, str(Path(__file__).resolve()), str(plugin_dir), str(connection_file)]
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self._process.pid

    def _send(self, line: bytes) -> None:
        try:
            if self._process.stdin is not None:
                self._process.stdin.write(line + b"\n")
                self._process.stdin.flush()
        except OSError:
            pass

    def watch(self, job_id: str) -> None:
        """From now on, the plug-in dying means: cancel ``job_id``."""
        self._send(JOB + job_id.encode("ascii"))

    def done(self) -> None:
        """The job ended (result, error, or never submitted): the guard exits quietly."""
        self._send(DONE)
        try:
            if self._process.stdin is not None:
                self._process.stdin.close()
        except OSError:
            pass
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()


def orphaned_job(stream: IO[bytes]) -> str | None:
    """Block until the plug-in closes the pipe; the job to cancel when it died without saying ``done``."""
    lines = stream.read().splitlines()
    if DONE in lines:
        return None
    jobs = [line[len(JOB) :].decode("ascii") for line in lines if line.startswith(JOB)]
    return jobs[-1] if jobs else None


def send_cancel(connection_file: Path, job_id: str, patience: float = 3.0) -> None:
    """Cancel ``job_id``. The plug-in's submit travels on its own (now dead) connection and the client picks
    the job id before the backend has read it, so this cancel can overtake the submit: while the backend does
    not know the job yet, cancel again (for ``patience`` seconds; a submit lost with the plug-in never comes)."""
    from protocol import connection
    from protocol.client import Client
    from protocol.errors import ErrorCode, ProtocolError
    from protocol.wire import PING, Message

    client = Client(connection.read(connection_file))
    deadline = time.monotonic() + patience
    try:
        try:  # a connection's first message may be cut unread by the backend's guard: prove one first
            client.greet(lambda: Message(PING), patience)
        except ProtocolError:
            return  # a dead or silent backend has nothing we could cancel
        while True:
            client.cancel(job_id)
            try:
                client.status(job_id, timeout=2.0)  # the reply proves the cancel (sent before it) arrived
                return
            except ProtocolError as exc:
                if exc.code != ErrorCode.UNKNOWN_JOB or time.monotonic() > deadline:
                    return  # a dead backend has nothing left to cancel
            time.sleep(0.1)
    finally:
        client.close()


def main(argv: list[str]) -> int:
    plugin_dir, connection_file = argv
    sys.path.insert(0, plugin_dir)
    job = orphaned_job(sys.stdin.buffer)
    if job is not None:
        send_cancel(Path(connection_file), job)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
