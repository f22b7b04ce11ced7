"""The embedded snap on real photographs and on the failure modes of issue 12: thin parts, touching objects of
similar colour, dark on dark; the meta that explains the choice."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.snapping import SnapParams, SnapPipeline
from backend.snapping.embedded import (
    Candidate,
    Evidence,
    _colour_ratio,
    _grabcut,
    bridge_pieces,
    crossing,
    edges_candidate,
    follow_across,
    gmm_start,
    join_pieces,
    lifted,
    other_pieces,
    plausible,
    recover_thin,
    score_candidate,
    snap_embedded,
    soft_edge,
    stray_spurs,
    total_score,
    working_scale,
)
from backend.snapping.u2net import find_u2netp, shared_u2netp
from bench.realphoto import boundary_f, coffee_spoon, iou, load_cases, spoon_checks

needs_u2netp = pytest.mark.skipif(find_u2netp() is None, reason="u2netp.onnx not installed")


@pytest.fixture(scope="module")
def pipe():
    return SnapPipeline(u2net=shared_u2netp()) if find_u2netp() else SnapPipeline()


@needs_u2netp
def test_the_shipped_rough_lasso_snaps_to_the_whole_coffee_spoon(pipe):
    image, lasso, _, _, _ = coffee_spoon()
    out = pipe(image, lasso.astype(np.float32) / 255, SnapParams(method="combined"))
    got = spoon_checks(out.mask > 0.5)
    assert got["iou"] > 0.9, got
    assert got["tip"] > 0.9, got  # the handle's end above the cup, 10-25 px wide, is kept
    assert got["neck"] > 0.8, got  # and the neck where it leaves the cup
    # and the handle's middle, a 4-5 px strip along the cup the colour of the saucer: tip and bowl are one piece
    assert got["middle"] > 0.8 and got["whole"] == 1.0, got
    assert got["spill"] < 0.02, got  # no spill onto the saucer or the cup
    assert out.method != "selection" and out.meta["candidates"][out.method]["plausible"]
    assert [b["joined"] for b in out.meta["bridges"]] == [True], out.meta["bridges"]


def _perturbed_coffee(change: str) -> tuple[np.ndarray, np.ndarray, float]:
    """The README coffee and lasso after a JPEG re-encode ('jpg85': Pillow, quality 85, its default 4:2:0 chroma)
    or resized with the lasso ('s0.8': Lanczos), as users have them; (image, lasso u8, scale)."""
    import io

    from PIL import Image

    image, lasso, _, _, _ = coffee_spoon()
    photo, sel = Image.fromarray(image), Image.fromarray(lasso)
    if change.startswith("jpg"):
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=int(change[3:]))
        return np.asarray(Image.open(buf).convert("RGB")), lasso, 1.0
    k = float(change[1:])
    size = (round(600 * k), round(400 * k))
    return np.asarray(photo.resize(size, Image.LANCZOS)), np.asarray(sel.resize(size, Image.LANCZOS)), k


@needs_u2netp
@pytest.mark.parametrize("change", ["jpg85", "jpg95", "s0.8"])
def test_the_readme_lasso_keeps_the_whole_spoon_on_a_jpeg_or_resized_coffee(pipe, change):
    """Session 13: after a JPEG re-encode GrabCut's colour model lost the spoon's tip (its beige is the wood's
    highlight's but for the chroma 4:2:0 halves), and the watershed grown from a tipless winner, a compact
    blob without the neck, won on solidity: the tip stayed above the cup and the neck across its lip (jpg85:
    tip 0.00, neck 0.61). The tip is found again around the middle line of the lasso's narrow end."""
    image, lasso, k = _perturbed_coffee(change)
    out = pipe(image, lasso.astype(np.float32) / 255, SnapParams(method="combined"))
    mask = out.mask > 0.5
    if k != 1.0:
        mask = cv2.resize(mask.astype(np.uint8), (600, 400), interpolation=cv2.INTER_NEAREST) > 0
    got = spoon_checks(mask)
    assert got["tip"] > 0.9 and got["whole"] == 1.0, got  # the tip, joined to the bowl
    assert got["neck"] > 0.8, got  # the neck across the cup's lip
    assert got["iou"] > 0.9 and got["spill"] < 0.02, got  # no spill onto the cup or the saucer


@needs_u2netp
@pytest.mark.parametrize("change", ["jpg90", "jpg95"])
def test_the_readme_lasso_on_a_jpeg_coffee_leaves_the_cups_lip(pipe, change):
    """Session 13: on a JPEG u2netp finds a sliver of the cup's white lip beside the spoon's neck; offered as a
    piece the winner lacked, it touched the winner's tip, the bridge from the bowl ran to it, and the lip's outer
    face was erased with the spoon (a grey notch in the lip after the fill). Main: 400-500 white px of the lip in
    the mask; the PNG: 30."""
    image, lasso, _ = _perturbed_coffee(change)
    out = pipe(image, lasso.astype(np.float32) / 255, SnapParams(method="combined"))
    mask = out.mask > 0.5
    _, _, truth, _, _ = coffee_spoon()
    white = image.min(axis=-1) > 170  # the lip's white (the spoon's metal is darker)
    assert int((mask & white & ~truth).sum()) < 100
    got = spoon_checks(mask)
    assert got["tip"] > 0.9 and got["neck"] > 0.8 and got["whole"] == 1.0, got


@needs_u2netp
@pytest.mark.parametrize(
    "name,floor",
    [
        ("camera_tripod", 0.9),  # legs 5-7 px wide on grass (plain GrabCut: 0.24-0.70)
        ("moto_taillight", 0.85),  # a red lens on a red housing (plain GrabCut collapses: 0.00)
        ("rocket_mast", 0.95),  # a 4-6 px pole on a dark sky
    ],
)
def test_real_photo_cases_stay_snapped(pipe, name, floor):
    for case in load_cases({name}):
        out = pipe(case.image, case.selection, SnapParams(method="combined"))
        assert iou(out.mask, case) >= floor, case.name
        assert iou(out.mask, case) > iou(case.selection, case) + 0.2
        assert boundary_f(out.mask, case) > 0.75, case.name


def test_meta_names_the_method_and_the_scores_that_decided(pipe):
    case = load_cases({"astro_patch"})[0]
    out = pipe(case.image, case.selection, SnapParams(method="combined"))
    cands = out.meta["candidates"]
    assert {"grabcut", "grabcut-lifted"} <= set(cands)
    for scores in cands.values():
        assert {"edge", "separation", "touch", "area", "score"} <= set(scores)
    assert out.method in cands and out.method in out.meta["why"]
    ok = {n: s for n, s in cands.items() if s["plausible"]}
    assert out.method == max(ok, key=lambda n: ok[n]["score"])


def _disc(shape, cx, cy, r):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _textured(rng, shape, base, spread):
    small = rng.normal(0, spread, (shape[0] // 6, shape[1] // 6, 3))
    return np.asarray(base, np.float32) + cv2.resize(small.astype(np.float32), (shape[1], shape[0]))


def test_touching_coins_of_the_same_colour_split_at_the_edge_between_them():
    rng = np.random.default_rng(3)
    shape = (160, 220)
    a, b = _disc(shape, 80, 80, 45), _disc(shape, 168, 80, 44)  # touching: 88 px apart, radii 45 + 44
    image = _textured(rng, shape, (60, 90, 60), 6)
    coin = _textured(rng, shape, (200, 170, 90), 6)
    image[a | b] = coin[a | b]
    seam = (
        cv2.dilate((a).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    ) & b  # the thin shadow between them
    image[seam] *= 0.6
    image = np.clip(image, 0, 255).astype(np.uint8)
    sel = cv2.dilate(a.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0  # a lasso that takes a slice of b
    got = edges_candidate(image, sel, sel & (a | b))
    assert got is not None
    assert (got & a).sum() / (got | a).sum() > 0.93 and (got & b).sum() < 0.05 * a.sum()


def test_a_dark_object_on_a_dark_background_is_found_on_the_lifted_image():
    rng = np.random.default_rng(5)
    shape = (140, 140)
    obj = _disc(shape, 70, 70, 38)
    image = _textured(rng, shape, (14, 14, 18), 3)
    image[obj] = _textured(rng, shape, (4, 5, 6), 1.5)[obj]  # a black visor against black space
    image = np.clip(image, 0, 255).astype(np.uint8)
    sel = cv2.dilate(obj.astype(np.uint8), np.ones((31, 31), np.uint8)) > 0
    base = np.where(sel, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    got = _grabcut(lifted(image), base)
    assert (got & obj).sum() / (got | obj).sum() > 0.9
    near_black = lifted(np.array([[4, 14, 250]], np.uint8)).astype(int)[0]
    assert near_black[1] - near_black[0] > 2.5 * (14 - 4) and near_black[2] >= 250  # dark gaps widen


def test_grabcuts_that_differ_only_in_sure_foreground_share_one_k_means():
    """The snap's plain, u2netp-helped and cored GrabCuts start from the plain one's colour models
    (gmm_start, speed10): on the coffee's lasso every mask is the one its own k-means gives, including runs
    that stop on a collapse (min_keep) and one with part of the selection sure foreground; models learnt from
    another background give another mask (the comparison can fail)."""
    image, lasso, *_ = coffee_spoon()
    ys, xs = np.nonzero(lasso)
    y0, x0 = max(0, ys.min() - 20), max(0, xs.min() - 20)
    crop = np.ascontiguousarray(image[y0 : ys.max() + 20, x0 : xs.max() + 20])
    sel = lasso[y0 : ys.max() + 20, x0 : xs.max() + 20] > 0
    base = np.where(sel, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    depth = cv2.distanceTransform(sel.astype(np.uint8), cv2.DIST_L2, 5)
    cored = base.copy()
    cored[depth >= 0.7 * depth.max()] = cv2.GC_FGD
    half = base.copy()
    half[sel & (np.arange(sel.shape[0])[:, None] < sel.shape[0] // 2)] = cv2.GC_FGD
    start = gmm_start(crop, base)
    assert start is not None
    for gc in (base, cored, half):
        for keep in (0, int(0.08 * sel.sum()), int(0.9 * sel.sum())):
            for iterations in (1, 5):
                mine = _grabcut(crop, gc, iterations, min_keep=keep, start=start)
                assert mine.tobytes() == _grabcut(crop, gc, iterations, min_keep=keep).tobytes()
    assert start[0].tobytes() == gmm_start(crop, base)[0].tobytes()  # _grabcut leaves the start as it was
    other = base.copy()
    other[:, : base.shape[1] // 3] = cv2.GC_BGD
    assert (_grabcut(crop, base, start=gmm_start(crop, other)) != _grabcut(crop, base)).any()
    assert gmm_start(crop, np.full(base.shape, cv2.GC_PR_FGD, np.uint8)) is None  # no background to learn


def test_colour_ratio_gives_what_indexing_the_table_gave():
    """_colour_ratio reads its per-colour table with np.take (speed10): the bytes plain indexing gave."""
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (90, 130, 3)).astype(np.uint8)
    fg = rng.random((90, 130)) < 0.3
    bg = ~fg & (rng.random((90, 130)) < 0.5)
    q = (rgb.astype(np.int32) * 16) // 256
    idx = (q[..., 0] * 16 + q[..., 1]) * 16 + q[..., 2]
    h_fg = np.bincount(idx[fg], minlength=16**3).astype(np.float32) + 0.5
    h_bg = np.bincount(idx[bg], minlength=16**3).astype(np.float32) + 0.5
    h_fg /= h_fg.sum()
    h_bg /= h_bg.sum()
    assert _colour_ratio(rgb, fg, bg).tobytes() == (h_fg / (h_fg + h_bg))[idx].tobytes()


def _stray_spurs_before(rgb, seed, mask):
    """stray_spurs as it was before speed10: one pass over the whole crop per thin part."""
    from backend.snapping.embedded import MAX_SPUR_RATIO, SPUR_WIDTH

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (SPUR_WIDTH, SPUR_WIDTH))
    wide = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, k) > 0
    thin = mask & ~wide
    out = np.zeros(mask.shape, bool)
    if not wide.any() or not thin.any():
        return out
    _, pieces = cv2.connectedComponents(wide.astype(np.uint8), connectivity=8)
    n, parts = cv2.connectedComponents(thin.astype(np.uint8), connectivity=8)
    ring = (cv2.dilate(seed.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=4) > 0) & ~seed
    ratio = _colour_ratio(rgb, wide, (seed & ~mask) | ring)
    k3 = np.ones((3, 3), np.uint8)
    for i in range(1, n):
        part = parts == i
        if part.sum() < 4 * SPUR_WIDTH:
            continue
        touches = np.unique(pieces[(cv2.dilate(part.astype(np.uint8), k3) > 0) & wide])
        if len(touches) == 1 and float(ratio[part].mean()) < MAX_SPUR_RATIO:
            out |= part
    return out


@pytest.mark.parametrize("seed", range(6))
def test_stray_spurs_gives_what_the_whole_crop_form_gave(seed):
    """stray_spurs looks at each thin part in its own box (speed10): the same spurs as before, on blobs with
    thin lines of the surroundings' colour and of their own hanging off them, touching the crop's edges too."""
    rng = np.random.default_rng(seed)
    shape = (180, 210)
    image = _textured(rng, shape, (90, 120, 70), 12)
    mask = _disc(shape, 100, 90, 40) | _disc(shape, 170 + seed, 40, 25)
    lines = np.zeros(shape, np.uint8)
    for _ in range(8):
        p, q = rng.integers(0, [210, 180], 2), rng.integers(0, [210, 180], 2)
        cv2.line(lines, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 1, int(rng.integers(1, 4)))
    image[mask] = (200, 60, 50)
    image[(lines > 0) & (rng.random(shape) < 0.5 + 0.08 * seed)] = (200, 60, 50)
    image = np.clip(image, 0, 255).astype(np.uint8)
    mask = mask | ((lines > 0) & (rng.random(shape) < 0.97))
    sel = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    got = stray_spurs(image, sel, mask)
    assert got.tobytes() == _stray_spurs_before(image, sel, mask).tobytes()
    if seed == 0:
        assert got.any()  # the comparison covers dropped spurs, not only kept ones


def test_thin_parts_lost_at_the_working_resolution_come_back_at_full_resolution():
    rng = np.random.default_rng(7)
    shape = (1200, 1200)
    bowl = _disc(shape, 600, 800, 220)
    handle = np.zeros(shape, np.uint8)
    cv2.line(handle, (600, 600), (600, 120), 1, 3)  # 3 px wide, 480 px long
    obj = bowl | (handle > 0)
    image = _textured(rng, shape, (70, 50, 40), 5)
    image[obj] = _textured(rng, shape, (210, 210, 220), 5)[obj]
    image = np.clip(image, 0, 255).astype(np.uint8)
    sel = cv2.dilate(obj.astype(np.uint8), np.ones((61, 61), np.uint8)) > 0
    thin = recover_thin(image, sel, bowl, width=9)  # the bowl as the working resolution left it
    handle_only = (handle > 0) & ~bowl
    assert (
        thin[handle_only].mean() > 0.9
        and not (thin & ~cv2.dilate(handle, np.ones((5, 5), np.uint8)).astype(bool)).any()
    )
    out = SnapPipeline()(image, sel.astype(np.float32), SnapParams(method="combined", max_side=320))
    assert (out.mask > 0.5)[handle_only].mean() > 0.8  # end to end: GrabCut ran at ~1/4 of the crop


def _two_pieces(handle: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A bowl and a handle's far end (bright on a reddish, textured saucer) and, if ``handle``, the 4 px strip
    between them: the saucer's colour, with dark borders (what the coffee spoon's handle looks like along the
    cup). (image, selection, the two pieces, the strip)"""
    rng = np.random.default_rng(11)
    shape = (200, 140)
    bowl = _disc(shape, 70, 150, 30)
    end = np.zeros(shape, np.uint8)
    cv2.ellipse(end, (70, 30), (6, 18), 0, 0, 360, 1, -1)
    image = _textured(rng, shape, (170, 45, 15), 4)
    bright = _textured(rng, shape, (215, 205, 200), 5)
    strip = np.zeros(shape, np.uint8)
    if handle:
        image[48:121, 67:73] = (150, 45, 20)  # 6 px: the saucer's colour, a little lighter...
        image[48:121, 67] = image[48:121, 72] = (90, 10, 0)  # ...between dark borders
        strip[48:121, 67:73] = 1
    pieces = bowl | (end > 0)
    image[pieces] = bright[pieces]
    image = np.clip(image, 0, 255).astype(np.uint8)
    sel = cv2.dilate(pieces.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    sel[40:130, 50:90] = True  # one lasso around both, the strip or not
    return image, sel, pieces, (strip > 0) & ~pieces


def test_a_thin_part_the_colour_of_the_background_joins_the_pieces_it_connects():
    image, sel, pieces, strip = _two_pieces(handle=True)
    joined, info = bridge_pieces(image, sel, pieces)
    assert [b["joined"] for b in info] == [True], info
    assert joined[strip].mean() > 0.9  # the strip's middle 4 px, not a line beside it
    assert (
        joined & ~pieces & ~cv2.dilate(strip.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    ).sum() == 0
    assert (joined & pieces).sum() == pieces.sum()


def test_two_pieces_with_nothing_thin_between_them_stay_apart():
    image, sel, pieces, _ = _two_pieces(handle=False)
    joined, info = bridge_pieces(image, sel, pieces)
    assert [b["joined"] for b in info] == [False], info
    assert (joined == pieces).all()


def test_a_featureless_crop_has_no_plausible_candidate():
    flat = np.full((80, 80, 3), 120, np.uint8)
    seed = np.zeros((80, 80), bool)
    seed[20:60, 20:60] = True
    ev = Evidence.of(flat, seed)
    inner = np.zeros_like(seed)
    inner[30:50, 30:50] = True
    s = score_candidate(inner, ev)
    assert s["edge"] == 0.0 and not plausible(s)
    assert np.isfinite(total_score(s))


@pytest.mark.parametrize("sigma", [0.0, 2.5])
def test_soft_edges_where_the_picture_is_soft_and_sharp_where_it_is_sharp(sigma):
    """A disc composited with a known alpha (sharp, or blurred like motion/defocus): on the band around the
    outline, the snap's alpha follows the true alpha; a sharp edge stays crisp."""
    rng = np.random.default_rng(1)
    disc = _disc((160, 160), 80, 80, 45).astype(np.float32)
    alpha = cv2.GaussianBlur(disc, (0, 0), sigma) if sigma else disc
    bg = rng.normal(90, 6, (160, 160, 3))
    image = np.clip(alpha[..., None] * np.array([220.0, 190, 60]) + (1 - alpha[..., None]) * bg, 0, 255)
    mask = alpha > 0.5
    out = soft_edge(image.astype(np.uint8), mask)
    k = np.ones((5, 5), np.uint8)
    band = (cv2.dilate(mask.astype(np.uint8), k) > 0) & ~(cv2.erode(mask.astype(np.uint8), k) > 0)
    err_soft, err_hard = np.abs(out - alpha)[band].mean(), np.abs(mask - alpha)[band].mean()
    partial = ((out > 0.1) & (out < 0.9))[band].mean()
    if sigma:
        assert err_soft < 0.6 * err_hard and partial > 0.3  # the ramp is followed
    else:
        assert err_soft < 0.02 and partial < 0.01  # no invented softness
    assert (out[~band] == mask[~band]).all()  # off the band the mask is untouched


def test_another_candidates_piece_is_added_only_when_a_thin_part_joins_it():
    """The winner has the bowl only; another candidate found the handle's far end. With the strip between them
    the end is joined; with nothing thin between them it is left out (never a stray island)."""
    for handle in (True, False):
        image, sel, pieces, strip = _two_pieces(handle=handle)
        n, labels = cv2.connectedComponents(pieces.astype(np.uint8))
        sizes = [(labels == i).sum() for i in range(1, n)]
        bowl = labels == 1 + int(np.argmax(sizes))
        got, info = join_pieces(image, sel, bowl, pieces & ~bowl)
        if handle:
            assert got[pieces].all() and got[strip].mean() > 0.9, info
        else:
            assert (got == bowl).all(), info


@needs_u2netp
def test_a_rectangle_around_the_coffee_spoon_keeps_the_handle_tip(pipe):
    """The bench's rectangle around the spoon: the evidence picks u2netp, which has no tip; GrabCut's tip is
    joined to it along the handle."""
    case = load_cases({"coffee_spoon"})[1]
    assert case.kind == "rectangle"
    out = pipe(case.image, case.selection, SnapParams(method="combined"))
    got = spoon_checks(out.mask > 0.5)
    assert got["tip"] > 0.9 and got["whole"] == 1.0 and got["iou"] > 0.9 and got["spill"] < 0.02, got


def test_a_stray_sliver_beside_the_far_end_does_not_stand_in_for_the_main_piece():
    """A sliver beside the handle's far end (the saucer's bright rim beside the spoon's tip, from a loose
    rectangle) is nearer to the end than the bowl is: the end is still joined to the bowl along the strip, and
    nothing is drawn across the 3 px between the end and the sliver."""
    image, sel, pieces, strip = _two_pieces(handle=True)
    sliver = np.zeros_like(pieces)
    sliver[22:42, 79:82] = True  # 3 px right of the end (x 64-76), 60 px: under MIN_PIECE of the bowl
    sel[10:60, 60:95] = True
    joined, info = bridge_pieces(image, sel, pieces | sliver)
    assert any(b["joined"] and b["length"] > 50 for b in info), info
    assert joined[strip].mean() > 0.9, info
    assert not joined[22:42, 77:79].any()  # the gap beside the sliver stays open
    assert (joined & (pieces | sliver)).sum() == (pieces | sliver).sum()


@needs_u2netp
@pytest.mark.parametrize("margin", [15, 20])
def test_a_looser_rectangle_around_the_coffee_spoon_keeps_the_whole_spoon(pipe, margin):
    """A rectangle 15-20 px around the spoon takes in a sliver of the saucer's rim beside the handle's tip; the
    tip is still joined to the bowl along the handle (before, the sliver stood in for the bowl: two pieces)."""
    image, _, truth, _, _ = coffee_spoon()
    ys, xs = np.nonzero(truth)
    sel = np.zeros(truth.shape, np.float32)
    sel[ys.min() - margin : ys.max() + margin + 1, xs.min() - margin : xs.max() + margin + 1] = 1
    out = pipe(image, sel, SnapParams(method="combined"))
    got = spoon_checks(out.mask > 0.5)
    assert got["tip"] > 0.9 and got["whole"] == 1.0 and got["middle"] > 0.8, got
    assert got["iou"] > 0.9 and got["spill"] < 0.03, got


@needs_u2netp
def test_the_docs_rough_box_around_the_coffee_spoon_keeps_the_handle_tip(pipe):
    """The Krita docs' rough box (tests/hosts/krita/shots.py ROUGH_BOX, x 300-450, y 45-355): the winner
    ('edges') lost the tip but kept a sliver of the saucer's rim beside it, and GrabCut-lifted's tip touched
    that sliver, so it was not offered to the bridge step: the erase kept the tip. A piece the winner touches
    only with a stray sliver is still one it lacks; the tip is joined along the handle."""
    image, _, _, _, _ = coffee_spoon()
    sel = np.zeros(image.shape[:2], np.float32)
    sel[45:355, 300:450] = 1
    out = pipe(image, sel, SnapParams(method="combined"))
    got = spoon_checks(out.mask > 0.5)
    assert got["tip"] > 0.9 and got["whole"] == 1.0 and got["middle"] > 0.8, got
    assert got["iou"] > 0.85 and got["spill"] < 0.08, got
    assert any(b["joined"] for b in out.meta["bridges"]), out.meta.get("bridges")


@needs_u2netp
def test_the_docs_rough_box_leaves_the_saucers_rim_beside_the_tip(pipe):
    """The same box's winner also held 164 px of the saucer's bright rim, hanging off the spoon's tip (photo
    x 418-450, y 112-152): the erase broke the saucer's rim there. A thin spur of the mask in the surroundings'
    colours is not the object."""
    image, _, truth, _, _ = coffee_spoon()
    sel = np.zeros(image.shape[:2], np.float32)
    sel[45:355, 300:450] = 1
    out = pipe(image, sel, SnapParams(method="combined"))
    near = cv2.dilate(truth.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    rim = np.zeros_like(near)
    rim[112:153, 418:451] = True
    assert (out.mask[rim & ~near] > 0.5).sum() < 10, (out.mask[rim & ~near] > 0.5).sum()
    got = spoon_checks(out.mask > 0.5)
    assert got["tip"] > 0.9 and got["whole"] == 1.0 and got["spill"] < 0.05, got
    assert out.meta["spurs_dropped"] > 100, out.meta


def test_a_thin_spur_in_the_surroundings_colours_is_dropped_one_in_the_objects_kept():
    """A disc with a 3 px spur hanging off it: in the background's colours (a neighbour's edge the candidate
    followed) it is dropped; in the disc's colours (a leg, a stalk) it stays; a strip of the background's
    colour between two pieces (a handle) joins two wide pieces and stays too."""
    rng = np.random.default_rng(8)
    shape = (140, 200)
    image = _textured(rng, shape, (120, 60, 30), 4)
    disc = _disc(shape, 60, 70, 30)
    spur = np.zeros(shape, bool)
    spur[68:71, 90:150] = True  # 3 x 60 px off the disc's right side
    pale = _textured(rng, shape, (215, 210, 200), 4)
    image[disc] = pale[disc]
    sel = np.zeros(shape, bool)
    sel[20:120, 15:185] = True
    for colour, dropped in (((120, 60, 30), True), ((215, 210, 200), False)):
        img = image.copy()
        img[spur] = colour
        img = np.clip(img, 0, 255).astype(np.uint8)
        got = stray_spurs(img, sel, disc | spur)
        assert got[spur].mean() > (0.9 if dropped else -1) and got[spur].mean() < (1.01 if dropped else 0.1)
        assert not got[
            disc & ~cv2.dilate(spur.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        ].any()
    second = _disc(shape, 162, 70, 14)  # a second wide piece at the spur's far end: a handle between them
    img = image.copy()
    img[second] = pale[second]
    img = np.clip(img, 0, 255).astype(np.uint8)
    assert not stray_spurs(img, sel, disc | spur | second).any()


def test_a_piece_touching_only_a_stray_sliver_of_the_winner_is_offered_to_the_bridge():
    """The winner has the bowl and a stray sliver beside the far end; another candidate's far end touches the
    sliver. It is still a piece the winner lacks (other_pieces), and joining it keeps it only when the strip
    joins it to the bowl, not because it touches the sliver (join_pieces)."""
    for handle in (True, False):
        image, sel, pieces, strip = _two_pieces(handle=handle)
        n, labels = cv2.connectedComponents(pieces.astype(np.uint8))
        sizes = [(labels == i).sum() for i in range(1, n)]
        bowl = labels == 1 + int(np.argmax(sizes))
        end = pieces & ~bowl
        sliver = np.zeros_like(pieces)
        sliver[22:42, 77:80] = True  # touching the end (x 64-76), 60 px: under MIN_PIECE of the bowl
        sel[10:60, 60:95] = True
        winner = Candidate("winner", bowl | sliver, {"area": 0.3, "touch": 0.0, "edge": 1.0})
        other = Candidate("other", bowl | end, {"area": 0.3, "touch": 0.0, "edge": 1.0})
        extra = other_pieces(winner, [winner, other])
        assert extra[end].all() and not extra[bowl].any()
        got, info = join_pieces(image, sel, winner.mask, extra & ~winner.mask)
        assert got[sliver].all() and got[bowl].all()  # the winner's own pieces stay either way
        if handle:
            assert got[end].all() and got[strip].mean() > 0.9, info
        else:
            assert not got[end].any(), info


@needs_u2netp
@pytest.mark.parametrize("shape", ["box+35", "ellipse+10"])
def test_a_loose_selection_that_slices_the_saucer_or_the_cup_still_snaps_to_the_spoon(pipe, shape):
    """A box 35 px around the spoon holds as much saucer as spoon, and an ellipse around it half the cup: the
    leading candidates took the saucer (GrabCut) or the cup (u2netp), which run on across the selection's edge
    (IoU 0.29 both). They lose to the spoon, GrabCut again with what crosses the edge as background."""
    image, _, truth, _, _ = coffee_spoon()
    ys, xs = np.nonzero(truth)
    sel = np.zeros(truth.shape, np.uint8)
    if shape == "box+35":
        sel[ys.min() - 35 : ys.max() + 36, xs.min() - 35 : xs.max() + 36] = 1
    else:
        centre = (int(xs.min() + xs.max()) // 2, int(ys.min() + ys.max()) // 2)
        axes = (int((xs.max() - xs.min()) * 0.71) + 10, int((ys.max() - ys.min()) * 0.71) + 10)
        cv2.ellipse(sel, centre, axes, 0, 0, 360, 1, -1)
    out = pipe(image, sel.astype(np.float32), SnapParams(method="combined"))
    got = spoon_checks(out.mask > 0.5)
    assert got["iou"] > 0.85 and got["spill"] < 0.08, (got, out.meta["why"])
    assert got["tip"] > 0.9 and got["whole"] == 1.0, got
    assert "running across the selection's edge" in out.meta["why"], out.meta["why"]


def test_crossing_tells_a_neighbour_the_selection_slices_from_an_outline_that_meets_it():
    """Two candidates that cover the same share of a rectangle's inner rim: a band that runs on outside with
    its colours (a neighbour the rectangle slices) crosses; a box-shaped object whose own outline meets a tight
    rectangle, the outside a different colour, does not."""
    rng = np.random.default_rng(5)
    shape = (160, 160)
    image = _textured(rng, shape, (120, 90, 60), 4)  # wood
    band = np.zeros(shape, bool)
    band[:, 100:130] = True  # a red band crossing the whole picture
    image[band] = _textured(rng, shape, (170, 40, 20), 4)[band]
    obj = np.zeros(shape, bool)
    obj[42:118, 32:92] = True  # a pale box
    image[obj] = _textured(rng, shape, (220, 215, 205), 4)[obj]
    image = np.clip(image, 0, 255).astype(np.uint8)
    loose = np.zeros(shape, bool)
    loose[30:130, 20:115] = True  # around the box, slicing the band
    ev = Evidence.of(image, loose)
    sliced = loose & band
    cut, share = crossing(image, sliced, ev)
    assert share > 0.8 and cut.sum() > 0.8 * (sliced & ev.rim).sum()
    tight = np.zeros(shape, bool)
    tight[41:119, 31:93] = True  # 1 px around the box: its outline lies on the rim
    ev = Evidence.of(image, tight)
    assert score_candidate(obj, ev)["touch"] > 0.3
    cut, share = crossing(image, obj, ev)
    assert share < 0.1 and cut.sum() < 0.1 * (obj & ev.rim).sum()


def test_a_handle_lost_in_three_pieces_is_joined_through_the_middle_piece():
    """An L-shaped handle lost in three pieces: the bowl (main), a small piece at the bend, the far end. The far
    end, larger, is tried first, before the bend is joined, and no straight corridor reaches the bowl; a second
    pass joins it through the bend (the first pass alone left it apart: found by review)."""
    rng = np.random.default_rng(11)
    shape = (220, 220)
    bowl = _disc(shape, 60, 170, 30)
    image = _textured(rng, shape, (170, 45, 15), 4)
    bright = _textured(rng, shape, (215, 205, 200), 5)
    strip = np.zeros(shape, np.uint8)
    image[70:141, 57:63] = (150, 45, 20)
    image[70:141, 57] = image[70:141, 62] = (90, 10, 0)
    strip[70:141, 57:63] = 1
    image[67:73, 60:191] = (150, 45, 20)
    image[67, 60:191] = image[72, 60:191] = (90, 10, 0)
    strip[67:73, 60:191] = 1
    bend = np.zeros(shape, np.uint8)
    cv2.ellipse(bend, (60, 70), (5, 5), 0, 0, 360, 1, -1)
    end = np.zeros(shape, np.uint8)
    cv2.ellipse(end, (195, 70), (18, 7), 0, 0, 360, 1, -1)
    pieces = bowl | (bend > 0) | (end > 0)
    image[pieces] = bright[pieces]
    image = np.clip(image, 0, 255).astype(np.uint8)
    selection = cv2.dilate(pieces.astype(np.uint8) | strip, np.ones((25, 25), np.uint8)) > 0
    joined, bridges = bridge_pieces(image, selection, pieces)
    _, parts = cv2.connectedComponents(joined.astype(np.uint8), connectivity=8)
    assert parts[70, 195] == parts[170, 60] == parts[70, 60]
    assert sum(b["joined"] for b in bridges) == 2 and len(bridges) == 2


def test_a_crop_barely_larger_than_the_working_side_is_snapped_at_full_resolution():
    """Resampling by 0.95-1 loses nothing thin, and the thin-part recovery meant for real downscales (5 px wide
    at any scale above 0.5) added background texture around the seat (a 323 px crop for a 320 px side)."""
    assert working_scale(323, 200, 320) == 1.0 and working_scale(400, 200, 320) == 0.8
    rng = np.random.default_rng(3)
    shape = (230, 300)
    obj = _disc(shape, 150, 115, 70)
    image = _textured(rng, shape, (60, 70, 60), 12)
    image[obj] = _textured(rng, shape, (200, 180, 150), 12)[obj]
    image = np.clip(image, 0, 255).astype(np.uint8)
    sel = cv2.dilate(obj.astype(np.uint8), np.ones((31, 31), np.uint8)) > 0
    full, _, meta_full = snap_embedded(image, sel, side=300, u2net=None)
    near, _, meta_near = snap_embedded(image, sel, side=290, u2net=None)
    assert meta_full["scale"] == meta_near["scale"] == 1.0
    assert np.array_equal(full, near)


@needs_u2netp
def test_the_seat_lasso_keeps_to_the_seat(pipe):
    """The real case that showed it: the seat's lasso crop is 323 px for a 320 px side (BF 0.74 before, with
    the grab rail's and a shelf post's texture added; 0.83 at full resolution)."""
    case = load_cases({"moto_seat"})[0]
    out = pipe(case.image, case.selection, SnapParams(method="combined"))
    assert out.meta["scale"] == 1.0
    assert iou(out.mask, case) > 0.9 and boundary_f(out.mask, case) > 0.8


def _seat_and_fender(loose: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A big object in the background's own colours (only its dark outline tells it apart, like the black seat
    among the workshop's clutter) and, touching it below, a bright red bar running off to the side (the fender),
    inside a lasso ``loose`` px off the object that takes in a slice of the bar. (image, object, bar, lasso)"""
    rng = np.random.default_rng(3)
    shape = (200, 260)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    palette = np.array([(70, 60, 50), (150, 140, 120), (100, 95, 90)], np.float32)

    def clutter(cell: int) -> np.ndarray:
        idx = rng.integers(0, 3, (shape[0] // cell + 1, shape[1] // cell + 1))
        img = palette[idx].repeat(cell, 0).repeat(cell, 1)[: shape[0], : shape[1]]
        return img + rng.normal(0, 4, img.shape)

    obj = ((yy - 90) / 45.0) ** 2 + ((xx - 130) / 80.0) ** 2 <= 1
    outline = obj & ~(cv2.erode(obj.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
    bar = (yy >= 138) & (yy < 166) & (xx >= 10) & (xx < 250)
    image = clutter(9)
    image[obj] = clutter(5)[obj]
    image[outline] = (20, 20, 22)
    image[bar] = (215, 25, 25) + rng.normal(0, 4, (int(bar.sum()), 3))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * loose + 1, 2 * loose + 1))
    lasso = cv2.dilate(obj.astype(np.uint8), disc) > 0
    return np.clip(image, 0, 255).astype(np.uint8), obj, bar, lasso


def test_a_high_contrast_neighbour_off_to_the_side_of_a_loose_lasso_does_not_win():
    """Review 5: the seat's lasso 8 px looser snapped to the red fender beside it. On edges and colour alone the
    fender outscores the seat (a saturated bar with crisp edges against an object in the clutter's colours),
    and it passes the checks (big enough, barely on the rim, outline on edges); what gives it away is where it
    lies: off to the side, not where the lasso was drawn around."""
    from backend.snapping.embedded import OFF_CENTRE_LEAD, Candidate, best_of, central

    image, obj, bar, lasso = _seat_and_fender(loose=30)
    ev = Evidence.of(image, lasso)
    seat, fender = Candidate("seat", obj), Candidate("fender", bar & lasso)
    for c in (seat, fender):
        c.scores = score_candidate(c.mask, ev)
        c.total = total_score(c.scores)
    s = fender.scores
    assert fender.total > seat.total + 1.0  # edges and colour prefer the neighbour
    assert plausible(s) and plausible(seat.scores)
    assert s["centre"] < 0.01 and seat.scores["centre"] == 1.0
    assert not central(s) and central(seat.scores)
    # the real fender led the seat by x1.18 (bench/realphoto.py, lasso 8 px looser): a lead like that loses
    fender.total = 1.2 * seat.total
    assert best_of([fender, seat]) is seat and best_of([seat, fender]) is seat
    assert best_of([fender]) is fender  # alone, it is still the best there is
    # a far larger lead is a whole object the lasso was drawn around off-centre (next test): it wins
    fender.total = 1.05 * OFF_CENTRE_LEAD * seat.total
    assert best_of([fender, seat]) is fender


def test_the_off_centre_lead_is_measured_against_the_rivals_size_whatever_its_sign():
    """prefer_central on bare scores (bench/snap_chooser.py calls it on logged ones): an off-centre best needs a
    lead of (OFF_CENTRE_LEAD - 1) x |rival| over the best central one. With a negative rival a ratio of the two
    would read a near tie as a win (review 6); with a rival at 0 any real lead wins."""
    from backend.snapping.embedded import OFF_CENTRE_LEAD, prefer_central

    def pick(pool):
        return prefer_central(pool, lambda c: c[1], lambda c: c[2])

    margin = OFF_CENTRE_LEAD - 1.0
    for rival in (2.0, -2.0):
        near = ("side", rival + 0.9 * margin * abs(rival), False)
        far = ("side", rival + 1.1 * margin * abs(rival), False)
        middle = ("middle", rival, True)
        assert pick([near, middle])[0] == "middle" and pick([middle, near])[0] == "middle"
        assert pick([far, middle])[0] == "side" and pick([middle, far])[0] == "side"
    assert pick([("side", 0.01, False), ("middle", 0.0, True)])[0] == "side"
    assert pick([("side", 5.0, False), ("other", 4.0, False)])[0] == "side"  # none central: the best
    assert pick([("middle", 1.0, True), ("side", 0.5, False)])[0] == "middle"  # a central best: itself


def test_a_whole_object_off_the_middle_of_a_loose_lasso_still_wins():
    """Review 6: a disc lying whole in a lasso drawn with room on one side sits off the lasso's middle; the middle
    check handed the win to a blob of background and disc that reaches the middle (IoU 0.31) though the disc's
    own candidate scored far higher (x1.8). It must lose only to a close rival, as a sliced neighbour does."""
    rng = np.random.default_rng(17)
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    cell = int(rng.integers(6, 16))
    palette = rng.integers(40, 200, (4, 3)).astype(np.float32)
    blocks = palette[rng.integers(0, 4, (h // cell + 1, w // cell + 1))]
    image = blocks.repeat(cell, 0).repeat(cell, 1)[:h, :w] + rng.normal(0, 5, (h, w, 3))
    r = int(rng.integers(25, 45))
    off, ang = rng.uniform(0.0, 0.42), rng.uniform(0, 2 * np.pi)
    cx, cy = 160 + off * 160 * np.cos(ang), 120 + off * 120 * np.sin(ang)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image[disc] = rng.integers(0, 255, 3) + rng.normal(0, 5, (int(disc.sum()), 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    lasso = ((yy - 120) / 78.0) ** 2 + ((xx - 160) / 105.0) ** 2 <= 1
    assert (disc & lasso).sum() == disc.sum()  # whole inside, off the middle
    prob, name, meta = snap_embedded(image, lasso, side=320, u2net=None)
    got = prob > 0.5
    assert not meta["candidates"][name]["central"], meta["why"]
    assert (got & disc).sum() / (got | disc).sum() > 0.9, (name, meta["why"])


def test_an_open_c_in_a_rectangle_is_kept_though_it_misses_the_middle():
    """The middle check is relative: a C or a horseshoe in a rectangle leaves the rectangle's middle empty (the
    gap), and no candidate reaches it; then every plausible candidate competes as before (an absolute check
    turned all of them away and kept the selection: IoU 0.18-0.31)."""
    rng = np.random.default_rng(4)
    shape = (160, 160)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    angle = np.degrees(np.arctan2(yy - 80, xx - 80)) % 360
    c = _disc(shape, 80, 80, 50) & ~_disc(shape, 80, 80, 34) & ~((angle < 45) | (angle > 315))
    image = _textured(rng, shape, (60, 90, 60), 6)
    image[c] = _textured(rng, shape, (200, 170, 90), 6)[c]
    image = np.clip(image, 0, 255).astype(np.uint8)
    rect = np.zeros(shape, bool)
    rect[22:139, 22:139] = True
    prob, name, meta = snap_embedded(image, rect, side=320, u2net=None)
    assert all(v["centre"] < 0.05 for v in meta["candidates"].values())
    m = prob > 0.5
    assert name != "selection" and (m & c).sum() / (m | c).sum() > 0.9


def test_a_ring_covers_the_middle_of_the_lasso_drawn_around_it():
    """The middle check fills holes first: a ring, a frame or a wheel drawn around is still the object."""
    rng = np.random.default_rng(4)
    shape = (160, 160)
    ring = _disc(shape, 80, 80, 50) & ~_disc(shape, 80, 80, 30)
    image = _textured(rng, shape, (60, 90, 60), 6)
    image[ring] = _textured(rng, shape, (200, 170, 90), 6)[ring]
    image = np.clip(image, 0, 255).astype(np.uint8)
    lasso = cv2.dilate(_disc(shape, 80, 80, 50).astype(np.uint8), np.ones((21, 21), np.uint8)) > 0
    s = score_candidate(ring, Evidence.of(image, lasso))
    assert s["centre"] == 1.0 and plausible(s)
    _, name, _ = snap_embedded(image, lasso, side=320, u2net=None)
    assert name != "selection"


@needs_u2netp
@pytest.mark.parametrize("looser", [8, 12])
def test_the_seat_lasso_made_looser_keeps_to_the_seat_not_the_fender(pipe, looser):
    """The real case (review 5, finding 2): 8 and 12 px looser, the seat's lasso snapped to the red fender
    (IoU 0.00). bench/realphoto.py --loosen measures every case this way."""
    from bench.realphoto import loosen

    case = loosen(load_cases({"moto_seat"})[0], looser)
    out = pipe(case.image, case.selection, SnapParams(method="combined"))
    assert iou(out.mask, case) > 0.85
    assert out.meta["candidates"][out.method]["central"]
    assert "passed over, off to the side" in out.meta["why"]  # the fender: the log says so


def _reflection_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A pale disc on a dark cup with, touching it, its reflection (x 52-76, the disc's colours) and a red knob
    of another thing (x 140-160); a pale stripe runs across the whole picture. A rectangle around the disc
    (x 62-149) cuts the reflection and the knob in half and slices the stripe; the mask holds all three inside.
    (image, selection, mask, the shapes by name)"""
    rng = np.random.default_rng(3)
    shape = (200, 200)
    image = _textured(rng, shape, (90, 40, 25), 3)
    yy, xx = np.mgrid[0:200, 0:200]
    shapes = {
        "stripe": (yy >= 150) & (yy < 165),
        "disc": _disc(shape, 100, 90, 30),
        "reflection": ((xx - 64) / 12.0) ** 2 + ((yy - 70) / 7.0) ** 2 <= 1,
        "knob": ((xx - 150) / 10.0) ** 2 + ((yy - 120) / 8.0) ** 2 <= 1,
    }
    for name, colour in (("stripe", (200, 150, 110)), ("knob", (200, 30, 30))):
        image[shapes[name]] = _textured(rng, shape, colour, 3)[shapes[name]]
    pale = shapes["disc"] | shapes["reflection"]
    image[pale] = _textured(rng, shape, (190, 190, 195), 5)[pale]
    sel = np.zeros(shape, bool)
    sel[40:170, 62:150] = True
    mask = (pale | shapes["knob"] | shapes["stripe"]) & sel
    return np.clip(image, 0, 255).astype(np.uint8), sel, mask, shapes


def test_a_part_the_selection_cuts_is_followed_to_its_end_a_neighbour_is_not():
    """Half a reflection left behind shows where the object was: the part of the mask that runs across the
    selection's edge and ends a few px outside, in the object's colours, goes whole. The stripe the selection
    slices runs on (the watershed cuts it across where the floods meet, which moves with the limit) and the
    red knob ends but has a neighbour's colours, not the disc's: neither gets anything."""
    image, sel, mask, shapes = _reflection_scene()
    add, info = follow_across(image, sel, mask)
    rest = shapes["reflection"] & ~sel
    assert (add & rest).sum() > 0.75 * rest.sum(), info  # the outline px beside the edge's ridge aside
    assert not (add & ~shapes["reflection"]).any(), info
    assert [p["kept"] for p in info].count(True) == 1, info


def test_a_part_that_does_not_end_within_reach_is_not_followed():
    """The same reflection, followed no farther than 6 px: it does not end there, so none of it is added (half
    a cut is no better than the other half)."""
    image, sel, mask, _ = _reflection_scene()
    add, info = follow_across(image, sel, mask, reach=6)
    assert not add.any() and not any(p["kept"] for p in info), info


@needs_u2netp
def test_the_spoons_reflection_the_lasso_cuts_goes_whole_with_the_spoon(pipe):
    """The README's lasso cuts the spoon's reflection on the cup's foot (photo x ~316-357, y ~233-259) at
    x ~332: the snap took the half inside as spoon, and the erase left half a hook with a cut (day 10, trace C).
    The half outside the lasso belongs to the mask too, and the erase's region (README defaults) takes all of
    its bright outline and highlight (before: 56 %)."""
    from backend.erase.pipeline_erase import _region_weights

    image, lasso, _, _, _ = coffee_spoon()
    out = pipe(image, lasso.astype(np.float32) / 255, SnapParams(method="combined"))
    mask = out.mask > 0.5
    rest = np.zeros(mask.shape, bool)
    rest[236:260, 314:334] = True
    rest &= (image.mean(axis=2) > 90) & (lasso == 0)  # the reflection's outline and highlight outside
    assert rest.sum() > 30
    assert mask[rest].mean() > 0.6, mask[rest].mean()  # the outline's outer px lie beside the watershed line
    region = _region_weights(out.mask, 6, 2, image)
    assert (region[rest] >= 0.99).all(), (region[rest] >= 0.99).mean()
    assert [p for p in out.meta["followed"] if p["kept"]], out.meta["followed"]
    # and nothing else outside the lasso: the cup beside the handle's tip, the saucer's rim
    outside = mask & (lasso == 0)
    outside[230:262, 312:340] = False  # the reflection
    assert not outside.any(), np.argwhere(outside)[:5]


@needs_u2netp
@pytest.mark.parametrize("tighter", [2, 4])
def test_the_spoons_reflection_goes_from_a_tighter_readme_lasso(pipe, tighter):
    """The README lasso N px tighter (eroded by a 2N+1 square, bench.erase_robust's eroN): at 4 px it runs
    along the lower edge of the reflection's highlight, and the mask's last px there were the hook's dark lower
    rim 1-3 px short of the lasso (GrabCut, the outside sure background, keeps a part that runs on outside back
    from the edge). follow_across's flood from them lost the hook's inside to the surroundings' and the erase
    left the glint by the cup's handle (main: 38 % of the hook's bright px outside the lasso in the region).
    The flood starts where the mask's colours go on outside too."""
    from backend.erase.pipeline_erase import _region_weights

    image, lasso, _, _, _ = coffee_spoon()
    sel = cv2.erode(lasso, np.ones((2 * tighter + 1,) * 2, np.uint8))
    out = pipe(image, sel.astype(np.float32) / 255, SnapParams(method="combined"))
    assert [p for p in out.meta.get("followed", []) if p["kept"] and p["reach"] > 8], out.meta.get("followed")
    rest = np.zeros(lasso.shape, bool)
    rest[236:260, 314:352] = True
    rest &= (image.mean(axis=2) > 90) & (sel == 0)  # the hook's outline and highlight outside this lasso
    assert rest.sum() > 50
    region = _region_weights(out.mask, 6, 2, image)
    assert (region[rest] >= 0.99).mean() > 0.9, (region[rest] >= 0.99).mean()
    got = spoon_checks(out.mask > 0.5)
    assert got["tip"] > 0.9 and got["whole"] == 1.0 and got["spill"] < 0.02, got


@needs_u2netp
@pytest.mark.parametrize("change", ["s0.8", "s0.9"])
def test_the_spoons_reflection_goes_on_a_smaller_coffee_snapped_at_full_resolution(pipe, change):
    """At 0.8x and 0.9x the crop fits the working side and is snapped at full resolution, where recover_thin
    does not run: the mask stopped at the bowl, 2-4 px short of the lasso at the reflection's hook, follow_across
    had no cut to follow and the erase left the hook's outer half (a glint by the cup's handle; session 13).
    At 1x (working scale 0.877) recover_thin takes the hook's inner half and follow_across the rest: the same
    now at full resolution, where the thin parts lead the follow but stay out of the mask."""
    from backend.erase.pipeline_erase import _region_weights

    image, lasso, _, _, _ = coffee_spoon()
    photo, sel, k = _perturbed_coffee(change)
    out = pipe(photo, sel.astype(np.float32) / 255, SnapParams(method="combined"))
    assert out.meta["scale"] == 1.0
    assert [p for p in out.meta.get("followed", []) if p["kept"]], out.meta.get("followed")
    rest = np.zeros(lasso.shape, bool)
    rest[236:260, 314:334] = True
    rest &= (image.mean(axis=2) > 90) & (lasso == 0)  # the hook's outline and highlight outside, at 1x
    region = cv2.resize(_region_weights(out.mask, 6, 2, photo), (600, 400), interpolation=cv2.INTER_LINEAR)
    assert (region[rest] >= 0.99).mean() > 0.9, (region[rest] >= 0.99).mean()  # main: 0.38
    got = spoon_checks(cv2.resize((out.mask > 0.5).astype(np.uint8), (600, 400)) > 0)
    assert got["spill"] < 0.02 and got["whole"] == 1.0, got
