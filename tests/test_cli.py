"""`python -m backend <op>`: options from the schemas, image I/O keeping depth and alpha, errors, progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from backend.cli import main
from tests.test_server_support import registry, running_server

ROOT = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    code = main(argv, registry=registry(), models_factory=None)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_ops(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"], registry=registry(), models_factory=None)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("serve", "check", "schemas", "keys", "echo", "steps", "Return the image as received"):
        assert name in out


def test_op_help_lists_params_from_the_schema(capsys):
    with pytest.raises(SystemExit):
        main(["echo", "--help"], registry=registry(), models_factory=None)
    out = capsys.readouterr().out
    for option in (
        "--invert",
        "--no-invert",
        "--gains",
        "--label",
        "--mode",
        "{plain,fancy}",
        "--count",
        "--selection",
    ):
        assert option in out
    assert "range 0..5" in out or "range 0.0..5.0" in out


def _write_rgba16(path: Path, rgba: np.ndarray) -> None:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]]))


def test_16bit_rgba_png_keeps_depth_alpha_and_pixels(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 65535, (20, 30, 4), endpoint=True).astype(np.uint16)
    _write_rgba16(tmp_path / "in.png", rgba)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 3:8] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    code, out, err = run(
        [
            "echo",
            str(tmp_path / "in.png"),
            "--selection",
            str(tmp_path / "mask.png"),
            "--out",
            str(tmp_path / "out.png"),
            "--mask-out",
            str(tmp_path / "snapped.png"),
            "--gains",
            "0.5,0.6",
            "--no-invert",
            "--mode",
            "fancy",
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["params"]["gains"] == [0.5, 0.6] and report["params"]["mode"] == "fancy"
    assert report["meta"]["dtype"] == "uint16" and report["meta"]["shape"] == [20, 30, 4]
    back = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == (20, 30, 4)
    assert np.array_equal(back[:, :, [2, 1, 0, 3]], rgba)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "snapped.png")), mask)


def test_8bit_rgb_with_op_params(tmp_path, capsys):
    rgb = np.random.default_rng(2).integers(0, 255, (8, 9, 3), endpoint=True).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    code, _, err = run(
        ["echo", str(tmp_path / "in.png"), "--out", str(tmp_path / "o.png"), "--invert"], capsys
    )
    assert code == 0, err
    out = Image.open(tmp_path / "o.png")
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), 255 - rgb)


def test_8bit_rgba_keeps_alpha(tmp_path, capsys):
    rgba = np.random.default_rng(3).integers(0, 255, (5, 7, 4), endpoint=True).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    code, _, err = run(["echo", str(tmp_path / "in.png"), "--out", str(tmp_path / "o.png")], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), rgba)


def test_progress_goes_to_stderr(tmp_path, capsys):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "in.png")
    code, _, err = run(
        ["steps", str(tmp_path / "in.png"), "--out", str(tmp_path / "o.png"), "--steps", "3"], capsys
    )
    assert code == 0 and "sleep: 3/3" in err


@pytest.mark.parametrize(
    ("extra", "code_text"),
    [
        (["--count", "9"], "bad_param"),
        (["--selection", "{small}"], "bad_buffer"),
    ],
)
def test_errors_exit_nonzero_with_the_code(tmp_path, capsys, extra, code_text):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "in.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "small.png")
    extra = [e.format(small=tmp_path / "small.png") for e in extra]
    code, _, err = run(["echo", str(tmp_path / "in.png"), "--out", str(tmp_path / "o.png"), *extra], capsys)
    assert code != 0 and f"[{code_text}]" in err
    assert not (tmp_path / "o.png").exists()


def test_missing_selection_and_missing_file(tmp_path, capsys):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "in.png")
    code, _, err = run(["needsel", str(tmp_path / "in.png"), "--out", str(tmp_path / "o.png")], capsys)
    assert code != 0 and "[no_selection]" in err
    code, _, err = run(["echo", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o.png")], capsys)
    assert code != 0 and "[missing_input]" in err


def test_bad_option_value_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["echo", "x.png", "--out", "o.png", "--gains", "a,b"], registry=registry(), models_factory=None)
    assert exc.value.code == 2


def test_python_m_backend_uses_the_registry_from_the_environment(tmp_path):
    env = dict(os.environ, LAYEREDIT_REGISTRY="tests.test_server_support:registry", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "backend", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "needsel" in done.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "backend",
            "serve",
            "--host",
            "0.0.0.0",
            "--connection-file",
            str(tmp_path / "b.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "loopback" in bad.stderr


def test_mask_only_op_writes_its_mask_to_out(tmp_path, capsys):
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "in.png")
    sel = np.zeros((4, 6), np.uint8)
    sel[1:3, 2:5] = 255
    Image.fromarray(sel).save(tmp_path / "sel.png")
    code, _, err = run(
        [
            "maskonly",
            str(tmp_path / "in.png"),
            "--selection",
            str(tmp_path / "sel.png"),
            "--out",
            str(tmp_path / "m.png"),
        ],
        capsys,
    )
    assert code == 0, err
    out = Image.open(tmp_path / "m.png")
    assert out.mode == "L" and np.array_equal(np.asarray(out), 255 - sel)


def test_schemas_prints_every_ops_schema_as_json(capsys):
    code, out, _ = run(["schemas"], capsys)
    assert code == 0
    schemas = json.loads(out.strip())  # one line: hosts read the last line of the output
    assert schemas == [spec.to_json() for spec in registry().specs()]
    echo = next(s for s in schemas if s["name"] == "echo")
    assert "invert" in {p["name"] for p in echo["params"]}


def test_python_m_backend_schemas_lists_the_product_ops_without_a_backend(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), LAYEREDIT_RUNTIME_DIR=str(tmp_path / "run"))
    env.pop("LAYEREDIT_REGISTRY", None)
    done = subprocess.run(
        [sys.executable, "-m", "backend", "schemas"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    names = {s["name"] for s in json.loads(done.stdout.strip().splitlines()[-1])}
    assert {"erase", "replace", "imagic"} <= names
    assert not (tmp_path / "run" / "backend.json").exists()  # no backend was started


def test_check_says_hello_to_a_running_backend(tmp_path, capsys):
    with running_server(tmp_path) as _:
        code, out, err = run(["check", "--connection-file", str(tmp_path / "backend.json")], capsys)
    assert code == 0, err
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer["attempts"] == 1
    assert "echo" in [op["name"] for op in answer["hello"]["ops"]]


def test_check_without_a_backend_fails_with_the_code(tmp_path, capsys):
    code, out, err = run(["check", "--connection-file", str(tmp_path / "nothing.json")], capsys)
    assert code == 1 and out == ""
    assert "error [no_backend]" in err
