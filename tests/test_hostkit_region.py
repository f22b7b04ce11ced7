"""A host's edit is the CLI's edit: the region ``hostkit.plan_region`` sends holds everything the op reads.

The hosts send the selection's bounds plus context, the CLI the whole file; the backend crops further. Until
2026-11-28 the hosts sent half the selection's long side of context while erase's fill crop reached a whole one:
on examples/coffee.png the crop came out 2 px narrower, and PatchMatch repainted ~5,000 pixels differently from
the README's quick start (Krita and GIMP agreed with each other, byte for byte). Here a host's request is built
the way the Krita and GIMP adapters build it (krita_plugin/layeredit/kritaio.py, gimp_plugin's gimpio.py: the
selection's bounds, ``plan_region``, ``selection_to_send``, ``job_buffers`` in the host's own layout), sent
through a real in-process server with the product ops, and its answer pasted back as the hosts do, then compared
with what ``python -m backend erase`` writes for the whole image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.cli import main as cli_main
from backend.jobs import default_models
from backend.ops import product_registry
from backend.server import Server, ServerConfig
from protocol.client import Client
from protocol.hostkit import (
    Rect,
    mask_bounds,
    mode_by_label,
    op_reach,
    plan_region,
    result_image,
    result_mask,
    selection_to_send,
)
from protocol.hostkit import job_buffers as host_buffers

ROOT = Path(__file__).resolve().parents[1]
ERASE = mode_by_label("Erase")


@pytest.fixture
def backend(tmp_path, monkeypatch):
    """A real server with the product's ops on this machine's CPU, as ``python -m backend serve`` runs them."""
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    srv = Server(
        ServerConfig(connection_file=tmp_path / "backend.json", report_models=False, devices=("cpu",)),
        product_registry(),
        models_factory=default_models,
    ).start()
    client = Client.connect(srv.connection_file, check=False)
    try:
        yield client
    finally:
        client.close()
        srv.stop()


def host_erase(client: Client, rgb: np.ndarray, lasso: np.ndarray, order: str, params: dict):
    """Erase as a host does it on a layer covering the canvas: the layer's pixels in the host's layout
    (Krita U8: BGRA; GIMP: RGBA), the region ``plan_region`` picks, the answer pasted over the layer.
    Returns (the layer after, as RGB; the region sent; the region mask and object mask over the layer)."""
    h, w = lasso.shape
    layer = np.dstack([rgb[:, :, ::-1] if order == "BGRA" else rgb, np.full((h, w), 255, np.uint8)])
    canvas = Rect(0, 0, w, h)
    plan = plan_region(ERASE, canvas, canvas, mask_bounds(lasso.tobytes(), w, h), params=params)
    r = plan.region
    window = (slice(r.y, r.bottom), slice(r.x, r.right))
    selection = selection_to_send(ERASE, np.ascontiguousarray(lasso[window]).tobytes())
    image, sel = host_buffers(r, np.ascontiguousarray(layer[window]).tobytes(), "u8", order, selection)
    result = client.run("erase", params, image=image, selection=sel, timeout=300)
    after = layer.copy()
    after[window] = np.frombuffer(result_image(result.image, r, "u8", order), np.uint8).reshape(r.h, r.w, 4)
    masks = []
    for name in ("region", "object"):
        full = np.zeros((h, w), np.uint8)
        full[window] = np.frombuffer(result_mask(result.named_masks()[name], r), np.uint8).reshape(r.h, r.w)
        masks.append(full)
    rgb_after = after[:, :, 2::-1] if order == "BGRA" else after[:, :, :3]
    assert (after[:, :, 3] == 255).all()
    return np.ascontiguousarray(rgb_after), r, masks[0], masks[1]


def _options(params: dict) -> list[str]:
    return [arg for name, value in params.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


def cli_erase(tmp_path: Path, image: Path, lasso: Path, params: dict):
    """``python -m backend erase IMAGE --selection MASK --out ...`` (in-process): (result RGB, region, object)."""
    args = ["erase", str(image), "--selection", str(lasso), "--quiet", *_options(params)]
    out, region, obj = (tmp_path / f"cli-{n}.png" for n in ("out", "region", "object"))
    args += ["--out", str(out), "--region-out", str(region), "--mask-out", str(obj)]
    assert cli_main(args, registry=product_registry()) == 0
    read = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (out, region, obj)]
    return cv2.cvtColor(read[0], cv2.COLOR_BGR2RGB), read[1], read[2]


def test_the_coffee_erase_in_krita_and_gimp_is_the_readme_quick_starts(backend, tmp_path):
    """examples/coffee.png and its shipped lasso with the default parameters: the README's command and a
    request built as Krita (BGRA) and GIMP (RGBA) build it give the same layer, byte for byte, and the same
    masks. Before the fix the hosts' layer differed from the CLI's in 9,731 pixels (5,182 by more than 2)."""
    photo, lasso_png = ROOT / "examples" / "coffee.png", ROOT / "examples" / "coffee-spoon-selection.png"
    want, want_region, want_object = cli_erase(tmp_path, photo, lasso_png, {})
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    lasso = cv2.imread(str(lasso_png), cv2.IMREAD_GRAYSCALE)
    assert (want != rgb).any(axis=2).sum() > 1000  # the spoon went
    for order in ("BGRA", "RGBA"):
        got, sent, region, obj = host_erase(backend, rgb, lasso, order, {})
        differ = int((got != want).any(axis=2).sum())
        assert differ == 0, f"{order}: {differ} pixels differ from the CLI's; region sent {sent}"
        assert np.array_equal(region, want_region) and np.array_equal(obj, want_object), order


def _scene(w: int, h: int, centre: tuple[int, int], radius: int) -> tuple[np.ndarray, np.ndarray]:
    """A grainy two-tone wall (PatchMatch's choice of source patches shows in every pixel it fills) with a dark
    disc, and a rough box lasso around the disc."""
    rng = np.random.default_rng(7)
    base = np.where(np.arange(h)[:, None, None] < h // 2, [150, 120, 90], [90, 110, 140]).astype(np.float32)
    grain = cv2.GaussianBlur(rng.normal(0, 18, (h, w, 3)).astype(np.float32), (0, 0), 1.2)
    rgb = np.clip(base + grain, 0, 255).astype(np.uint8)
    cv2.circle(rgb, centre, radius, (30, 25, 35), -1, cv2.LINE_AA)
    lasso = np.zeros((h, w), np.uint8)
    pad = radius + 7
    cx, cy = centre
    lasso[max(0, cy - pad) : cy + pad, max(0, cx - pad) : cx + pad] = 255
    return rgb, lasso


@pytest.mark.parametrize(
    "params",
    [{}, {"margin": 10, "grow": 12, "feather": 3, "fill": "patchmatch"}],
    ids=["defaults", "wider-grow"],
)
def test_an_object_near_the_layers_edge_is_erased_as_the_cli_does_without_sending_the_whole_layer(
    backend, tmp_path, params
):
    """A small object by the right edge of a long layer: the fill's crop slides inward at the layer's edge. The
    host sends much less than the layer, yet its result is the CLI's (the old context cut the crop short, and it
    slid at the edge of what was sent instead)."""
    w, h = 1500, 200
    rgb, lasso = _scene(w, h, (1478, 100), 14)
    image, lasso_png = tmp_path / "scene.png", tmp_path / "lasso.png"
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(lasso_png), lasso)
    want, want_region, want_object = cli_erase(tmp_path, image, lasso_png, params)
    got, sent, region, obj = host_erase(backend, rgb, lasso, "BGRA", params)
    assert sent.right == w and sent.x > w // 3  # far from the whole layer
    assert (want != rgb).any()
    differ = int((got != want).any(axis=2).sum())
    assert differ == 0, f"{differ} pixels differ from the CLI's; region sent {sent}"
    assert np.array_equal(region, want_region) and np.array_equal(obj, want_object)


def test_op_reach_grows_with_the_parameters_that_widen_what_an_op_reads():
    """The reach is what the backend's crop plans need (``op_reach``'s docstring), not a fixed share."""
    assert op_reach("imagic", 100) == 25 and op_reach("imagic", 40) == 16  # within the general context
    assert op_reach("an-op-from-a-newer-backend", 100) == 0
    assert op_reach("snap", 100) == 24 + 8 + 1
    assert op_reach("snap", 100, {"margin": 60}) == 60 + 8 + 1
    assert op_reach("erase", 100) == 30 + 256 + 2  # half a learned filler's 512 px crop
    assert op_reach("erase", 400) == 30 + 460 + 2  # the fill's context: one long side of the grown object
    assert op_reach("erase", 400, {"grow": 20}) == 44 + 488 + 2
    assert op_reach("replace", 400) == 32 + 116 + 2
    canvas = Rect(0, 0, 6000, 4000)
    small = Rect(3000, 2000, 50, 40)
    assert plan_region(ERASE, canvas, canvas, small).region == small.grow(288)  # not all of a huge canvas
    # by the layer's edge the fill's crop slides inward, keeping its size: so does what is sent
    edge = plan_region(ERASE, canvas, canvas, Rect(5900, 100, 50, 40)).region
    assert edge == Rect.from_corners(6000 - (50 + 2 * 288), 0, 6000, 40 + 2 * 288)
    replace = plan_region(mode_by_label("Replace"), canvas, canvas, Rect(5900, 100, 50, 40)).region
    assert replace == Rect(5900, 100, 50, 40).grow(op_reach("replace", 50)).intersect(canvas)  # cut, not slid


def test_values_a_host_cannot_read_leave_the_reach_at_its_defaults():
    assert op_reach("erase", 400, {"grow": "wide", "margin": True}) == op_reach("erase", 400)
    assert op_reach("erase", 400, {"grow": -5}) == op_reach("erase", 400, {"margin": 24, "grow": 0})


def test_gimp_sends_what_the_chosen_margin_and_grow_make_erase_read():
    """GIMP reads the region before it asks a backend (a missing selection is said without one), from the
    procedure's own arguments; ``extra-params`` wins over them, as it does for what is sent."""
    import sys

    from tests.hosts.gimp import fake_gimp

    sys.path.insert(0, str(ROOT / "gimp_plugin" / "layeredit"))
    from layeredit_gimp import gimpio, pdbargs

    registered = {"margin", "grow", pdbargs.EXTRA}
    config = fake_gimp.Config(margin=24, grow=60, **{pdbargs.EXTRA: ""})
    assert pdbargs.reach_params(config, registered) == {"margin": 24, "grow": 60}
    config = fake_gimp.Config(margin=24, grow=60, **{pdbargs.EXTRA: '{"margin": 80}'})
    assert pdbargs.reach_params(config, registered) == {"margin": 80, "grow": 60}
    config = fake_gimp.Config(margin=24, grow=60, **{pdbargs.EXTRA: "not json"})
    assert pdbargs.reach_params(config, registered) == {"margin": 24, "grow": 60}
    assert pdbargs.reach_params(config, {"fill"}) == {}

    gimp, gegl = fake_gimp.make_modules()
    image = fake_gimp.Image(3000, 40, precision="u8-non-linear")
    src = fake_gimp.Layer(image, "src", 3000, 40, image.pixel_babl)
    image.layers.append(src)
    image.select_rectangle("REPLACE", 1400, 10, 300, 20)
    default = gimpio.read_source(gimp, gegl, image, src, ERASE).region
    wider = gimpio.read_source(gimp, gegl, image, src, ERASE, {"margin": 24, "grow": 60}).region
    assert default == Rect(1400, 10, 300, 20).grow(op_reach("erase", 300)).intersect(Rect(0, 0, 3000, 40))
    assert wider.x == 1400 - op_reach("erase", 300, {"grow": 60}) < default.x


def test_replace_near_the_layers_edge_is_the_clis_replace(backend, tmp_path, tiny_inpaint_dir, monkeypatch):
    """Replace (a tiny random-weight inpainting model, seeded) on an object by a long layer's edge, grown 40 px:
    its crop is the grown object plus a quarter of its long side, more than the old half-the-selection context
    held (and more than the default grow needs: the host plans with the chosen one)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "sd15-inpaint").symlink_to(tiny_inpaint_dir, target_is_directory=True)
    monkeypatch.setenv("LAYEREDIT_MODELS", str(models))
    w, h = 900, 160
    rgb, lasso = _scene(w, h, (868, 80), 22)
    image, lasso_png = tmp_path / "scene.png", tmp_path / "lasso.png"
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(lasso_png), lasso)
    params = {"prompt": "a vase", "seed": 3, "steps": 2, "grow": 40}
    out = tmp_path / "cli-replace.png"
    args = ["replace", str(image), "--selection", str(lasso_png), "--out", str(out), "--quiet"]
    assert cli_main([*args, *_options(params)], registry=product_registry()) == 0
    want = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)

    replace = mode_by_label("Replace")
    canvas = Rect(0, 0, w, h)
    plan = plan_region(replace, canvas, canvas, mask_bounds(lasso.tobytes(), w, h), params=params)
    r = plan.region
    window = (slice(r.y, r.bottom), slice(r.x, r.right))
    layer = np.dstack([rgb[:, :, ::-1], np.full((h, w), 255, np.uint8)])
    selection = selection_to_send(replace, np.ascontiguousarray(lasso[window]).tobytes())
    buffers = host_buffers(r, np.ascontiguousarray(layer[window]).tobytes(), "u8", "BGRA", selection)
    result = backend.run("replace", params, image=buffers[0], selection=buffers[1], timeout=300)
    layer[window] = np.frombuffer(result_image(result.image, r, "u8", "BGRA"), np.uint8).reshape(r.h, r.w, 4)
    assert r.x > w // 2 and (want != rgb).any()
    differ = int((layer[:, :, 2::-1] != want).any(axis=2).sum())
    assert differ == 0, f"{differ} pixels differ from the CLI's; region sent {r}"


@settings(max_examples=150, deadline=None)
@given(
    layer=st.tuples(st.integers(40, 2000), st.integers(40, 1500)),
    sel=st.tuples(st.floats(0, 1), st.floats(0, 1), st.integers(1, 600), st.integers(1, 600)),
    hole=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
    fill=st.sampled_from([(1.0, None), (0.5, None), (0.5, 512)]),  # classical, PatchMatch, learned
    grow=st.integers(0, 40),
)
def test_erases_fill_crop_in_the_region_sent_is_the_one_on_the_whole_layer(layer, sel, hole, fill, grow):
    """The geometry behind the byte-for-byte tests, over many layers and selections: for any erased region the
    snap can give (inside the selection plus margin and grow), the crop the backend plans on the region sent
    (``plan_crop``, as ``ErasePipeline`` calls it) is the very crop it plans on the whole layer."""
    from backend.erase.pipeline_erase import _min_context
    from backend.imaging import plan_crop

    w, h = layer
    sw, sh = min(sel[2], w), min(sel[3], h)
    s = Rect(int(sel[0] * (w - sw)), int(sel[1] * (h - sh)), sw, sh)
    params = {"grow": grow}
    plan = plan_region(ERASE, Rect(0, 0, w, h), Rect(0, 0, w, h), s, params=params)
    near = s.grow(24 + grow).intersect(Rect(0, 0, w, h))  # the erased region lies in here
    x0 = near.x + int(hole[0] * (near.w - 1))
    y0 = near.y + int(hole[1] * (near.h - 1))
    x1 = x0 + 1 + int(hole[2] * (near.right - x0 - 1))
    y1 = y0 + 1 + int(hole[3] * (near.bottom - y0 - 1))
    weights = np.zeros((h, w), np.float32)
    weights[y0:y1, x0:x1] = 1
    context, min_crop = fill

    def crop(mask: np.ndarray) -> tuple[int, int, int, int]:
        found = plan_crop(mask > 0, mask.shape, context=context, keep_size=True, target=None,
                          min_context=_min_context(mask, min_crop))  # fmt: skip
        assert found is not None
        return found.box

    r = plan.region
    bx0, by0, bx1, by1 = crop(weights[r.y : r.bottom, r.x : r.right])
    assert (bx0 + r.x, by0 + r.y, bx1 + r.x, by1 + r.y) == crop(weights)
