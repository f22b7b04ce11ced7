"""What the hosts tell users to install, and the Select object mode: hostkit's hints and install paths, the
schema's ``needs``, the presets ``hello`` reports, and ``install.py`` named by its absolute path."""

from __future__ import annotations

import pytest

from backend.models import ModelManager
from backend.models.presets import INCOMPLETE_MARKER, PRESETS
from backend.ops import product_registry
from backend.ops.erase import FILL_METHODS, fill_needs
from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import (
    MODES,
    SELECTION,
    Field,
    Form,
    Rect,
    install_py,
    installed_presets,
    mode_by_label,
    model_hint,
    model_hints,
    no_selection_message,
    plan_region,
    with_project_path,
)

# -- Select object -------------------------------------------------------------------------------------------


def test_modes_in_the_order_both_hosts_show_and_select_object_makes_a_selection():
    assert [m.label for m in MODES] == ["Erase", "Replace", "Imagic", "Select object"]
    select = mode_by_label("Select object")
    assert mode_by_label("snap") is select and select.op == "snap"
    assert select.output == SELECTION and not select.makes_layer and not select.snaps
    assert [m.op for m in MODES if m.snaps] == ["erase", "replace"]  # "select the snapped object afterwards"
    assert all(m.makes_layer for m in MODES if m is not select)


def test_select_object_needs_a_selection_and_says_so():
    select = mode_by_label("Select object")
    with pytest.raises(ProtocolError) as err:
        plan_region(select, Rect(0, 0, 100, 100), Rect(0, 0, 100, 100), None)
    assert err.value.code == ErrorCode.NO_SELECTION
    assert err.value.message == no_selection_message(select)
    assert "object you want to select" in err.value.message
    plan = plan_region(select, Rect(0, 0, 400, 300), Rect(0, 0, 400, 300), Rect(100, 100, 40, 40))
    assert plan.selection == Rect(100, 100, 40, 40) and plan.region.contains(plan.selection)


def test_the_product_has_the_op_select_object_runs():
    spec = {s.name: s for s in product_registry().specs()}["snap"]
    assert spec.needs_selection


# -- install.py by its absolute path -------------------------------------------------------------------------


def test_install_commands_name_the_projects_install_py(tmp_path):
    root = tmp_path / "my projects" / "layeredit"
    msg = (
        "The inpaint model (sd15-inpaint) is not installed. Install it with: python3 install.py --models sd15"
    )
    out = with_project_path(msg, root)
    assert out.endswith(f"Install it with: python3 '{root}/install.py' --models sd15")
    assert with_project_path("run `python3 install.py --gimp` in", "/opt/le") == (
        "run `python3 /opt/le/install.py --gimp` in"
    )
    two = with_project_path("python install.py --krita, then python3 install.py --models sam", "/opt/le")
    assert two == "python3 /opt/le/install.py --krita, then python3 /opt/le/install.py --models sam"
    # already absolute, a different file, or no known project (a remote backend's message): unchanged
    for text in ("python3 /srv/le/install.py --models sam", "python3 reinstall.py", "see install.py"):
        assert with_project_path(text, "/opt/le") == text
    assert with_project_path(msg, None) == msg and install_py(None) == "python3 install.py"


# -- install hints next to a choice that needs a model -------------------------------------------------------

FILL = {
    "name": "fill",
    "type": "enum",
    "default": "auto",
    "help": "fill",
    "choices": ["auto", "lama", "telea", "migan", "diffusion"],
    "needs": {"lama": "lama", "migan": "migan", "diffusion": "sd15-inpaint", "gone": "gone"},
}


def test_field_needs_keep_the_schemas_order():
    f = Field.from_json(FILL)
    assert f.needs == (("lama", "lama"), ("migan", "migan"), ("diffusion", "sd15-inpaint"))  # no "gone"
    other = Field.from_json({**FILL, "needs": {"diffusion": "sd15-inpaint", "lama": "lama"}})
    assert other.needs == (("diffusion", "sd15-inpaint"), ("lama", "lama"))  # the op recommends diffusion
    assert Field.from_json({**FILL, "needs": None}).needs == ()
    with pytest.raises(ProtocolError) as err:
        Field.from_json({**FILL, "needs": ["lama"]})
    assert err.value.code == ErrorCode.MALFORMED


def test_hint_only_when_no_needed_model_is_installed():
    f = Field.from_json(FILL)
    nothing = {"lama": False, "migan": False, "sd15-inpaint": False, "sam": True}
    hint = model_hint(f, nothing, "/opt/le")
    assert hint == (
        "Better fill quality needs a model (lama, migan or diffusion); none is installed. "
        "Install one with: python3 /opt/le/install.py --models lama"
    )
    assert model_hint(f, {**nothing, "migan": True}, "/opt/le") == ""  # one is there: nothing to say
    assert model_hint(f, None, "/opt/le") == ""  # a backend that does not report presets: no guess
    assert model_hint(Field.from_json({**FILL, "needs": {}}), nothing) == ""
    assert "python3 install.py --models lama" in model_hint(f, {})  # project unknown: the relative form
    form = Form.from_op_json({"name": "erase", "params": [FILL, {**FILL, "name": "other", "needs": {}}]})
    assert model_hints(form, nothing, "/opt/le") == {"fill": hint}
    assert model_hints(None, nothing) == {}


def test_installed_presets_from_hello():
    assert installed_presets({"presets": {"lama": 1, "sam": False}}) == {"lama": True, "sam": False}
    assert installed_presets({"presets": None}) is None and installed_presets({}) is None
    assert installed_presets(None) is None


def test_erase_schema_says_which_fills_need_which_preset():
    spec = {s.name: s for s in product_registry().specs()}["erase"].to_json()
    fill = next(p for p in spec["params"] if p["name"] == "fill")
    assert fill["needs"] == dict(fill_needs())
    assert fill["needs"]["diffusion"] == "sd15-inpaint"
    for choice, preset in fill["needs"].items():  # every needed preset is one install.py knows
        assert choice in FILL_METHODS and preset in PRESETS
    learned = [m for m in FILL_METHODS if m in PRESETS]  # learned fills are named after their presets
    assert all(fill["needs"][m] == m for m in learned)
    # recommended first: the learned fillers (small, CPU), diffusion (gigabytes, GPU) last
    assert list(fill["needs"]) == [*learned, "diffusion"]
    assert fill_needs(("auto", "telea")) == ()  # no fill that needs a model: no hint at all


# -- which presets are installed (file checks) ---------------------------------------------------------------


def _manager(models_dir, tmp_path) -> ModelManager:
    return ModelManager(
        models_dir=models_dir, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "no-cache"
    )


def test_installed_presets_checks_folders_and_interrupted_downloads(tmp_path):
    models = tmp_path / "models"
    (models / "sd15-inpaint").mkdir(parents=True)
    (models / "sam").mkdir()
    (models / "sam" / INCOMPLETE_MARKER).write_text("download started")
    installed = _manager(models, tmp_path).installed_presets()
    assert set(installed) == set(PRESETS)
    assert installed["sd15-inpaint"] is True
    assert installed["sam"] is False  # a broken-off download is not installed
    assert installed["sd15"] is False and installed["lcm-lora"] is False
    assert _manager(models, tmp_path).preset_installed("no-such-preset") is False


def _no_hf_cache(tmp_path, monkeypatch) -> None:
    """An empty Hugging Face cache: models cached on this machine must not change what "installed" means."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def test_hello_reports_presets_only_when_it_checked(tmp_path, monkeypatch):
    from backend.server import Server, ServerConfig
    from protocol.client import Client

    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    models = tmp_path / "models"
    (models / "sd15-inpaint").mkdir(parents=True)
    monkeypatch.setenv("LAYEREDIT_MODELS", str(models))
    _no_hf_cache(tmp_path, monkeypatch)
    for report, expect in ((True, True), (False, None)):
        conn = tmp_path / f"backend-{report}.json"
        srv = Server(ServerConfig(connection_file=conn, report_models=report)).start()
        try:
            client = Client.connect(conn)
            try:
                hello = client.hello()
            finally:
                client.close()
        finally:
            srv.stop()
        presets = installed_presets(hello)
        if expect is None:
            assert presets is None
            continue
        assert presets is not None and presets["sd15-inpaint"] is True and set(presets) == set(PRESETS)
        erase = Form.from_op_json(next(o for o in hello["ops"] if o["name"] == "erase"))
        assert ("diffusion", "sd15-inpaint") in erase.field("fill").needs
        assert model_hints(erase, presets, "/opt/le") == {}  # diffusion's model is installed here: no hint
        none = {name: False for name in presets}
        first = erase.field("fill").needs[0][1]
        assert model_hints(erase, none, "/opt/le")["fill"].endswith(f"/opt/le/install.py --models {first}")
