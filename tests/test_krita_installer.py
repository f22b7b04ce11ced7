"""krita_plugin/installer.py: files in the resource folder, vendored protocol, kritarc edits, exact uninstall."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from krita_plugin import installer

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_install_lays_out_pykrita_vendors_protocol_and_enables_in_kritarc(tmp_path):
    res, rc = tmp_path / "krita", tmp_path / "config" / "kritarc"
    paths = installer.install(ROOT, tmp_path / "venv" / "bin" / "python", res, kritarc=rc)
    pkg = res / "pykrita" / "layeredit"
    desktop = (res / "pykrita" / "layeredit.desktop").read_text()
    assert desktop.count("X-KDE-Library=layeredit") == 1 and "Name=LayerEdit " in desktop
    (manual,) = [line.split("=", 1)[1] for line in desktop.splitlines() if line.startswith("X-Krita-Manual=")]
    assert (pkg / manual).is_file() and pkg / manual in paths  # Krita reads it from the package folder
    for name in ("__init__.py", "docker.py", "controller.py", "kritaio.py", "backend_proc.py", "scripted.py"):
        assert (pkg / name).exists() and pkg / name in paths
    vendored = pkg / "_vendor" / "protocol"
    sources = [p.relative_to(ROOT / "protocol") for p in (ROOT / "protocol").rglob("*.py")]
    assert Path("hostkit", "__init__.py") in sources and Path("client.py") in sources
    for rel in sources:  # the whole package, subpackages (hostkit/) included
        assert (vendored / rel).read_bytes() == (ROOT / "protocol" / rel).read_bytes()
    # Krita's Python sees only the vendored copy: the shared host logic imports from it alone
    code = "import protocol.hostkit as hk, sys; print(hk.__file__); print(hk.MODES[0].label)"
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(vendored.parent)!r}); {code}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout.split()
    assert Path(out[0]).is_relative_to(vendored) and out[1] == "Erase"
    assert not any("__pycache__" in str(p) for p in paths)
    config = json.loads((pkg / "config.json").read_text())
    assert config == {"project_root": str(ROOT), "venv_python": str(tmp_path / "venv" / "bin" / "python")}
    assert rc.read_text() == "[python]\nenable_layeredit=true\n"


def test_kritarc_edit_keeps_everything_else_and_uninstall_restores_it_byte_for_byte(tmp_path):
    res, rc = tmp_path / "krita", tmp_path / "kritarc"
    original = (
        "[General]\nLanguage=de\n; a comment\n\n[python]\nenable_other=true\nenable_layeredit=false\n"
        "[Toolbar]\nx=1"
    )
    rc.write_text(original)
    res.mkdir()
    (res / "mine.txt").write_text("user file")
    before = snapshot(res)
    installer.install(ROOT, "/venv/python", res, kritarc=rc)
    text = rc.read_text()
    assert "enable_layeredit=true" in text and "enable_layeredit=false" not in text
    assert text.startswith("[General]\nLanguage=de\n; a comment\n") and "enable_other=true" in text
    installer.install(ROOT, "/venv/python", res, kritarc=rc)  # a re-install is clean too
    removed = installer.install(ROOT, "/venv/python", res, kritarc=rc, uninstall=True)
    assert rc.read_text() == original
    assert snapshot(res) == before
    assert not (res / "pykrita").exists()
    assert rc in removed


@pytest.mark.parametrize(
    "original",
    ["[General]\nLanguage=de\n", "[General]\nLanguage=de\n[python]\nenable_other=true\n", None],
)
def test_uninstall_removes_exactly_the_key_and_section_it_added(tmp_path, original):
    rc = tmp_path / "kritarc"
    if original is not None:
        rc.write_text(original)
    installer.install(ROOT, "/venv/python", tmp_path / "res", kritarc=rc)
    assert "enable_layeredit=true" in rc.read_text()
    installer.install(ROOT, "/venv/python", tmp_path / "res", kritarc=rc, uninstall=True)
    if original is None:
        assert not rc.exists()
    else:
        assert rc.read_text() == original
    assert not (tmp_path / "res").exists()  # we created it, it is empty again: gone


def test_uninstall_keeps_user_files_inside_the_plugin_folder(tmp_path):
    res = tmp_path / "res"
    installer.install(ROOT, "/venv/python", res, kritarc=tmp_path / "kritarc")
    extra = res / "pykrita" / "layeredit" / "notes.txt"
    extra.write_text("mine")
    installer.install(ROOT, "/venv/python", res, kritarc=tmp_path / "kritarc", uninstall=True)
    assert extra.read_text() == "mine"
    assert not (res / "pykrita" / "layeredit" / "docker.py").exists()
    assert installer.install(ROOT, "/venv/python", res, kritarc=tmp_path / "kritarc", uninstall=True) == []


def test_pyzmq_wheel_for_kritas_python_is_unzipped_into_vendor(tmp_path, monkeypatch):
    wheel = tmp_path / "pyzmq-27.3.0-cp310-cp310-win_amd64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("zmq/__init__.py", "__version__ = '27.3.0'\n")
        zf.writestr("pyzmq-27.3.0.dist-info/METADATA", "Name: pyzmq\n")
    calls = []

    def fake_download(target, version, platform_tag, venv_python):
        calls.append((version, platform_tag))
        return installer.unzip_wheel(wheel, target)

    monkeypatch.setattr(installer, "vendor_pyzmq", fake_download)
    res = tmp_path / "res"
    paths = installer.install(ROOT, "/venv/python", res, krita_python="3.10", kritarc=tmp_path / "kritarc")
    vendored = res / "pykrita" / "layeredit" / "_vendor" / "zmq" / "__init__.py"
    assert vendored in paths and calls == [("3.10", installer.pyzmq_platform_tag())]
    installer.install(ROOT, "/venv/python", res, kritarc=tmp_path / "kritarc", uninstall=True)
    assert not vendored.exists() and not res.exists()


def test_unzip_refuses_paths_outside_the_target(tmp_path):
    wheel = tmp_path / "evil.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("../escape.py", "x")
    with pytest.raises(RuntimeError, match="outside"):
        installer.unzip_wheel(wheel, tmp_path / "target")
    assert not (tmp_path / "escape.py").exists()


def test_default_folders_follow_xdg_on_linux(tmp_path, monkeypatch):
    monkeypatch.setattr(installer.sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert installer.default_resource_dir() == tmp_path / "data" / "krita"
    assert installer.default_kritarc() == tmp_path / "cfg" / "kritarc"
    monkeypatch.setattr(installer.sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", str(tmp_path / "roaming"))
    assert installer.default_resource_dir() == tmp_path / "roaming" / "krita"
    monkeypatch.setattr(installer.sys, "platform", "darwin")
    assert installer.default_resource_dir() == Path.home() / "Library" / "Application Support" / "krita"
