""".ci/run: the real script in a throw-away checkout whose install.py, pytest and host setups are stand-ins.

The stand-ins log what they were called with (and the LAYEREDIT_REQUIRE_HOSTS they saw), so these tests check the
order of the phases, that pytest's "no tests collected" fails the run, that failures stop it, and the time budget.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README_COMMAND = "python3 install.py --dev && .venv/bin/python -m pytest -q"

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("python3") is None, reason="needs bash"
)


def write_exec(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "checkout"
    write_exec(root / ".ci" / "run", (REPO / ".ci" / "run").read_text())
    log = root / "calls.log"
    (root / "install.py").write_text(
        "import os, sys\n"
        f"open({str(log)!r}, 'a').write('install ' + ' '.join(sys.argv[1:]) + '\\n')\n"
        "sys.exit(int(os.environ.get('FAKE_INSTALL_RC', '0')))\n"
    )
    write_exec(
        root / ".venv" / "bin" / "python",
        f'#!/bin/bash\necho "pytest $* hosts=$LAYEREDIT_REQUIRE_HOSTS" >> {log}\nexit "${{FAKE_PYTEST_RC:-0}}"\n',
    )
    for host in ("krita", "gimp"):
        write_exec(
            root / "tests" / "hosts" / host / "setup.sh",
            f'#!/bin/bash\necho "{host}-setup hosts=$LAYEREDIT_REQUIRE_HOSTS" >> {log}\n'
            f'sleep "${{FAKE_SETUP_SLEEP:-0}}"\nexit "${{FAKE_{host.upper()}_RC:-0}}"\n',
        )
    return root


def run_ci(root: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, CI="true", **env)
    full_env.pop("LAYEREDIT_REQUIRE_HOSTS", None)
    return subprocess.run(
        ["bash", str(root / ".ci" / "run")],
        env=full_env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def calls(root: Path) -> list[str]:
    log = root / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_ci_runs_the_readme_command_exactly():
    assert README_COMMAND in (REPO / ".ci" / "run").read_text()


def test_ci_passes_runs_host_setups_first_and_times_every_phase(checkout):
    done = run_ci(checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls(checkout) == [
        "krita-setup hosts=1",
        "gimp-setup hosts=1",
        "install --dev",
        "pytest -m pytest -q hosts=1",
    ]
    assert "CI PASSED" in done.stdout
    timings = done.stdout.split("=== CI timings ===")[1]
    for phase in ("python", "krita host setup", "gimp host setup", "install + tests"):
        assert f"  {phase}" in timings
    assert "total:" in timings


def test_ci_fails_when_pytest_collects_no_tests(checkout):
    done = run_ci(checkout, FAKE_PYTEST_RC="5")
    assert done.returncode == 1
    assert "collected no tests (exit 5)" in done.stderr
    assert "CI FAILED" in done.stderr and "CI PASSED" not in done.stdout


def test_ci_stops_at_a_failed_install_or_host_setup(checkout):
    done = run_ci(checkout, FAKE_INSTALL_RC="1")
    assert done.returncode == 1
    assert not any(call.startswith("pytest") for call in calls(checkout))
    (checkout / "calls.log").unlink()
    done = run_ci(checkout, FAKE_GIMP_RC="3")
    assert done.returncode == 1
    assert "tests/hosts/gimp/setup.sh failed" in done.stderr
    assert calls(checkout) == ["krita-setup hosts=1", "gimp-setup hosts=1"]


def test_ci_skips_missing_host_setups(checkout):
    shutil.rmtree(checkout / "tests" / "hosts")
    done = run_ci(checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no tests/hosts/krita/setup.sh: skipped" in done.stdout
    assert calls(checkout) == ["install --dev", "pytest -m pytest -q hosts=1"]


def test_ci_stops_a_phase_that_outruns_the_budget(checkout):
    done = run_ci(checkout, CI_BUDGET_S="2", FAKE_SETUP_SLEEP="30")
    assert done.returncode == 1
    assert "ran out of the 2 s CI budget" in done.stderr
    assert not any(call.startswith("install") for call in calls(checkout))
