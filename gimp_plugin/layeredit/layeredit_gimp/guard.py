"""Cancel guard: cancels the backend job when GIMP kills the plug-in.

When the user presses cancel on a plug-in's progress bar, GIMP ends the plug-in process (SIGKILL on Unix,
TerminateProcess on Windows): no Python code runs, so the plug-in cannot send ``cancel`` itself. A small
guard process, in its own session so the kill does not reach it, holds the read end of a pipe from the
plug-in. A clean finish writes ``done``; end-of-file without it means the plug-in died, and the guard sends
``cancel`` for the job, so the backend stops computing for nobody.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO

DONE = b"done\n"


class CancelGuard:
    """The plug-in's side: start before submitting, ``done()`` once the job is over (any outcome)."""

    def __init__(self, process: subprocess.Popen):
        self._process = process

    @classmethod
    def start(cls, connection_file: Path, job_id: str, python: str | None = None) -> CancelGuard:
        import protocol  # the guard imports the same copy (vendored in the plug-in, or the project's)

        plugin_dir = Path(protocol.__file__).resolve().parents[1]
        cmd = [
            python or sys.executable,
            str(Path(__file__).resolve()),
            str(plugin_dir),
            str(connection_file),
            job_id,
        ]
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

    def done(self) -> None:
        """The job ended normally (result, error, or a cancel already sent): the guard exits quietly."""
        stdin = self._process.stdin
        try:
            if stdin is not None:
                stdin.write(DONE)
                stdin.close()
        except OSError:
            pass
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()


def watch(stream: IO[bytes]) -> bool:
    """Block until the plug-in closes the pipe; True when it died without saying ``done``."""
    data = b""
    while chunk := stream.read(64):
        data += chunk
    return DONE not in data


def send_cancel(connection_file: Path, job_id: str) -> None:
    from protocol import connection
    from protocol.client import Client

    client = Client(connection.read(connection_file))
    try:
        client.cancel(job_id)
        try:
            client.ping(timeout=2.0)  # the reply proves the cancel (sent before it) arrived
        except Exception:  # noqa: BLE001 - a dead backend has nothing left to cancel
            pass
    finally:
        client.close()


def main(argv: list[str]) -> int:
    plugin_dir, connection_file, job_id = argv
    sys.path.insert(0, plugin_dir)
    if watch(sys.stdin.buffer):
        send_cancel(Path(connection_file), job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
