"""The plugin's backend launcher (krita_plugin/layeredit/backend_proc.py): config, start, failure with its log."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from krita_plugin.layeredit import backend_proc
from protocol import connection
from protocol.client import Client

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("LAYEREDIT_PROJECT", raising=False)
    monkeypatch.delenv("LAYEREDIT_PYTHON", raising=False)
    return tmp_path / "run"


def wait_state(launcher: backend_proc.Launcher, limit: float = 90.0) -> str:
    end = time.monotonic() + limit
    while (state := launcher.poll()) == "starting":
        assert time.monotonic() < end, launcher.log_tail()
        time.sleep(0.1)
    return state


def test_config_from_installer_file_and_env_override(tmp_path, monkeypatch):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"project_root": "/p", "venv_python": "/p/.venv/bin/python"}))
    c = backend_proc.load_config(cfg)
    assert (c.project_root, c.venv_python) == (Path("/p"), Path("/p/.venv/bin/python"))
    assert not c.usable  # that python does not exist
    monkeypatch.setenv("LAYEREDIT_PYTHON", sys.executable)
    assert backend_proc.load_config(cfg).usable
    assert not backend_proc.load_config(tmp_path / "missing.json").usable


def test_unusable_config_says_how_to_fix():
    launcher = backend_proc.Launcher(backend_proc.Config(None, None))
    with pytest.raises(RuntimeError, match="install.py --krita"):
        launcher.start()


def test_failed_start_reports_exit_code_and_log(tmp_path):
    launcher = backend_proc.Launcher(backend_proc.Config(tmp_path, Path(sys.executable)))
    launcher.start()  # cwd has no 'backend' package: python exits at once
    assert wait_state(launcher) == "failed"
    text = launcher.failure_text()
    assert "exited with code 1" in text and "No module named backend" in text


def test_start_real_backend_then_connect(runtime):
    launcher = backend_proc.Launcher(backend_proc.Config(ROOT, ROOT / ".venv" / "bin" / "python"))
    launcher.start()
    try:
        assert wait_state(launcher) == "ready", launcher.log_tail()
        info = connection.read()
        assert info.pid == launcher.proc.pid  # it is the process we spawned, in our runtime dir
        with Client.connect() as client:
            assert "erase" in [op["name"] for op in client.hello()["ops"]]
    finally:
        launcher.proc.terminate()
        launcher.proc.wait(20)
