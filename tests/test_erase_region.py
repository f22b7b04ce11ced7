"""Erase's region: grown past the object only over its fringe (issue 11, day 5).

A spoon lying against a cup: growing the region 6 px in every direction erased the cup's own rim, which no filler
can know how to redraw. The growth is edge-aware now (``pipeline_erase._fringe``): each rule is checked where it
must fire, where it must not, and everything outside the returned region stays bit-identical.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.erase import EraseParams, ErasePipeline
from backend.erase import pipeline_erase as pe
from backend.erase.pipeline_erase import CORE_GROW, _region_weights

LIT = np.array([170.0, 42.0, 14.0])  # a red saucer in the light


def _surface(colour, size=(160, 160), seed=0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 2.0, size + (3,))
    return np.clip(np.asarray(colour, np.float64) + noise, 0, 255)


def _cup_and_spoon() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A white disc (the cup) with a grey bar (the spoon) lying against its right edge, on brown; a dark halo
    2 px wide just right of the bar (3-4 px from it). Returns image, object, cup, halo."""
    img = _surface((150, 80, 40))
    yy, xx = np.mgrid[0:160, 0:160]
    cup = (yy - 80) ** 2 + (xx - 60) ** 2 <= 40**2  # reaches x = 100
    img[cup] = _surface((240, 234, 226), seed=1)[cup]
    obj = np.zeros((160, 160), bool)
    obj[30:130, 100:110] = True
    img[obj] = (128, 128, 130)
    halo = np.zeros_like(obj)
    halo[30:130, 112:114] = True  # 3-4 px right of the bar
    img[halo] = (95, 70, 55)
    return img.astype(np.uint8), obj, cup, halo


def test_the_region_stops_at_a_neighbouring_surface_and_takes_the_objects_halo():
    img, obj, cup, halo = _cup_and_spoon()
    plain = _region_weights(obj.astype(np.float32), 6, 2) > 0
    aware = _region_weights(obj.astype(np.float32), 6, 2, img) > 0
    dist = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    deep_cup = cup & (dist > CORE_GROW + 1)
    assert (plain & deep_cup).sum() > 80  # the plain growth ate into the cup's rim
    assert not (aware & deep_cup)[68:92].any()  # the edge-aware one does not where the rim runs along the bar
    assert (aware & deep_cup).sum() < 0.2 * (plain & deep_cup).sum()  # (where the rim curves away, the ring
    # crosses its outline and the pixel differs from the table beyond it: a few stay in)
    assert aware[halo].all()  # the halo differs from the surface beyond it: it goes
    assert (aware & ~obj & (dist <= CORE_GROW)).sum() == (
        ~obj & (dist <= CORE_GROW)
    ).sum()  # the edge, always
    # the plain table beside the spoon, past the halo, stays out
    assert not (aware & ~halo & (dist > CORE_GROW + 0.5) & ~cup & (np.arange(160)[None, :] > 114)).any()


def _shadow_scene(surface, shadow_scale=0.28, stripe=None, shift=9):
    """A grey disc on a surface with its cast shadow to the lower left (the disc shifted by ``shift`` px)."""
    img = _surface(surface, seed=3)
    yy, xx = np.mgrid[0:160, 0:160]
    obj = (yy - 70) ** 2 + (xx - 85) ** 2 <= 30**2
    shade = ((yy - 70 - shift) ** 2 + (xx - 85 + shift) ** 2 <= 31**2) & ~obj
    img[shade] *= shadow_scale
    if stripe is not None:  # a dark line of another colour touching the disc on the right
        img[60:80, 114:124] = stripe
    img[obj] = 190
    return img.astype(np.uint8), obj, shade


def test_a_shadow_within_the_growth_goes_and_one_beyond_it_is_a_documented_limit():
    img, obj, shade = _shadow_scene(LIT, shift=3)  # a shadow at most ~5 px wide
    aware = _region_weights(obj.astype(np.float32), 6, 2, img) > 0
    dist = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    near = shade & (dist > CORE_GROW)  # darker than the lit saucer beyond it: the object's fringe
    assert near.sum() > 60 and aware[near].mean() > 0.95
    # ~14 px wide: the band beyond the ring is shadow too. No rule reaches past the growth (one was measured:
    # it fired on shadowless bench scenes), so most of this shadow stays: a documented limit
    img, obj, shade = _shadow_scene(LIT, shift=9)
    aware = _region_weights(obj.astype(np.float32), 6, 2, img) > 0
    assert not aware[dist > 6].any()
    assert (shade & ~aware).sum() > 300
    img, obj, _ = _shadow_scene(LIT, shadow_scale=1.0)
    aware = _region_weights(obj.astype(np.float32), 6, 2, img) > 0
    assert not (aware & (dist > CORE_GROW + 1)).any()  # no shadow, no fringe: the lit saucer stays


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_exact_outside_the_edge_aware_region(dtype):
    img, obj, shade = _shadow_scene(LIT)
    cup_img, cup_obj, _, _ = _cup_and_spoon()
    for image, mask in ((img, obj), (cup_img, cup_obj)):
        layer = image.astype(np.float32) / 255
        if dtype == np.uint8:
            layer = image
        elif dtype == np.uint16:
            layer = np.rint(layer * 65535).astype(np.uint16)
        out = ErasePipeline(snapper=None)(layer, mask.astype(np.float32), EraseParams(fill="patchmatch"))
        outside = out.mask == 0
        assert out.image[outside].tobytes() == layer[outside].tobytes()
        changed = (out.image != layer).any(axis=2)
        assert changed.sum() > 0.8 * mask.sum() and not (changed & outside).any()


def test_the_cups_rim_outside_the_core_is_untouched_by_the_fill():
    img, obj, cup, _ = _cup_and_spoon()
    out = ErasePipeline(snapper=None)(img, obj.astype(np.float32), EraseParams(fill="auto"))
    dist = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    deep_cup = cup & (dist > CORE_GROW + 1)
    deep_cup[:68] = deep_cup[92:] = False  # where the rim runs along the bar
    assert out.image[deep_cup].tobytes() == img[deep_cup].tobytes()
    plain = ErasePipeline(snapper=None, edge_aware=False)(
        img, obj.astype(np.float32), EraseParams(fill="auto")
    )
    assert plain.image[deep_cup].tobytes() != img[deep_cup].tobytes()  # the plain region repainted it


def _soft_disc(tight: int, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dark disc whose edge is a Gaussian blur (sigma ``sigma``: an ordinary photo's anti-aliased edge) on a
    light surface with grain (3 levels), and a mask ``tight`` px inside the disc's edge. Returns the image, the
    surface alone (the truth), the mask."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:160, 0:160]
    surface = np.clip(np.array([200.0, 190.0, 170.0]) + rng.normal(0, 3.0, (160, 160, 3)), 0, 255)
    r2 = (yy - 80) ** 2 + (xx - 80) ** 2
    alpha = cv2.GaussianBlur((r2 <= 40**2).astype(np.float32), (0, 0), sigma)[..., None]
    img = np.rint(surface * (1 - alpha) + np.array([40.0, 35.0, 30.0]) * alpha).astype(np.uint8)
    return img, np.rint(surface).astype(np.uint8), (r2 <= (40 - tight) ** 2).astype(np.float32)


@pytest.mark.parametrize(
    ("tight", "sigma", "rings"), [(0, 1.0, (1, 2)), (1, 1.0, (1, 2)), (1, 1.5, (1, 2, 3, 4))]
)
def test_a_soft_edged_object_leaves_no_ghost_outline(tight, sigma, rings):
    """The object's anti-aliased edge is replaced whole, with an exact mask and with one a pixel too tight (an
    ordinary snap error): the feather ramp of the thinner edge-aware region fell on that edge and left it half
    there, a faint circle (rings 1-2 at -5.7 / -6.4 levels) or a dark dashed one (-10.8). A wider soft edge
    (sigma 1.5) whose tail the rule takes is replaced whole too: the ramp lay on that tail (ring 4 at -4.35)."""
    img, truth, mask = _soft_disc(tight, sigma)
    out = ErasePipeline(snapper=None)(img, mask, EraseParams(fill="auto"))
    outside = out.mask == 0
    assert out.image[outside].tobytes() == img[outside].tobytes()
    dist = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 5)
    err = out.image.astype(np.float64).mean(axis=2) - truth.astype(np.float64).mean(axis=2)
    for ring in rings:
        band = (dist > ring - 1) & (dist <= ring)
        # near the grain's level: its 3 levels average to ~0.3 over a ring's few hundred pixels, a fill's own
        # smoothing and matching add one to two levels (measured: -1.1 / -0.9 exact, -1.9 / -1.9
        # tight; before the core was kept whole: -6.6 and -3.3 on ring 1; sigma 1.5, tight: -0.8 / -0.7 /
        # -0.8 / -0.5, before the taken fringe was kept whole -0.8 / -0.7 / -2.5 / -4.35)
        assert abs(err[band].mean()) < 2.5, (ring, err[band].mean())
        assert (np.abs(err[band]) > 25).sum() <= 2, (ring, np.sort(np.abs(err[band]))[-5:])


def test_the_core_weighs_one_and_painted_softness_stays():
    img, _, mask = _soft_disc(0)
    weights = _region_weights(mask, 6, 2, img)
    dist = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 5)
    assert (weights[dist <= CORE_GROW] == 1.0).all()
    soft = mask * 0.3  # painted at 30 %: the fill is blended in at that strength, never more
    weights = _region_weights(soft, 6, 2, img)
    assert weights.max() <= 0.6 + 1e-6 and (weights[mask > 0] > 0).all()


def _haloed_disc(size: int = 600, radius: int = 230) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A light disc on a smooth gradient with grain, and a dark halo 2 px wide 3-5 px outside it (inside the
    6 px growth). Returns the image, the object, each pixel's distance to the object."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.dstack([120 + 40 * np.sin(xx / 37.0), 90 + 30 * np.cos(yy / 23.0), 60 + 0 * xx])
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    obj = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= radius**2
    img[obj] = (200, 200, 210)
    dist = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    img[(dist > 3) & (dist <= 5)] = (40, 30, 20)
    return img, obj, dist


@pytest.mark.parametrize(("fill", "edge_aware"), [("auto", True), ("auto", False), ("telea", True)])
def test_a_downscaled_crop_leaves_no_line_of_the_halo(fill, edge_aware):
    """The fill runs on the crop shrunk to ``max_side`` (a large layer: 2200 px at 1536). A model pixel the
    nearest-resampled hole left out, whose area held halo pixels, kept their dark average and brought it back
    into the region: a 1 px dark line along its edge (54-68 pixels on a 2200 px layer; 9-14 here, at the same
    scale). Now every model pixel whose area or way back touches the region is filled."""
    img, obj, dist = _haloed_disc()
    params = EraseParams(fill=fill, max_side=420)  # 600 -> 420: 0.7, as 2200 -> 1536
    out = ErasePipeline(snapper=None, edge_aware=edge_aware)(img, obj.astype(np.float32), params)
    assert out.meta["model_size"] == [420, 420]  # the crop was resampled
    outside = out.mask == 0
    assert out.image[outside].tobytes() == img[outside].tobytes()
    ring = (dist > 2) & (dist <= 7)
    dark = (out.image.astype(int).sum(axis=2) < 150) & ring  # the halo sums to 90, the surface to >= 200
    assert dark.sum() <= 1, np.argwhere(dark)[:8]


def _region_scenes(seed: int):
    """Layers of grain, colour blobs and pure noise, with one to four objects (some painted soft, one
    touching the layer's edge, a full-width line), for the tiled fringe rule against the whole window."""
    rng = np.random.default_rng(seed)
    for k in range(24):
        h, w = (int(v) for v in rng.integers(90, 260, 2))
        yy, xx = np.ogrid[:h, :w]
        if k % 4 == 0:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            img = np.clip(rng.integers(0, 256, 3) + rng.normal(0, rng.choice([2, 6, 20]), (h, w, 3)), 0, 255)
            for _ in range(int(rng.integers(0, 6))):
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, 50)
                img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(0, 256, 3)
            img = img.astype(np.uint8)
        obj = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(1, 5))):
            cy, cx = rng.integers(-20, h + 20), rng.integers(-20, w + 20)
            a, b = rng.integers(2, h // 2), rng.integers(2, w // 2)
            obj[((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1] = rng.choice([1.0, 0.4])
        if k % 6 == 1:
            obj[int(rng.integers(0, h)), :] = 1.0  # a full-width line
        if k % 6 == 2:
            obj[:, :3] = 1.0  # along the layer's edge: rings with no band beside them
        if (obj > 0).any():
            yield img, obj, int(rng.choice([3, 6, 9, 14]))


@pytest.mark.parametrize("seed", [0, 1])
def test_the_rule_in_tiles_gives_the_whole_windows_region_byte_for_byte(seed, monkeypatch):
    """The fringe rule runs only in tiles along the outline (a 5200x3400 object's 18 Mpx window cost 3-4 CPU s
    and 1.6 GiB); the region must be the one the whole window gives, in every case: tiles far smaller than the
    default so each scene crosses many tile borders, every grow, soft masks, the layer's edge."""
    whole = pe._fringe_window
    calls = {"tiles": 0, "window": 0}
    monkeypatch.setattr(
        pe, "_fringe_window", lambda *a: calls.__setitem__("window", calls["window"] + 1) or whole(*a)
    )
    for img, obj, grow_px in _region_scenes(seed):
        calls["window"] = 0
        reference = _region_weights(obj, grow_px, 2, img, tile=None)
        for tile in (16, 23, 40):
            before = calls["window"]
            got = _region_weights(obj, grow_px, 2, img, tile=tile)
            assert got.tobytes() == reference.tobytes(), (grow_px, tile, int((got != reference).sum()))
            calls["tiles"] += calls["window"] == before  # answered by tiles, not by the fallback
        for layer in (img.astype(np.uint16) * 257, img.astype(np.float32) / 255):
            assert _region_weights(obj, grow_px, 2, layer, tile=16).tobytes() == reference.tobytes()
    # a third to a half were answered by the tiles themselves (24 and 38 of ~70; 34 and 41 before day 8's flood
    # widened the margin at grow 9-14 by one band distance); the rest are windows too small to tile at that
    # grow, or rings along the layer's edge with no band beside them (the whole window answers). The scenes
    # where that flood keeps pixels out are checked in tiles by the tests of the raised grow below
    assert calls["tiles"] >= 20


def test_a_halo_the_rule_takes_is_replaced_whole():
    """The edge-aware region ends on the halo's outer edge; the 2 px feather ramp lay on the halo and left its
    outer pixel half there (a dotted dark line: 381 pixels more than 60 levels off on a 1400 px layer). The
    region the rule decided is replaced whole; at full scale (no resampling)."""
    img, obj, dist = _haloed_disc()
    truth_far = img[(dist > 8) & (dist <= 12)].astype(int).sum(axis=1).mean()  # the surface's level
    out = ErasePipeline(snapper=None)(img, obj.astype(np.float32), EraseParams(fill="auto"))
    assert out.meta["model_size"] == [600, 600]
    halo = (dist > 3) & (dist <= 5)
    assert (out.mask[halo] == 1.0).all()
    outside = out.mask == 0
    assert out.image[outside].tobytes() == img[outside].tobytes()
    ring = (dist > 2) & (dist <= 7)
    dark = out.image.astype(int).sum(axis=2) < truth_far - 90  # the halo sums to 90, the surface to ~270
    assert (dark & ring).sum() <= 2, int((dark & ring).sum())


def _rim_and_spoon() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A cup seen from above: a white rim 6 px wide (radius 34-40) around dark coffee, on brown; a grey bar
    (the spoon) lying against the rim's right edge, and a dark halo 7 px wide hugging the bar's right side
    (3-9 px from it). Returns image, object, rim, halo."""
    img = _surface((150, 80, 40), size=(200, 200))
    yy, xx = np.mgrid[0:200, 0:200]
    r2 = (yy - 100) ** 2 + (xx - 60) ** 2
    rim = (r2 <= 40**2) & (r2 > 34**2)  # its outer edge reaches x = 100
    img[rim] = _surface((240, 234, 226), size=(200, 200), seed=1)[rim]
    img[r2 <= 34**2] = _surface((70, 40, 20), size=(200, 200), seed=2)[r2 <= 34**2]
    obj, halo = _bar_and_halo(img, slice(40, 160), slice(100, 110), slice(112, 119), (60, 45, 40))
    return img.astype(np.uint8), obj, rim, halo


def _bar_and_halo(img, rows: slice, bar: slice, halo: slice, halo_rgb) -> tuple[np.ndarray, np.ndarray]:
    """Paint a grey bar (the object) and a dark halo beside it over the same ``rows`` of ``img`` (in place);
    returns their masks."""
    masks = []
    for cols, rgb in ((bar, (128, 128, 130)), (halo, halo_rgb)):
        m = np.zeros(img.shape[:2], bool)
        m[rows, cols] = True
        img[m] = rgb
        masks.append(m)
    return masks[0], masks[1]


def test_a_raised_grow_leaves_a_thin_neighbour_and_still_takes_a_wide_halo():
    """Review 7, finding C: at grow 12 the band the ring is compared with lies past a neighbour thinner than
    that (the rim: 6 px, then coffee), so the rim differed from it and was taken, 5-10 px into the cup. Its
    colour is the band's a little farther along, where the rim bends away from the spoon, and it is carried
    along the outline from there: it stays. The halo hugs the bar and is found nowhere beyond: it goes."""
    img, obj, rim, halo = _rim_and_spoon()
    dist = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    deep_rim = rim & (dist > CORE_GROW + 1)
    for grow_px in (12, 20):
        plain = _region_weights(obj.astype(np.float32), grow_px, 2) > 0
        aware = _region_weights(obj.astype(np.float32), grow_px, 2, img) > 0
        assert (plain & deep_rim).sum() > 200  # the plain growth eats the rim
        assert (aware & deep_rim).sum() <= 0.02 * (plain & deep_rim).sum(), int((aware & deep_rim).sum())
        assert aware[halo].all()  # 7 px wide, at the growth's reach: still the object's fringe
        assert (aware & ~obj & (dist <= CORE_GROW)).sum() == (~obj & (dist <= CORE_GROW)).sum()
    # the rule in tiles is still the whole window's
    reference = _region_weights(obj.astype(np.float32), 12, 2, img, tile=None)
    assert _region_weights(obj.astype(np.float32), 12, 2, img, tile=16).tobytes() == reference.tobytes()


def _bar_with_a_cast_shadow(beside: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dark bar with an 8 px cast shadow hugging its right side, on a light surface, and a surface of the
    shadow's own colour nearby that does not touch it: a line across the surface 10 px past the bar's end
    (``"line"``) or a patch beyond its top (``"patch"``). Returns image, bar, shadow (review 7 finding 2)."""
    img = _surface((200, 190, 170), size=(200, 220), seed=4)
    obj = np.zeros((200, 220), bool)
    obj[40:160, 100:110] = True
    shadow = np.zeros_like(obj)
    shadow[44:164, 110:118] = True
    dark = (110, 104, 94)
    img[shadow] = dark
    if beside == "line":
        img[170:176, 60:200] = dark
    else:
        img[20:34, 118:140] = dark
    img[obj] = (80, 80, 85)
    return img.astype(np.uint8), obj, shadow


@pytest.mark.parametrize("beside", ["line", "patch"])
def test_a_raised_grow_takes_a_shadow_fringe_whose_colour_lies_beyond_it_unconnected(beside):
    """Review 7 finding 2: the help says to raise grow "to swallow its edge and shadow fringe". Day 7's rule
    kept a ring pixel out when its colour was anywhere in the band within reach, so a cast shadow of the same
    colour as a line past the bar's end (or a patch beyond its top) was partly kept: 802 and 841 of its 960 px
    taken at grow 12, 729 and 761 at grow 20, and a shadow stub stood where the bar had been. The shadow is not
    connected to that line through pixels of its colour (the light surface lies between): it is taken, as
    before day 7 (953 of 960 with the line: the last few px are where the band beside them is the line)."""
    img, obj, shadow = _bar_with_a_cast_shadow(beside)
    for grow_px in (12, 20):
        aware = _region_weights(obj.astype(np.float32), grow_px, 2, img) > 0
        assert (aware & shadow).sum() >= 0.98 * shadow.sum(), (grow_px, int((aware & shadow).sum()))
        reference = _region_weights(obj.astype(np.float32), grow_px, 2, img, tile=None)
        for tile in (16, 40):
            got = _region_weights(obj.astype(np.float32), grow_px, 2, img, tile=tile)
            assert got.tobytes() == reference.tobytes()
    # and the light surface beside the bar past the shadow's 8 px (and the pixel its 3x3 colour mixes) stays out
    dist = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    aware = _region_weights(obj.astype(np.float32), 12, 2, img) > 0
    assert not (aware & (dist > 9.5))[50:150].any()


def test_a_raised_grow_keeps_a_thin_neighbour_seen_where_it_bends_away_and_the_tiles_agree():
    """The thin neighbour of day 7 (the rim beside the spoon) is kept through the band where it bends away
    from the bar, which it is connected to. The flood that finds it reaches 3 band distances, and tiles
    must give the whole window's answer there too (each grow, tiles far smaller than the default)."""
    img, obj, rim, halo = _rim_and_spoon()
    dist = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    deep_rim = rim & (dist > CORE_GROW + 1)
    for grow_px in (8, 12, 16, 30):
        reference = _region_weights(obj.astype(np.float32), grow_px, 2, img, tile=None)
        plain = _region_weights(obj.astype(np.float32), grow_px, 2) > 0
        # (at grow 8 the 7 px halo reaches into the band: it is the surface beyond, and stays)
        assert grow_px == 8 or (reference > 0)[halo].all()
        # at grow 30 (3/4 of the cup's radius) 27 of 512 px go, day 7 took 8: the rim's outer 1 px edge below
        # the bar, whose 3x3 colour mixes in the table (a limit, not what this test pins)
        bitten = ((reference > 0) & deep_rim).sum()
        assert bitten <= (0.02 if grow_px < 30 else 0.06) * (plain & deep_rim).sum(), (grow_px, int(bitten))
        for tile in (16, 23, 40):
            got = _region_weights(obj.astype(np.float32), grow_px, 2, img, tile=tile)
            assert got.tobytes() == reference.tobytes(), (grow_px, tile)


def test_the_rule_at_a_raised_grow_looks_at_few_times_its_window(monkeypatch):
    """Review 7 finding 2's cost (0.21 -> 0.81 CPU s at grow 12, 0.63 -> 3.93 at grow 30, on a 1200 px object):
    the 64 px tiles each carried a margin of 2-3 band distances, so at grow 30 the rule evaluated 10 times the
    window's pixels, and each differing ring pixel was compared with up to ~230 band offsets. The flood that
    replaced those offsets visits each ring pixel once per start colour it accepts, and the default tile is
    at least twice its margin: the pixels the rule evaluates, counted (no clock), stay near the window's."""
    rng = np.random.default_rng(0)
    size = 640
    yy, xx = np.mgrid[:size, :size]
    img = np.dstack([120 + 40 * np.sin(xx / 7.0), 90 + 30 * np.cos(yy / 5.0), 60 + 0 * xx])
    img = np.clip(img + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    obj = ((yy - 320) / 240.0) ** 2 + ((xx - 320) / 200.0) ** 2 <= 1
    img[obj] = (200, 200, 210)
    looked = {"px": 0}
    rule = pe._fringe

    def counting(rgb, *args, **kwargs):
        looked["px"] += rgb.shape[0] * rgb.shape[1]
        return rule(rgb, *args, **kwargs)

    monkeypatch.setattr(pe, "_fringe", counting)
    for grow_px in (12, 30):  # day 7: 3.6 and 10.7 times; day 8: 2.7 and 1.0 (the window at once)
        looked["px"] = 0
        _region_weights(obj.astype(np.float32), grow_px, 2, img)
        pad = grow_px + pe.FRINGE_OUTER + 4
        window = (480 + 2 * pad) * (400 + 2 * pad)
        assert looked["px"] <= 3 * window, (grow_px, looked["px"] / window)


def test_the_default_grow_never_reaches_the_raised_grow_rule(monkeypatch):
    """Grow 6, the default, is what every bench figure and the README's coffee are measured with: day 8's
    flood must not touch it. Up to grow 6 no ring pixel lies more than ``FRINGE_OUTER`` px inside the band, so
    ``_continued`` is never called and the region is the day-5 rule's, byte for byte (checked against main
    3879f74 on the 84 bench scenes and the coffee when it landed)."""

    def never(*args, **kwargs):
        raise AssertionError("the raised-grow rule ran at the default grow")

    monkeypatch.setattr(pe, "_continued", never)
    img, obj, _, _ = _rim_and_spoon()
    shadowed, bar, _ = _bar_with_a_cast_shadow("line")
    for grow_px in (3, 6):
        _region_weights(obj.astype(np.float32), grow_px, 2, img)
        _region_weights(bar.astype(np.float32), grow_px, 2, shadowed, tile=16)
        for scene, mask, _ in _region_scenes(0):
            _region_weights(mask, grow_px, 2, scene)
    assert pe._flood_steps(6) == 0 and pe._tile_margin(6) == 29  # day 5's margin at the default
    with pytest.raises(AssertionError, match="raised-grow rule"):
        _region_weights(obj.astype(np.float32), 12, 2, img)


def _faint_tail_over_a_wide_rim() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A grey bar (the spoon's handle) beside a white band 20 px wide (a cup's rim) on brown; the snapped mask
    is 1 on the bar and fades out over 7 px of the rim (0.36 .. 0.007, as ``grabcut-lifted`` did beside the
    README coffee's handle), and over 2 px on its other side (an ordinary anti-aliased edge). Returns the
    image, the snapped mask, the rim and each pixel's distance left of the bar."""
    img = _surface((150, 80, 40))
    rim = np.zeros((160, 160), bool)
    rim[:, 60:80] = True
    img[rim] = _surface((245, 236, 226), seed=1)[rim]
    bar = np.zeros_like(rim)
    bar[20:140, 80:90] = True
    img[bar] = (128, 128, 130)
    xx = np.arange(160)[None, :].repeat(160, axis=0).astype(np.float32)
    left = np.where(xx < 80, 80 - xx, 0)  # px left of the bar
    mask = bar.astype(np.float32)
    rows = np.zeros_like(rim)
    rows[20:140] = True
    tail = rows & (left >= 1) & (left <= 7)
    mask[tail] = 0.36 * np.exp(-(left[tail] - 1) / 1.5)
    edge = rows & (xx >= 90) & (xx < 92)
    mask[edge] = 0.4 / (xx[edge] - 88)
    return img.astype(np.uint8), mask, rim, left


def test_a_snaps_far_tail_over_a_neighbour_is_not_grown_from_but_its_edge_is():
    """The rule grows from the snapped mask's solid part and its soft edge up to ``TAIL_REACH`` px beyond it
    (``_object_part``). Grown from every pixel > 0, a tail fading out over 7 px of the rim took the rim up to
    9 px out, and the fill redrew it (the README cup's white notch: day 8's rim). Day 8's fix (grow from >=
    half the peak) was reverted for leaving objects' real anti-aliased edges behind: a 2 px edge is still
    grown from and replaced whole, and every snapped pixel keeps a weight."""
    img, mask, rim, left = _faint_tail_over_a_wide_rim()
    weights = _region_weights(mask, 6, 2, img)
    rows = np.zeros_like(rim)
    rows[30:130] = True  # away from the bar's ends
    far = rows & rim & (left > pe.TAIL_REACH + CORE_GROW)
    assert far.sum() == 100 * 15
    # grown from every pixel > 0: 400 of these px weighed more than the tail (200 of them >= 0.5)
    assert (weights[far] > mask[far] + 1e-6).sum() == 0, (weights[far] > mask[far] + 1e-6).sum()
    assert np.allclose(weights[far & (mask > 0)], mask[far & (mask > 0)])
    assert (weights[mask > 0] > 0).all()
    # the object, its near tail and its 2 px edge on the other side: replaced whole, as before
    near = rows & (mask > 0) & (left <= pe.TAIL_REACH)
    assert (weights[near] == 1.0).all()


def _bar_with_a_soft_edge_and_a_halo() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grey bar on a lit red surface; the snapped mask is 1 on the bar and fades over the 3 px right of it
    (0.30 / 0.15 / 0.05: the snap's alpha edge, within ``TAIL_REACH``), and a dark halo (the object's edge
    shadow) runs 4-9 px right of the bar: its outer part lies beyond ``grow`` px of the bar but within ``grow``
    px of the soft edge. Returns the image, the snapped mask and the halo."""
    img = _surface(LIT)
    bar, halo = _bar_and_halo(img, slice(20, 140), slice(60, 70), slice(73, 79), (95, 20, 8))
    mask = bar.astype(np.float32)
    for x, alpha in zip((70, 71, 72), (0.30, 0.15, 0.05), strict=True):
        mask[20:140, x] = alpha
    return img.astype(np.uint8), mask, halo


def test_the_fringe_taken_beyond_a_snaps_soft_edge_is_replaced_whole():
    """The rule grows from the snap's soft edge too (``_object_part``), so its ring reaches ``grow`` px past
    that edge, while the grown mask carried only the edge's own alpha there: the halo's outer 3 px, which the
    rule took, weighed 0.6 / 0.3 / 0.05 and kept 40-95 % of their dark colour under the fill (the README
    coffee: a 1 px dark line right of the spoon's neck, x 392-396, y 201-217, weights 0.10-0.35). The fringe
    the rule takes is replaced whole."""
    img, mask, halo = _bar_with_a_soft_edge_and_a_halo()
    weights = _region_weights(mask, 6, 2, img)
    rows = np.zeros_like(halo)
    rows[30:130] = True  # away from the bar's ends
    assert (weights[rows & halo] == 1.0).all(), np.unique(
        weights[rows & halo]
    )  # main: 0.6 / 0.3 / 0.05 at x 76-78
    assert (weights[30:130, 80:] == 0).all()  # the lit surface beyond stays
    out = ErasePipeline(snapper=None)(img, mask, EraseParams(fill="auto"))
    dark = out.image.astype(int).sum(axis=2) < int(LIT.sum()) - 60  # the halo sums to 123, the surface to 226
    assert (dark & rows & halo).sum() == 0, int((dark & rows & halo).sum())


def test_at_the_default_grow_a_window_smaller_than_its_tiles_is_evaluated_at_once(monkeypatch):
    """Tiles pay off only where they look at fewer pixels than the window holds (a 5200x3400 object). The 600
    px speed scene's 0.36 Mpx window took ~40 tiles of 122^2 px, 2.5x the rule's time of the window at once
    (its holes then sent it to the whole window anyway, after the tiles). The answer is the same either way."""
    img, obj, _, _ = _cup_and_spoon()
    calls = []
    real = pe._fringe
    monkeypatch.setattr(pe, "_fringe", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = _region_weights(obj.astype(np.float32), 6, 2, img)
    assert len(calls) == 1  # the two tiles along the bar would be two
    calls.clear()
    assert got.tobytes() == _region_weights(obj.astype(np.float32), 6, 2, img, tile=16).tobytes()
    assert len(calls) > 1  # a side asked for explicitly is kept
