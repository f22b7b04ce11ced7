"""The shading of a hole that lies in a soft shadow's penumbra, rebuilt from the hole's ring (day 10, trace A).

Where the structure path found a soft edge (a penumbra that k-means cut into dark | mid | lit strips,
``structure._soft_edges``) and no hard edge nearby, the patch fill's low frequencies follow its labels: the
coffee's spoon bowl came out as a dark patch in the bowl's own shape, the cup's shadow continued along the
bowl's outline with a lit sliver beside it. Here the hole's low-pass in that soft zone is replaced by a
two-tone surface interpolated from the ring: a dark surface (a membrane of the ring's dark pixels) and a lit
one (of the pixels at the lit plateau a little beyond the ring, past the object's own soft shadow, faded in
from the ring over ``LIT_BLEND`` px), mixed through a matte whose half-way line is that of a membrane of the ring's
darkness (a harmonic field: between the two places where the ring turns from dark to lit it runs as a smooth
line, not along the hole's outline; since day 12 bent to leave each end along the photo's own edge there, so
a cast shadow's curved edge goes on curving instead of running a ruler's line between its two entries) and whose
ramp is a penumbra's width. The fill keeps its own detail (the image minus its 5x5 median, which keeps the
copies' blocky steps out of it, clipped at the grain, raised toward the ring's grain at the same shade). Near a
hard edge (labels that are not one strip's dark | mid | lit) the fill is left as it is. Since day 13 a penumbra
is also found by its colours where only one of its edges enters the hole (``_colour_groups``): which edges do
enter was an accident of the photo's size and the lasso; since day 14 also where none enters and its strip runs
beside the hole (``_ring_groups``)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np

from backend.imaging import membrane
from backend.imaging.grain import local_rms, raised

from .penumbra import MIN_CONTRAST, Shade, _luma, profile_across, ramp_across, ramp_of

SOFT_NEAR = 4.0  # px from a hard label boundary: the fill is kept as it is up to here ...
SOFT_FAR = 16.0  # ... and its low-pass fully replaced from here on
SPECK_PX = 96  # px: a label's piece smaller than this (a glint; the least thin band, THIN x THIN_LEN) is no hard edge
SOFT_MIN_PX = 400  # a soft zone smaller than this (px) is left alone: too small to carry a wrong shading
RING = 3.0  # px: the ring of known pixels the surfaces are interpolated from
LIT_FROM = 14  # px out: the lit surface is taken 14-26 px beyond the hole (past the object's own soft shadow)
# px into the hole over which the fill goes from the ring's own membrane to the two surfaces; day 10's 24 px
# carried the object's own shadow on the ring ~20 px in: on the coffee a darker mass inside a lighter contour,
# the bowl's outline (with the lit plateau below: 8-20 px in, 68 -> 76 levels; the lit saucer 85)
LIT_BLEND = 12.0
LIT_KEEP = 0.9  # of the band's median lit level (above the ring's dark): the lit surface's pixels, from ...
LIT_CAP = 1.3  # ... to this (brighter: a highlight, not the surface's shade)
PENUMBRA = (8.0, 40.0)  # px: the least and most the matte's ramp (the measured penumbra) may be
DETAIL_SIGMA = 3.0  # px: the fill's low-pass that the new shading replaces
# px: the window whose median the fill's detail is taken against: a median keeps the blocky steps between labels'
# copies (which a Gaussian low-pass left in the detail as a jagged line), grain and specks stay detail
DETAIL_MEDIAN = 5
DETAIL_CLIP = 1.5  # x the ring's grain (robust sigma): larger detail in the fill is a step between labels
DETAIL_GAIN = 3.0  # the most the fill's grain is raised by toward the ring's grain at the same shade
WINDOW_PAD = 48  # px around the soft zone: the ring it is interpolated from, and the grain's 40 px reach
# the matte's dark/lit boundary continues the photo's own edge direction at the two places where the ring turns
# from dark to lit (a curve), not the harmonic line's shortest way between them (the coffee's straight column)
EDGE_CONTINUE = True
EDGE_REACH = 18  # px: the known band an entry's edge direction is measured in
ENTRY_NEAR = 6  # px: a half-way line's end this close to the hole's border enters from the ring
# of the penumbra (+ 1 px): a photo edge's line continues a half-way line's end only if it passes this close to
# the end: within the band of the edge's own ramp that it is measured on (a third to two thirds of the way from
# dark to lit: +-0.16 penumbra), continued; an edge beside the end is another one's. The coffee's shadow edges
# pass 0.3-2.9 px from their ends; the cup foot rim's edge 5-16 px beside the top end (taken where that end lay
# within ENTRY_NEAR: resampled by 2, at 0.8x, as a JPEG at 85; on the ring at 1.4x), which bent the boundary
# into a steep straight column, a dark smear up by the lip, or a bulge (1.4x: the rim's level edge, 5.1 px off)
EDGE_LEADS = 0.16
# an end on the ring where the photo shows no edge's line (a blob of half-way shade: a cup foot's rim, a glint)
# leaves along the harmonic line's own direction, as an end inside the hole does; without it the whole curve was
# given up and the other end's edge ignored (the coffee as a JPEG at 95 and at 2x: a straight diagonal)
HARMONIC_FALLBACK = True
# the harmonic line's own direction at an end: its pixels' axis over one penumbra from the end (``_line_heading``),
# not the field's gradient at the end's pixel, which near the ring is the ring's local shade: the coffee's top end
# (on the soft zone's edge 3-11 px in) left at x/y -0.03..0.66 over the variants, now -0.27..0.19
LINE_HEADING = True
# a penumbra whose strip runs along the hole's border, none of its edges entering (``_ring_groups``): each of the
# strip's edges is probed at up to RING_PROBES places nearest the hole (within RING_NEAR analysis px of it),
# RING_SPACING analysis px apart
RING_GROUPS = True
RING_PROBES = 6
RING_SPACING = 8
RING_NEAR = 12
RING_RAMPS = 2  # places on each edge of the strip where the photo must ramp: one may be a coincidence
# the ring's darkness that the matte's half-way line is drawn through is kept, per ring px of a soft strip's label,
# no lighter than half-way to the next lighter label's level (``_in_class``): the labels (k-means on a
# bilateral-smoothed crop, mode-filtered) say which of dark | mid | lit a ring px is; a glint or a neighbouring
# object's highlight blurred onto it no longer reads as lit. Darker is kept as measured (a crevice under an object
# is shadow; bounding it too raised the coffee foot's dark px to mid at 1.5-3x and dil4: a diagonal top there)
RING_CLASSES = True


def _hard_boundaries(labels: np.ndarray, groups: list[set[int]]) -> np.ndarray:
    """Pixels where two different labels meet that are not both of one soft strip's group, nor of a speck
    (under ``SPECK_PX``) of another label: a glint on the saucer is no edge the shade stops at (sweep12: at
    --grow 8 a 24 px glint by the hole's edge kept the fill's dark copies within 16 px of it, a dark crease)."""
    ours = set().union(*groups) if groups else set()
    speck = np.zeros(labels.shape, bool)
    for lab in np.unique(labels[labels >= 0]):
        if int(lab) in ours:
            continue
        _, comp, stats, _ = cv2.connectedComponentsWithStats((labels == lab).astype(np.uint8), connectivity=4)
        small = np.nonzero(stats[1:, cv2.CC_STAT_AREA] < SPECK_PX)[0] + 1
        if small.size:
            speck |= np.isin(comp, small)
    hard = np.zeros(labels.shape, bool)
    for a, b, sa, sb in (
        (labels[:, :-1], labels[:, 1:], np.s_[:, :-1], np.s_[:, 1:]),
        (labels[:-1], labels[1:], np.s_[:-1], np.s_[1:]),
    ):
        diff = (a != b) & (a >= 0) & (b >= 0) & ~speck[sa] & ~speck[sb]
        for g in groups:
            diff &= ~(np.isin(a, list(g)) & np.isin(b, list(g)))
        hard[sa] |= diff
        hard[sb] |= diff
    return hard


def soft_weight(
    labels: np.ndarray, groups: list[set[int]], hole: np.ndarray, unit: float = 1.0
) -> np.ndarray:
    """How much of each hole pixel's low-pass is rebuilt (0..1): 0 within ``SOFT_NEAR`` px of a hard label
    boundary, 1 beyond ``SOFT_FAR``; 0 off the hole and on labels that are no strip's (the wood beyond a cup
    whose shadow is soft keeps its fill). ``unit``: crop px per analysis px: the labels are found on the crop
    shrunk to the analysis size, their boundaries are that coarse, and the band beside a hard one where the fill
    is kept is as wide a part of the picture at any size (day 14: at 1.6-3x a 4-16 px band was a hard step where
    the kept fill met the new shade: the coffee's shadow top a vertical column, robust dev s3 2894 -> 1210)."""
    hard = _hard_boundaries(labels, groups)
    if hard.any():
        dist = cv2.distanceTransform((~hard).astype(np.uint8), cv2.DIST_L2, 3)
    else:
        dist = np.full(hole.shape, SOFT_FAR * unit, np.float32)
    w = np.clip((dist - SOFT_NEAR * unit) / ((SOFT_FAR - SOFT_NEAR) * unit), 0.0, 1.0).astype(np.float32)
    ours = np.isin(labels, sorted(set().union(*groups)))  # only a strip's own dark, mid and lit labels
    return w * (hole & ours)


def _ring_values(img: np.ndarray, sel: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """``img`` averaged over the ``sel`` pixels only (a normalised Gaussian): the ring's shading, not its grain."""
    known = sel.astype(np.float32)
    num = cv2.GaussianBlur(img * known[:, :, None], (0, 0), sigma)
    den = cv2.GaussianBlur(known, (0, 0), sigma)
    return num / np.maximum(den, 1e-6)[:, :, None]


def _surface(img: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """A membrane through the ``sel`` pixels' smoothed colours, defined everywhere."""
    vals = np.where(sel[:, :, None], _ring_values(img, sel), 0).astype(np.float32)
    return membrane(vals, ~sel)


def _half_line(field: np.ndarray, hole: np.ndarray, zone: np.ndarray) -> np.ndarray | None:
    """The pixels (x, y) of the half-way line of the ring's darkness across the soft zone: its longest piece
    there; None where it has fewer than 8."""
    half = field >= 0.5
    cross = np.zeros(hole.shape, bool)
    cross[:, 1:] |= half[:, 1:] != half[:, :-1]
    cross[1:] |= half[1:] != half[:-1]
    line = (cross & hole & zone).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(line, connectivity=8)
    if n < 2:
        return None
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    ys, xs = np.nonzero(lab == big)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    return pts if len(pts) >= 8 else None


def _line_ends(pts: np.ndarray) -> list[np.ndarray]:
    """The two ends (x, y) of the half-way line ``pts`` (``_half_line``), cut at the extremes along its own
    axis (where it enters from the ring or leaves the zone)."""
    axis = np.linalg.eigh(np.cov((pts - pts.mean(0)).T))[1][:, 1]
    along = (pts - pts.mean(0)) @ axis
    return [pts[int(np.argmin(along))], pts[int(np.argmax(along))]]


def _line_heading(pts: np.ndarray, point: np.ndarray, reach: float) -> np.ndarray | None:
    """The direction (unit x, y) of the half-way line's own pixels ``pts`` within ``reach`` px of its end
    ``point`` (their principal axis); None where fewer than 4."""
    near = pts[np.hypot(*(pts - point).T) <= reach]
    if len(near) < 4:
        return None
    return np.linalg.eigh(np.cov((near - near.mean(0)).T))[1][:, 1]


def _edge_heading(
    luma: np.ndarray,
    levels: tuple[float, float],
    hole: np.ndarray,
    point: np.ndarray,
    out_dist: np.ndarray,
    penumbra: float | None = None,
) -> np.ndarray | None:
    """The direction (unit x, y) of the photo's own dark/lit edge just outside the hole at an entry: the
    half-way pixels (a third to two thirds of the way from dark to lit) of the known band 2-18 px out within
    ``EDGE_REACH`` px, their principal axis; None where too few, not line-like, or (given the ``penumbra``)
    where the line does not lead to ``point`` (``EDGE_LEADS``: an edge beside it, not the one it continues)."""
    dark, lit = levels
    t = (luma - dark) / max(lit - dark, 1e-3)
    h, w = hole.shape
    x0, x1 = max(0, int(point[0]) - EDGE_REACH), min(w, int(point[0]) + EDGE_REACH + 1)
    y0, y1 = max(0, int(point[1]) - EDGE_REACH), min(h, int(point[1]) + EDGE_REACH + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    win = np.s_[y0:y1, x0:x1]
    sel = (
        (out_dist[win] >= 2)
        & (out_dist[win] <= EDGE_REACH)
        & (np.hypot(xx - point[0], yy - point[1]) <= EDGE_REACH)
        & (t[win] > 1 / 3)
        & (t[win] < 2 / 3)
    )
    if sel.sum() < 8:
        return None
    pts = np.stack([xx[sel], yy[sel]], 1).astype(np.float64)
    vals, vecs = np.linalg.eigh(np.cov((pts - pts.mean(0)).T))
    if vals[1] < 4.0 * max(vals[0], 1e-6):  # a blob of half-way shade, not an edge's line
        return None
    if penumbra is not None and abs(float((point - pts.mean(0)) @ vecs[:, 0])) > EDGE_LEADS * penumbra + 1.0:
        return None
    return vecs[:, 1]


def _continued_edge(
    luma: np.ndarray,
    levels: tuple[float, float],
    hole: np.ndarray,
    zone: np.ndarray,
    field: np.ndarray,
    signed: np.ndarray,
    out_dist: np.ndarray,
    penumbra: float,
) -> np.ndarray | None:
    """``signed`` (px from the dark/lit boundary, lit side positive) with the boundary across the soft zone
    bent to continue the photo's own edge: a cubic (Hermite) curve between the half-way line's two ends, leaving
    each along the edge's direction outside the hole (where the line enters from the ring and that edge leads to
    it, ``EDGE_LEADS``) or the harmonic line's own (where it leaves the zone inside the hole, or no edge leads to
    it; ``LINE_HEADING``), instead of the harmonic line, which runs the
    shortest way between them (the coffee: a straight vertical 80 px long from the cup's wall strip down to
    the lasso's bottom, "a tall block of shadow or a second cup wall" to a blind viewer, with a kink there,
    where the shadow's own edge leaves at ~40 degrees, curving like the foot's ellipse). None (the harmonic
    line kept) unless there are exactly two ends, each with a direction, at least two penumbras apart, and
    the curve stays in the hole."""
    line = _half_line(field, hole, zone)
    if line is None:
        return None
    entries = _line_ends(line)
    inside = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
    gy, gx = np.gradient(cv2.GaussianBlur(field, (0, 0), 2.0))
    p0, p1 = (np.asarray(p, np.float64) for p in entries)
    chord = p1 - p0
    length = float(np.hypot(*chord))
    if length < 2.0 * penumbra:
        return None
    heads = []
    for p, toward in ((p0, chord), (p1, -chord)):
        x, y = int(p[0]), int(p[1])
        d = _edge_heading(luma, levels, hole, p, out_dist, penumbra) if inside[y, x] <= ENTRY_NEAR else None
        if d is None and (inside[y, x] > ENTRY_NEAR or HARMONIC_FALLBACK):
            # it leaves the zone inside the hole, or the ring shows no edge's line there: the harmonic line's own
            if LINE_HEADING:
                d = _line_heading(line, p, penumbra)
            else:
                g = np.array([gx[y, x], gy[y, x]], np.float64)
                d = None if np.hypot(*g) < 1e-6 else np.array([-g[1], g[0]]) / np.hypot(*g)
        if d is None:
            return None
        if inside[y, x] <= ENTRY_NEAR:  # on the ring: into the hole
            heads.append(_into_hole(d, p, toward, inside, penumbra))
        else:  # inside the hole: toward the other entry's side
            heads.append(d if d @ toward > 0 else -d)
    s = np.linspace(0.0, 1.0, max(16, int(length)))[:, None]
    t0, t1 = heads[0] * length, -heads[1] * length  # leaving p0 along its edge, arriving at p1 along its
    curve = (
        (2 * s**3 - 3 * s**2 + 1) * p0
        + (s**3 - 2 * s**2 + s) * t0
        + (-2 * s**3 + 3 * s**2) * p1
        + (s**3 - s**2) * t1
    )
    cx, cy = np.rint(curve[:, 0]).astype(int), np.rint(curve[:, 1]).astype(int)
    h, w = hole.shape
    ok = (cx >= 0) & (cy >= 0) & (cx < w) & (cy < h)
    if not ok.all() or hole[cy, cx].mean() < 0.9:
        return None
    # extend it a little along each edge so the pixels beyond the entries get the edge's own side
    ends = [p0 - heads[0] * 2 * EDGE_REACH, p1 - heads[1] * 2 * EDGE_REACH]
    line = np.concatenate([ends[0][None], curve, ends[1][None]]).astype(np.float32)
    reach = 4.0 * penumbra  # past it the fade below takes the harmonic field alone
    best, side = _near_polyline(line, (h, w), reach)
    bent = side * best
    # which side is lit: the one the harmonic field says for most of the zone
    if (np.sign(bent) * np.sign(signed))[zone].mean() < 0:
        bent = -bent
    # far from the curve the harmonic field knows better (another part of the hole: the coffee's pale band
    # above the bowl): faded over 2-4 penumbras, a switch there left a lighter patch with a hard rim
    near = np.clip(2.0 - best / (2.0 * penumbra), 0.0, 1.0)
    return (near * bent + (1.0 - near) * signed).astype(np.float32)


def _into_hole(
    d: np.ndarray, point: np.ndarray, toward: np.ndarray, inside: np.ndarray, reach: float
) -> np.ndarray:
    """``d`` or ``-d``, whichever leaves the entry ``point`` on the ring into the hole: the one with more hole
    pixels over its first ``reach`` px (``inside`` > 0); where both have as many, the one toward the other end
    (``toward``). The side of the chord alone was a coin toss where the edge crosses it at near a right angle:
    the coffee with its lasso shrunk by 2 px left its bottom end along the shadow's edge out of the hole (2.7
    against a chord of 103 px), the curve left the hole, and the harmonic line's straight diagonal stayed."""
    h, w = inside.shape
    steps = np.arange(1.0, max(reach, 1.0) + 0.5)[:, None]
    counts = []
    for sign in (1.0, -1.0):
        q = np.rint(point + sign * steps * d).astype(int)
        ok = (q[:, 0] >= 0) & (q[:, 1] >= 0) & (q[:, 0] < w) & (q[:, 1] < h)
        counts.append(int((inside[q[ok, 1], q[ok, 0]] > 0).sum()))
    if counts[0] != counts[1]:
        return d if counts[0] > counts[1] else -d
    return d if d @ toward > 0 else -d


def _near_polyline(line: np.ndarray, shape: tuple[int, int], reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's distance to the polyline ``line`` (N x 2, x y) and its side of it (+1 / -1 / 0), found
    within ``reach`` px of it: each segment is measured only over its box grown by ``reach`` (a long curve in a
    large hole measured over the whole window cost seconds). Farther pixels get ``reach`` and side 0."""
    h, w = shape
    best = np.full((h, w), np.float32(reach), np.float32)
    side = np.zeros((h, w), np.float32)
    for a, b in itertools.pairwise(line):
        x0 = max(0, int(np.floor(min(a[0], b[0]) - reach)))
        y0 = max(0, int(np.floor(min(a[1], b[1]) - reach)))
        x1 = min(w, int(np.ceil(max(a[0], b[0]) + reach)) + 1)
        y1 = min(h, int(np.ceil(max(a[1], b[1]) + reach)) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        d = b - a
        u = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / max(float(d @ d), 1e-6), 0.0, 1.0)
        ex, ey = xx - (a[0] + u * d[0]), yy - (a[1] + u * d[1])
        dist = np.hypot(ex, ey)
        win = np.s_[y0:y1, x0:x1]
        closer = dist < best[win]
        best[win] = np.where(closer, dist, best[win])
        side[win] = np.where(closer, np.sign(d[0] * ey - d[1] * ex), side[win])
    return best, side


def two_tone_shading(
    rgb: np.ndarray,
    hole: np.ndarray,
    zone: np.ndarray,
    penumbra: float,
    unit: float = 1.0,
    surface: np.ndarray | None = None,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """The low-pass of the ``zone`` (hole pixels) interpolated from the ring beside it, HxWx3 float32 (defined
    on the zone; near the hole's border it is the ring's own membrane, so it meets the ring without a step);
    ``penumbra``: the matte's ramp (px, 10 % to 90 %); ``unit``: crop px per analysis px (``LIT_BLEND``'s);
    ``surface``: the known pixels the ring, its levels and the lit band are taken from (None: every known
    pixel; not another object's, ``_reshade``); ``classes``: the soft strips' labels (-1 elsewhere), whose spans
    the ring's darkness is kept within (``RING_CLASSES``)."""
    img = rgb.astype(np.float32)
    out_dist = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 3)
    ring_all = ~hole & (out_dist <= RING) & ~_islands(hole)
    if surface is not None and (ring_all & surface).sum() >= 8:
        ring_all &= surface
    plain = _surface(img, ring_all)
    ring = ring_all & (cv2.dilate(zone.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0)
    if ring.sum() < 8:
        return plain
    luma = cv2.GaussianBlur(_luma(img), (0, 0), 2.0)
    dark, lit = np.percentile(luma[ring], [10, 60])
    if lit - dark < MIN_CONTRAST:
        return plain
    t = np.clip((luma - dark) / (lit - dark), 0.0, 1.0)
    lit_px, dark_px = ring & (t > 0.6), ring & (t < 0.4)
    if lit_px.sum() < 4 or dark_px.sum() < 4:
        return plain
    anchor = t if classes is None else _in_class(t, classes, ring, ~hole & (out_dist <= LIT_FROM + 12))
    stack = np.repeat(np.where(ring, anchor, 0)[:, :, None], 3, 2).astype(np.float32)
    field = membrane(stack, ~ring)[:, :, 0]
    smooth = cv2.GaussianBlur(field, (0, 0), 2.0)
    gy, gx = np.gradient(smooth)
    signed = (field - 0.5) / (np.hypot(gx, gy) + 1e-6)  # px from the half-way line, lit side positive
    if EDGE_CONTINUE:
        bent = _continued_edge(luma, (dark, lit), hole, zone, field, signed, out_dist, penumbra)
        signed = signed if bent is None else bent
    matte = 1.0 / (1.0 + np.exp(np.clip(-4.4 * signed / penumbra, -50.0, 50.0)))  # 10-90 % over penumbra
    shade = _surface(img, dark_px)
    # the lit surface from beyond the object's own soft shadow (the spoon's lies across the region's edge and
    # darkens the ring by ~10 levels): it then fades across LIT_BLEND px into the hole, not a plateau at its level
    raw = (luma - dark) / (lit - dark)
    near = cv2.dilate(zone.astype(np.uint8), np.ones((2 * LIT_FROM + 31,) * 2, np.uint8)) > 0
    band = ~hole & (out_dist > LIT_FROM) & (out_dist <= LIT_FROM + 12) & near
    if surface is not None:
        band &= surface
    beyond = band & (raw > 0.6) & (raw < 1.5)
    if beyond.sum() >= 8:
        # ... and of its lit plateau only: the ring's "lit" level is the one the object's shadow darkened, so
        # the test above also passes the band's stretch across the shadow's own penumbra (the coffee: 40-67
        # levels below the bowl against a plateau of ~82), and a membrane through those runs the lit surface
        # down across the hole (85 at the ring to 60 by the matte's line, a dark mass in the bowl's shape)
        far = float(np.median(luma[beyond]))
        t_far = (luma - dark) / max(far - dark, 1e-3)
        plateau = band & (t_far > LIT_KEEP) & (t_far < LIT_CAP)
        beyond = plateau if plateau.sum() >= 8 else beyond
    light = _surface(img, beyond if beyond.sum() >= 8 else lit_px)
    two = shade + matte[:, :, None] * (light - shade)
    inside = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
    # meet the ring's own membrane at the border
    a = np.clip(inside / (LIT_BLEND * unit), 0.0, 1.0)[:, :, None]
    return (a * two + (1 - a) * plain).astype(np.float32)


def _islands(hole: np.ndarray) -> np.ndarray:
    """Known px the hole encloses in pieces smaller than ``SPECK_PX`` (a few px of the removed object the
    selection missed, a glint): no evidence of the surface's shade around the hole. The coffee resampled by 2.5:
    3 dark px of the spoon's neck inside the region were a ring px of the darkness, the half-way line ran up to
    them and the shadow bulged into the lit saucer."""
    n, comp, stats, _ = cv2.connectedComponentsWithStats((~hole).astype(np.uint8), connectivity=8)
    h, w = hole.shape
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    inner = (area < SPECK_PX) & (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
    inner[0] = False  # the background label of ~hole (hole px)
    return inner[comp] & ~hole


def _in_class(t: np.ndarray, classes: np.ndarray, ring: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``t`` (the ring's darkness, 0 dark .. 1 lit) with each ``ring`` px of a labelled class no lighter than
    half-way from its label's level to the next lighter label's, a level being the label's median ``t`` over the
    ``known`` px. Under the coffee's cup foot the ring's px are the dark and mid labels, and with the lasso shrunk
    by 2 px the foot's highlight and a glint of the spoon's hook blurred onto a few of them (t 0.7-1.9, their
    label's level 0.45): the half-way line ran to them along the foot, and the shadow's top became a straight
    diagonal with lit saucer under the foot."""
    levels = []
    for lab in np.unique(classes[ring & (classes >= 0)]):
        m = known & (classes == lab)
        if m.sum() >= 8:
            levels.append((float(np.median(t[m])), int(lab)))
    if len(levels) < 2:
        return t
    levels.sort()
    out = t.copy()
    for (level, lab), (lighter, _) in itertools.pairwise(levels):
        sel = ring & (classes == lab)
        out[sel] = np.minimum(t[sel], (level + lighter) / 2)
    return out


def reshade(
    rgb: np.ndarray, hole: np.ndarray, filled: np.ndarray, found, hint: np.ndarray | None = None
) -> np.ndarray | None:
    """``filled`` (the structure path's fill of ``hole`` in ``rgb``, ``found`` its ``structure.Structure``)
    with the low-pass of its soft zone rebuilt (module docstring); None where there is no soft edge or no
    soft zone worth it (the fill is kept byte for byte). ``hint`` pixels (real colours in the hole) are kept."""
    from .structure import _analysis_scale

    hole = hole if hint is None else hole & ~hint  # the hint's real colours are ring, not hole, here
    scale = _analysis_scale(*hole.shape)
    shade = Shade(rgb, hole)  # the crop's blurred luma: made at the first profile, shared by every later one
    groups, ramps = [], []
    for side, strip, other in found.soft:
        for e in found.entries:
            if e.left == e.right == strip:
                ramp = ramp_across(
                    rgb, hole, e.point / scale, e.heading, e.widths[0] / scale, 1 / scale, shade
                )
                if ramp > 0:  # a penumbra, not a band of a third colour
                    groups.append({side, strip, other})
                    ramps.append(ramp)
                break
    around = None if groups else _Around(rgb, hole, found, shade)
    if not groups:
        groups, ramps = _colour_groups(rgb, hole, found, scale, around)
    if not groups and RING_GROUPS:
        groups, ramps = _ring_groups(rgb, hole, found, scale, around)
    labels, keep = found.labels, None
    lines = found.lines
    if lines:
        # a thin dark line continued across the hole (a cup foot's contact shadow, ``structure.dark_lines``) is
        # its colour's for the shade around it (no hard edge there: at --grow 10 the shade stopped 4-8 px short
        # of it, a red and pale blob) and keeps its whole detail on the new shade (clipped at the ring's grain,
        # the line was washed out; kept as filled, it kept the unshaded fill's pale level)
        keep = np.isin(labels, sorted(lines))
        labels = labels.copy()
        for lab, colour in lines.items():
            labels[labels == lab] = colour
    penumbra = float(np.mean(ramps)) if ramps else 0.0
    # the regions a contour closes across the hole (a Structure's; a hand-built stand-in has none)
    closed = found.closed_labels() if hasattr(found, "closed_labels") else set()
    return _reshade(rgb, hole, filled, labels, groups, penumbra, keep, 1.0 / scale, closed)


class _Around:
    """What ``_colour_groups`` and ``_ring_groups`` both read of one crop, made once per reshade call: its known
    px' labels (the photo's colours, not the object's), their mean colours, each px' distance from the hole,
    each label's share of the ring, and the crop's blurred luma for profiles (``penumbra.Shade``). Each of the
    two made its own: on the 600 px speed scene (a 1191 x 1168 crop) 2 x 35 ms of Lab means and 2 distance
    transforms, ~45 of the reshade's 120 ms, though neither found a penumbra there."""

    def __init__(self, rgb: np.ndarray, hole: np.ndarray, found, shade: Shade | None = None) -> None:
        from .structure import _centres

        self.shade = shade if shade is not None else Shade(rgb, hole)
        self.labels = np.where(hole, -1, found.labels)
        self.centres = _centres(rgb, self.labels, found.n_labels)
        self.out_dist = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 3)
        ring = ~hole & (self.out_dist <= WINDOW_PAD)
        known = self.labels[ring & (self.labels >= 0)]
        self.share = np.bincount(known, minlength=found.n_labels) / max(1, int(ring.sum()))
        self.present = [int(k) for k in np.nonzero(self.share)[0]]


def _merged(groups: list[set[int]]) -> list[set[int]]:
    """One soft edge per set of labels: overlapping groups (one mid tone met at two entries) are one."""
    merged: list[set[int]] = []
    for g in groups:
        for m in [m for m in merged if m & g]:
            merged.remove(m)
            g = g | m
        merged.append(g)
    return merged


def _colour_groups(
    rgb: np.ndarray, hole: np.ndarray, found, scale: float, around: _Around | None = None
) -> tuple[list[set[int]], list[float]]:
    """Soft edges the strip test (``structure._soft_edges``: both of the penumbra's edges entering side by side)
    missed: an entry between a label whose colour is a penumbra's mid tone (between two labels that are one
    surface lit and shaded: ``structure.mid_tone``, ``one_surface``) and one of those two, across which the
    photo ramps (``ramp_across``). Which of a penumbra's edges enter side by side is an accident of size and
    lasso: the coffee resized by 0.8 or 2 (or as a JPEG at 85) is cut dark | mid | lit as at 1x, but only the
    dark | mid edge entered the hole there (the other ran along its border or entered elsewhere); no soft edge
    was found, and the fill followed the labels' hard boundaries (a red-orange wedge with hard sides)."""
    from .structure import mid_tone, one_surface

    around = around if around is not None else _Around(rgb, hole, found)
    centres, share, present, shade = around.centres, around.share, around.present, around.shade
    groups: list[set[int]] = []
    ramps: list[float] = []
    for e in found.entries:
        if e.left == e.right:
            continue
        for mid, side, width in ((e.left, e.right, e.widths[0]), (e.right, e.left, e.widths[1])):
            # a penumbra is a strip between its two sides: around the hole its mid tone covers less than either
            # (the coffee's: 0.11-0.12 of the ring against 0.16-0.35); a smooth gradient that k-means cut in
            # three (a retina's fundus, a dusk sky) has a middle band as wide as its sides, and a surface between
            # its craters' shadows and highlights (the moon) is most of the ring
            others = [
                c
                for c in present
                if c not in (mid, side)
                and share[mid] < min(share[side], share[c])
                and mid_tone(centres, mid, side, c)
                and one_surface(centres, side, c)
            ]
            if not others:
                continue
            ramp = ramp_across(
                rgb, hole, e.point / scale, e.heading, max(float(width), 2.0) / scale, 1 / scale, shade
            )
            if ramp > 0:
                groups.append({mid, side, *others})
                ramps.append(ramp)
    return _merged(groups), ramps


def _ring_groups(
    rgb: np.ndarray, hole: np.ndarray, found, scale: float, around: _Around | None = None
) -> tuple[list[set[int]], list[float]]:
    """Soft edges neither test found because none of the penumbra's edges enters the hole: its strip (a mid tone
    between one surface lit and shaded, narrower around the hole than either side, as in ``_colour_groups``)
    runs along the hole's border. The coffee at 1.7x: the cup's shadow is cut dark | mid | lit as at 1x, but its
    mid strip lies along the bowl's lower border; no entry, no soft shading, and the fill kept the labels' hard
    staircase. Here the photo must ramp (``ramp_across``, at least ``PENUMBRA[0]`` wide) across each of the
    strip's two edges at ``RING_RAMPS`` or more of the places nearest the hole where a profile lies clear of it."""
    from .structure import mid_tone, one_surface

    around = around if around is not None else _Around(rgb, hole, found)
    labels, centres, out_dist = around.labels, around.centres, around.out_dist
    share, present, shade = around.share, around.present, around.shade
    unit = 1.0 / scale
    near = ~hole & (out_dist <= RING_NEAR * unit)
    # the crop's luma gradient (across a strip's edge): made at the first mid tone with two sides, if any
    gradient = None
    touches: dict[int, np.ndarray] = {}  # each side label's px and their 8 neighbours, made once per label
    groups: list[set[int]] = []
    ramps: list[float] = []
    for mid in present:
        sides = [
            (a, b)
            for a, b in itertools.combinations([c for c in present if c != mid], 2)
            if share[mid] < min(share[a], share[b])
            and mid_tone(centres, mid, a, b)
            and one_surface(centres, a, b)
        ]
        if not sides:
            continue
        if gradient is None:
            gradient = np.gradient(cv2.GaussianBlur(_luma(rgb.astype(np.float32)), (0, 0), 2.0 * unit))
        gy, gx = gradient
        strip = (labels == mid).astype(np.uint8)
        thick = cv2.distanceTransform(strip, cv2.DIST_L2, 3)
        for a, b in sides:
            found_ramps = []
            for side in (a, b):
                if side not in touches:
                    touches[side] = (
                        cv2.dilate((labels == side).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
                    )
                touch = touches[side]
                ys, xs = np.nonzero(near & (labels == mid) & touch)
                if len(xs) < RING_PROBES:
                    break
                hits: list[float] = []
                probes: list[np.ndarray] = []
                for i in np.argsort(out_dist[ys, xs], kind="stable"):  # nearest the hole first
                    p = np.array([xs[i], ys[i]], np.float64)
                    if any(np.hypot(*(p - q)) < RING_SPACING * unit for q in probes):
                        continue
                    x, y = int(p[0]), int(p[1])
                    g = np.array([gx[y, x], gy[y, x]])
                    if np.hypot(*g) < 1e-6:
                        continue
                    normal = g / np.hypot(*g)
                    k = int(RING_SPACING * unit)
                    width = max(
                        2.0 * float(thick[max(0, y - k) : y + k + 1, max(0, x - k) : x + k + 1].max()), unit
                    )
                    heading = np.array([-normal[1], normal[0]])  # along the strip's edge
                    # only where a profile across the strip lies clear of the hole (along the hole's border it
                    # runs into it: no measure there, neither a ramp nor not)
                    across = [
                        profile_across(rgb, hole, p, d, width, unit, shade) for d in (heading, -heading)
                    ]
                    clear = [a for a in across if a is not None]
                    if not clear:
                        continue
                    probes.append(p)
                    hits.append(max(ramp_of(a) for a in clear))
                    if len(probes) == RING_PROBES:
                        break
                # a penumbra's strip is soft on both edges (a hard one is an object's: hp12's collar), and at least
                # as wide as the shading takes one (narrower: a curved surface's own shade, hp14's cup body, 6.5-9.5)
                soft = [r for r in hits if r >= PENUMBRA[0]]
                if len(soft) < RING_RAMPS:
                    break
                found_ramps += soft
            else:
                # and the penumbra's other mid tones: k-means may cut its ramp in more than one (the coffee at 1.7x:
                # L 49 and 51, the narrower one's edges ramping where the ring shows them, the other's in the hole)
                more = {
                    c for c in present if share[c] < min(share[a], share[b]) and mid_tone(centres, c, a, b)
                }
                groups.append({mid, a, b} | more)
                ramps.append(float(np.median(found_ramps)))
    return _merged(groups), ramps


def _reshade(
    rgb: np.ndarray,
    hole: np.ndarray,
    filled: np.ndarray,
    labels: np.ndarray,
    groups: list[set[int]],
    penumbra: float,
    keep: np.ndarray | None = None,
    unit: float = 1.0,
    other: set[int] | None = None,
) -> np.ndarray | None:
    """``reshade`` given the soft strips' label ``groups`` and their measured ``penumbra`` (px); ``keep``: hole
    pixels whose fill's detail is kept whole (not clipped at the ring's grain, not raised); ``unit``: crop px per
    analysis px (``soft_weight``); ``other``: labels of other objects the ring is not taken from (``two_tone_shading``)."""
    if not groups:
        return None
    w = soft_weight(labels, groups, hole, unit)
    zone = w > 0.5
    if zone.sum() < SOFT_MIN_PX:
        return None
    # only a window around the soft zone is worked on (a 1200 px crop's membranes would cost ~1 s)
    ys, xs = np.nonzero(w > 0)
    h, wd = hole.shape
    y0, y1 = max(0, int(ys.min()) - WINDOW_PAD), min(h, int(ys.max()) + WINDOW_PAD + 1)
    x0, x1 = max(0, int(xs.min()) - WINDOW_PAD), min(wd, int(xs.max()) + WINDOW_PAD + 1)
    win = np.s_[y0:y1, x0:x1]
    rgb, hole, zone, w = rgb[win], hole[win], zone[win], w[win]
    keep = None if keep is None else keep[win]
    # the shaded surface is not interpolated from another object's pixels on the ring (``other``: the regions a
    # contour closes across the hole, whose outline is an edge): where the region's edge lies in the coffee lip's
    # white (JPEG q70-85: the snap's region takes the lip's end), the ring's membrane and its levels took that
    # white into the saucer beside the lip's contour, a pale streak down the lip's end (lip14)
    surface = None if not other else ~np.isin(labels[win], sorted(other))
    ours = np.isin(labels[win], sorted(set().union(*groups)))
    classes = np.where(ours, labels[win], -1) if RING_CLASSES else None
    low = two_tone_shading(rgb, hole, zone, float(np.clip(penumbra, *PENUMBRA)), unit, surface, classes)
    out = filled[win].astype(np.float32)
    real = rgb.astype(np.float32)
    ring = ~hole & (cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 3) <= 40)
    if not ring.any():
        return None
    # the fill's own grain is kept, without the steps between its labels' copies (clipped at the ring's grain) ...
    grain = np.abs(real - cv2.GaussianBlur(real, (0, 0), DETAIL_SIGMA)).mean(axis=2)[ring]
    limit = DETAIL_CLIP * 1.4826 * float(np.median(grain))  # robust: the ring's edges are few
    # edge12: against its median, not a Gaussian low-pass: the coffee's copies stop at the labels' blocky
    # dark/lit boundary, a staircase 5-10 px beside the rebuilt ramp's half-way line, whose high-pass (clipped)
    # stayed as a light, streaky, jagged line along the soft edge's lit side (x 385-400)
    median = cv2.medianBlur(np.clip(np.rint(out), 0, 255).astype(np.uint8), DETAIL_MEDIAN).astype(np.float32)
    detail = np.clip(out - median, -limit, limit)
    # ... and raised to the grain the ring has at the new shade: copies from the shadow carry a third of the lit
    # saucer's grain, and the lit side filled with them read as a smooth patch (up to DETAIL_GAIN x)
    luma = _luma(real)[ring]
    dark, lit = np.percentile(luma, [10, 60])
    split = luma < (dark + lit) / 2
    at_dark = 1.4826 * float(np.median(grain[split])) if split.any() else limit / DETAIL_CLIP
    at_lit = 1.4826 * float(np.median(grain[~split])) if (~split).any() else limit / DETAIL_CLIP
    shade = np.clip((_luma(low) - dark) / max(lit - dark, 1e-3), 0.0, 1.0)
    target = (at_dark + shade * (at_lit - at_dark))[:, :, None]
    detail = raised(detail, target, local_rms(detail, None, 6.0), DETAIL_GAIN, DETAIL_CLIP)
    if keep is not None:
        # a drawn line's detail against a Gaussian low-pass (a median would take the line away)
        detail[keep] = (out - cv2.GaussianBlur(out, (0, 0), DETAIL_SIGMA))[keep]
    new = low + detail
    out += w[:, :, None] * (new - out)
    result = filled.copy()
    result[win][hole] = np.clip(np.rint(out[hole]), 0, 255).astype(np.uint8)
    return result
