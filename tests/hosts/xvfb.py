"""One Xvfb X server for the real-host tests (Krita, and GIMP in its chroot), started once per test session.

``xvfb-run -a`` per host run picked a display number by looking for lock files and did not wait for the
previous server to go: Krita once aborted with "could not connect to display :99" right after another run.
Here Xvfb picks a free display itself (``-displayfd``) and writes the number only once it accepts
connections; we then also wait for its socket. GIMP in the chroot reaches the same server through the abstract
socket ``@/tmp/.X11-unix/X<n>`` (a chroot shares the network namespace; libxcb tries the abstract socket first),
so nothing needs to be bind-mounted.

Also usable by hand: ``python -m tests.hosts.xvfb`` prints a DISPLAY and keeps the server until Enter.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCREEN = "1280x1024x24"
SOCKET_DIR = Path("/tmp/.X11-unix")


def available() -> bool:
    return shutil.which("Xvfb") is not None


@dataclass
class Xvfb:
    proc: subprocess.Popen
    number: int
    log: Path  # its stderr (a file: a pipe nobody reads would fill and stall the server)

    @property
    def display(self) -> str:
        return f":{self.number}"

    @property
    def env(self) -> dict[str, str]:
        """What a host process needs to use this server (no Xauthority: the server trusts local clients)."""
        return {"DISPLAY": self.display}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(screen: str = SCREEN, timeout: float = 60.0, log: Path | None = None) -> Xvfb:
    """Start Xvfb on a display number it finds free; return once it accepts connections."""
    if log is None:
        fd, name = tempfile.mkstemp(prefix="layeredit-xvfb-", suffix=".log")
        os.close(fd)
        log = Path(name)
    read_end, write_end = os.pipe()
    try:
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [
                    "Xvfb",
                    "-displayfd",
                    str(write_end),
                    "-screen",
                    "0",
                    screen,
                    "-nolisten",
                    "tcp",
                    "-noreset",
                ],
                pass_fds=(write_end,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
    finally:
        os.close(write_end)
    try:
        number = _read_display(read_end, proc, log, timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(read_end)
    server = Xvfb(proc, number, log)
    _wait_ready(server, timeout)
    return server


def _read_display(fd: int, proc: subprocess.Popen, log: Path, timeout: float) -> int:
    """Xvfb writes "<n>\\n" to -displayfd once it listens; EOF first means it died."""
    data, end = b"", time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"Xvfb did not report a display within {timeout:.0f} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                err = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Xvfb exited before it listened (rc={proc.wait()}): {err}")
            data += chunk
    return int(data.strip())


def _wait_ready(server: Xvfb, timeout: float) -> None:
    """The socket exists and (when xdpyinfo is installed) a client can talk to the server."""
    sock, end = SOCKET_DIR / f"X{server.number}", time.monotonic() + timeout
    xdpyinfo = shutil.which("xdpyinfo")
    while True:
        if not server.alive():
            raise RuntimeError(f"Xvfb {server.display} exited (rc={server.proc.returncode})")
        if sock.exists():
            if xdpyinfo is None:
                return
            probe = subprocess.run(
                [xdpyinfo, "-display", server.display], capture_output=True, timeout=max(1.0, timeout)
            )
            if probe.returncode == 0:
                return
        if time.monotonic() > end:
            raise RuntimeError(f"Xvfb {server.display} does not accept connections after {timeout:.0f} s")
        time.sleep(0.05)  # polling a condition, not synchronising on time


if __name__ == "__main__":  # pragma: no cover - manual use
    x = start()
    print(f"DISPLAY={x.display}", flush=True)
    try:
        input("Enter stops Xvfb\n")
    finally:
        x.stop()
