"""Self-check: start the backend in a private runtime dir, say hello through the real client, stop it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .errors import InstallError

SELF_CHECK_TIMEOUT_S = 120.0


def run_self_check(project_root: Path, python: Path, timeout: float = SELF_CHECK_TIMEOUT_S) -> dict:
    """Prove the installed backend starts and answers `hello`; the backend's log is shown when it does not.

    Runs ``python -m backend serve`` in a private runtime dir, then ``python -m backend check`` in the venv (the
    client needs pyzmq, which only the venv has); waiting and stopping are the plugins' launcher's own."""
    from protocol import launcher  # stdlib only at import time, like this package

    runtime = Path(tempfile.mkdtemp(prefix="layeredit-check-"))
    os.chmod(runtime, 0o700)
    env = dict(os.environ, LAYEREDIT_RUNTIME_DIR=str(runtime))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project_root), env.get("PYTHONPATH")]))
    log_path = runtime / "self-check.log"
    connection = runtime / "backend.json"

    def log_tail() -> str:
        return launcher.tail(log_path, 40) or "(empty log)"

    with open(log_path, "w", encoding="utf-8") as log:
        server = subprocess.Popen(
            [str(python), "-m", "backend", "serve"],
            cwd=str(project_root),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        if launcher.wait_for_file(server, connection, timeout) != launcher.READY:
            if server.poll() is not None:
                raise InstallError(
                    f"self-check: `python -m backend serve` exited with status {server.returncode} before it was ready.\nbackend log:\n{log_tail()}"
                )
            raise InstallError(
                f"self-check: the backend wrote no {connection.name} within {timeout:.0f} s.\nbackend log:\n{log_tail()}"
            )
        check = [str(python), "-m", "backend", "check", "--connection-file", str(connection)]
        done = subprocess.run(
            [*check, "--wait", str(timeout / 2)],
            cwd=str(project_root),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise InstallError(
                f"self-check: the backend started but `hello` failed:\n{done.stderr.strip()[-2000:]}\nbackend log:\n{log_tail()}"
            )
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
            info, attempts = answer["hello"], answer["attempts"]
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise InstallError(f"self-check: `hello` printed no JSON: {done.stdout[-500:]!r}") from exc
        if attempts > 1:
            notes = "".join(f"\n      {line}" for line in done.stderr.strip().splitlines())
            print(f"    the backend was busy at first and answered hello on try {attempts}:{notes}")
        return info
    except subprocess.TimeoutExpired as exc:
        raise InstallError(
            f"self-check: `hello` got no answer within {timeout:.0f} s.\nbackend log:\n{log_tail()}"
        ) from exc
    finally:
        launcher.stop_process(server)
        shutil.rmtree(runtime, ignore_errors=True)


def describe_hello(info: Any) -> str:
    """One line from the hello reply: versions, devices and op names (whatever of them the backend sent)."""
    if not isinstance(info, dict):
        return "answered"
    bits = [
        f"{key} {info[key]}"
        for key in sorted(info)
        if "version" in key or key in ("protocol", "device", "devices")
    ]
    ops = info.get("ops")
    if isinstance(ops, dict):
        ops = list(ops)
    if isinstance(ops, list):
        names = [str(op.get("name", "?")) if isinstance(op, dict) else str(op) for op in ops]
        bits.append("ops: " + ", ".join(names))
    return "; ".join(bits) or "answered"
