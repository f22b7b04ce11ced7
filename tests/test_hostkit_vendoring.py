"""protocol/vendoring.py: what both installers share (pyzmq wheel for the host's Python, safe unzip, exact
uninstall) and what both plugins run first (vendored folders first on sys.path)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from gimp_plugin import installer as gimp_installer
from krita_plugin import installer as krita_installer
from protocol import vendoring


def test_both_installers_use_the_shared_functions():
    assert krita_installer.vendor_pyzmq is vendoring.vendor_pyzmq
    assert krita_installer.unzip_wheel is vendoring.unzip_wheel
    assert gimp_installer.vendor_pyzmq is vendoring.vendor_pyzmq
    assert gimp_installer.pip_platform_tag is vendoring.pip_platform_tag
    assert krita_installer.PYZMQ_VERSION == gimp_installer.PYZMQ_VERSION == vendoring.PYZMQ_VERSION


def test_put_first_on_path_orders_and_dedupes(tmp_path, monkeypatch):
    a, b, missing = tmp_path / "vendor", tmp_path / "plugin", tmp_path / "missing"
    a.mkdir()
    b.mkdir()
    monkeypatch.setattr(sys, "path", ["/x", str(a), "/y", str(a)])
    vendoring.put_first_on_path(a, b, missing)
    assert sys.path == [str(a), str(b), "/x", "/y"]  # first named first, once; missing folders skipped
    vendoring.put_first_on_path(a, b)
    assert sys.path == [str(a), str(b), "/x", "/y"]  # idempotent (a host re-importing the plugin)


def test_unzip_wheel_and_refuse_escapes(tmp_path):
    wheel = tmp_path / "pyzmq-27.3.0-cp312-cp312-win_amd64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("zmq/__init__.py", "x")
        zf.writestr("pyzmq-27.3.0.dist-info/WHEEL", "Tag: cp312-cp312-win_amd64\n")
    files = vendoring.unzip_wheel(wheel, tmp_path / "vendor")
    assert sorted(p.relative_to(tmp_path / "vendor").as_posix() for p in files) == [
        "pyzmq-27.3.0.dist-info/WHEEL",
        "zmq/__init__.py",
    ]
    evil = tmp_path / "evil.whl"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.py", "x")
    with pytest.raises(RuntimeError, match="outside"):
        vendoring.unzip_wheel(evil, tmp_path / "t" / "vendor")
    assert not (tmp_path / "escape.py").exists()


def test_failed_download_says_which_python_and_platform(tmp_path):
    broken_pip = tmp_path / "python"
    broken_pip.write_text("#!/bin/sh\necho 'No matching distribution found' >&2\nexit 1\n")
    broken_pip.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"Python 3\.12 \(win_amd64\).*No matching distribution"):
        vendoring.vendor_pyzmq(tmp_path / "vendor", "3.12", "win_amd64", broken_pip)


def test_python_tags_and_can_import_ask_the_other_python(tmp_path):
    fake = tmp_path / "python"  # answers like GIMP's bundled Python on Windows, without zmq
    fake.write_text('#!/bin/sh\ncase "$2" in *"import zmq"*) exit 1;; esac\necho "3.12 win-amd64"\n')
    fake.chmod(0o755)
    assert vendoring.python_tags(fake) == ("3.12", "win_amd64")
    assert not vendoring.can_import(fake, "zmq")
    assert vendoring.can_import(Path(sys.executable), "json")


def test_remove_installed_keeps_user_files_and_removes_caches(tmp_path):
    root = tmp_path / "plugin"
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    ours = [root / "a.py", root / "pkg" / "b.py"]
    for p in ours:
        p.write_text("x")
    (root / "pkg" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"x")  # written by the host's Python
    (root / "mine.txt").write_text("user data")
    outside = tmp_path / "elsewhere.py"
    outside.write_text("x")
    files, folders = vendoring.remove_installed([*ours, outside, root / "never-there.py"], root)
    assert files == ours and folders == [root / "pkg"]
    assert outside.exists()  # listed but outside the plugin folder: never touched
    assert (root / "mine.txt").read_text() == "user data"  # a user's file keeps its folder
    (root / "mine.txt").unlink()
    assert vendoring.remove_installed([], root) == ([], [root])
