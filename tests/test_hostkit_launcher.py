"""The one backend launcher both plugins use (protocol/launcher.py), and each plugin's thin glue around it:
config, detached start, stale connection file, failure with its log, bounded waits."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from krita_plugin.layeredit import backend_proc
from protocol import connection, launcher
from protocol.errors import ErrorCode, ProtocolError

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


@pytest.fixture(autouse=True)
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("LAYEREDIT_PROJECT", raising=False)
    monkeypatch.delenv("LAYEREDIT_PYTHON", raising=False)
    return tmp_path / "run"


def make(config: launcher.LaunchConfig, timeout: float = launcher.START_TIMEOUT_S) -> launcher.Launcher:
    return launcher.Launcher(config, host="test", install_hint="python3 install.py --test", timeout=timeout)


def wait_state(lau: launcher.Launcher, limit: float = 90.0) -> str:
    end = time.monotonic() + limit
    while (state := lau.poll()) == launcher.STARTING:
        assert time.monotonic() < end, lau.log_tail()
        time.sleep(0.1)
    return state


def test_config_from_installer_file_and_env_override(tmp_path, monkeypatch):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"project_root": "/p", "venv_python": "/p/.venv/bin/python"}))
    c = launcher.load_config(cfg)
    assert (c.project_root, c.venv_python) == (Path("/p"), Path("/p/.venv/bin/python"))
    assert not c.usable  # that python does not exist
    env = {"LAYEREDIT_PYTHON": sys.executable}
    assert launcher.load_config(cfg, env).usable
    assert not launcher.load_config(cfg).usable  # without environ the file alone decides (GIMP)
    assert not launcher.load_config(tmp_path / "missing.json").usable
    (tmp_path / "bad.json").write_text("[1, 2")
    assert launcher.load_config(tmp_path / "bad.json") == launcher.LaunchConfig(None, None)


def test_krita_glue_reads_its_config_and_honours_the_env(tmp_path, monkeypatch):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"project_root": str(ROOT), "venv_python": "/nonexistent/python"}))
    assert not backend_proc.load_config(cfg).usable
    monkeypatch.setenv("LAYEREDIT_PYTHON", sys.executable)
    assert backend_proc.load_config(cfg).usable
    lau = backend_proc.new_launcher(backend_proc.load_config(cfg))
    assert lau.log.name == "backend-started-by-krita.log" and lau.install_hint.endswith("--krita")


def test_unusable_config_says_how_to_fix():
    lau = backend_proc.new_launcher(launcher.LaunchConfig(None, None))
    with pytest.raises(ProtocolError, match="install.py --krita") as err:
        lau.start()
    assert err.value.code == ErrorCode.NO_BACKEND
    assert lau.poll() == launcher.FAILED  # nothing was started: polling says so instead of waiting


def test_failed_start_reports_exit_code_and_log(tmp_path):
    lau = make(launcher.LaunchConfig(tmp_path, Path(sys.executable)))
    lau.start()  # cwd has no 'backend' package: python exits at once
    assert wait_state(lau) == launcher.FAILED
    text = lau.failure_text()
    assert "exited with code 1" in text and "No module named backend" in text
    assert f"cd {tmp_path} && {sys.executable} -m backend serve" in text  # what to run by hand
    with pytest.raises(ProtocolError) as err:  # the blocking wait says the same, at once
        lau.wait(connect=lambda: pytest.fail("must not connect to a backend that exited"))
    assert err.value.code == ErrorCode.NO_BACKEND and "No module named backend" in err.value.message


def test_wait_is_bounded_when_the_backend_never_gets_ready(tmp_path):
    """A backend that neither exits nor writes its connection file: ``wait`` gives up after ``timeout``."""
    sleeper = tmp_path / "python"
    sleeper.write_text("#!/bin/sh\necho 'loading models'\nexec sleep 60\n")
    sleeper.chmod(0o755)
    lau = make(launcher.LaunchConfig(tmp_path, sleeper), timeout=1.0)
    lau.start()
    try:
        with pytest.raises(ProtocolError) as err:
            lau.wait(connect=lambda: pytest.fail("no connection file was written"))
        assert "did not start in time" in err.value.message and "loading models" in err.value.message
    finally:
        lau.proc.kill()
        lau.proc.wait()


def test_wait_gives_up_when_the_ready_backend_never_answers(tmp_path, runtime):
    """The connection file names a live process that does not answer: bounded too (no endless retries)."""
    sleeper = tmp_path / "python"
    sleeper.write_text("#!/bin/sh\nexec sleep 60\n")
    sleeper.chmod(0o755)
    lau = make(launcher.LaunchConfig(tmp_path, sleeper), timeout=1.0)
    lau.start()
    info = connection.ConnectionInfo(endpoint="tcp://127.0.0.1:9", key=connection.new_key(), pid=lau.proc.pid)
    connection.write(info)
    calls = []

    def refuse():
        calls.append(1)
        raise ProtocolError(ErrorCode.NO_BACKEND, "nothing answers")

    try:
        assert lau.poll() == launcher.READY
        with pytest.raises(ProtocolError, match="did not start in time"):
            lau.wait(connect=refuse, interval=0.05)
        assert len(calls) >= 2  # it retried while the deadline allowed
    finally:
        lau.proc.kill()
        lau.proc.wait()


def test_stale_connection_file_is_removed_but_a_live_one_kept(runtime):
    dead = connection.ConnectionInfo(endpoint="tcp://127.0.0.1:9", key=connection.new_key(), pid=2**22 + 7)
    connection.write(dead)
    launcher.remove_stale_connection_file()
    assert not connection.default_path().exists()  # a crashed backend's file would look like success
    alive = connection.ConnectionInfo(endpoint="tcp://127.0.0.1:9", key=connection.new_key(), pid=1)
    connection.write(alive)
    launcher.remove_stale_connection_file()
    assert connection.read().pid == 1
    connection.default_path().write_text("{half-written")
    launcher.remove_stale_connection_file()
    assert not connection.default_path().exists()


def test_start_real_backend_then_connect(runtime):
    lau = backend_proc.new_launcher(launcher.LaunchConfig(ROOT, VENV_PYTHON))
    lau.start()
    try:
        with lau.wait() as client:  # the blocking wait (GIMP's way) connects and pings
            assert "erase" in [op["name"] for op in client.hello()["ops"]]
        assert lau.poll() == launcher.READY  # the polling way (Krita's) agrees
        info = connection.read()
        assert info.pid == lau.proc.pid  # it is the process we spawned, in our runtime dir
    finally:
        lau.proc.terminate()
        lau.proc.wait(20)


def test_ask_schemas_from_the_venv_without_a_backend(tmp_path):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "noise on stdout"\necho \'[{"name": "erase", "params": []}]\'\n')
    fake.chmod(0o755)
    assert launcher.ask_schemas(launcher.LaunchConfig(tmp_path, fake)) == [{"name": "erase", "params": []}]
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'ImportError' >&2\nexit 1\n")
    broken.chmod(0o755)
    assert launcher.ask_schemas(launcher.LaunchConfig(tmp_path, broken)) is None
    assert launcher.ask_schemas(launcher.LaunchConfig(None, None)) is None


@pytest.mark.slow
def test_ask_schemas_from_the_real_venv_lists_the_product_ops():
    schemas = launcher.ask_schemas(launcher.LaunchConfig(ROOT, VENV_PYTHON))
    assert {"erase", "replace", "imagic"} <= {s["name"] for s in schemas}


def test_wait_for_file_ready_failed_and_stop_process(tmp_path):
    """The installer's self-check waits with these: ready once the file is there, failed once the process exited
    (before the timeout), and stop_process ends a live process and leaves an exited one alone."""
    import subprocess

    target = tmp_path / "backend.json"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import pathlib, time; pathlib.Path({str(target)!r}).write_text('{{}}'); time.sleep(60)",
        ]
    )
    try:
        assert launcher.wait_for_file(writer, target, timeout=60) == launcher.READY
    finally:
        launcher.stop_process(writer)
    assert writer.returncode is not None
    launcher.stop_process(writer)  # already gone: nothing to do
    quitter = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert launcher.wait_for_file(quitter, tmp_path / "never.json", timeout=60) == launcher.FAILED
    assert quitter.returncode == 3
