"""ErasePipeline: snap the selection to the object, grow it over the object's edge, fill it with background.

Components are injected: a ``SnapPipeline`` (or None: the selection is used as is) and fillers by name
(``classical_fillers()`` by default; learned and diffusion fillers join the same dict). ``fill="auto"`` takes the
first of ``AUTO_ORDER`` present: a learned filler when one was injected, else the embedded auto filler
(PatchMatch completion, smooth gradients included). The fill
runs on the crop around the region (``imaging.plan_crop``), never on the whole layer, and the result is pasted
back through ``imaging.composite``: pixels outside the region are the input's exact bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import cv2
import numpy as np

from backend.imaging import (
    FillEncoding,
    MaskWindow,
    bbox,
    bbox_positive,
    bleed_colours,
    composite,
    feather_inward,
    grow,
    plan_crop_around,
    see_through,
    to_float,
    to_rgb_u8,
)
from backend.params.erase import EraseParams
from backend.snapping import SnapPipeline

from .fill_learned import LEARNED_FILLS
from .fillers import Filler, classical_fillers

Callback = Callable[[str, int, int], None]
AUTO_ORDER = (*LEARNED_FILLS, "auto")  # a learned filler when one was injected, else the embedded auto


class NothingToFill(ValueError):
    """The region is empty: there is no object to erase."""


class NoBackground(ValueError):
    """The region covers the whole crop/layer: there is no background left to fill from."""


@dataclass
class EraseOutput:
    image: np.ndarray  # the input's shape and dtype; bit-identical outside ``mask``
    region_window: MaskWindow  # the blend weights actually used (grown, feathered), around the object
    snapped_window: MaskWindow  # the snapped object mask before growing, around the object
    meta: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def mask(self) -> np.ndarray:
        """float32 HxW: the blend weights actually used (full-size, built when first asked for)."""
        return self.region_window.full()

    @cached_property
    def snapped(self) -> np.ndarray:
        """float32 HxW: the snapped object mask before growing (full-size, built when first asked for)."""
        return self.snapped_window.full()


class ErasePipeline:
    def __init__(
        self,
        snapper: SnapPipeline | None = None,
        fillers: dict[str, Filler] | None = None,
        edge_aware: bool = True,
        fringe_tile: int | None = None,
    ):
        self.snapper = snapper
        self.edge_aware = edge_aware  # False: the plain disk growth (benchmarks compare the two)
        # the edge-aware rule's tiles (None: FRINGE_TILE); 0 evaluates it (and the selected-shadow step) over the
        # whole window at once, as before the tiling (the same region byte for byte: benchmarks compare the cost)
        self.fringe_tile = FRINGE_TILE if fringe_tile is None else (fringe_tile or None)
        self.fillers: dict[str, Filler] = dict(classical_fillers())
        self.fillers.update(fillers or {})

    def resolve(self, fill: str) -> str:
        """The filler name ``fill`` stands for: "auto" is the first learned filler this pipeline was given, else
        the embedded auto filler (PatchMatch)."""
        if fill != "auto":
            return fill
        return next((name for name in AUTO_ORDER if name in self.fillers), fill)

    def __call__(
        self,
        image: np.ndarray,
        selection: np.ndarray,
        params: EraseParams | None = None,
        callback: Callback | None = None,
    ) -> EraseOutput:
        params = params or EraseParams()
        filler = self.fillers.get(self.resolve(params.fill))
        if filler is None:
            raise KeyError(f"unknown fill method {params.fill!r}; have: {', '.join(sorted(self.fillers))}")
        sel = np.asarray(selection, np.float32)  # no copy: the host's selection is float32 already
        shape = sel.shape[:2]
        box = bbox_positive(sel)
        if box is None:
            raise NothingToFill("the selection is empty")

        # every mask lives in a window around the object (MaskWindow): a 60 px object in a 4096x4096 layer used
        # to cost ~256 MiB of full-size float32 masks; only the result layer is full-size, copied once
        _report(callback, "snap", 0, 3)
        if self.snapper is not None and params.snap.enabled:
            snapped, snap_meta = _snap_window(self.snapper, image, sel, params, box)
        else:
            # the selection's own values in its box (a copy: the output must not alias the caller's array;
            # values <= 0 outside the box read as 0, as the u8 mask the host gets always had them)
            x0, y0, x1, y1 = box
            snapped = MaskWindow(sel[y0:y1, x0:x1].copy(), box, shape)
            snap_meta = {"method": "selection", "snapped": False}
        # the user's own selection, where the snap changed it: the rule may take the object's soft cast shadow
        # the user drew around (``_selected_shadow``); unsnapped, the selection is the object and nothing is
        lasso = sel if self.snapper is not None and params.snap.enabled else None
        weights = _region_window(
            snapped,
            params.grow,
            params.feather,
            image if self.edge_aware else None,
            tile=self.fringe_tile,
            selection=lasso,
        )
        # a filler that takes a hint fills the plainly grown region with the clean part of its ring as known
        # colours (its hole keeps the shape it was measured with); the others fill the edge-aware region
        hinted = bool(getattr(filler, "takes_hint", False)) and self.edge_aware
        hole_weights = _region_window(snapped, params.grow, 0).maximum(weights) if hinted else weights
        if weights.positive_box() is None:
            raise NothingToFill("nothing left to erase after snapping")

        _report(callback, "fill", 1, 3)
        target = filler.target if filler.target is not None else params.max_side
        hole_box = hole_weights.positive_box()
        if hole_box is None:
            raise NothingToFill("nothing left to erase after snapping")
        plan = plan_crop_around(
            hole_box,
            shape,
            context=getattr(filler, "context", None) or params.context,
            keep_size=True,
            multiple=8 if filler.target is not None else 1,
            target=target,
            allow_upscale=filler.target is not None,
            min_context=_min_context_around(hole_box, getattr(filler, "min_crop", None)),
        )
        weights_crop = weights.crop(plan.box)
        hole_crop = hole_weights.crop(plan.box) > 0
        if hole_crop.all():
            raise NoBackground("the region covers everything around it; there is no background to fill from")
        encoding = FillEncoding.for_crop(plan.crop(image))  # float layers: their range, darks given levels
        colour = encoding.encode(plan.crop(image))
        alpha = see_through(plan.crop(image))  # None on an opaque layer: the usual case, alpha kept as it is
        if alpha is not None:  # transparent pixels' colours are arbitrary: copies take the nearest real ones
            # only fully clear pixels change, each to the nearest real colour OUTSIDE the hole: every other pixel
            # keeps its own (the hint ring's real colours), and the erased object never leaks back as a source
            bled = bleed_colours(colour, (alpha > 0) & ~hole_crop)
            colour = np.where((alpha == 0)[:, :, None], bled, colour)
        rgb = plan.to_model(colour)
        hole, reach = _model_hole(plan, hole_crop, weights_crop > 0)
        if hole.all():
            raise NoBackground("the region covers everything around it; there is no background to fill from")
        hint = None
        if hinted:
            clean = plan.to_model((hole_crop & (weights_crop <= 0)).astype(np.uint8), smooth=False) > 0
            hint = clean & hole & ~reach
            filled = filler(rgb, hole, hint=hint)
        else:
            filled = filler(rgb, hole)
        if filled.shape[:2] != rgb.shape[:2]:
            raise ValueError(f"filler {filler.name!r} returned {filled.shape[:2]}, expected {rgb.shape[:2]}")
        filled_crop = encoding.decode(plan.from_model(to_float(np.asarray(filled))))
        if alpha is not None:
            filled_crop = np.dstack([filled_crop, _fill_alpha(plan, alpha, hole, hint)])

        _report(callback, "composite", 2, 3)
        # every weight > 0 lies inside the crop: composite there, copy the rest of the layer untouched
        out = image.copy()
        x0, y0, x1, y1 = plan.box
        out[y0:y1, x0:x1] = composite(plan.crop(image), filled_crop, weights_crop, keep_alpha=alpha is None)
        _report(callback, "composite", 3, 3)
        meta = {
            "snap": snap_meta,
            "fill": getattr(filler, "chosen", None) or filler.name,  # what really filled (auto picks one)
            "fill_requested": params.fill,
            "crop": list(plan.box),
            "model_size": list(plan.model_size),
        }
        return EraseOutput(out, weights, snapped, meta)


def _fill_alpha(plan, alpha: np.ndarray, hole: np.ndarray, hint: np.ndarray | None) -> np.ndarray:
    """The region's alpha, filled from the alpha around it (crop-sized HxW float32): an object on a transparent
    layer becomes transparent, one that overhangs a layer's transparent edge keeps that edge. PatchMatch for
    every filler (a learned or diffusion model is not made for alpha). A cut-out alpha (only clear and opaque
    around the hole) is copied and stays cut out: the gradient-domain meld would leave a faint haze of
    1-13 levels past a hard edge; a soft alpha (a ramp, a vignette) is melded, which continues it smoothly."""
    from .patchmatch import PatchMatchFiller

    model = plan.to_model(alpha)
    known = model[~hole]
    cut_out = known.size > 0 and np.mean((known > 2) & (known < 253)) < 0.01
    grey = np.ascontiguousarray(np.repeat(model[:, :, None], 3, axis=2))
    filled = PatchMatchFiller(options={"meld": not cut_out})(grey, hole, hint=hint).mean(axis=2)
    if cut_out:
        filled = np.where(filled >= 128, 255, 0)
    return plan.from_model(to_float(filled.astype(np.uint8)))


def _snap_window(
    snapper, image: np.ndarray, sel: np.ndarray, params: EraseParams, box
) -> tuple[MaskWindow, dict]:
    """The snapped object as a window, and the snap's meta. A ``SnapPipeline`` snaps in the crop around the
    selection (``snap_window``); any other snapper (a callable returning ``.mask``, full-size) is windowed."""
    if hasattr(snapper, "snap_window"):
        snap = snapper.snap_window(image, sel, params.snap, box=box)
        return snap.mask, {"method": snap.method, **snap.meta}
    snap = snapper(image, sel, params.snap)
    return MaskWindow.whole(np.asarray(snap.mask)), {"method": snap.method, **snap.meta}


CORE_GROW = 2  # px always grown past the object: its anti-aliased edge and the snap's pixel error
FRINGE_OUTER = 4  # px: the band beyond a ring that says what the surface there looks like
# a ring pixel closer than FRINGE_ABS levels (RGB distance) to the surface beyond, or than FRINGE_NOISE times
# that surface's local spread (texture, grain), is that surface
FRINGE_ABS = 12.0
FRINGE_NOISE = 2.5
# px: the side of the tiles the fringe rule is evaluated in (each with a margin of ``_tile_margin`` px); only
# tiles along the object's outline are looked at, so a large object's interior costs nothing
FRINGE_TILE = 64
SEEN_FACTOR = 0.5
# px beyond a snapped mask's solid part that its soft edge is the object's own (``_object_part``)
TAIL_REACH = 3.0


def _model_hole(plan, hole_crop: np.ndarray, region_crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hole at the model's scale, and the model pixels the region reaches there (bool, model size).

    A resampled crop's model pixel averages the crop pixels under it (INTER_AREA), and each region pixel comes
    back as a bilinear mix of the model pixels around it. A model pixel the nearest-resampled hole left out
    but whose area holds region pixels (the object, its halo) would be kept, or copied into the fill, with
    their colour, and that colour would come back into the region: a 1 px line of a dark halo along the
    region's edge survived so on a 2200 px layer filled at 1536 (review5 finding 7). So every model pixel
    whose area or bilinear reach touches the region is part of the hole (and never a hint). At scale 1
    nothing is resampled and the hole is the crop's own."""
    hole = plan.to_model(hole_crop.astype(np.uint8), smooth=False) > 0
    if tuple(plan.model_size) == tuple(plan.crop_size):
        return hole, np.zeros_like(hole)
    reach = plan.to_model(region_crop.astype(np.float32)) > 0  # area (or bilinear) footprint
    reach = cv2.dilate(reach.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # the way back's bilinear reach
    return hole | reach, reach


def _region_weights(
    snapped: np.ndarray,
    grow_px: int,
    feather_px: int,
    image: np.ndarray | None = None,
    *,
    tile: int | None = FRINGE_TILE,
    selection: np.ndarray | None = None,
    shadow_tile: int | None = None,
) -> np.ndarray:
    """``_region_window`` for a full-size ``snapped`` mask, as a full-size array (tests, benchmarks)."""
    return _region_window(
        MaskWindow.whole(snapped),
        grow_px,
        feather_px,
        image,
        tile=tile,
        selection=selection,
        shadow_tile=shadow_tile,
    ).full()


def _region_window(
    snapped: MaskWindow,
    grow_px: int,
    feather_px: int,
    image: np.ndarray | None = None,
    *,
    tile: int | None = FRINGE_TILE,
    selection: np.ndarray | None = None,
    shadow_tile: int | None = None,
) -> MaskWindow:
    """Blend weights: the snapped mask grown by up to ``grow_px``, binary where the object is (the fill replaces
    it whole), soft only where the user painted soft, feathered inward. Computed in a window around the mask,
    not over the whole layer.

    With ``image``, the growth is edge-aware (``_fringe``): the first ``CORE_GROW`` px always (the object's
    anti-aliased edge), the rest only where the ring still looks like the object's fringe (halo, attached
    shadow) rather than the surface beyond it. A cup in front of a spoon keeps its own rim: growing 6 px into it
    erased the cup's silhouette, which no filler can know how to redraw. That region is replaced whole (weight
    1 up to its edge, ``feather`` unused): it ends where the fringe ends, so a ramp would lie on the fringe
    itself and leave it half there. The rule is evaluated in ``tile`` px
    tiles along the object's outline only (``_fringe_tiled``; None: over the whole window at once, the same
    result byte for byte). The weights are zero outside the window they are returned in. With ``selection`` the
    object's soft cast shadow the user selected is added (``_selected_shadow``, in ``shadow_tile`` px tiles;
    None: ``SHADOW_TILE`` where the rule is tiled, the whole window where it is not; 0: the whole window)."""
    box = snapped.positive_box()
    if box is None:
        return MaskWindow.empty(snapped.shape)
    h, w = snapped.shape
    pad = grow_px + FRINGE_OUTER + 4
    x0, y0, x1, y1 = max(0, box[0] - pad), max(0, box[1] - pad), min(w, box[2] + pad), min(h, box[3] + pad)
    window = snapped.crop((x0, y0, x1, y1))
    region = grow(window, grow_px)
    core = None
    left_out = None
    if image is not None and grow_px > CORE_GROW:
        obj = _object_part(window)
        found = _fringe_tiled(image[y0:y1, x0:x1], obj, grow_px, tile)
        if found is not None:
            core = found  # the object, its always-grown edge and the fringe the rule took
            region = np.where(core, _fringe_strength(window, region, core & ~obj, grow_px), 0).astype(
                np.float32
            )
            left_out = (window > 0) & ~core  # a far tail the rule did not take: blended at its own strength
    region = np.where(region >= 0.5, 1.0, region * 2).astype(np.float32)
    weights = feather_inward(region, feather_px)
    if core is not None:
        # the edge-aware region (the object, its anti-aliased edge, the fringe the rule took) is replaced whole:
        # the feather ramp would otherwise fall on the object's own edge or on its halo and leave its colour half
        # there, a ghost outline (the halo's outer pixel at 0.5). Painted-soft weights stay as painted.
        np.maximum(weights, (core & (region >= 1.0)).astype(np.float32), out=weights)
        if left_out.any():
            # the returned region still covers every pixel of the snapped object, at least at its strength
            weights[left_out] = np.maximum(weights[left_out], window[left_out])
    out = MaskWindow(weights, (x0, y0, x1, y1), snapped.shape)
    if core is not None and selection is not None:
        if shadow_tile is None:
            shadow_tile = SHADOW_TILE if tile else 0
        shadow = _selected_shadow(image, core, (x0, y0, x1, y1), selection, shadow_tile or None)
        if shadow is not None:
            out = out.maximum(shadow)
    return out


# The object's soft cast shadow, where the user's selection holds it and the snap left it out
# (``_selected_shadow``). Only pixels the user selected are taken: the quality bench's regions (selection = object)
# and a precise selection are untouched. The same rule over every ring (day 11, bowl11) took dark grain beside 10
# of the 84 bench objects and cost 0.13 dB.
CAST_REACH = 14  # px past the region: how far the shadow may be taken in (never past the selection)
CAST_BAND = 6  # px beyond that: the surface the shadow is measured against
CAST_MIN = 0.06  # of that surface's level: a shade at least this much darker is the shadow's core ...
CAST_WEAK = 0.025  # ... and, joined to its core, at least this much darker is its fading outer part
CAST_MAX = 0.45  # of it: a deeper one is another dark surface (an umbra, a dark object), not a faint shadow
CAST_CHROMA = 0.04  # a shadow darkens a surface and keeps its hue: r/(r+g+b) and g/(r+g+b) within this
CAST_NOISE = 3.0  # x the surface's 7x7 spread: a smaller deficit (core) is texture; x 1 for the outer part
CAST_RUN = 24  # px of the region's outline that a core piece must hug
CAST_FEATHER = 4.0  # px: the taken shade's weights ramp up from its outer edge (a cut in a soft shade)
# px: the side of the tiles ``_selected_shadow`` tests its ring in (at least ``CAST_REACH + CAST_BAND + 1``:
# a ring or band pixel lies in a tile next to one that holds the region)
SHADOW_TILE = 128
# px: how far a tile's ring pixel may lie from the band pixel it is compared with; farther (a region along the
# window's edge, where the band is cut off) and the whole window is evaluated, as a tile cannot see that far
SHADOW_GAP = CAST_REACH + CAST_BAND


def _selected_shadow(
    image: np.ndarray,
    core: np.ndarray,
    box: tuple[int, int, int, int],
    selection: np.ndarray,
    tile: int | None = SHADOW_TILE,
) -> MaskWindow | None:
    """The object's soft cast shadow that the user selected and the snap left out, as blend weights in a
    window around ``box`` (the edge-aware region ``core`` in it), or None.

    A user who lassos a spoon draws around its shadow too; the edge-aware rule leaves a soft shade out (each of
    its pixels is close to the surface just beyond it), and after the erase its darkest part outlines the
    object (the README coffee: 10-15 levels under the lit saucer beside the bowl). A selected pixel up to
    ``CAST_REACH`` px out is the shadow's core when it is darker than the surface ``CAST_REACH``..+
    ``CAST_BAND`` px out (``CAST_MIN``..``CAST_MAX`` of its level, ``CAST_NOISE`` x its spread), of the same
    hue, and lightens steadily toward it; core pieces hugging ``CAST_RUN`` px of the region's outline are
    taken, with the fainter selected shade (``CAST_WEAK``) joined to them, up to the selection's edge.

    The per-pixel tests (colour conversion, blurs, box filters, each ring pixel's nearest band pixel) run in
    ``tile`` px tiles along the outline only (``_shadow_tiled``; None: over the whole window, the same weights
    byte for byte): a 5200x3400 object's window is 18 Mpx, its ring and band a few hundred kpx. The pieces and
    their growth are global (a piece runs along the whole outline) and stay on boolean arrays."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    pad = CAST_REACH + CAST_BAND + 3
    X0, Y0, X1, Y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    reg = np.zeros((Y1 - Y0, X1 - X0), bool)
    reg[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0] = core
    img = image[Y0:Y1, X0:X1]
    sel = np.asarray(selection[Y0:Y1, X0:X1])
    found = _shadow_tiled(img, reg, sel, tile) if tile else None
    if found is None:
        found = _shadow_cands(img, reg, sel)
    if found is False:
        return None
    weights = _shadow_weights(reg, *found)
    return None if weights is None else MaskWindow(weights, (X0, Y0, X1, Y1), (h, w))


def _shadow_tests(
    img: np.ndarray, band: np.ndarray, ry: np.ndarray, rx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(strong, faint, gap) for the ring pixels (``ry``, ``rx``) of the crop ``img`` (``band``: its band):
    whether each is the shadow's core, its fainter part, and its distance to the band pixel it is compared
    with. Every value read lies within that distance + 6 px (the 13 px Gaussian, the 7x7 box) of the ring
    pixel, so a crop holding that neighbourhood gives the whole window's answer."""
    f = to_rgb_u8(img).astype(np.float32)  # as the fringe rule sees it: gray, alpha, floats
    raw = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    luma = cv2.GaussianBlur(raw, (0, 0), 1.5)
    bm = band.astype(np.float32)
    den = np.maximum(cv2.boxFilter(bm, -1, (7, 7), normalize=False), 1e-6)
    mean = cv2.boxFilter(f * bm[:, :, None], -1, (7, 7), normalize=False) / den[:, :, None]
    lm = cv2.boxFilter(raw * bm, -1, (7, 7), normalize=False) / den
    spread = np.sqrt(
        np.maximum(cv2.boxFilter(raw * raw * bm, -1, (7, 7), normalize=False) / den - lm * lm, 0)
    )
    qy, qx, gap = _nearest_band(band, ry, rx)  # each ring pixel's nearest band pixel: its surface
    surface = mean[qy, qx]
    level = surface @ np.float32([0.299, 0.587, 0.114])
    own = luma[ry, rx]
    deficit = level - own
    noise = spread[qy, qx]
    smooth = cv2.GaussianBlur(f, (0, 0), 1.5)[ry, rx]
    hue = smooth[:, :2] / np.maximum(smooth.sum(axis=1, keepdims=True), 1.0)
    hue_s = surface[:, :2] / np.maximum(surface.sum(axis=1, keepdims=True), 1.0)
    # the shade lightens steadily toward the surface: sampled a third and two thirds of the way out
    a = luma[(2 * ry + qy) // 3, (2 * rx + qx) // 3]
    b = luma[(ry + 2 * qy) // 3, (rx + 2 * qx) // 3]
    shade = (
        (deficit < CAST_MAX * level)
        & (np.abs(hue - hue_s).max(axis=1) < CAST_CHROMA)
        & (a >= own - 1.0)
        & (b >= a - 1.0)
        & (level >= b - 1.0)
    )
    strong = shade & (deficit > np.maximum(CAST_MIN * level, CAST_NOISE * noise))
    faint = shade & (deficit > np.maximum(CAST_WEAK * level, noise))
    return strong, faint, gap


def _shadow_rings(reg: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ring, band) of a (crop of the) window: the selected pixels up to ``CAST_REACH`` px outside the region,
    and the pixels ``CAST_REACH``..+``CAST_BAND`` px out."""
    dist = cv2.distanceTransform((~reg).astype(np.uint8), cv2.DIST_L2, 5)
    ring = (dist > 0) & (dist <= CAST_REACH) & (sel >= 0.5)
    band = (dist > CAST_REACH) & (dist <= CAST_REACH + CAST_BAND)
    return ring, band


def _shadow_cands(
    img: np.ndarray, reg: np.ndarray, sel: np.ndarray
) -> tuple[np.ndarray, np.ndarray, None] | Literal[False]:
    """``_selected_shadow``'s per-pixel tests over the whole window at once: (core candidates, the fainter
    shade they may grow through, None), or False (no ring or no band: nothing was drawn around the object)."""
    ring, band = _shadow_rings(reg, sel)
    if not ring.any() or not band.any():
        return False  # the selection is the object and its fringe: nothing else was drawn around it
    ry, rx = np.nonzero(ring)
    strong, faint, _ = _shadow_tests(img, band, ry, rx)
    cand = np.zeros_like(reg)
    cand[ry[strong], rx[strong]] = True
    allowed = np.zeros_like(reg)
    allowed[ry[faint], rx[faint]] = True
    return cand, allowed, None


def _shadow_tiled(
    img: np.ndarray, reg: np.ndarray, sel: np.ndarray, tile: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]] | Literal[False] | None:
    """``_shadow_cands``'s answer computed in ``tile`` px tiles next to the region (each ring pixel with the
    neighbourhood its tests read), with the tiles that hold ring pixels (y0, x0, y1, x1), or None where a tile cannot be sure of it (a ring pixel farther than
    ``SHADOW_GAP`` from its band pixel) or the window is small: the caller evaluates the whole window."""
    h, w = reg.shape
    reach = CAST_REACH + CAST_BAND
    look = SHADOW_GAP + 7  # the float tests' neighbourhood of a ring pixel (``_shadow_tests``)
    exact = reach + 2  # the distance map is the window's up to ``reach`` with the region this far around
    if tile == SHADOW_TILE and h * w <= 4 * (tile + 2 * (look + exact)) ** 2:
        return None  # a few tiles would look at the whole window (a side asked for, the tests' small tiles, is kept)
    tile = max(int(tile), reach + 1)
    ty, tx, todo = _outline_tiles(reg, tile)
    cand = np.zeros_like(reg)
    allowed = np.zeros_like(reg)
    ring_any = band_any = False
    boxes = []
    for j, i in zip(*np.nonzero(todo), strict=True):
        cy0, cx0 = j * tile, i * tile
        cy1, cx1 = min(h, cy0 + tile), min(w, cx0 + tile)
        # the tile's ring and band (the distance map exact up to ``reach`` px with ``exact`` px around)
        ey0, ex0, ey1, ex1 = _grown_box((cy0, cx0, cy1, cx1), exact, h, w)
        ring, band = _shadow_rings(reg[ey0:ey1, ex0:ex1], sel[ey0:ey1, ex0:ex1])
        inner = np.s_[cy0 - ey0 : cy1 - ey0, cx0 - ex0 : cx1 - ex0]
        band_any |= bool(band[inner].any())
        ry, rx = np.nonzero(ring[inner])
        if not len(ry):
            continue
        ring_any = True
        boxes.append((cy0, cx0, cy1, cx1))
        # the float tests on the ring's box + ``look`` px, the distance map on that + ``exact`` px
        fy0, fx0 = max(0, cy0 + int(ry.min()) - look), max(0, cx0 + int(rx.min()) - look)
        fy1, fx1 = min(h, cy0 + int(ry.max()) + 1 + look), min(w, cx0 + int(rx.max()) + 1 + look)
        dy0, dx0, dy1, dx1 = _grown_box((fy0, fx0, fy1, fx1), exact, h, w)
        _, band = _shadow_rings(reg[dy0:dy1, dx0:dx1], sel[dy0:dy1, dx0:dx1])
        band = np.ascontiguousarray(band[fy0 - dy0 : fy1 - dy0, fx0 - dx0 : fx1 - dx0])
        if not band.any():
            return None
        py, px = ry + (cy0 - fy0), rx + (cx0 - fx0)
        strong, faint, gap = _shadow_tests(img[fy0:fy1, fx0:fx1], band, py, px)
        if (gap > SHADOW_GAP).any():
            return None
        gy, gx = ry + cy0, rx + cx0
        cand[gy[strong], gx[strong]] = True
        allowed[gy[faint], gx[faint]] = True
    if not ring_any or not band_any:
        return False
    return cand, allowed, boxes


def _shadow_weights(
    reg: np.ndarray,
    cand: np.ndarray,
    allowed: np.ndarray,
    boxes: list[tuple[int, int, int, int]] | None = None,
) -> np.ndarray | None:
    """The shadow's weights over the window: the core candidates' pieces that hug ``CAST_RUN`` px of the
    region's outline, grown through the fainter shade, ramped up over ``CAST_FEATHER`` px; None if none.
    ``boxes``: the tiles that hold every ring pixel (``_shadow_tiled``), where the growth and the ramp are
    worked out (each with the context it reads), the same weights byte for byte; None: the whole window."""
    if boxes is not None:
        return _shadow_weights_tiled(reg, cand, allowed, boxes)
    outline = reg & ~(cv2.erode(reg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    count, pieces = cv2.connectedComponents(cand.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    # how many outline pixels each piece touches (8-connected): the pairs (outline pixel, piece beside it)
    oy, ox = np.nonzero(outline)
    padded = np.pad(pieces, 1)
    pairs = [
        np.arange(len(oy), dtype=np.int64) * count + padded[oy + 1 + dy, ox + 1 + dx]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    touched = np.bincount(np.unique(np.concatenate(pairs)) % count, minlength=count)
    touched[0] = 0
    taken = (touched >= CAST_RUN)[pieces]
    if not taken.any():
        return None
    taken = _connected(taken, allowed | taken, CAST_REACH)
    inner = cv2.distanceTransform((taken | reg).astype(np.uint8), cv2.DIST_L2, 5)
    return np.where(taken, np.minimum(1.0, inner / CAST_FEATHER), 0).astype(np.float32)


def _shadow_weights_tiled(
    reg: np.ndarray, cand: np.ndarray, allowed: np.ndarray, boxes: list[tuple[int, int, int, int]]
) -> np.ndarray | None:
    """``_shadow_weights`` where the candidates lie in ``boxes``: the pieces are labelled over the window (one
    may run along the whole outline), the outline pixels beside them found from their own pixels, and the growth
    (``CAST_REACH`` steps) and the ramp (< ``CAST_FEATHER`` px matters) worked out per box with that much context.
    """
    h, w = reg.shape
    count, pieces = cv2.connectedComponents(cand.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    cy, cx = np.nonzero(cand)
    label = pieces[cy, cx]
    # the (outline pixel, piece) pairs: an outline pixel is a region pixel with a pixel outside the region among
    # its 8 neighbours (the window's border is not outside: the erode's border)
    near = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            qy, qx = cy + dy, cx + dx
            ok = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
            ok[ok] = reg[qy[ok], qx[ok]]
            near.append(np.stack([qy[ok], qx[ok], label[ok]]))
    qy, qx, ql = np.unique(np.concatenate(near, axis=1), axis=1)
    edge = np.zeros(len(qy), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ny, nx = qy + dy, qx + dx
            ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            ok[ok] = ~reg[ny[ok], nx[ok]]
            edge |= ok
    touched = np.bincount(ql[edge], minlength=count)
    touched[0] = 0
    keep = (touched >= CAST_RUN)[label]
    if not keep.any():
        return None
    taken = np.zeros_like(reg)
    taken[cy[keep], cx[keep]] = True
    grown = taken.copy()
    step = CAST_REACH + 1
    for y0, x0, y1, x1 in boxes:  # every candidate and every pixel it can grow into lies in these
        a0, b0, a1, b1 = max(0, y0 - step), max(0, x0 - step), min(h, y1 + step), min(w, x1 + step)
        t = taken[a0:a1, b0:b1]
        g = _connected(t, allowed[a0:a1, b0:b1] | t, CAST_REACH)
        grown[y0:y1, x0:x1] = g[y0 - a0 : y1 - a0, x0 - b0 : x1 - b0]
    weights = np.zeros(reg.shape, np.float32)
    ramp = int(CAST_FEATHER) + 2
    for y0, x0, y1, x1 in boxes:
        a0, b0, a1, b1 = max(0, y0 - ramp), max(0, x0 - ramp), min(h, y1 + ramp), min(w, x1 + ramp)
        g = grown[a0:a1, b0:b1]
        inner = cv2.distanceTransform((g | reg[a0:a1, b0:b1]).astype(np.uint8), cv2.DIST_L2, 5)
        part = np.s_[y0 - a0 : y1 - a0, x0 - b0 : x1 - b0]
        weights[y0:y1, x0:x1] = np.where(g[part], np.minimum(1.0, inner[part] / CAST_FEATHER), 0)
    return weights


def _grown_box(box: tuple[int, int, int, int], by: int, h: int, w: int) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) grown by ``by`` px on every side, clipped to an h x w window."""
    y0, x0, y1, x1 = box
    return max(0, y0 - by), max(0, x0 - by), min(h, y1 + by), min(w, x1 + by)


def _outline_tiles(mask: np.ndarray, tile: int) -> tuple[int, int, np.ndarray]:
    """The ``tile`` px grid over ``mask`` (HxW bool): its rows, its columns and which tiles hold or touch the
    mask's outline (a tile with mask pixels or next to one, unless the mask fills it: the padding past the
    window counts as mask, not background). The edge rule and the shadow step both work only there."""
    h, w = mask.shape
    ty, tx = -(-h // tile), -(-w // tile)
    padded = np.zeros((ty * tile, tx * tile), bool)
    padded[:h, :w] = mask
    has = padded.reshape(ty, tile, tx, tile).any(axis=(1, 3))
    padded[h:] = True
    padded[:, w:] = True
    full = padded.reshape(ty, tile, tx, tile).all(axis=(1, 3))
    return ty, tx, (cv2.dilate(has.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~full


def _object_part(window: np.ndarray) -> np.ndarray:
    """bool: the pixels of a (snapped) mask the edge-aware rule grows from: its solid part (>= half its
    peak) and its soft edge up to ``TAIL_REACH`` px beyond it (a mask painted at one strength is all solid).

    An object's anti-aliased edge, as the snap softens it, lies within ~3 px of its solid part (the 36
    hand-labelled real-photo cases of ``bench.erase_traces``: at most 44 tail pixels farther, of 100-2500). A
    tail that fades out much farther is the snap's doubt over a neighbour: on the README coffee,
    ``grabcut-lifted`` spreads 5e-6..0.36 up to 7 px over the cup's white rim beside the spoon's handle (1189
    tail pixels more than 3 px out), and the rule, growing from every pixel > 0, took the rim whole and the
    fill redrew it as a white step (white rim px in the region 535 -> 334). Past the reach the tail is a ring pixel like any other (taken if it
    differs from the surface beyond) and otherwise blended at its own strength. Day 8's cut at half the peak
    (every tail pixel) left the objects' real edges behind (bench.erase_traces 1457 / 409 -> 2757 / 2396);
    cut at 3 px those figures do not move."""
    obj = window > 0
    solid = window >= 0.5 * float(window.max(initial=0.0))
    tail = obj & ~solid
    if not tail.any() or not solid.any():
        return obj
    dist = cv2.distanceTransform((~solid).astype(np.uint8), cv2.DIST_L2, 5)
    return obj & (dist <= TAIL_REACH)


def _fringe_strength(window: np.ndarray, region: np.ndarray, fringe: np.ndarray, grow_px: int) -> np.ndarray:
    """``region`` (the snapped mask grown by ``grow_px``), with the object's own strength on the ``fringe`` the
    edge-aware rule took (its ring pixels outside the object) where the growth does not carry it.

    The rule grows from the object's soft tail too (``_object_part``: up to ``TAIL_REACH`` px beyond its solid
    part), so its ring reaches ``grow_px + TAIL_REACH`` px from the solid part, while the max filter of ``grow``
    carries only the tail's own alpha (a few %) past ``grow_px``. Those ring pixels, which the rule took as the
    object's fringe, were blended at 2x that alpha and kept the photo's colour under the fill: on the README
    coffee 164 px at 0.01-0.84, among them a 1 px line of the spoon's dark edge (x 392-396, y 201-217,
    0.10-0.35) between the region and the selected shadow, and the bowl's dark rim (x 367-381, y 327-332).
    There the strength is the solid part's, grown as far as the ring reaches. The object's own pixels keep their
    growth (painted softness stays), and a mask without a soft tail (hard, or painted at one strength) has no
    such pixels: its region is unchanged."""
    weak = fringe & (region < 0.5)
    box = bbox(weak)
    if box is None:
        return region
    h, w = window.shape
    reach = grow_px + int(np.ceil(TAIL_REACH))
    x0, y0 = max(0, box[0] - reach), max(0, box[1] - reach)
    x1, y1 = min(w, box[2] + reach), min(h, box[3] + reach)
    sub = window[y0:y1, x0:x1]
    solid = sub >= 0.5 * float(window.max(initial=0.0))  # as ``_object_part`` cuts it
    strength = grow(np.where(solid, sub, 0.0).astype(np.float32), reach)
    out = region.copy()
    part = weak[y0:y1, x0:x1]
    out[y0:y1, x0:x1][part] = np.maximum(region[y0:y1, x0:x1][part], strength[part])
    return out


def _sq(f: np.ndarray) -> np.ndarray:
    """Each pixel's squared RGB norm, summed in the order ``(f * f).sum(axis=2)`` sums it (the same bytes) at
    a fraction of its cost: numpy's reduction over a last axis of 3 was most of the rule's time."""
    return f[:, :, 0] * f[:, :, 0] + f[:, :, 1] * f[:, :, 1] + f[:, :, 2] * f[:, :, 2]


def _beyond(rgb: np.ndarray, dist: np.ndarray, reach: float):
    """For the ring ``CORE_GROW`` < dist <= ``reach``: its pixels' coordinates, each one's own colour (the
    mean of its 3x3 ring neighbours: never the object's edge), the surface just beyond the ring (the
    nearest pixel of the band ``reach``..``reach + FRINGE_OUTER`` out, as the 5x5 mean and spread of band
    pixels) and how far that band pixel is. None when the ring or the band is empty."""
    ring = (dist > CORE_GROW) & (dist <= reach)
    band = (dist > reach) & (dist <= reach + FRINGE_OUTER)
    if not band.any() or not ring.any():
        return None
    f = rgb.astype(np.float32)
    bm = band.astype(np.float32)
    den = np.maximum(cv2.boxFilter(bm, -1, (5, 5), normalize=False), 1e-6)
    mean = cv2.boxFilter(f * bm[:, :, None], -1, (5, 5), normalize=False) / den[:, :, None]
    square = cv2.boxFilter(_sq(f) * bm, -1, (5, 5), normalize=False) / den
    spread = np.sqrt(np.maximum(square - _sq(mean), 0.0))
    ry, rx = np.nonzero(ring)
    qy, qx, gap = _nearest_band(band, ry, rx)
    rm = ring.astype(np.float32)
    own = cv2.blur(f * rm[:, :, None], (3, 3)) / np.maximum(cv2.blur(rm, (3, 3)), 1e-6)[:, :, None]
    return ry, rx, own, mean[qy, qx], spread[qy, qx], gap, (band, mean, spread)


def _nearest_band(
    band: np.ndarray, ry: np.ndarray, rx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(qy, qx, gap): each ring pixel's (``ry``, ``rx``) nearest ``band`` pixel and its distance to it (the
    labels number the source's zero pixels in raster order). ``_beyond`` and ``_shadow_tests`` compare with it."""
    gap, labels = cv2.distanceTransformWithLabels(
        (~band).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    by, bx = np.nonzero(band)
    nearest = labels[ry, rx] - 1
    return by[nearest], bx[nearest], gap[ry, rx]


def _continued(rgb, band, ring, far, own, dist, mean, spread, targets, steps: int) -> np.ndarray:
    """bool HxW: the ``targets`` (far ring pixels that differ from the band beside them) that are a neighbouring
    surface the band sees a little farther along. A neighbour thinner than the band's distance (a cup's 5-8 px
    rim beside a spoon at grow 12, review 7 finding C) does not reach the band pixel just beyond it, but it
    reaches the band where it bends away from the object, and it is one piece with it there.

    - Seen: a flood from each band pixel beside the ring, 2 ``steps`` px at most, through ring pixels whose
      colour (``own``) is within ``SEEN_FACTOR`` of the tolerance of that band pixel's 5x5 mean. The
      tolerance's noise term is the smaller of the band pixel's 5x5 spread and the ring pixel's own: a band
      pixel astride an edge has a mean between two surfaces and a spread as large as the edge, and would
      reach into both.
    - Carried: from the targets seen, ``steps`` px along the outline (far ring pixels at the seed's distance
      within a px and within ``FRINGE_ABS`` of its colour): the rim runs beside the object and is the same
      surface all along.

    A shadow fringe whose colour merely occurs in the band nearby (a dark line past a bar's end) is not
    connected to it through that colour, so it is still taken. Day 7's rule looked for the colour anywhere
    within reach, without the path, and kept 158 of such a shadow's 960 px (review 7 finding 2). Each pixel is
    compared with the pixel its flood started from (its band pixel, its seed), never with its neighbour: a
    soft edge or a glow changes gradually, and a chain of small steps would walk into it. The floods run in
    the box of 3 ``steps`` + 3 px around the targets, which holds everything a target's answer depends on."""
    box = bbox(targets)
    if box is None:
        return targets
    H, W = ring.shape
    m = _continued_reach(steps)
    x0, y0, x1, y1 = max(0, box[0] - m), max(0, box[1] - m), min(W, box[2] + m), min(H, box[3] + m)
    sub = np.s_[y0:y1, x0:x1]
    rgb, band, ring, far, own, dist, mean, spread, targets = (
        a[sub] for a in (rgb, band, ring, far, own, dist, mean, spread, targets)
    )
    # the ring's own 5x5 spread, on the scale of the band's (its pixels, not their 3x3 means)
    rm = ring.astype(np.float32)
    den = np.maximum(cv2.boxFilter(rm, -1, (5, 5), normalize=False), 1e-6)
    f = rgb.astype(np.float32)
    local = cv2.boxFilter(f * rm[:, :, None], -1, (5, 5), normalize=False) / den[:, :, None]
    square = cv2.boxFilter(_sq(f) * rm, -1, (5, 5), normalize=False) / den
    local = np.sqrt(np.maximum(square - _sq(local), 0.0))
    own = own.astype(np.float32)
    near = cv2.dilate(ring.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    sy, sx = np.nonzero(band & near)  # band pixels with a ring pixel beside them
    seen = _flood(sy, sx, mean[sy, sx], ring, own, 2 * steps, spread=(spread[sy, sx], local))
    seeds = seen & targets
    sy, sx = np.nonzero(seeds)
    if len(sy):
        seeds |= _flood(sy, sx, own[sy, sx], far, own, steps, dist=dist)
    out = np.zeros((H, W), bool)
    out[sub] = seeds & targets
    return out


def _continued_reach(steps: int) -> int:
    """px around a target that ``_continued``'s answer for it depends on: the carry (``steps``), the flood
    that saw its seed (2 ``steps``, from a band pixel beside the ring) and the 5x5 means and spreads."""
    return 3 * steps + 3


def _flood(sy, sx, ref, inside, colour, steps: int, spread=None, dist=None) -> np.ndarray:
    """bool HxW: the ``inside`` pixels a flood from (sy, sx) reaches in ``steps`` 8-connected steps, each pixel
    compared with the colour ``ref`` its flood started from. With ``spread`` = (the starts' spreads, each
    pixel's): within ``SEEN_FACTOR`` of the tolerance whose noise term is the smaller of the two; else within
    ``FRINGE_ABS``, and (``dist`` given) at the start's distance from the object within a px.

    Breadth first over flat indices of a copy padded by one pixel (no neighbour wraps around a row). Within a
    step the directions are taken in a fixed order and a pixel keeps the first start that reaches it, so the
    answer does not depend on how the area was cut (tiles give the window's)."""
    h, w = inside.shape
    w2 = w + 2

    def padded(a, fill):
        out = np.full((h + 2, w2) + a.shape[2:], fill, a.dtype)
        out[1:-1, 1:-1] = a
        return out.reshape((h + 2) * w2, *a.shape[2:])

    inside_f, colour_f = padded(inside, False), padded(colour.astype(np.float32), 0.0)
    front = (sy + 1) * w2 + (sx + 1)
    ref = np.asarray(ref, np.float32)
    if spread is not None:
        noise, local_f = np.asarray(spread[0], np.float32), padded(spread[1].astype(np.float32), 0.0)
    else:
        noise, local_f = np.zeros(len(front), np.float32), None
    dist_f = padded(dist.astype(np.float32), 0.0) if dist is not None else None
    ref_d = dist_f[front] if dist_f is not None else np.zeros(len(front), np.float32)
    offsets = np.array([-w2 - 1, -w2, -w2 + 1, -1, 1, w2 - 1, w2, w2 + 1])
    reached = np.zeros(inside_f.shape, bool)
    reached[front[inside_f[front]]] = True
    for _ in range(max(0, steps)):
        nxt = []
        for off in offsets:
            q = front + off
            k = np.nonzero(inside_f[q] & ~reached[q])[0]
            if not len(k):
                continue
            q = q[k]
            d = colour_f[q] - ref[k]
            d = np.einsum("ij,ij->i", d, d)
            if local_f is not None:
                t = SEEN_FACTOR * np.maximum(FRINGE_ABS, FRINGE_NOISE * np.minimum(noise[k], local_f[q]))
                ok = d <= t * t
            else:
                ok = d <= FRINGE_ABS * FRINGE_ABS
            if dist_f is not None:
                ok &= np.abs(dist_f[q] - ref_d[k]) <= 1.0
            k, q = k[ok], q[ok]
            reached[q] = True  # one offset maps the front one to one: no pixel is taken twice within it
            nxt.append((q, k))
        if not nxt:
            break
        front = np.concatenate([q for q, _ in nxt])
        k = np.concatenate([k for _, k in nxt])
        ref, noise, ref_d = ref[k], noise[k], ref_d[k]
        if not len(front):
            break
    return reached.reshape(h + 2, w2)[1:-1, 1:-1]


def _connected(seed: np.ndarray, allowed: np.ndarray, steps: int) -> np.ndarray:
    """``seed`` grown through ``allowed`` pixels, one 8-connected step at a time, ``steps`` times."""
    out = seed.copy()
    step = np.ones((3, 3), np.uint8)
    for _ in range(max(0, steps)):
        more = (cv2.dilate(out.astype(np.uint8), step) > 0) & allowed
        if (more <= out).all():
            break
        out |= more
    return out


def _fringe(
    rgb: np.ndarray, obj: np.ndarray, dist: np.ndarray, grow_px: int, gaps: np.ndarray | None = None
) -> np.ndarray | None:
    """bool HxW: ``obj`` and the pixels outside it that belong to the region (``dist``: each pixel's distance
    to it). ``gaps``, when given, receives each ring pixel's distance to the band pixel it was compared with.

    - The first ``CORE_GROW`` px, always.
    - Ring pixels up to ``grow_px`` out that differ from the surface just beyond the ring (``_beyond``) by more
      than ``FRINGE_ABS`` levels and ``FRINGE_NOISE`` times its local spread: a halo or a fringe differs from
      what lies beyond it; a neighbouring surface (a cup's rim, the table beside a spoon) continues into the
      ring unchanged and stays out.
    - Except, more than ``FRINGE_OUTER`` px inside the band, a ring pixel that the band sees through pixels of
      its own colour, a little farther along, and carried along the outline from there (``_continued``): a
      neighbour thinner than the band's distance (a cup's 5-8 px rim beside a spoon at grow 12, review 7
      finding C). A shadow fringe whose colour merely occurs nearby is not connected to it: it goes.
    Only where connected to the object through such pixels. None when no surface beyond the ring exists in the
    window (the plain growth is used). An attached cast shadow farther out than ``grow_px`` is not added: a rule
    for it (darker than the lit surface beyond, same chromaticity, up to half the object's inscribed radius out)
    fired on 57-61 of the 84 bench scenes, which have no shadows (dark grain beside the object), and did not
    clear the coffee spoon's bowl (docs/benchmarks/erase-fill.md, day 5)."""
    found = _beyond(rgb, dist, grow_px)
    if found is None:
        return None
    keep = obj | (dist <= CORE_GROW)
    ry, rx, own, ref, spread, gap, surface = found
    if gaps is not None:
        gaps[ry, rx] = gap
    differs = np.zeros(obj.shape, bool)
    differs[ry, rx] = np.linalg.norm(own[ry, rx] - ref, axis=1) > np.maximum(
        FRINGE_ABS, FRINGE_NOISE * spread
    )
    # a neighbouring surface thinner than the band's distance: seen in the band nearby, and along the outline
    # (only where the band starts more than FRINGE_OUTER px farther out: a neighbour that fits in between is a
    # surface of its own. Up to grow 6, the default, no ring pixel is that far in: its region, the one the
    # bench scenes are measured on, is unchanged)
    far = np.zeros(obj.shape, bool)
    far[ry, rx] = dist[ry, rx] < grow_px - FRINGE_OUTER
    targets = differs & far
    if targets.any():
        ring = (dist > CORE_GROW) & (dist <= grow_px)
        band, mean, band_spread = surface
        steps = _flood_steps(grow_px)
        differs &= ~_continued(rgb, band, ring, far, own, dist, mean, band_spread, targets, steps)
    return _connected(keep, differs, grow_px - CORE_GROW + 1)


def _tile_margin(grow_px: int) -> int:
    """px around a tile that make the fringe rule's answer inside the tile the whole window's: ``_connected``'s
    steps, then the farther of the ring-to-band gap it trusts (``_fringe_gap``) with the 5x5 band mean and
    what ``_continued`` looks at (``_continued_reach``), and the distance map's reach (``grow_px +
    FRINGE_OUTER``: past it a tile's map is too large where the object lies outside the tile)."""
    reach = max(_fringe_gap(grow_px) + 2, _continued_reach(_flood_steps(grow_px)))
    return (grow_px - CORE_GROW + 1) + reach + (grow_px + FRINGE_OUTER + 1) + 1


def _fringe_gap(grow_px: int) -> int:
    """The farthest band pixel a tile may compare a ring pixel with (a ring pixel's own lies ``grow_px`` -
    ``CORE_GROW`` px out at most; farther is a ring without a band beside it, e.g. at the layer's edge)."""
    return grow_px + FRINGE_OUTER


def _flood_steps(grow_px: int) -> int:
    """How far ``_continued`` floods from the band: 0 where no ring pixel lies more than ``FRINGE_OUTER`` px
    inside the band (grow <= 6, the default: the rule never runs there), else the band's distance."""
    return grow_px + FRINGE_OUTER if grow_px - FRINGE_OUTER > CORE_GROW else 0


def _fringe_tiled(image: np.ndarray, obj: np.ndarray, grow_px: int, tile: int | None) -> np.ndarray | None:
    """bool HxW over the window: ``_fringe``'s answer, or None (no surface beyond the ring: the plain growth is
    used).

    The rule can act only on the ring along the object's outline, so it runs in ``tile`` px tiles there, each
    with ``_tile_margin`` px of context: a 5200x3400 object's 18 Mpx window shrinks to a few Mpx of tiles. Where a
    tile cannot be sure of the answer (a ring pixel whose band lies farther than ``_fringe_gap``: the object
    near the layer's edge), the whole window is evaluated at once, as it was before tiling."""
    h, w = obj.shape
    margin = _tile_margin(grow_px)
    default = tile == FRINGE_TILE
    if tile == FRINGE_TILE:
        # the default side, at least twice the margin: a tile evaluates (side + 2 margin)^2 px for `side` px of
        # outline, least at side = 2 margin (at grow 30 the 64 px tiles cost 2.5x that); a side asked for
        # explicitly (the tests' small tiles, to cross many tile borders) is kept
        tile = max(tile, 2 * margin)
    if tile is None or (h <= tile + 2 * margin and w <= tile + 2 * margin):
        return _fringe_window(image, obj, grow_px)
    tile = max(
        int(tile), grow_px + FRINGE_OUTER + 1
    )  # a ring or band pixel lies in a tile next to the object
    ty, tx, todo = _outline_tiles(obj, tile)
    if default and not _flood_steps(grow_px) and int(todo.sum()) * (tile + 2 * margin) ** 2 >= h * w:
        # the tiles would look at more pixels than the window holds (a 600 px object at grow 6: ~40 tiles of
        # 122^2 px in a 0.36 Mpx window, 2.5x slower than the window at once): the same answer, evaluated at
        # once. Not at a raised grow, whose floods (``_continued``) cost far more over a whole window
        return _fringe_window(image, obj, grow_px)
    keep = obj.copy()
    ring_any = band_any = False
    gap_max = float(_fringe_gap(grow_px))
    for j, i in zip(*np.nonzero(todo), strict=True):  # the rest: inside the object or far from it
        cy0, cx0 = j * tile, i * tile
        cy1, cx1 = min(h, cy0 + tile), min(w, cx0 + tile)
        by0, bx0 = max(0, cy0 - margin), max(0, cx0 - margin)
        by1, bx1 = min(h, cy1 + margin), min(w, cx1 + margin)
        o = obj[by0:by1, bx0:bx1]
        dist = cv2.distanceTransform((~o).astype(np.uint8), cv2.DIST_L2, 5)
        inner = np.s_[cy0 - by0 : cy1 - by0, cx0 - bx0 : cx1 - bx0]
        d = dist[inner]
        ring_any |= bool(((d > CORE_GROW) & (d <= grow_px)).any())
        band_any |= bool(((d > grow_px) & (d <= grow_px + FRINGE_OUTER)).any())
        steps = grow_px - CORE_GROW + 1
        near_ring = np.s_[
            max(0, cy0 - by0 - steps) : cy1 - by0 + steps, max(0, cx0 - bx0 - steps) : cx1 - bx0 + steps
        ]
        far = steps + _flood_steps(grow_px)  # the targets a seed can be carried from into the tile's ring
        seeds = np.s_[max(0, cy0 - by0 - far) : cy1 - by0 + far, max(0, cx0 - bx0 - far) : cx1 - bx0 + far]
        gaps = np.zeros(o.shape, np.float32)
        kept = _fringe(to_rgb_u8(image[by0:by1, bx0:bx1]), o, dist, grow_px, gaps)
        dn = dist[near_ring]
        if kept is None:
            if ((dn > CORE_GROW) & (dn <= grow_px)).any():
                return _fringe_window(image, obj, grow_px)  # a ring with no band within this tile's reach
            kept = o | (dist <= CORE_GROW)
        elif (gaps[seeds] > gap_max).any():
            return _fringe_window(image, obj, grow_px)
        keep[cy0:cy1, cx0:cx1] = kept[inner]
    if not (ring_any and band_any):
        return None
    return keep


def _fringe_window(image: np.ndarray, obj: np.ndarray, grow_px: int) -> np.ndarray | None:
    """``_fringe_tiled``'s answer computed over the whole window at once."""
    dist = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    return _fringe(to_rgb_u8(image), obj, dist, grow_px)


def _min_context(weights: np.ndarray, min_crop: int | None) -> int:
    """Context in px so the crop is at least ``min_crop`` on its long side (where the layer has the room).

    A filler trained on fixed-size crops of photos (LaMa, MI-GAN: 512) then sees a small object among real
    surroundings at their own resolution, instead of a tight crop blown up many times."""
    box = bbox(weights > 0) if min_crop else None
    return _min_context_around(box, min_crop)


def _min_context_around(box: tuple[int, int, int, int] | None, min_crop: int | None) -> int:
    """``_min_context`` for a region whose box is known (``MaskWindow.positive_box``)."""
    if box is None or not min_crop:
        return 16  # plan_crop's default
    return max(16, -(-(int(min_crop) - max(box[2] - box[0], box[3] - box[1])) // 2))


def _report(callback: Callback | None, stage: str, step: int, total: int) -> None:
    if callback is not None:
        callback(stage, step, total)


__all__ = ["EraseOutput", "EraseParams", "ErasePipeline", "NoBackground", "NothingToFill"]
