"""Host-neutral plugin logic (protocol/hostkit/): regions, selection maths, forms, job states."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import (
    Form,
    JobState,
    JobTracker,
    Rect,
    backend_status,
    device_words,
    forms_from_hello,
    layer_name,
    mask_bounds,
    mask_coverage,
    mode_by_label,
    no_backend_status,
    no_selection_message,
    only_changed,
    op_reach,
    outline_rects,
    plan_region,
    stage_words,
    unique_name,
)

ERASE, REPLACE, IMAGIC = (mode_by_label(n) for n in ("Erase", "Replace", "Imagic"))


def test_rect_intersection_and_corners():
    a = Rect(0, 0, 10, 10)
    assert a.intersect(Rect(5, 5, 10, 10)) == Rect(5, 5, 5, 5)
    assert a.intersect(Rect(20, 20, 5, 5)).empty
    assert Rect.from_corners(2, 3, 7, 9) == Rect(2, 3, 5, 6)
    assert a.grow(2) == Rect(-2, -2, 14, 14)
    assert a.contains(Rect(1, 1, 2, 2)) and not a.contains(Rect(9, 9, 2, 2))


CANVAS = Rect(0, 0, 1000, 800)


def test_selection_region_gets_context_and_stays_on_the_layer():
    plan = plan_region(IMAGIC, Rect(0, 0, 1000, 800), CANVAS, Rect(100, 100, 40, 20))
    assert plan.selection == Rect(100, 100, 40, 20)
    assert plan.region == Rect(68, 68, 104, 84)  # 32 px minimum context
    big = plan_region(IMAGIC, Rect(0, 0, 1000, 800), CANVAS, Rect(400, 300, 200, 100))
    assert big.region == Rect(300, 200, 400, 300)  # half the larger side
    # erase reads further (its fill crop, tests/test_hostkit_region.py): what it reads, clipped to the layer
    erase = plan_region(ERASE, Rect(0, 0, 1000, 800), CANVAS, Rect(400, 300, 20, 10))
    assert erase.region == Rect(400, 300, 20, 10).grow(op_reach("erase", 20))


def test_selection_larger_than_layer_is_clipped_to_the_layer():
    layer = Rect(200, 150, 100, 80)
    plan = plan_region(REPLACE, layer, CANVAS, Rect(0, 0, 1000, 800))
    assert plan.selection == layer and plan.region == layer


def test_layer_hanging_off_the_canvas_sends_only_the_canvas_part():
    plan = plan_region(IMAGIC, Rect(-50, -20, 300, 100), CANVAS, None)
    assert plan.region == Rect(0, 0, 250, 80) and plan.selection is None


def test_no_selection_imagic_uses_the_whole_layer_erase_says_what_to_do():
    assert plan_region(IMAGIC, Rect(10, 10, 50, 50), CANVAS, None).region == Rect(10, 10, 50, 50)
    for mode in (ERASE, REPLACE):
        with pytest.raises(ProtocolError) as err:
            plan_region(mode, Rect(10, 10, 50, 50), CANVAS, None)
        assert err.value.code == ErrorCode.NO_SELECTION
        assert err.value.message == no_selection_message(mode)
        assert "select" in err.value.message


def test_selection_missing_the_layer_and_empty_layer_are_clear_errors():
    with pytest.raises(ProtocolError) as err:
        plan_region(ERASE, Rect(0, 0, 50, 50), CANVAS, Rect(500, 500, 10, 10))
    assert err.value.code == ErrorCode.NO_SELECTION
    with pytest.raises(ProtocolError) as err:
        plan_region(IMAGIC, Rect(2000, 2000, 10, 10), CANVAS, None)
    assert err.value.code == ErrorCode.MISSING_INPUT


rects = st.builds(
    Rect, st.integers(-300, 1200), st.integers(-300, 1000), st.integers(0, 600), st.integers(0, 600)
)


@given(layer=rects, sel=st.one_of(st.none(), rects))
def test_region_is_always_inside_layer_and_canvas_and_holds_the_selection(layer, sel):
    try:
        plan = plan_region(IMAGIC, layer, CANVAS, sel)
    except ProtocolError as err:
        assert err.code in (ErrorCode.NO_SELECTION, ErrorCode.MISSING_INPUT)
        return
    assert not plan.region.empty
    assert layer.contains(plan.region) and CANVAS.contains(plan.region)
    if plan.selection is not None:
        assert plan.region.contains(plan.selection)
        assert sel.contains(plan.selection)


def test_mask_coverage_and_bounds():
    w, h = 6, 4
    m = bytearray(w * h)
    assert mask_coverage(m) == 0 and mask_bounds(m, w, h) is None
    m[1 * w + 2] = 255
    m[2 * w + 4] = 7
    assert mask_coverage(m) == 2
    assert mask_bounds(m, w, h) == Rect(2, 1, 3, 2)
    with pytest.raises(ProtocolError):
        mask_bounds(m, 5, 4)


HELLO = {
    "ops": [
        {
            "name": "replace",
            "help": "Replace the object",
            "needs_image": True,
            "needs_selection": True,
            "params": [
                {"name": "prompt", "type": "str", "default": "", "help": "what"},
                {"name": "negative_prompt", "type": "str", "default": "", "help": "not"},
                {"name": "steps", "type": "int", "default": 20, "help": "s", "min": 1, "max": 100},
                {"name": "strength", "type": "float", "default": 1.0, "help": "s", "min": 0.0, "max": 1.0},
                {"name": "snap", "type": "enum", "default": "auto", "help": "s", "choices": ["auto", "none"]},
                {"name": "seed", "type": "int", "default": -1, "help": "s", "advanced": True},
                {"name": "etas", "type": "float_list", "default": [0.7], "help": "e", "advanced": True},
                {"name": "grow", "type": "bool", "default": True, "help": "g", "advanced": True},
            ],
        }
    ]
}


def test_form_from_hello_splits_basic_and_advanced_and_keeps_prompts_apart():
    form = forms_from_hello(HELLO)["replace"]
    assert [f.name for f in form.basic] == ["steps", "strength", "snap"]
    assert [f.name for f in form.advanced] == ["seed", "etas", "grow"]
    assert form.params() == {
        "prompt": "",
        "negative_prompt": "",
        "steps": 20,
        "strength": 1.0,
        "snap": "auto",
        "seed": -1,
        "etas": [0.7],
        "grow": True,
    }


def test_form_parses_widget_text_and_rejects_bad_values_with_bad_param():
    form = Form.from_op_json(HELLO["ops"][0])
    form.set("steps", "30")
    form.set("strength", "0.5")
    form.set("etas", "0.6, 0.8")
    form.set("grow", "no")
    p = form.params(prompt="a red car", unknown_thing=3)
    assert (p["steps"], p["strength"], p["etas"], p["grow"], p["prompt"]) == (
        30,
        0.5,
        [0.6, 0.8],
        False,
        "a red car",
    )
    assert "unknown_thing" not in p
    for name, bad in [
        ("steps", "2.5"),
        ("steps", "500"),
        ("strength", "abc"),
        ("snap", "maybe"),
        ("etas", ""),
    ]:
        with pytest.raises(ProtocolError) as err:
            form.set(name, bad)
        assert err.value.code == ErrorCode.BAD_PARAM and err.value.details == {"param": name}
    assert form.values["steps"] == 30  # a rejected value leaves the old one
    assert form.field("etas").to_text([0.6, 0.8]) == "0.6, 0.8"
    form.reset()
    assert form.values["steps"] == 20


def test_only_changed_finds_eta_only_resubmits():
    a = {"prompt": "a dog", "eta": 0.7, "seed": 1}
    assert only_changed(a, {**a, "eta": 0.8}) == {"eta"}
    assert only_changed(None, a) == set(a)


def test_job_happy_path_and_progress():
    job = JobTracker()
    assert job.submitting() and job.busy
    assert job.accepted("j1") and job.state == JobState.RUNNING
    assert job.progress("denoise", 3, 10) and job.fraction == pytest.approx(0.3)
    assert "Painting 3/10" in job.status_text and job.stage == "denoise"  # plain words; the raw stage kept
    assert job.finished() and not job.busy and job.fraction == 1.0
    assert job.submitting()  # the next run starts from a finished job


def test_stage_words_are_plain_and_unknown_stages_pass_through():
    assert [stage_words(s) for s in ("snap", "fill", "composite")] == [
        "Finding the object",
        "Filling",
        "Blending",
    ]
    assert stage_words("inverting") == "inverting"  # a newer backend's (or a test op's) stage, as sent


def test_progress_bar_is_reset_per_job_and_says_the_outcome():
    """The bar never carries the last job's "composite 100%" into the next one."""
    job = JobTracker()
    assert (job.bar_text, job.bar_fraction) == ("", 0.0)
    job.submitting()
    job.accepted("j1")
    assert job.bar_text == "Queued…"
    job.progress("composite", 3, 3)
    assert (job.bar_text, job.bar_fraction) == ("Blending %p%", 1.0)
    job.finished()
    assert (job.bar_text, job.bar_fraction) == ("Done", 1.0)
    job.submitting()
    assert (job.bar_text, job.bar_fraction, job.stage_label) == ("Sending…", 0.0, "")
    job.accepted("j2")
    job.progress("snap", 0, 3)
    assert job.bar_text == "Finding the object %p%"
    job.failed(ErrorCode.MODEL_MISSING, "No inpainting model.")
    assert (job.bar_text, job.bar_fraction) == ("Failed", 0.0)


def test_connection_line_says_where_and_on_what_with_details_in_the_tooltip():
    hello = {"backend_version": "0.9", "devices": ["cpu"]}
    line, tip = backend_status(hello, "tcp://127.0.0.1:5123")
    assert (
        line == "Backend: running on this computer (CPU)" and "tcp://127.0.0.1:5123" in tip and "0.9" in tip
    )
    line, _ = backend_status({"devices": ["cuda:0"]}, "tcp://gpu.lan:5555", "studio")
    assert line == "Backend: running on remote studio (GPU)"
    assert device_words(["mps"]) == "Apple GPU" and device_words(["cuda:0", "cuda:1"]) == "GPU"
    assert backend_status({"devices": ["auto"]}, "tcp://h:1")[0] == "Backend: running on this computer"
    line, tip = no_backend_status("No backend is running (no connection file at /x).", remote=False)
    assert "python -m backend" not in line and "Connect" in line and "/x" in tip


def test_cancel_then_late_messages_do_not_revive_the_job():
    job = JobTracker()
    job.submitting()
    job.accepted("j1")
    assert job.cancel() and job.state == JobState.CANCELLING
    assert job.failed(ErrorCode.CANCELLED, "cancelled") and job.state == JobState.CANCELLED
    assert not job.progress("denoise", 4, 10)
    assert not job.finished()
    assert job.state == JobState.CANCELLED and not job.busy


def test_cancel_before_job_id_arrives_keeps_the_id_for_the_cancel():
    job = JobTracker()
    job.submitting()
    assert job.cancel()
    assert job.accepted("j9") and job.job_id == "j9" and job.state == JobState.CANCELLING


def test_failure_message_carries_code():
    job = JobTracker()
    job.submitting()
    job.accepted("j1")
    assert job.failed(ErrorCode.BACKEND_GONE, "The backend stopped answering.")
    assert job.status_text.startswith("Failed (backend_gone)")
    assert not job.accepted("j2")


def test_cancel_while_starting_backend_is_immediate():
    job = JobTracker()
    assert job.starting_backend()
    assert job.cancel() and job.state == JobState.CANCELLED


def test_layer_names():
    assert layer_name(ERASE, {}) == "Erase"
    assert layer_name(REPLACE, {"prompt": "  a red\n car "}) == "Replace: a red car"
    assert layer_name(IMAGIC, {"prompt": "a dog", "eta": 0.7}) == "Imagic η0.7: a dog"
    long = layer_name(REPLACE, {"prompt": "x" * 100})
    assert len(long) <= len("Replace: ") + 48 and long.endswith("…")
    assert unique_name("Erase", ["Erase", "Erase (2)"]) == "Erase (3)"
    assert unique_name("Erase", ["Other"]) == "Erase"


@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_outline_rects_cover_exactly_the_selected_pixels_and_bridge_neighbouring_rows(w, h, data):
    """Krita draws marching ants from the union of these rectangles: it must be the selection, no more, no
    less, and rows that touch must overlap (a seam would show as a line of ants across the object)."""
    mask = bytes(data.draw(st.lists(st.sampled_from([0, 0, 1, 128, 255]), min_size=w * h, max_size=w * h)))
    covered = [[0] * w for _ in range(h)]
    rects = outline_rects(mask, w, h)
    for x, y, rw, rh in rects:
        assert rw > 0 and rh in (1, 2) and 0 <= x and x + rw <= w and 0 <= y and y + rh <= h
        for yy in range(y, y + rh):
            for xx in range(x, x + rw):
                covered[yy][xx] += 1
    for y in range(h):
        for x in range(w):
            assert (covered[y][x] > 0) == (mask[y * w + x] > 0)
            if y and mask[y * w + x] and mask[(y - 1) * w + x]:  # vertical neighbours: one rect holds both
                assert any(rx <= x < rx + rw and ry == y - 1 and rh == 2 for rx, ry, rw, rh in rects)
