"""Structure across the hole: which colour region each hole pixel belongs to, before any texture is copied.

Patch-based completion copies texture well but does not know that an outline (a cup's rim, a table edge, a
brick course) continues through the hole, nor on which side of it a hole pixel lies: it grows whichever region
matches best at the rim (a pale block of rim sticking out of a cup, a saucer-coloured bite out of its wall).
Following Sun, Yuan, Jia & Shum 2005 ("Image completion with structure propagation") the structure is placed
first and texture follows it:

1. the known band around the hole is segmented into a few colour regions (k-means in Lab on a smoothed copy,
   clusters closer than ``merge`` merged, labels cleaned by a mode filter; a sliver of a third colour that the
   filter keeps by the hole along a boundary goes to that boundary's two sides: ``bridge_slivers``);
2. each boundary between two regions that reaches the hole gives an *entry*: the last ``reach`` px of that
   boundary fitted with a quadratic (direction and curvature at the hole); only clean fits count;
3. entries with the same two regions that point at each other are paired and joined by a cubic (Hermite)
   curve; two ends of one region's contour going round the hole close it (a cup's lip; an end no pair of
   labels gave is looked for on that region's own outline against every other label: ``_corner_ends``); where
   such a closed contour ends on a second region, that region's outline against a third starts there (three
   regions meet) and runs on the contour's course, bent as the contour's outline bends, to meet the other end
   of that outline (a cup's body below its lip: its silhouette to its foot), then is moved out to leave the
   contour where the line from that far end touches it (a vessel's sides are tangent to its rim); an unpaired
   entry is continued at its curvature until it leaves the hole or meets another curve;
4. a thin band (a saucer's bright rim, a vessel, narrower than ``THIN`` px) whose two edges enter the hole side
   by side is a curve with a width, not a region: it gets a label of its own (the rim is not the cup wall of
   the same colour), is continued as one centre line after the outlines (it ends where it meets one) and painted
   at its width; so is a narrow strip of a third colour between two regions whose two edges enter side by side
   (a soft shadow's penumbra cut by k-means into dark | mid | lit), with the strip's colour: a thin band whose
   colours say penumbra (``mid_tone``, ``one_surface``) is such a strip, and so is one whose second edge reaches
   the hole beside the first but runs along its edge (``_lone_strips``); a thin dark line (a cup foot's contact
   shadow, ``dark_lines``) is continued so too, but only when it ends on the outline drawn from a closed
   contour's end (the cup's body): elsewhere it is left to its region; a wider band of one region's colour inside
   another (a cup body's pale band in its dark red) whose far edge the hole only grazes (no entry) is continued so
   too, at the width its cross-sections behind the entry measure (``_grazed_band``), not left to flood a wedge;
5. the curves cut the hole into parts; every other hole pixel takes the label of the nearest known pixel it can
   reach without crossing a curve (a geodesic nearest-label flood).

``find_structure`` returns None when no clean boundary enters the hole (texture, a flat backdrop): the caller
then fills as before. PatchMatch uses the labels as extra guide channels (``guide``), so a hole pixel draws its
patches from its own region (backend/erase/patchmatch.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from numba import njit

from .penumbra import ramp_across

# measured on bench/erase_fill.py's 48 scenes: tiles, brick and fences lie at 0.08-0.16, grass and gravel near
# 0.3; the coffee photo's surround 0.03, horizons 0.005-0.007. Above this the structure path made those worse.
MAX_DENSITY = 0.07
MIN_SHARE = 0.03  # of the band: the least a region must cover for its boundaries to count as structure
ANALYSIS_SIDE = 400  # px: the structure is found on a copy of at most this long side (speed on big crops)
# levels (RGB distance between the mean colours 2 px either side of a boundary, along its last 3-10 px before
# the hole): below it the boundary is a contour line of a smooth gradient that k-means cut into bands (a dusk
# sky), not an edge. The bench's entries (48 + 36 scenes): dusk skies 1-3, real edges 7-230, retina shading 3-5.
MIN_STEP = 4.0


@dataclass
class Entry:
    """A region boundary reaching the hole: where (x, y), heading into the hole (unit), curvature (1/px,
    positive turning left in image coordinates), the two labels (left of the heading, right of it), and the
    RMS of its fit (px)."""

    point: np.ndarray
    heading: np.ndarray
    curvature: float
    left: int
    right: int
    rms: float
    widths: tuple[int, int] = (0, 0)  # how far (px, capped) each side's region reaches across the boundary


@dataclass
class Structure:
    """Labels for every pixel of the crop (the hole's continued from the surround; -1 far from the hole), the
    number of labels, and the curves drawn across the hole (each an Nx2 array of x, y in crop pixels)."""

    labels: np.ndarray
    n_labels: int
    curves: list[np.ndarray] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    density: float = 0.0  # boundary pixels per band pixel (the gate's texture measure)
    soft: list[tuple[int, int, int]] = field(default_factory=list)  # each soft-edge strip: side, strip, side
    # per curve, how it was drawn: "pair" (two entries continuing each other), "corner" (two ends of one region's
    # contour closing it: ``_pair_corners``), "junction" (a region's outline from where such a contour ends on
    # it: ``_pair_junctions``), "extend" (one entry continued alone); a band's or strip's + "-band"
    kinds: list[str] = field(default_factory=list)
    # each thin dark line continued across the hole (``dark_lines``): its label -> the label of its colour
    lines: dict[int, int] = field(default_factory=dict)
    # each silhouette a junction drew (the body's outline from its rim's tangent point: ``_pair_junctions``):
    # its curve's index -> the label of the region it bounds (the body)
    silhouettes: dict[int, int] = field(default_factory=dict)

    def guide(self, weight: float) -> np.ndarray:
        """Two channels placing each label on a circle, adjacent labels ``sqrt(2) weight`` apart: appended to
        the image, a patch pixel whose label differs from its source's costs at least ``2 weight^2`` (as a
        one-hot code would), in 2 channels instead of one per label (the patch distance is the hot loop).
        Pixels without a label (far from the hole) sit at the centre, half-way from every label."""
        h, w = self.labels.shape
        n = max(self.n_labels, 2)
        radius = weight * np.sqrt(2) / (2 * np.sin(np.pi / n))
        angles = 2 * np.pi * np.arange(n) / n
        table = np.concatenate([radius * np.stack([np.cos(angles), np.sin(angles)], 1), np.zeros((1, 2))])
        # the float32 table gathered (np.take): the same values as gathering float64 and converting after,
        # at a fifth of the time on a 1300 px crop (speed10)
        return np.take(table.astype(np.float32), np.where(self.labels >= 0, self.labels, n), axis=0)

    def contours(self, shape: tuple[int, int], width: int) -> np.ndarray:
        """The pixels within ``width`` // 2 px of a region's contour closed across the hole (the "corner" curves:
        a cup's lip, whose outline against the wood and lower edge against its wall both entered the hole), HxW
        bool. Both of its ends were seen and one region lies inside it: a contour between two unrelated surfaces,
        which the meld must not blend (backend/erase/patchmatch.py, ``complete``'s ``keep_steps``)."""
        out = np.zeros(shape, np.uint8)
        for curve, kind in zip(self.curves, self.kinds, strict=False):  # kinds: none if built by hand
            if kind == "corner":
                cv2.polylines(out, [np.round(curve).astype(np.int32)], False, 1, max(1, width), cv2.LINE_8)
        return out > 0

    def silhouette_band(self, shape: tuple[int, int], width: int) -> np.ndarray | None:
        """The pixels within ``width`` // 2 px of a silhouette a junction drew (a cup body's outline from its
        rim's tangent point to its foot: ``_pair_junctions``), HxW bool; None without one. Like a closed contour
        it is an edge between unrelated surfaces (the body in front of the saucer), which the meld must not blend:
        it washed the coffee body's dark red into the saucer's red there, no outline left."""
        if not self.silhouettes:
            return None
        out = np.zeros(shape, np.uint8)
        for index in self.silhouettes:
            line = [np.round(self.curves[index]).astype(np.int32)]
            cv2.polylines(out, line, False, 1, max(1, width), cv2.LINE_8)
        return out > 0

    def contour_sides(self, shape: tuple[int, int], width: int) -> np.ndarray | None:
        """The ``contours`` band split by the labels, HxW int32: 0 off the band, 1 the region a contour closes
        (the lip: the one label that fills one side of the curve), 2 + label beyond it (wood, saucer, wall);
        None without such a contour. The fill anti-aliases the edge between the two (``patchmatch``'s
        ``_contour_edge``): the meld keeps the voted colours' binary step there, the photo's own outline has
        an in-between pixel per row."""
        band = self.contours(shape, width)
        if not band.any():
            return None
        sides = np.where(band, 2 + self.n_labels, 0).astype(np.int32)  # beyond, its label unknown
        if self.labels.shape != tuple(shape):
            return sides
        for inner, near in self._closed(shape, width):
            mine = near & (self.labels >= 0)
            sides[mine] = np.where(self.labels[mine] == inner, 1, 2 + self.labels[mine])
        return sides

    def closed_labels(self) -> set[int]:
        """The labels of the regions a contour closes across the hole (the coffee's lip): another object, whose
        outline is an edge (``contours``)."""
        if self.labels.ndim != 2:
            return set()
        return {inner for inner, _ in self._closed(self.labels.shape, 3)}

    def _closed(self, shape: tuple[int, int], width: int):
        """Per closed contour ("corner" curve): the label it closes (the one that fills the side the
        curve turns toward, within ``width`` // 2 px of it) and that band (HxW bool)."""
        for curve, kind in zip(self.curves, self.kinds, strict=False):
            if kind != "corner":
                continue
            line = [np.round(curve).astype(np.int32)]
            near = np.zeros(shape, np.uint8)
            cv2.polylines(near, line, False, 1, max(1, width), cv2.LINE_8)
            # the contour turns toward the region it closes: the curve and its chord enclose that side
            enclosed = np.zeros(shape, np.uint8)
            cv2.fillPoly(enclosed, line, 1)
            vals = self.labels[(near > 0) & (enclosed > 0) & (self.labels >= 0)]
            if vals.size == 0:
                continue
            yield int(np.bincount(vals).argmax()), near > 0


def segment_band(
    rgb: np.ndarray, band: np.ndarray, *, k: int = 6, merge: float = 14.0, seed: int = 0
) -> tuple[np.ndarray, int]:
    """Colour regions of the ``band`` pixels: labels 0..n-1 there, -1 elsewhere, and n. k-means in OpenCV's
    8-bit Lab on a bilateral-smoothed copy (edges kept, grain removed), clusters whose centres lie within
    ``merge`` of each other merged, then a 5x5 mode filter (isolated specks are texture, not structure)."""
    smooth = cv2.bilateralFilter(np.ascontiguousarray(rgb), 7, 30, 5)
    lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB).astype(np.float32)
    pts = lab[band]
    labels = np.full(band.shape, -1, np.int32)
    if pts.shape[0] < 2 * k:
        return labels, 0
    step = max(1, pts.shape[0] // 20000)
    cv2.setRNGSeed(seed)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.5)
    _, _, centres = cv2.kmeans(np.ascontiguousarray(pts[::step]), k, None, crit, 3, cv2.KMEANS_PP_CENTERS)
    # merge near centres (agglomerative, closest first)
    groups = [[i] for i in range(k)]
    cents = [centres[i].astype(np.float64) for i in range(k)]
    sizes = [1.0] * k
    while len(cents) > 1:
        d = np.array(
            [
                [np.linalg.norm(a - b) if i < j else np.inf for j, b in enumerate(cents)]
                for i, a in enumerate(cents)
            ]
        )
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] >= merge:
            break
        cents[i] = (cents[i] * sizes[i] + cents[j] * sizes[j]) / (sizes[i] + sizes[j])
        sizes[i] += sizes[j]
        groups[i] += groups.pop(j)
        cents.pop(j)
        sizes.pop(j)
    cents_arr = np.array(cents, np.float32)
    nearest = np.argmin(((pts[:, None, :] - cents_arr[None, :, :]) ** 2).sum(-1), axis=1)
    labels[band] = nearest
    n = len(cents)
    if n < 2:
        return labels, n
    votes = np.stack([cv2.boxFilter((labels == i).astype(np.float32), -1, (5, 5)) for i in range(n)], -1)
    labels[band] = np.argmax(votes, axis=-1)[band]
    return labels, n


def boundary_density(labels: np.ndarray, band: np.ndarray) -> float:
    """Region-boundary pixels per band pixel: a few large regions (a cup, a saucer, a table) give a low
    density; texture (grass, gravel) and regular patterns (tiles, brick, a fence) give a high one."""
    a, b, c = labels[:, :-1], labels[:, 1:], labels[:-1, :]
    diff = np.zeros(labels.shape, bool)  # transitions between two labelled pixels (not the band's own edges)
    diff[:, :-1] |= (a != b) & (a >= 0) & (b >= 0)
    diff[:-1, :] |= (c != labels[1:, :]) & (c >= 0) & (labels[1:, :] >= 0)
    return float((diff & band).sum() / max(1, band.sum()))


THIN = 8  # px: a region part narrower than this (a saucer's rim, a highlight line) is a band, not a region
THIN_LEN = 12  # px: ... and at least this long (a speck is not a band)


def split_thin(
    labels: np.ndarray, band: np.ndarray, hole: np.ndarray, n: int
) -> tuple[np.ndarray, int, dict[int, int]]:
    """Give each colour's thin bands (narrower than ``THIN`` px, at least ``THIN_LEN`` long, reaching the hole
    only at an end) a label of their own: a saucer's bright rim and the cup's white wall share a colour but are
    not one region, and patches for the rim continued across the hole must come from the rim, not the wall.
    Returns the labels, their number and, for each new label, the colour label it was split from."""
    out = labels.copy()
    origin: dict[int, int] = {}
    near_hole = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (THIN + 1, THIN + 1))
    for lab in range(n):
        m = ((labels == lab) & band).astype(np.uint8)
        thin = (m > 0) & (cv2.morphologyEx(m, cv2.MORPH_OPEN, disc) == 0)
        count, comp, stats, _ = cv2.connectedComponentsWithStats(thin.astype(np.uint8), connectivity=8)
        new = -1
        for c in range(1, count):
            area = int(stats[c, cv2.CC_STAT_AREA])
            if area < THIN_LEN * 2:
                continue
            part = comp == c
            width = 2 * float(cv2.distanceTransform(part.astype(np.uint8), cv2.DIST_L2, 3).max())
            touching = int((part & near_hole).sum())
            # long for its width, and meeting the hole end-on (a sliver along the hole's edge is not a band)
            if area / max(width, 1.0) < THIN_LEN or not 0 < touching <= max(6, 2 * width + 2):
                continue
            if new < 0:
                new = n + len(origin)
                origin[new] = lab
            out[part] = new
    return out, n + len(origin), origin


GRAZE = (
    0.5  # of its length: a thin part lying along the hole's edge for at least this much grazes it (foot11)
)


def grazing_thin(labels: np.ndarray, band: np.ndarray, hole: np.ndarray, n: int) -> np.ndarray:
    """The thin parts of each colour (``split_thin``'s: narrower than ``THIN``, at least ``THIN_LEN`` long) that
    lie along the hole's edge for at least ``GRAZE`` of their length instead of meeting it end-on, HxW bool. Such
    a band (the coffee cup's pale reflection along its foot, whose lower edge the spoon's hole grazes) is whole
    outside the hole: what lies beyond its grazed edge is the region on its far side. Seeding the flood, its
    pixels were the nearest known ones for the hole along its whole length and gave it a wedge of the band's
    colour (a mottled pink patch in the body's dark red)."""
    out = np.zeros(labels.shape, bool)
    near_hole = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (THIN + 1, THIN + 1))
    for lab in range(n):
        m = ((labels == lab) & band).astype(np.uint8)
        thin = (m > 0) & (cv2.morphologyEx(m, cv2.MORPH_OPEN, disc) == 0)
        if not (thin & near_hole).any():
            continue
        count, comp, stats, _ = cv2.connectedComponentsWithStats(thin.astype(np.uint8), connectivity=8)
        for c in range(1, count):
            area = int(stats[c, cv2.CC_STAT_AREA])
            if area < THIN_LEN * 2:
                continue
            part = comp == c
            touching = int((part & near_hole).sum())
            if touching == 0:
                continue
            width = 2 * float(cv2.distanceTransform(part.astype(np.uint8), cv2.DIST_L2, 3).max())
            length = area / max(width, 1.0)
            if length >= THIN_LEN and touching >= GRAZE * length:
                out |= part
    return out


SLIVER_AREA = 2 * THIN_LEN  # px: a colour piece smaller than this (and 1-2 px thick) may be a sliver
SLIVER_MIN = 6  # px: ... and at least this large (a speck of 1-5 px where three regions meet is left alone)
SLIVER_REACH = 4.0  # px: ... leaving the hole: reaching at least this far into the band (corner12)


def bridge_slivers(labels: np.ndarray, band: np.ndarray, hole: np.ndarray, n: int) -> np.ndarray:
    """Labels with each sliver of a third colour along the boundary of two regions at the hole given to those
    two regions: a piece of ``SLIVER_MIN``..``SLIVER_AREA`` px, 1-2 px thick, that leaves the hole (it
    reaches ``SLIVER_REACH`` px into the band and touches the hole with at most half its pixels), bordered along
    its length by two other labels (each on at least 30 % as many ring pixels as it has pixels) that meet each
    other beside its far end: their boundary continues past it. k-means puts the anti-aliased step between two
    surfaces into a third cluster now and then, and the 5x5 mode filter keeps such a line by the hole, where
    few pixels vote: the coffee lip's lower edge (``--grow 9``) ran into a 1 px line of another colour ~10 px
    before the hole, so it had no entry, no closed contour, and the meld's white haze came back. A piece lying
    along the hole's edge (capping a thin band's end: hp14) does not leave it and stays (corner11's broader
    rule continued that band over a cup's handle)."""
    dist = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 3)
    near = dist <= 1.5
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    h, w = labels.shape
    drop = np.zeros(labels.shape, bool)
    for lab in range(n):
        m = (labels == lab) & band
        if not (m & near).any():
            continue
        count, comp, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        for c in range(1, count):
            area = int(stats[c, cv2.CC_STAT_AREA])
            if not SLIVER_MIN <= area < SLIVER_AREA:
                continue
            x, y, bw, bh = (int(stats[c, k]) for k in range(4))
            y0, y1, x0, x1 = max(0, y - 2), min(h, y + bh + 2), max(0, x - 2), min(w, x + bw + 2)
            part = comp[y0:y1, x0:x1] == c
            here = dist[y0:y1, x0:x1]
            touching = int((part & (here <= 1.5)).sum())
            if touching == 0 or 2 * touching > area or float(here[part].max()) < SLIVER_REACH:
                continue
            if cv2.distanceTransform(np.pad(part, 1).astype(np.uint8), cv2.DIST_L2, 3).max() > 1.5:
                continue  # 3 px thick or more (a centre pixel 2 px in): a region of its own
            sub = labels[y0:y1, x0:x1]
            ring = (cv2.dilate(part.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~part
            around = sub[ring]
            votes = np.bincount(around[(around >= 0) & (around != lab)], minlength=n)
            a, b = (int(v) for v in np.argsort(votes, kind="stable")[::-1][:2])
            if votes[b] < 0.3 * area:
                continue  # not between two regions
            # the piece's far end (its pixel farthest from the hole): a and b meet beside it
            fy, fx = np.unravel_index(int(np.argmax(np.where(part, here, -1))), part.shape)
            fy, fx = fy + y0, fx + x0
            win = labels[max(0, fy - 2) : fy + 3, max(0, fx - 2) : fx + 3]
            if not ((cv2.dilate((win == a).astype(np.uint8), cross) > 0) & (win == b)).any():
                continue
            drop[y0:y1, x0:x1] |= part
    if not drop.any():
        return labels
    out = labels.copy()
    left = drop.copy()
    out[left] = -1
    for _ in range(8):  # each pass gives the pixels beside a kept one their neighbours' commonest label
        votes = np.stack([cv2.boxFilter((out == i).astype(np.float32), -1, (3, 3)) for i in range(n)], -1)
        best = np.argmax(votes, axis=-1)
        take = left & (votes.max(axis=-1) > 0)
        out[take] = best[take]
        left &= ~take
        if not left.any():
            break
    out[left] = labels[left]
    return out


def region_tips(
    labels: np.ndarray, split: np.ndarray, bands: list[Entry], colours: dict[int, int]
) -> np.ndarray:
    """Labels with each thin part that shares a continued band's label (``split_thin`` gives all thin parts of
    a colour one label) but that no band enters, and that is joined to a wide part of its colour, given that
    colour back: it is that region's tapering end, not the band. The coffee cup's wall narrows to a thin wedge
    under the lip's lower end; with the saucer rim's band label (``--grow 4``) the lip's lower edge against it
    was "a band's edge" and dropped, so the lip had no closed contour. A thin part on its own (a retina's
    vessel, p10) keeps the band's label: given its colour it seeded the flood and broke the vessel."""
    out = labels.copy()
    ring_k = np.ones((3, 3), np.uint8)
    for lab, colour in colours.items():
        count, comp = cv2.connectedComponents((labels == lab).astype(np.uint8), connectivity=8)
        if count <= 2:
            continue
        entered = np.zeros(count, bool)
        for b in bands:
            if b.left == lab:
                x, y = int(round(b.point[0])), int(round(b.point[1]))
                entered[np.unique(comp[max(0, y - 3) : y + 4, max(0, x - 3) : x + 4])] = True
        for c in range(1, count):
            if entered[c]:
                continue
            part = comp == c
            ring = (cv2.dilate(part.astype(np.uint8), ring_k) > 0) & ~part
            if int((split[ring] == colour).sum()) >= 3:  # joined to its colour's wide part
                out[part] = colour
    return out


# levels (brightest channel): how much darker than its surround (a 9 px closing) a contact line is
LINE_DEPTH = 15.0
LINE_WIDTH = 5.0  # px: the widest such a line may be


def dark_lines(
    rgb: np.ndarray,
    labels: np.ndarray,
    band: np.ndarray,
    hole: np.ndarray,
    n: int,
    reach: int,
    max_rms: float,
) -> tuple[np.ndarray, int, list[Entry], dict[int, int]]:
    """Thin dark lines in the band that enter the hole end-on (the contact shadow where a cup's foot meets its
    saucer, inside the one dark region k-means made of foot, line and shade): the 5x5 mode filter of
    ``segment_band`` removes a 2-4 px line, so k-means never sees it. Each gets a label of its own and an entry on its centre line, continued as a band. Returns the
    labels, their number, the entries and each line's colour (the label it was taken from)."""
    # the brightest channel: a dark red saucer's contact line is 40 -> 10 in red, 12 -> 3 in luma
    luma = cv2.GaussianBlur(rgb[:, :, :3].max(axis=2).astype(np.float32), (0, 0), 0.7)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    depth = cv2.morphologyEx(luma, cv2.MORPH_CLOSE, disc) - luma
    line = (depth >= LINE_DEPTH) & band & (labels >= 0)
    near_hole = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    count, comp, stats, _ = cv2.connectedComponentsWithStats(line.astype(np.uint8), connectivity=8)
    out = labels.copy()
    entries: list[Entry] = []
    origin: dict[int, int] = {}
    for c in range(1, count):
        area = int(stats[c, cv2.CC_STAT_AREA])
        if area < THIN_LEN * 2:
            continue
        part = comp == c
        width = 2 * float(cv2.distanceTransform(np.pad(part, 1).astype(np.uint8), cv2.DIST_L2, 3).max())
        touching = part & near_hole
        if width > LINE_WIDTH or area / width < THIN_LEN or not 0 < touching.sum() <= max(6, 2 * width + 2):
            continue
        ys, xs = np.nonzero(part)
        ty, tx = np.nonzero(touching)
        entry = np.array([tx.mean(), ty.mean()])
        pts = np.stack([xs, ys], 1).astype(np.float64)
        close = np.linalg.norm(pts - entry, axis=1) <= reach
        if close.sum() < 0.6 * reach:
            continue
        heading, curvature, rms = _fit_entry(pts[close], entry)
        probe = np.round(entry + 4 * heading).astype(int)
        if rms > max_rms or not (0 <= probe[0] < hole.shape[1] and 0 <= probe[1] < hole.shape[0]):
            continue
        if not hole[probe[1], probe[0]]:
            continue
        lab = n + len(entries)
        origin[lab] = int(np.bincount(labels[part]).argmax())
        out[part] = lab
        entries.append(Entry(entry, heading, curvature, lab, lab, rms, (width, width)))
    return out, n + len(entries), entries, origin


# px: a boundary's last px this near the hole may run along its edge, not into it: a strip of one side's colour
# (the object's halo where the hole hugs it) bends them. The coffee's cup foot at 2.5x and JPEG q85: the body's
# dark red ran 5 px down the hole's edge past its foot's outline, whose entry was lost and the body's silhouette
# was not drawn (no junction: the saucer flooded the body's lower wall)
EDGE_STRIP = 3.0


def _fit_entry(points: np.ndarray, entry: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Heading (unit, into the hole), curvature and RMS residual of a quadratic fitted to a boundary's
    ``points`` (x, y) near its ``entry`` point."""
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    u = vt[0]
    # orient u from the points toward the entry, i.e. into the hole
    if np.dot(entry - points.mean(axis=0), u) < 0:
        u = -u
    n = np.array([-u[1], u[0]])
    rel = points - entry
    t, s = rel @ u, rel @ n
    a = np.stack([np.ones_like(t), t, t * t], 1)
    coef, *_ = np.linalg.lstsq(a, s, rcond=None)
    rms = float(np.sqrt(np.mean((a @ coef - s) ** 2)))
    c0, c1, c2 = coef
    heading = u + c1 * n
    heading /= np.linalg.norm(heading)
    curvature = 2 * c2 / (1 + c1 * c1) ** 1.5
    return heading, float(curvature), rms


def find_entries(
    labels: np.ndarray,
    hole: np.ndarray,
    *,
    reach: int,
    max_rms: float = 1.5,
    along: list | None = None,
    glancing: bool = False,
) -> list[Entry]:
    """The boundaries between two labelled regions that reach the hole, each fitted over its last ``reach``
    px; kept when the fit is clean (RMS <= ``max_rms``), long enough and heading into the hole. ``along``: a
    list that gets the clean ones that do not head into the hole (they run along its edge) as (point, a, b).
    ``glancing``: one that runs along the hole's edge (its probe by the hole, not in it) is kept too."""
    h, w = labels.shape
    far = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 3)
    near_hole = far <= 2.5
    entries: list[Entry] = []

    def fitted(pts: np.ndarray, entry: np.ndarray, ahead: float) -> Entry | None:
        """The entry at ``entry`` fitted over ``pts`` (those within ``reach``), or None where it fails."""
        close = np.linalg.norm(pts - entry, axis=1) <= reach
        if close.sum() < 0.6 * reach:
            return None
        heading, curvature, rms = _fit_entry(pts[close], entry)
        if rms > max_rms:
            return None
        probe = entry + ahead * heading
        px, py = int(round(probe[0])), int(round(probe[1]))
        inside = 0 <= px < w and 0 <= py < h
        if not inside or not (hole[py, px] or (glancing and near_hole[py, px])):
            return None
        left, right_label = _sides(labels, entry, heading)
        if left < 0 or right_label < 0 or left == right_label:
            return None
        widths = (
            _width(labels, entry, heading, left, 1),
            _width(labels, entry, heading, right_label, -1),
        )
        return Entry(entry, heading, curvature, left, right_label, rms, widths)

    # a boundary pixel of the pair a < b: labelled a, with a 4-neighbour (right or below) labelled b, or the
    # other way round. Each pixel's pair with its right and with its lower neighbour is coded once (a * n + b;
    # -1: none), so a pair's boundary is two comparisons, and pairs with too short a boundary are skipped by
    # a count, not by building their mask (the same pixels as testing every pair in full: speed10)
    n = int(labels.max()) + 1
    pair_right = _pair_code(labels[:, :-1], labels[:, 1:], n, (h, w), np.s_[:, :-1])
    pair_down = _pair_code(labels[:-1, :], labels[1:, :], n, (h, w), np.s_[:-1, :])
    both = pair_right >= 0
    counts = np.bincount(pair_right[both], minlength=n * n)
    once = (pair_down >= 0) & (pair_down != pair_right)  # a pixel counts once for a pair
    counts += np.bincount(pair_down[once], minlength=n * n)
    for a in range(n):
        for b in range(a + 1, n):
            code = a * n + b
            if counts[code] < reach // 2:
                continue
            edge = (pair_right == code) | (pair_down == code)
            count, comp = cv2.connectedComponents(edge.astype(np.uint8), connectivity=8)
            for ys, xs in _components(comp, count, w):
                if ys.size < reach // 2:
                    continue
                touching = near_hole[ys, xs]
                if not touching.any():
                    continue
                # one entry per place the boundary touches the hole (a boundary may touch it at both ends)
                tys, txs = ys[touching], xs[touching]
                tcount, tcomp = cv2.connectedComponents(
                    _points_mask((h, w), tys, txs, dilate=3), connectivity=8
                )
                for tc in range(1, tcount):
                    sel = tcomp[tys, txs] == tc
                    if not sel.any():
                        continue
                    entry = np.array([txs[sel].mean(), tys[sel].mean()])
                    pts = np.stack([xs, ys], 1).astype(np.float64)
                    close = np.linalg.norm(pts - entry, axis=1) <= reach
                    if close.sum() < 0.6 * reach:
                        continue
                    heading, curvature, rms = _fit_entry(pts[close], entry)
                    if rms > max_rms:
                        continue
                    found = fitted(pts, entry, 4.0)
                    trim = far[ys, xs] > EDGE_STRIP
                    near = trim & (np.linalg.norm(pts - entry, axis=1) <= reach)
                    if found is None and near.any():
                        # its last px bent along the hole's edge (a strip of one side's colour there: the
                        # object's halo or a mixture where the hole hugs it): fitted again on the boundary short
                        # of that strip, from its px nearest the hole
                        k = int(np.argmin(np.where(near, far[ys, xs], np.inf)))
                        found = fitted(pts[trim], pts[k], float(far[ys[k], xs[k]]) + 2)
                        # only where the touch lies off that line, to one side (the tail ran along the edge; a
                        # boundary merely cut short there, a lattice's leg, is not this), both regions beside it
                        if found is not None and (
                            abs(_cross(found.heading, entry - found.point)) < EDGE_STRIP
                            or min(found.widths) < 2
                        ):
                            found = None
                    if found is not None:
                        entries.append(found)
                        continue
                    probe = entry + 4 * heading
                    px, py = int(round(probe[0])), int(round(probe[1]))
                    inside = 0 <= px < w and 0 <= py < h
                    if not inside or not (hole[py, px] or (glancing and near_hole[py, px])):
                        if along is not None:
                            along.append((entry, a, b))
    return entries


def _pair_code(here: np.ndarray, there: np.ndarray, n: int, shape: tuple[int, int], where) -> np.ndarray:
    """Per pixel, the pair ``min * n + max`` of its label (``here``) and a neighbour's (``there``) when both
    are labelled and differ, else -1; ``where``: the slice of the ``shape`` array the two views cover (the
    last column or row has no such neighbour). int64 HxW."""
    out = np.full(shape, -1, np.int64)
    lo, hi = np.minimum(here, there).astype(np.int64), np.maximum(here, there).astype(np.int64)
    out[where] = np.where((lo >= 0) & (lo != hi), lo * n + hi, -1)
    return out


def _components(comp: np.ndarray, count: int, w: int):
    """(ys, xs) of each component 1..count-1 of the label image ``comp``, in row-major order: what
    ``np.nonzero(comp == c)`` gives, from one pass over the image instead of one per component."""
    flat = np.flatnonzero(comp)
    lab = comp.ravel()[flat]
    order = np.argsort(lab, kind="stable")  # stable: each component's pixels stay in row-major order
    flat = flat[order]
    ends = np.cumsum(np.bincount(lab, minlength=count)[1:count])
    start = 0
    for end in ends:
        ys, xs = np.divmod(flat[start:end], w)
        yield ys, xs
        start = end


def _points_mask(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, dilate: int) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[ys, xs] = 1
    return cv2.dilate(m, np.ones((dilate, dilate), np.uint8))


def _sides(labels: np.ndarray, point: np.ndarray, heading: np.ndarray) -> tuple[int, int]:
    """The labels a few px left and right of ``point`` across ``heading``, a few px back from the hole."""
    h, w = labels.shape
    n = np.array([heading[1], -heading[0]])  # left of the heading in image coordinates (y down)
    out = []
    for sign in (1, -1):
        votes: dict[int, int] = {}
        for back in (2, 4, 6):
            for off in (2, 3, 4):
                p = point - back * heading + sign * off * n
                x, y = int(round(p[0])), int(round(p[1]))
                if 0 <= x < w and 0 <= y < h and labels[y, x] >= 0:
                    votes[int(labels[y, x])] = votes.get(int(labels[y, x]), 0) + 1
        out.append(max(votes, key=votes.get) if votes else -1)
    return out[0], out[1]


MAX_TURN = np.pi / 2  # rad: how far an unpaired boundary may turn while it is continued
WIDTH_CAP = 16  # px: a region wider than this across the boundary counts as "wide"


def _width(labels: np.ndarray, point: np.ndarray, heading: np.ndarray, label: int, sign: int) -> int:
    """How many px the region ``label`` reaches from the boundary at ``point`` across ``heading`` (to its left
    for sign 1, right for -1), measured a few px back from the hole; capped at ``WIDTH_CAP``. A rim band and a
    thin highlight line may share a colour, not a width: pairing checks both."""
    h, w = labels.shape
    n = np.array([heading[1], -heading[0]]) * sign
    best = 0
    for back in (3, 6):
        base = point - back * heading
        count = 0
        for off in range(1, WIDTH_CAP + 1):
            p = base + off * n
            x, y = int(round(p[0])), int(round(p[1]))
            if not (0 <= x < w and 0 <= y < h) or labels[y, x] != label:
                break
            count = off
        best = max(best, count)
    return best


def _same_region(la: int, wa: int, lb: int, wb: int) -> bool:
    """Two sides are the same region: the same label and a similar width (both wide, or within 40 %)."""
    if la != lb:
        return False
    if wa >= WIDTH_CAP and wb >= WIDTH_CAP:
        return True
    return abs(wa - wb) <= max(2, 0.4 * max(wa, wb))


def _hermite(p0: np.ndarray, d0: np.ndarray, p1: np.ndarray, d1: np.ndarray) -> np.ndarray:
    """Cubic from p0 (heading d0) to p1 (arriving heading d1), sampled about every px."""
    dist = float(np.linalg.norm(p1 - p0))
    m0, m1 = d0 * dist, d1 * dist
    t = np.linspace(0, 1, max(2, int(dist * 1.5)))[:, None]
    h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
    h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * p0 + h10 * m0 + h01 * p1 + h11 * m1


def _pair(entries: list[Entry], max_angle: float = 40.0) -> list[tuple[int, int]]:
    """Greedy pairs of entries that continue each other: the same two regions on the same sides (walking from
    one to the other, left stays left) and both headings within ``max_angle`` of the line joining them."""
    cos = np.cos(np.radians(max_angle))
    cand = []
    for i, a in enumerate(entries):
        for j in range(i + 1, len(entries)):
            b = entries[j]
            if not (
                _same_region(a.left, a.widths[0], b.right, b.widths[1])
                and _same_region(a.right, a.widths[1], b.left, b.widths[0])
            ):
                continue
            facing = _facing(a, b, cos)
            if facing is None:
                continue
            ca, cb = facing
            cand.append((-(ca + cb), i, j))
    return _greedy(cand)


def _facing(a: Entry, b: Entry, cos: float) -> tuple[float, float] | None:
    """How straight two entries head at each other (the cosines of each heading with the line joining them), or
    None when they are under 2 px apart or either heads off that line by more than the angle ``cos`` gives."""
    v = b.point - a.point
    dist = float(np.linalg.norm(v))
    if dist < 2:
        return None
    v = v / dist
    ca, cb = float(np.dot(a.heading, v)), float(np.dot(b.heading, -v))
    if ca < cos or cb < cos:
        return None
    return ca, cb


def _greedy(cand: list[tuple[float, int, int]]) -> list[tuple[int, int]]:
    """The pairs taken best first (lowest cost), each entry in one pair at most."""
    used: set[int] = set()
    pairs = []
    for _, i, j in sorted(cand):
        if i in used or j in used:
            continue
        used.update((i, j))
        pairs.append((i, j))
    return pairs


CORNER_TURN = 120.0  # degrees: how far the contour may turn between its two ends
# degrees: how far each end of a region's contour may head off the line joining them. A convex contour's two
# ends share its turn between them (the two angles add up to it), so an evenly split turn of CORNER_TURN needs
# half of it at each end. At 50 a lip's end whose contour turns 97-100 degrees, split about evenly, hung on 1-2
# degrees of its fitted headings: the coffee's lip was closed at JPEG q75 and lost at q70 and q80, 0.7x and a
# 1.5 px blur (lip14), its outline continued alone past the lip's end and the lip's label flooded a white blotch
CORNER_ANGLE = CORNER_TURN / 2
MIN_BEND = 0.002  # 1/px: an entry bending less than this is straight (it agrees with either way of turning)
# degrees: how far an end may head to the wrong side of the chord and still count as turning toward the region.
# A fitted heading is good to a degree or two: an end heading along the chord (0) must not hang on its sign.
# An S's ends are further off (the coffee's foot at 0.7x: 7; hp22's vessel ends: 11)
CONVEX_SLACK = 4.0


def _pair_corners(entries: list[Entry], taken: set[int]) -> list[tuple[int, int]]:
    """Pairs of unpaired outline entries that are two ends of one region's contour going round the hole: the
    same region on the same side of both (walking from one to the other), different regions beyond, both
    headings within ``CORNER_ANGLE`` of the line joining them and each off it toward the turn, and the join
    turning toward that region, as both entries already bend (it encloses the region: a convex contour). A cup's white lip under a spoon's handle:
    its outer outline enters the hole against the wood above, its lower edge against the cup's wall below;
    continued alone at the curvature it has at the hole, the outline ran 4-9 px past where the lip ends and the
    lip label painted a pale blob on the saucer; joined, the lip closes where both of its edges say."""
    cos = np.cos(np.radians(CORNER_ANGLE))
    slack = np.sin(np.radians(CONVEX_SLACK))
    cand = []
    for i, a in enumerate(entries):
        for j in range(i + 1, len(entries)):
            b = entries[j]
            if i in taken or j in taken:
                continue
            # walking from a to b, a's right is b's left (b's heading points back into the hole)
            if a.right == b.left and a.left != b.right:
                sign = 1.0  # the region on the right: the contour turns right (its heading's angle grows)
            elif a.left == b.right and a.right != b.left:
                sign = -1.0
            else:
                continue
            facing = _facing(a, b, cos)
            if facing is None:
                continue
            ca, cb = facing
            end = -b.heading
            turn = float(
                np.arctan2(a.heading[0] * end[1] - a.heading[1] * end[0], float(np.dot(a.heading, end)))
            )
            if sign * turn <= 0 or abs(turn) > np.radians(CORNER_TURN):
                continue
            # convex: the contour leaves a on one side of the chord and reaches b from the other, each end
            # heading off it toward the turn (an S whose two ends head off to the same side turns by their
            # difference: a retina's vessel ends 11 and 55 degrees off, hp22, at a 60 degree CORNER_ANGLE)
            chord = b.point - a.point
            if sign * _sin(chord, a.heading) > slack or sign * _sin(chord, end) < -slack:
                continue
            # both ends already bend that way (b walked backwards bends the other way round)
            if sign * a.curvature < -MIN_BEND or sign * -b.curvature < -MIN_BEND:
                continue
            cand.append((-(ca + cb), i, j))
    return _greedy(cand)


def _cross(u: np.ndarray, v: np.ndarray) -> float:
    """The z of u x v (image coordinates): positive where v lies clockwise of u on screen (y down)."""
    return float(u[0] * v[1] - u[1] * v[0])


def _sin(u: np.ndarray, v: np.ndarray) -> float:
    """The sine of the angle from u to v (positive clockwise on screen), 0 for a zero vector."""
    norm = float(np.linalg.norm(u) * np.linalg.norm(v))
    return _cross(u, v) / norm if norm > 0 else 0.0


def _joined(
    entries: list[Entry], max_len: float | None, stripe: Callable[[Entry, int], bool] | None = None
) -> tuple[set[int], list[tuple[int, int]]]:
    """The entries the drawing joins to another (pairs, closed contours' two ends, and the outlines a junction
    draws to: ``max_len`` and ``stripe`` theirs, None without junctions), and the closed contours
    (``_pair_corners``)."""
    taken = {k for ij in _pair(entries) for k in ij}
    corners = _pair_corners(entries, taken)
    taken |= {k for ij in corners for k in ij}
    if max_len is not None:
        taken |= {m for m, _, _, _ in _pair_junctions(entries, corners, taken, max_len, stripe)}
    return taken, corners


def _corner_ends(
    entries: list[Entry],
    labels: np.ndarray,
    hole: np.ndarray,
    reach: int,
    max_rms: float,
    real: Callable,
    max_len: float | None,
    stripe: Callable[[Entry, int], bool] | None = None,
) -> list[Entry]:
    """The other ends of regions' contours that ``find_entries`` missed, for entries nothing joins (no pair,
    corner or junction): each such entry's two regions' own outlines (the region against every other label at
    once: ``_sides`` names what lies beyond, by the majority a few px across) where they reach the hole, heading
    into it or running along its edge. Returned: those that close a corner with such an entry
    (``_pair_corners``) and leave every entry joined before joined (``_joined``, ``max_len`` its).
    Where a cup's lip's lower edge meets the hole at a glancing angle, its last px are a 1-3 px speck of a third
    colour, a 1 px line of the two colours' mixture along the edge, or the wall's wedge running along the hole:
    a JPEG re-encode, a resample or a resize made one of these at the lip's end, so the pair of labels' boundary
    stopped short of the hole or ran along it, the lip's outline was continued alone past its end and the lip's
    label painted a white bump on the saucer (lip13). ``real``: whether an entry is an edge between two regions
    that count (``MIN_SHARE``, ``MIN_STEP``), at both ends: a dusk sky's contour line, a band of its gradient,
    was otherwise closed against a thin mast's edge. ``stripe``: the junctions' (``_pair_junctions``).
    """
    joined, _ = _joined(entries, max_len, stripe)
    open_ = {i for i in range(len(entries)) if i not in joined and real(entries[i])}
    cand: list[Entry] = []
    for region in sorted({r for i in open_ for r in (entries[i].left, entries[i].right)}):
        own = np.where(labels < 0, -1, (labels == region).astype(np.int32))
        for e in find_entries(own, hole, reach=reach, max_rms=max_rms, glancing=True):
            left, right = _sides(labels, e.point, e.heading)
            if region not in (left, right) or left == right or min(left, right) < 0:
                continue
            # one of the given entries' own places (its pair of labels' boundary was found): not a new end
            if any(
                region in (f.left, f.right) and np.linalg.norm(f.point - e.point) < reach / 2 for f in entries
            ):
                continue
            e.left, e.right = left, right
            e.widths = (
                _width(labels, e.point, e.heading, left, 1),
                _width(labels, e.point, e.heading, right, -1),
            )
            if real(e):
                cand.append(e)
    found: list[Entry] = []
    _, corners = _joined(entries + cand, max_len, stripe)
    for i, j in corners:  # best first, as the drawing pairs them
        lo, hi = min(i, j), max(i, j)
        if lo not in open_ or hi < len(entries):  # an open entry and a new end
            continue
        e = cand[hi - len(entries)]
        trial = entries + found + [e]
        now, closed = _joined(trial, max_len, stripe)
        if joined <= now and any(len(trial) - 1 in ij for ij in closed):  # no join taken away
            found.append(e)
    return found


def _pair_junctions(
    entries: list[Entry],
    corners: list[tuple[int, int]],
    taken: set[int],
    max_len: float,
    stripe: Callable[[Entry, int], bool] | None = None,
) -> list[tuple[int, int, np.ndarray, int]]:
    """Junctions at the ends of closed contours: (e, a, corner) where ``a`` is one end of a contour
    ``_pair_corners`` closed, whose region C meets a second region R there, and ``e`` an unpaired outline entry
    of R against a third region (wider than a thin band: a reflection stripe across R is not what lies beyond
    it; nor one that ``stripe`` (e, R) finds R again beyond, measured behind the entry: ``stripe_across``).
    Where C's contour ends on R three regions meet, so R's own outline against what lies beyond both
    starts at ``a``: it runs on the closed contour's course (the line joining its two ends), bent at the
    curvature of the contour's outline (``_silhouette``; straight where that does not apply), and meets ``e``'s
    line ahead of both (within ``max_len``), turning toward R. R lies on the same side of both (walking from e
    to a). That wall then leaves the contour where the line from its far end touches it (``_tangent_silhouette``).
    Returns (e, a, the wall from the contour to where it meets e's line: Nx2, R's label). A cup's body under a
    spoon's handle: the lip's contour closes at its lower corner against the body, whose silhouette against the
    saucer starts there and meets its bottom edge at the foot. Without it the body's edge under the handle was
    where two floods met (the body's red and the saucer's run together, a lighter column)."""
    cand = []
    for i, j in corners:
        # the closed region: on the same side of both ends, walking from one to the other (``_pair_corners``)
        c = entries[i].right if entries[i].right == entries[j].left else entries[i].left
        for k, o in ((i, j), (j, i)):
            a = entries[k]
            r = a.left if a.right == c else a.right  # the region the closed contour meets at a
            course = a.point - entries[o].point
            if r == c or float(np.linalg.norm(course)) < 2:
                continue
            course /= float(np.linalg.norm(course))
            for m, e in enumerate(entries):
                if m in taken:
                    continue
                # walking from e to a: R on e's left and on a's right (a's heading points back into the hole)
                if e.left == r and a.right == r and e.right != c and e.widths[1] >= THIN:
                    sign = -1.0  # R on the left: the outline turns left (its heading's angle shrinks)
                elif e.right == r and a.left == r and e.left != c and e.widths[0] >= THIN:
                    sign = 1.0
                else:
                    continue
                if stripe is not None and stripe(e, r):
                    continue
                # e.point + s e.heading = a.point + t course, s and t > 0: the two lines meet ahead of both
                det = float(e.heading[0] * -course[1] + course[0] * e.heading[1])
                if abs(det) < 1e-3:
                    continue
                d = a.point - e.point
                s = float(d[0] * -course[1] + course[0] * d[1]) / det
                t = float(e.heading[0] * d[1] - e.heading[1] * d[0]) / det
                turn = float(e.heading[0] * -course[1] + e.heading[1] * course[0])  # e's heading to -course
                if not (0 < s <= max_len and 0 < t <= max_len) or sign * turn <= 0:
                    continue
                path = _silhouette(a.point, course, entries[o].curvature, e, max_len)
                if path is None:  # straight on the contour's course, as the two lines meet
                    path = np.array([a.point, e.point + s * e.heading])
                else:
                    s = float(np.dot(path[-1] - e.point, e.heading))
                    t = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
                # the contour as drawn (``find_structure``: from the pair's first end to its second), from a on
                contour = _hermite(
                    entries[i].point, entries[i].heading, entries[j].point, -entries[j].heading
                )
                path = _tangent_silhouette(path, contour if k == i else contour[::-1], e.point)
                cand.append((s + t, m, k, path, r))
    used: set[int] = set()
    out = []
    for _, m, k, path, r in sorted(cand, key=lambda c: c[0]):  # each entry and each contour end joined once
        if m in used or k in used:
            continue
        used.update((m, k))
        out.append((m, k, path, r))
    return out


SILHOUETTE_BEND = 1 / 60  # 1/px: the most a silhouette continued at its outline's curvature bends


def _silhouette(
    start: np.ndarray, course: np.ndarray, curvature: float, e: Entry, max_len: float
) -> np.ndarray | None:
    """R's outline from a closed contour's end (``_pair_junctions``) bent as the contour's outline beyond it
    bends: from ``start`` along ``course`` at the ``curvature`` of the contour's far end (its outline entering
    the hole, walked toward ``start``), clamped to ``SILHOUETTE_BEND``, until it crosses ``e``'s line ahead of
    ``e``; Nx2 points, or None when that curvature turns away from ``e``'s side, is nil, or the arc does not
    reach ``e``'s line within ``max_len`` or a quarter turn (then the straight course). A cup's body continues
    its lip's outline: on the coffee the lip's outer edge bends at 0.0058 / px where it enters the hole and the
    cup's visible left silhouette bends at about 0.006 / px from its lip's corner to its foot (18 px in over 76 px
    down), where the straight course made the body's right side a vertical chord 15 px wider at the foot."""
    side = float(course[0] * (e.point[1] - start[1]) - course[1] * (e.point[0] - start[0]))
    kappa = float(np.clip(curvature, -SILHOUETTE_BEND, SILHOUETTE_BEND))
    if kappa == 0.0 or np.sign(kappa) != np.sign(side):
        return None
    normal = np.array([-e.heading[1], e.heading[0]])
    theta = float(np.arctan2(course[1], course[0]))
    p = start.astype(np.float64).copy()
    path = [p.copy()]
    before = float(np.dot(p - e.point, normal))
    for step in range(1, int(2 * max_len) + 1):
        if abs(kappa) * 0.5 * step > MAX_TURN:
            return None
        theta += kappa * 0.5
        q = p + 0.5 * np.array([np.cos(theta), np.sin(theta)])
        after = float(np.dot(q - e.point, normal))
        if before != 0.0 and np.sign(after) != np.sign(before):
            cross = p + (q - p) * before / (before - after)  # on e's line
            if not 0 < float(np.dot(cross - e.point, e.heading)) <= max_len:
                return None
            path.append(cross)
            return np.array(path)
        p, before = q, after
        path.append(p.copy())
    return None


def _tangent_silhouette(path: np.ndarray, contour: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """R's outline (``_pair_junctions``' ``path``, from the closed contour's end a to its far end P) moved out to
    where it touches the contour: a body's silhouette leaves its rim's outline tangentially (a convex vessel seen
    from above at an angle: the line from the foot that touches the rim's ellipse), not at the contour's visible
    end, which is only where the hole's edge cut the rim's lower edge. Of the lines through P, the one turned
    furthest away from R (``inside``: a point on R's side) that still meets ``contour`` (Nx2, from a on) touches
    it at T: the outline runs along the contour from a to T (drawn already) and straight from T to P. Unchanged
    where the contour does not bulge past the path near a (it turns into R) or is touched only at its far end (no
    tangent point: the contour ends first). On the coffee the lip's contour ended at the hole's left edge (x 390,
    y 166) and the body's silhouette hugged that edge: the saucer's red ran up to the rim where the photo's body
    reaches 5-8 px further out, along the spoon's shaft. Straight, not bent as the path from a is: bent, the arc
    that touches the rim did so 40 px higher and bulged 8 px over the saucer the photo shows beside the shaft."""
    end = path[-1]
    v = contour - end
    ok = np.hypot(v[:, 0], v[:, 1]) > 2
    if not ok[0]:
        return path
    angle = np.arctan2(v[:, 1], v[:, 0])
    turn = np.angle(np.exp(1j * (angle - angle[0])))  # from P's line through a to its line through each point
    into = _cross(contour[0] - end, inside - end)  # R's side of the line through a
    if into == 0:
        return path
    out = np.where(ok, -np.sign(into) * turn, -np.inf)
    best = int(np.argmax(out))
    if out[best] <= np.radians(1) or best >= len(contour) - 2:
        return path
    return np.array([contour[best], end])


def _extend(entry: Entry, hole: np.ndarray, barrier: np.ndarray, max_len: float) -> np.ndarray:
    """March from an unpaired entry at its curvature (clamped) until the path leaves the hole, meets a curve
    already drawn, has turned ``MAX_TURN`` (a continued outline does not curl up), or runs ``max_len`` px."""
    h, w = hole.shape
    kappa = float(np.clip(entry.curvature, -1 / 15, 1 / 15))
    theta = float(np.arctan2(entry.heading[1], entry.heading[0]))
    p = entry.point.astype(np.float64).copy()
    path = [p.copy()]
    inside = False
    steps = 0
    while steps < max_len * 2 and abs(kappa) * 0.5 * steps <= MAX_TURN:
        steps += 1
        theta += kappa * 0.5
        p = p + 0.5 * np.array([np.cos(theta), np.sin(theta)])
        x, y = int(round(p[0])), int(round(p[1]))
        if not (0 <= x < w and 0 <= y < h):
            break
        path.append(p.copy())
        if hole[y, x]:
            inside = True
            if barrier[y, x] and steps > 8:
                break
        elif inside:
            break
    return np.array(path)


GRAZED_MIN = 3  # cross-sections: the fewest behind an entry that must end on its far side for a band to count


def _run_across(labels: np.ndarray, hole: np.ndarray, base: np.ndarray, normal: np.ndarray, label: int):
    """How far (px, half-px steps) ``label`` reaches from ``base`` along ``normal``, and what ends it: the label
    beyond, -1 the hole, -2 the crop's edge, a px outside the analysed band (label -1 but known: not the hole) or
    ``WIDTH_CAP`` passed (a start of up to 2 px of another label is skipped: ``base`` lies on the boundary only to
    the pixel)."""
    h, w = labels.shape
    run = 0.0
    for k in range(1, 2 * (WIDTH_CAP + 2)):
        p = base + 0.5 * k * normal
        x, y = int(round(p[0])), int(round(p[1]))
        if not (0 <= x < w and 0 <= y < h):
            return run, -2
        if hole[y, x]:
            return run, -1
        if labels[y, x] == label:
            run = 0.5 * k
        elif run > 0 or 0.5 * k > 2:
            beyond = int(labels[y, x])
            return run, beyond if beyond >= 0 else -2  # -1 here is unanalysed, not the hole: unknown
    return run, -2


def _grazed_band(
    labels: np.ndarray,
    hole: np.ndarray,
    e: Entry,
    entries: list[Entry],
    reach: int,
    along: Sequence[tuple[np.ndarray, int, int]] = (),
) -> tuple[Entry, np.ndarray, int] | None:
    """An entry whose one side is a band of its other side's region (R between two parts of A: a cup body's pale
    highlight band in its dark red) whose far edge the hole grazes: cross-sections of R taken across the entry's
    boundary behind it end in the hole near the hole and on A further back, and that far edge is no entry (its few
    px by the hole too short to fit) or one of the band's own; or whose far edge, every cross-section ending on A,
    is no entry because it runs along the hole's edge beside the entry (``along``: the boundaries ``find_entries``
    found heading along the hole, as (point, label, label)). Continued as an outline alone, the edge that enters
    was the band's only limit: R flooded the whole wedge between it and whatever lay beyond (the coffee's pale
    shelf right of the cup's foot, its lower edge the flat line where R's flood met A's; at --grow 4 a pale wedge
    above the lower edge up to the wall). Returns the band's centre
    entry (its width = the median cross-section ending on A, its centre half that in from the edge, as
    ``_lone_strips``' strips), the centre line behind it back to ``reach`` px (the hole's part of the band there is
    painted too) and the index of the far edge's own entry where it has one that heads the same way a band's width
    across (the band's too, not continued apart; else -1); None for every other entry."""
    for side, other, sign in ((e.left, e.right, 1), (e.right, e.left, -1)):
        normal = sign * np.array([e.heading[1], -e.heading[0]])
        widths, grazed, elsewhere = _cross_sections(labels, hole, e, normal, side, other, reach)
        if len(widths) < GRAZED_MIN or len(widths) < 2 * elsewhere:
            continue
        width = float(np.median(widths))
        if not 2 <= width < WIDTH_CAP:
            continue

        pair = {side, other}
        # the far edge's own entry, where it has one: at least half the band's width across (the entry's own edge
        # may reach the hole again behind it, across ~0: the coffee's band at --grow 4, its lower edge 22 px
        # between two contacts with the hole; that end is no far edge)
        far = [
            j
            for j, b in enumerate(entries)
            if b is not e and {b.left, b.right} == pair and _beside(e, normal, width, b.point)
        ]
        # not grazed: the far edge is no entry because it runs along the hole's edge beside e (``along``: the
        # coffee's band at --grow 4 glances the hole ahead of its lower edge's entry); else R ends before the hole
        # or its far edge enters it, and e is an outline as any other
        glancing = any({a, b} == pair and _beside(e, normal, width, p) for p, a, b in along)
        if not grazed and (far or not glancing):
            continue
        partner = -1
        if far:
            # it is the band's other edge when it heads the same way and lies the band's width across: the two
            # are one band (continued apart, each at its own fitted heading, they fanned into a wedge of the band's
            # colour: the coffee at --grow 3-5). Anything else beside it: both continued as they are
            partner = min(far, key=lambda j: float(np.linalg.norm(entries[j].point - e.point)))
            b = entries[partner]
            across = float(np.dot(b.point - e.point, normal))
            same_way = float(np.dot(b.heading, e.heading)) >= np.cos(np.radians(30))
            if len(far) > 1 or not same_way or abs(across - width) > max(2.0, 0.5 * width):
                continue
        point = e.point + 0.5 * width * normal
        back = point - np.arange(reach, 0, -1)[:, None] * e.heading
        return Entry(point, e.heading, e.curvature, side, side, e.rms, (width, width)), back, partner
    return None


def _cross_sections(
    labels: np.ndarray, hole: np.ndarray, e: Entry, normal: np.ndarray, side: int, other: int, reach: int
) -> tuple[list[float], int, int]:
    """Cross-sections of ``side`` taken from ``e``'s boundary along ``normal`` every 2 px behind the entry, back to
    ``reach``: the widths of those ending on ``other`` (``side`` a band between two parts of it), how many end in
    the hole and how many elsewhere."""
    widths, grazed, elsewhere = [], 0, 0
    for back in range(3, reach + 1, 2):
        run, end = _run_across(labels, hole, e.point - back * e.heading, normal, side)
        if end == other and run > 0:
            widths.append(run)
        elif end == -1:
            grazed += 1
        else:
            elsewhere += 1
    return widths, grazed, elsewhere


def stripe_across(labels: np.ndarray, hole: np.ndarray, e: Entry, region: int, reach: int) -> bool:
    """``e``'s side other than ``region`` is a stripe across ``region``: cross-sections of it taken behind the
    entry (every 2 px back to ``reach``, as ``_cross_sections`` takes a band's) end on ``region`` again under ``WIDTH_CAP`` px on or in the hole, at least one on
    ``region`` and none on anything else; those that start off that side (the boundary curved away from the
    entry's line) say nothing. Not what lies beyond ``region``: the coffee body's pale band at --grow 9, 8-10 px
    wide, its lower edge in the hole."""
    if region not in (e.left, e.right) or e.left == e.right:
        return False
    side, sign = (e.right, -1) if e.left == region else (e.left, 1)
    normal = sign * np.array([e.heading[1], -e.heading[0]])
    on, grazed, beyond = 0, 0, 0
    for back in range(3, reach + 1, 2):
        run, end = _run_across(labels, hole, e.point - back * e.heading, normal, side)
        if run <= 0:
            continue
        if end == region:
            on += 1
        elif end == -1:
            grazed += 1
        else:
            beyond += 1
    return on >= 1 and on + grazed >= GRAZED_MIN and beyond == 0


def _beside(e: Entry, normal: np.ndarray, width: float, point: np.ndarray) -> bool:
    """``point`` (an edge's, by the hole) lies by the entry ``e`` on the side ``normal`` points to, at least half
    the band's ``width`` across: where a band's other edge reaches the hole."""
    d = point - e.point
    return float(np.linalg.norm(d)) <= width + 2 * THIN and float(np.dot(d, normal)) >= 0.5 * width


def _nearest_alongside(entries: list[Entry], i: int, taken: set[int], accept: Callable[[Entry], bool]) -> int:
    """Index of the entry nearest to ``entries[i]`` that reaches the hole beside it (within ``2 THIN`` px,
    headings within 30 degrees), is not ``taken`` and that ``accept`` allows; -1 when there is none."""
    a = entries[i]
    best, best_d = -1, np.inf
    for j, b in enumerate(entries):
        if j == i or j in taken or not accept(b):
            continue
        d = float(np.linalg.norm(a.point - b.point))
        if d <= 2 * THIN and float(np.dot(a.heading, b.heading)) >= np.cos(np.radians(30)) and d < best_d:
            best, best_d = j, d
    return best


def _across(a: Entry, b: Entry) -> float:
    """The distance (px) between two side-by-side entries across their mean heading."""
    heading = a.heading + b.heading
    heading /= np.linalg.norm(heading)
    return abs(float(np.dot(a.point - b.point, np.array([heading[1], -heading[0]]))))


def _centre_entry(a: Entry, b: Entry, curvature: float, label: int) -> Entry:
    """The one entry on the centre line of the band or strip that two side-by-side entries bound: their mean
    heading, the distance between them across it as its width (at least 2 px), ``label`` on both sides."""
    heading = a.heading + b.heading
    heading /= np.linalg.norm(heading)
    width = max(2.0, _across(a, b))
    return Entry((a.point + b.point) / 2, heading, curvature, label, label, max(a.rms, b.rms), (width, width))


def _band_entries(
    entries: list[Entry],
    origin: dict[int, int],
    penumbra: Callable[[Entry, int, int, int], bool] | None = None,
) -> tuple[list[Entry], list[Entry]]:
    """Pairs of entries that are the two edges of one thin band (``split_thin``) reaching the hole side by side
    become one entry on the band's centre line (left = right = the band's label, widths = its width): continued
    as one curve at one curvature, painted at its width, the rim stays a rim of constant width instead of two
    edges fanning apart. A band between two other regions that ``penumbra`` (the band's centre entry, its colour,
    one side's, the other's) calls a soft shadow's penumbra is not a band: it is left to ``_soft_edges`` (sweep12:
    taken as a band, the coffee's penumbra at --grow 3-5 was continued as a rim, the soft shading never ran, and
    the cup wall's thin wedge of the same colour got the band's label). Returns the other entries and the bands."""
    taken: set[int] = set()
    bands = []
    for i, a in enumerate(entries):
        if i in taken or a.left not in origin:
            continue
        best = _nearest_alongside(entries, i, taken, lambda b, a=a: b.right == a.left)
        if best < 0:
            continue
        b = entries[best]
        band = _centre_entry(a, b, (a.curvature + b.curvature) / 2, a.left)
        x, y = origin.get(a.right, a.right), origin.get(b.left, b.left)  # the two sides' colours
        if penumbra is not None and x != y and penumbra(band, origin[a.left], x, y):
            continue
        bands.append(band)
        taken.update((i, best))
    return [e for k, e in enumerate(entries) if k not in taken], bands


MID_SPAN = (0.2, 0.8)  # of the way from one side's colour to the other's: a penumbra's mid tone lies within
MID_OFF = 0.35  # ... and at most this far (of the sides' distance) off the line between them (Lab)


def mid_tone(centres: np.ndarray, strip: int, one: int, other: int) -> bool:
    """The colour ``centres[strip]`` (Lab) lies between ``centres[one]`` and ``centres[other]``: a blend of the
    two, as a soft shadow's penumbra between its dark and lit sides is (the coffee's: L 49 between 12 and 105,
    0.4 of the way, 3 levels off the line); a rim or a highlight band is a colour of its own."""
    a, b, m = (centres[k].astype(np.float64) for k in (one, other, strip))
    d = b - a
    span = float(np.dot(d, d))
    if span < 1e-6:
        return False
    t = float(np.dot(m - a, d)) / span
    off = float(np.linalg.norm(m - a - t * d))
    return MID_SPAN[0] <= t <= MID_SPAN[1] and off <= MID_OFF * np.sqrt(span)


# the most a chromaticity (linear r, g, b over their sum) may differ between a lit and a shaded side
SHADE_CHROMA = 0.12


def one_surface(centres: np.ndarray, one: int, other: int) -> bool:
    """``centres[one]`` and ``centres[other]`` (Lab) are one surface lit and in shadow: a shadow scales the light,
    not the surface's chromaticity (the coffee's saucer and the bowl's shadow on it: 0.05 apart; the crema's
    dark ring against the cup's beige wall, p26: 0.24; a grey suit between white and black, hp12: 0.33)."""
    lab = np.clip(np.rint(centres[[one, other]]), 0, 255).astype(np.uint8)[None]
    lin = (cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)[0].astype(np.float64) / 255.0) ** 2.2
    chroma = lin / np.maximum(lin.sum(axis=1, keepdims=True), 1e-6)
    return float(np.abs(chroma[0] - chroma[1]).max()) <= SHADE_CHROMA


def _soft_edges(
    entries: list[Entry], penumbra: Callable[[int, int, int], bool] | None = None
) -> tuple[list[Entry], list[Entry], list[tuple[int, int, int]]]:
    """Pairs of entries that are the two edges of a narrow strip of a third colour between two regions (a soft
    shadow's penumbra that k-means cut into dark | mid | lit) become one entry on the strip's centre line, of
    the strip's colour and width, continued as a band (after the outlines) at the curvature of the straighter
    edge: a penumbra widens away from what casts it, so its edges bend apart by that widening, not by where the
    shadow's edge goes. Continued as two outlines, each at its own curvature, the strip fanned into a wedge of
    the mid colour with a hard step to the dark side, which the meld brightened into a pale crescent (where the
    coffee's spoon bowl lay: /work/reports/coffee8.md). Returns the other entries, the strips and each strip's
    labels (one side, the strip, the other side: one soft edge, whose shading backend/erase/shading.py rebuilds)."""
    taken: set[int] = set()
    strips = []
    groups = []
    for i, a in enumerate(entries):
        if i in taken:
            continue

        def beside(b: Entry, a: Entry = a) -> bool:
            """``b`` is the strip's other edge (its left is ``a``'s right), and the strip is narrow from both. A
            penumbra widens away from what casts it: measured 3-6 px back, the coffee's strip was 8 px from one
            edge at --grow 8 (6.5 px across at the hole) and the soft shading never ran (sweep12). Narrow where it
            enters the hole (under ``THIN`` across) and no wide region behind it, it is a strip when its colours
            say penumbra (``penumbra``: a mid tone between one surface lit and shaded)."""
            if b.left != a.right or b.right in (a.left, a.right):
                return False
            sides = (a.widths[1], b.widths[0])
            if max(sides) < THIN:
                return True
            # wider a few px back: a penumbra only by its colours (a lip's wedge narrows to its corner too)
            wide = max(sides) >= WIDTH_CAP or _across(a, b) >= THIN
            return not wide and penumbra is not None and penumbra(a.right, a.left, b.right)

        best = _nearest_alongside(entries, i, taken, beside)
        if best < 0:
            continue
        b = entries[best]
        strips.append(_centre_entry(a, b, min(a.curvature, b.curvature, key=abs), a.right))
        groups.append((a.left, a.right, b.right))
        taken.update((i, best))
    return [e for k, e in enumerate(entries) if k not in taken], strips, groups


def _centres(rgb: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Each label's mean colour (OpenCV's 8-bit Lab), n x 3."""
    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    flat = labels.ravel()
    at = flat >= 0
    count = np.maximum(np.bincount(flat[at], minlength=n), 1)
    return np.stack([np.bincount(flat[at], lab[at, c], minlength=n) / count for c in range(3)], 1)


def _lone_strips(
    entries: list[Entry],
    grazing: list[tuple[np.ndarray, int, int]],
    penumbra: Callable[[int, int, int], bool],
) -> tuple[list[Entry], list[Entry], list[tuple[int, int, int]]]:
    """Penumbra strips whose one edge enters the hole and whose other edge reaches it beside it (within
    ``2 THIN`` px) but runs along the hole's edge, so it is no entry (``grazing``: its point and labels): an entry
    with a narrow side (under ``THIN``) against a wide one, the grazing edge between that narrow side and a third
    region, the narrow side's colour between the other two (``mid_tone``). The coffee at --grow 10: the hole took
    the shadow's dark side there, the bowl's place was left to the flood and melded into a grey-green wedge.
    Each becomes a strip entry as ``_soft_edges``' (left = right = the strip, its centre half its width in from
    the edge), continued as a band: at --grow 10 the flood's straight boundary between the dark and lit sides
    was left in the shaded fill as a faint diagonal ghost. Returns the other entries, the strips and their
    labels (side, strip, side)."""
    strips, groups, used = [], [], set()
    for k, e in enumerate(entries):
        for strip, other, width, far, sign in (
            (e.left, e.right, e.widths[0], e.widths[1], 1),
            (e.right, e.left, e.widths[1], e.widths[0], -1),
        ):
            if width >= THIN or far < THIN:
                continue
            dark = [
                b if a == strip else a
                for point, a, b in grazing
                if strip in (a, b)
                and other not in (a, b)
                and np.linalg.norm(point - e.point) <= 2 * THIN
                and penumbra(strip, b if a == strip else a, other)
            ]
            if not dark:
                continue
            half = max(2.0, float(width))
            normal = sign * np.array([e.heading[1], -e.heading[0]])
            point = e.point + 0.5 * half * normal
            strips.append(Entry(point, e.heading, e.curvature, strip, strip, e.rms, (half, half)))
            groups.append((dark[0], strip, other))
            used.add(k)
            break
    return [e for k, e in enumerate(entries) if k not in used], strips, groups


@njit(cache=True, nogil=True)
def _flood(labels, open_, qy, qx):  # pragma: no cover - compiled
    """Breadth-first flood (4-connected) of labels from the seeds in the queue into ``open_`` pixels."""
    h, w = labels.shape
    head, tail = 0, qy.shape[0]
    qy2 = np.empty(h * w, np.int64)
    qx2 = np.empty(h * w, np.int64)
    qy2[:tail] = qy
    qx2[:tail] = qx
    while head < tail:
        y, x = qy2[head], qx2[head]
        head += 1
        lab = labels[y, x]
        for k in range(4):
            ny = y + (1 if k == 0 else -1 if k == 1 else 0)
            nx = x + (1 if k == 2 else -1 if k == 3 else 0)
            if ny < 0 or ny >= h or nx < 0 or nx >= w:
                continue
            if open_[ny, nx] and labels[ny, nx] < 0:
                labels[ny, nx] = lab
                qy2[tail] = ny
                qx2[tail] = nx
                tail += 1


LONE_FAR = 2 * THIN  # px: a colour's piece farther than this from that colour's largest part is on its own
LONE_CLAIM = 4.0  # ... and the flood gives it at most this many times its own area of the hole (blob12)


def _split_colours(labels: np.ndarray, band: np.ndarray, near: np.ndarray):
    """Each colour of the band that touches ``near`` (the hole's edge) in more than one piece: (its px in the band,
    the piece count incl. the background, the pieces' map, their stats, the largest piece's index), as
    cv2.connectedComponentsWithStats gives them (``lone_pieces``, ``stray_specks``)."""
    for lab in range(int(labels.max()) + 1):
        m = (labels == lab) & band
        if not (m & near).any():
            continue
        count, comp, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        if count <= 2:
            continue
        yield m, count, comp, stats, 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def lone_pieces(labels: np.ndarray, band: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The pieces of a colour that lie on their own by the hole, HxW int32 (1..k, 0 elsewhere): at least
    ``SLIVER_AREA`` px, not that colour's largest part in the band and farther than ``LONE_FAR`` px from it,
    touching the hole. k-means shares a colour between surfaces: the coffee cup's pale foot band is the wood's
    cluster, and where the hole swallows the band's lower half its visible bit is such a piece (``label_hole``
    limits what it seeds)."""
    out = np.zeros(labels.shape, np.int32)
    near = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    k = 0
    for _, count, comp, stats, main in _split_colours(labels, band, near):
        far = None
        for c in range(1, count):
            if c == main or int(stats[c, cv2.CC_STAT_AREA]) < SLIVER_AREA:
                continue
            part = comp == c
            if not (part & near).any():
                continue
            if far is None:
                far = cv2.distanceTransform((comp != main).astype(np.uint8), cv2.DIST_L2, 3)
            if float(far[part].min()) > LONE_FAR:
                k += 1
                out[part] = k
    return out


def stray_specks(labels: np.ndarray, band: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Known pieces of a colour smaller than ``SLIVER_AREA`` px that touch the hole farther than ``LONE_FAR`` px
    from that colour's largest part in the band, HxW bool: by a drawn silhouette they do not seed the flood
    (``find_structure``). A lone piece that size is k-means' stray pixel of another surface, no region (larger
    ones are ``lone_pieces``, their claim capped): one pale px of the coffee body's band by the hole took the
    saucer's cluster and flooded the saucer's red 6 px into the body's wall under the spoon, up to the
    silhouette drawn beside it (a notch at 6x)."""
    out = np.zeros(labels.shape, bool)
    near = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    for m, count, comp, stats, main in _split_colours(labels, band, near):
        area = stats[:, cv2.CC_STAT_AREA]
        small = area < SLIVER_AREA
        small[[0, main]] = False
        touch = np.zeros(count, bool)
        touch[comp[m & near]] = True
        if not (small & touch).any():
            continue
        far = cv2.distanceTransform((comp != main).astype(np.uint8), cv2.DIST_L2, 3)
        nearest = np.full(count, np.inf)
        np.minimum.at(nearest, comp[m], far[m])
        out |= (small & touch & (nearest > LONE_FAR))[comp] & m
    return out


def _lone_zone(lone: np.ndarray, labels: np.ndarray, drawn: list[tuple[np.ndarray, Entry]]) -> np.ndarray:
    """Where a lone piece goes on: along each curve continuing one of its edges, within twice the piece's
    width at that edge's entry (``Entry.widths``), HxW bool. The coffee's foot band goes on under the spoon's
    neck along its upper edge (8 px wide at its entry at --grow 9); kept within once that width, the neck's
    part 9-15 px from the curve went to the body's dark red and the soft shading darkened the wall's edge."""
    zone = np.zeros(lone.shape, np.uint8)
    for curve, e in drawn:
        x, y = int(round(e.point[0])), int(round(e.point[1]))
        win = (slice(max(0, y - 2), y + 3), slice(max(0, x - 2), x + 3))
        on = labels[win][lone[win] > 0]  # the labels of lone pieces at the entry
        for lab, wide in ((e.left, e.widths[0]), (e.right, e.widths[1])):
            if (on == lab).any():
                thick = 4 * max(1, int(round(wide))) + 1
                cv2.polylines(zone, [np.round(curve).astype(np.int32)], False, 1, thick, cv2.LINE_8)
    return zone > 0


def label_hole(
    labels: np.ndarray,
    hole: np.ndarray,
    barrier: np.ndarray,
    fixed: np.ndarray | None = None,
    quiet: np.ndarray | None = None,
    unseeded: np.ndarray | None = None,
    lone: np.ndarray | None = None,
    lone_zone: np.ndarray | None = None,
) -> np.ndarray:
    """Every hole pixel labelled with the nearest (4-connected, geodesic) labelled known pixel reachable
    without crossing ``barrier``; barrier pixels then take a neighbour's label. ``fixed`` (labels, -1 where
    free): hole pixels already placed (a band drawn across the hole); they neither seed the flood nor let it in.
    ``quiet``: known pixels that do not seed it either (default: every pixel of a placed band's label);
    ``unseeded``: known pixels that never seed it (by a closed contour's ends: ``find_structure``); ``lone``
    (``lone_pieces``, ids): a piece that the flood would make the source of more than ``LONE_CLAIM`` times its
    own area does not seed it, and keeps of that claim only what lies in ``lone_zone`` (``_lone_zone``: along
    its own continued edges). What it shows is all that is known of its surface there: the coffee's pale foot
    band, its lower half in the hole at ``--grow`` 9 and 11, flooded a reddish column 50 px down into the
    bowl's shadow (claims 6.7 and 8.0 times its area; at grow 3-7 the body's dark red lies between it and the
    hole: 0.6-1.6 times; grow 8's 3.0 is left)."""
    out = labels.copy()
    out[hole] = -1
    placed = np.zeros(hole.shape, bool) if fixed is None else hole & (fixed >= 0)
    seeds = (out >= 0) & (cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    if unseeded is not None:
        seeds &= ~unseeded
    if placed.any():
        out[placed] = fixed[placed]
        if quiet is None:
            quiet = np.isin(
                out, np.unique(fixed[placed])
            )  # a placed band does not also spread from its mouth
        seeds &= ~quiet
    open_ = hole & ~barrier & ~placed
    if lone is not None and (lone[seeds] > 0).any():
        # the same flood of each seed's piece (0: not a lone one) says what each piece would claim
        origin = np.where(out >= 0, 0, -1).astype(np.int32)
        origin[seeds] = lone[seeds]
        sy, sx = (a.astype(np.int64) for a in np.nonzero(seeds))
        _flood(origin, open_, sy, sx)
        claims = np.bincount(origin[open_ & (origin > 0)], minlength=int(lone.max()) + 1)
        areas = np.bincount(lone.ravel(), minlength=int(lone.max()) + 1)
        for p in np.nonzero(claims > LONE_CLAIM * areas)[0]:
            if p == 0:
                continue
            piece = lone == p
            seeds &= ~piece
            if lone_zone is not None:
                kept = open_ & (origin == p) & lone_zone
                out[kept] = int(labels[piece][0])
                open_ &= ~kept
    sy, sx = (a.astype(np.int64) for a in np.nonzero(seeds))
    _flood(out, open_, sy, sx)
    # the barrier itself (and anything the flood could not reach) from its labelled neighbours
    sy, sx = (
        a.astype(np.int64)
        for a in np.nonzero((out >= 0) & (cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0))
    )
    _flood(out, hole.copy(), sy, sx)
    return out


def find_structure(
    rgb: np.ndarray,
    hole: np.ndarray,
    *,
    band: float = 0.25,
    seed: int = 0,
    max_rms: float = 1.5,
    max_density: float = MAX_DENSITY,
    thin_bands: bool = True,
    soft_edges: bool = True,
    junctions: bool = True,
    graze: bool = True,
    slivers: bool = True,
    tips: bool = True,
    seal: bool = True,
    lines: bool = True,
    lone: bool = True,
    corner_ends: bool = True,
    grazed_bands: bool = True,
    specks: bool = True,
    stripes: bool = True,
) -> Structure | None:
    """The structure of the hole's surround continued across it (module docstring), or None when no clean
    region boundary enters the hole. Works on a copy of at most ``ANALYSIS_SIDE`` px; labels come back at the
    crop's size."""
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    if ys.size == 0 or hole.all():
        return None
    scale = _analysis_scale(h, w)
    if scale < 1.0:
        small = _shrink(rgb, scale)
        small_hole = _shrink(hole.astype(np.uint8), scale) > 0
    else:
        small, small_hole = np.ascontiguousarray(rgb), hole
    if not small_hole.any():  # a hole thinner than half a pixel at the analysis scale: no outline to continue
        return None
    sys_, sxs = np.nonzero(small_hole)
    extent = max(int(sys_.max() - sys_.min()), int(sxs.max() - sxs.min())) + 1
    width = max(12, int(band * extent))
    far = cv2.distanceTransform((~small_hole).astype(np.uint8), cv2.DIST_L2, 3)
    band_mask = (far <= width) & ~small_hole
    labels, n = segment_band(small, band_mask, seed=seed)
    if n < 2:
        return None
    grazing = grazing_thin(labels, band_mask, small_hole, n) if graze else np.zeros(small_hole.shape, bool)
    density = boundary_density(labels, band_mask)
    if density > max_density:  # texture or a regular pattern: its "boundaries" are not one structure
        return None
    if slivers:
        labels = bridge_slivers(labels, band_mask, small_hole, n)
    reach = int(np.clip(0.15 * extent, 10, 30))
    # a boundary of a speck (a star, a highlight) is not structure: both regions must be a real part of the band
    share = np.bincount(labels[band_mask], minlength=n) / max(1, band_mask.sum())

    def entries_of(lab: np.ndarray, origin: dict[int, int], along: list | None = None) -> list[Entry]:
        out = []
        for e in find_entries(lab, small_hole, reach=reach, max_rms=max_rms, along=along):
            a, b = origin.get(e.left, e.left), origin.get(e.right, e.right)  # their colours
            if a != b and min(share[a], share[b]) >= MIN_SHARE:  # a band's edge against its own colour: none
                out.append(e)
        return out

    bands: list[Entry] = []
    loose = np.zeros(small_hole.shape, bool)  # thin parts not continued as bands, back in their colour
    grazing_edges: list = []  # boundaries that reach the hole but run along its edge (``_lone_strips``)
    if thin_bands:
        split, n_split, origin = split_thin(labels, band_mask, small_hole, n)
        if origin:
            penumbra = None
            if soft_edges:  # a band between two other regions that is a penumbra's mid tone and ramps across
                centres = _centres(small, labels, n)

                def penumbra(e: Entry, band: int, one: int, other: int) -> bool:
                    # measured as the shading will (at the crop's scale)
                    at = e.point / scale, e.heading, e.widths[0] / scale, 1 / scale
                    if not (mid_tone(centres, band, one, other) and one_surface(centres, one, other)):
                        return False
                    return ramp_across(rgb, hole, *at) > 0

            _, bands = _band_entries(entries_of(split, origin), origin, penumbra)
            loose = np.isin(split, list(origin))
    if bands:
        # only the thin parts continued as bands keep a label of their own; the others go back to their colour
        # (left to the flood, a few px of rim would be the only source for a whole part of the hole)
        kept = sorted({b.left for b in bands})
        lut = np.arange(n_split + 1)
        for t, colour in origin.items():
            lut[t] = colour
        for k, t in enumerate(kept):
            lut[t] = n + k
        lut[n_split] = -1  # -1 (no label) indexes the last entry
        labels = lut[split].astype(np.int32)
        for b in bands:
            b.left = b.right = int(lut[b.left])
        colours = {n + k: origin[t] for k, t in enumerate(kept)}
        if tips:
            labels = region_tips(labels, split, bands, colours)
        loose &= (labels >= 0) & (labels < n)
        n += len(kept)
        entries = [  # a band's edges are the band
            e
            for e in entries_of(labels, colours, grazing_edges)
            if e.left not in colours and e.right not in colours
        ]
    else:
        entries = entries_of(labels, {}, grazing_edges)
    contact: list[Entry] = []
    line_colour: dict[int, int] = {}
    contact_colour: list[tuple[Entry, int]] = []
    if lines:
        labels, n, contact, line_colour = dark_lines(small, labels, band_mask, small_hole, n, reach, max_rms)
        # each line's colour: colours keep their labels when the lines are renumbered below
        contact_colour = [(e, line_colour[e.left]) for e in contact]
        bands += contact
    dropped: list[int] = []
    strips: list[Entry] = []
    soft: list[tuple[int, int, int]] = []
    if soft_edges:
        centres = _centres(small, labels, n)

        def penumbra_colours(strip: int, one: int, other: int) -> bool:
            return mid_tone(centres, strip, one, other) and one_surface(centres, one, other)

        entries, strips, soft = _soft_edges(entries, penumbra_colours)
        if not strips:
            entries, strips, soft = _lone_strips(entries, grazing_edges, penumbra_colours)
        bands += strips

    def stripe(e: Entry, region: int) -> bool:
        # a junction's outline entry whose far side is a stripe across the body is no outline of it (the coffee's
        # pale band at --grow 9 took the lip's silhouette: the wall ended at y 196, the band's colour by it)
        return stripes and stripe_across(labels, small_hole, e, region, reach)

    if corner_ends and entries:
        smoothed = _smoothed(small)

        def real(e: Entry) -> bool:
            a, b = e.left, e.right
            counted = max(a, b) < share.size and min(share[a], share[b]) >= MIN_SHARE
            return counted and _step_across(smoothed, e) >= MIN_STEP

        max_len = 1.5 * extent if junctions else None
        entries = entries + _corner_ends(entries, labels, small_hole, reach, max_rms, real, max_len, stripe)
    if not entries and not bands:
        return None
    barrier = np.zeros(small_hole.shape, np.uint8)
    fixed = np.full(small_hole.shape, -1, np.int32)
    mouths = np.zeros(small_hole.shape, np.uint8)
    ends = np.zeros(small_hole.shape, np.uint8)  # closed contours' pixels
    # the outlines drawn from a closed contour's end (a cup's body below its lip: ``_pair_junctions``)
    joins = np.zeros(small_hole.shape, np.uint8)
    curves = []

    kinds: list[str] = []
    closed: set[int] = set()
    silhouettes: dict[int, int] = {}
    added: list[tuple[int, np.ndarray]] = []  # the body's part each silhouette added (its label, HxW uint8)

    drawn: list[tuple[np.ndarray, Entry]] = []  # each outline's curve and the entry it continues
    # bands whose far edge the hole grazes (``_grazed_band``), their part behind the entry, how far their edge ran
    grazed: list[tuple[Entry, np.ndarray, float]] = []

    def draw(curve: np.ndarray, e: Entry, thick: bool, kind: str) -> None:
        curves.append(curve)
        if not thick:
            drawn.append((curve, e))
        kinds.append(kind + ("-band" if thick else ""))
        line = [np.round(curve).astype(np.int32)]
        if not thick:
            cv2.polylines(barrier, line, False, 1, 1, cv2.LINE_8)
            if kind == "corner":
                cv2.polylines(ends, line, False, 1, 1, cv2.LINE_8)
            if kind == "junction":
                cv2.polylines(joins, line, False, 1, 1, cv2.LINE_8)
            return
        paint = np.zeros(small_hole.shape, np.uint8)  # a band: its pixels placed at its width
        cv2.polylines(paint, line, False, 1, max(2, int(round(e.widths[0]))), cv2.LINE_8)
        paint = (paint > 0) & small_hole & (barrier == 0) & (fixed < 0)
        if any(e is c for c in contact):
            # its round end would reach past the outline it ends on (into the cup's body): a few px of the
            # line's label there met the body in a corner no known patch shows (a black and pale speck)
            count, comp, stats, _ = cv2.connectedComponentsWithStats(paint.astype(np.uint8), connectivity=4)
            if count > 2:
                paint = comp == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        fixed[paint] = e.left
        barrier[paint] = 1
        if any(e is t for t in strips):
            mouths[paint] = 1
        elif any(e is t for t, _, _ in grazed):
            mouths[paint] = (
                2  # a grazed band's colour is shared as a strip's is, but only its own px go quiet
            )

    for group, thick in ((entries, False), (bands, True)):
        # outlines first, then the bands (a saucer's rim passes behind the cup: it ends on the cup's outline)
        used: set[int] = set()
        outline = cv2.dilate(joins, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))) > 0
        pairs = [(i, j, "pair") for i, j in _pair(group)]
        if not thick:
            taken = {k for i, j, _ in pairs for k in (i, j)}
            corners = _pair_corners(group, taken)
            for i, j in corners:  # the region each contour closes: on the same side of both ends
                closed.add(group[i].right if group[i].right == group[j].left else group[i].left)
            pairs += [(i, j, "corner") for i, j in corners]
            taken |= {k for i, j in corners for k in (i, j)}
            for m, k, path, r in (
                _pair_junctions(group, corners, taken, 1.5 * extent, stripe) if junctions else []
            ):
                # R's outline: from the contour's end (bent as its outline: ``_silhouette``) and from e straight,
                # to where they meet
                draw(path, group[k], False, "junction")
                silhouettes[len(curves) - 1] = r
                pair = next(ij for ij in corners if k in ij)
                rim = _hermite(
                    group[pair[0]].point,
                    group[pair[0]].heading,
                    group[pair[1]].point,
                    -group[pair[1]].heading,
                )
                rim = rim if pair[0] == k else rim[::-1]
                upto = int(np.argmin(np.linalg.norm(rim - path[0], axis=1)))
                if upto > 0:  # the part the silhouette added: the rim from its end to T, then to the far end
                    region = np.zeros(small_hole.shape, np.uint8)
                    cv2.fillPoly(
                        region, [np.round(np.vstack([rim[: upto + 1], path[-1:]])).astype(np.int32)], 1
                    )
                    added.append((r, region))
                draw(np.array([group[m].point, path[-1]]), group[m], False, "junction")
                used.add(m)
        for i, j, kind in pairs:
            a, b = group[i], group[j]
            draw(_hermite(a.point, a.heading, b.point, -b.heading), a, thick, kind)
            used.update((i, j))
        planned: dict[int, tuple[Entry, np.ndarray, int]] = {}
        if not thick and grazed_bands:
            for i, e in enumerate(group):
                band = None if i in used else _grazed_band(labels, small_hole, e, group, reach, grazing_edges)
                partner = -1 if band is None else band[2]
                if band is not None and partner not in used and partner not in planned:
                    planned[i] = band
        partners = {band[2] for band in planned.values()}
        for i, e in enumerate(group):
            if i not in used and i not in partners:
                stop = barrier > 0
                if thick:  # a 1 px curve has diagonal gaps a band sampled every half px could slip through
                    stop = cv2.dilate(barrier, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))) > 0
                longest = 1.5 * extent
                mine = [(b, far) for t, b, far in grazed if t is e] if thick else []
                if mine:
                    # a grazed band runs as far as its edge would have (and its width on, to reach a curve), or as
                    # far as that edge was seen (the fit's ``reach``) where the edge soon left the hole it grazes
                    # (the coffee at --grow 5); no further: past a cup's silhouette, where no wall was drawn
                    # (JPEG 85), the band's colour lay on the saucer beside the lip
                    longest = min(longest, max(mine[0][1] + e.widths[0], float(reach)))
                path = _extend(e, small_hole, stop, max_len=longest)
                band = planned.get(i)
                if band is not None:  # continued as a band with the others, after the outlines
                    grazed.append((band[0], band[1], 0.5 * (len(path) - 1)))
                    bands.append(band[0])
                    continue
                if mine:
                    end = np.round(path[-1]).astype(int)
                    if outline[end[1], end[0]] and len(path) > 2:
                        # it ends a band's width short of an object's outline drawn from a closed contour: the
                        # body's own dark edge runs on between (the coffee's pale band, run into the silhouette
                        # from its rim's tangent point, stuck out past the body as a pale tongue at 1x)
                        path = path[: len(path) - min(len(path) - 2, int(round(2 * e.widths[0])))]
                    path = np.concatenate([mine[0][0], path])
                end = np.round(path[-1]).astype(int)
                if any(e is c for c in contact) and not outline[end[1], end[0]]:
                    # a contact line is continued only to an object's outline drawn across the hole from its
                    # closed contour (the cup's foot to its body's), not to a band, a loose outline or into the
                    # open (a retina's vessels meet other vessels, a crack or seam runs on)
                    dropped.append(e.left)
                    continue
                draw(path, e, thick, "extend")
    if dropped:  # their pixels back to their colour, the labels renumbered (the guide's circle depends on n)
        lut = np.arange(n + 1)
        keep = [lab for lab in range(n) if lab not in dropped]
        for new, old in enumerate(keep):
            lut[old] = new
        for lab in dropped:
            lut[lab] = lut[line_colour[lab]]
        lut[n] = -1
        labels, fixed = lut[labels].astype(np.int32), lut[fixed].astype(np.int32)
        bands = [e for e in bands if not any(e is c and e.left in dropped for c in contact)]
        soft = [(int(lut[a]), int(lut[b]), int(lut[c])) for a, b, c in soft]
        for e in contact:
            e.left = e.right = int(lut[e.left])
        n = len(keep)
        silhouettes = {i: int(lut[r]) for i, r in silhouettes.items()}
        added = [(int(lut[r]), area) for r, area in added]
    quiet = None
    if (
        mouths.any()
    ):  # a strip's colour is shared (the cup's body): it still seeds the flood, except at its ends
        own = np.unique(fixed[(fixed >= 0) & (mouths == 0)])  # a thin band's label is its own: never a seed
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        near = cv2.dilate((mouths == 1).astype(np.uint8), disc) > 0
        quiet = np.isin(labels, own) | (near & ~small_hole)
        if grazed:
            # the grazed band's known piece within ``reach`` of its paint (the part the hole took behind the entry
            # included): the band's hole px are painted, and what lies beyond its grazed far edge is the other
            # side's (the coffee body's dark red below its pale band), not the nearest band px's
            paint = (mouths == 2).astype(np.uint8)
            near = cv2.distanceTransform(1 - paint, cv2.DIST_L2, 3) <= reach
            for colour in sorted({t.left for t, _, _ in grazed}):
                mine = ((labels == colour) & ~small_hole).astype(np.uint8)
                _, comp = cv2.connectedComponents(mine, connectivity=8)
                pieces = np.unique(comp[(cv2.dilate(paint, disc) > 0) & (mine > 0)])
                quiet |= np.isin(comp, pieces[pieces > 0]) & near
    # a closed contour starts and ends on known pixels of its own region, which touch the hole beyond the
    # curve as well: seeding there, that region leaked past the contour's end (the coffee lip's label 4 px
    # past the photo's edge at its lower end, kept as a white spur by the meld's contour keep band)
    near_ends = cv2.dilate(ends, np.ones((3, 3), np.uint8)) > 0
    # a thin band lying along the hole's edge does not seed it either (``grazing_thin``)
    unseeded = (near_ends & ~small_hole) | grazing
    if seal and closed:
        # nor does a thin part of a closed region's colour that is not continued as a band: the contour says
        # where that region lies in the hole. The coffee's saucer rim shares the lip's colour; at --grow 9 it
        # is 1-3 px wide at the hole, no band, and its mouth seeded the lip's label into the wedge between the
        # contour's lower end and the rim: a white bump past the lip (corner12)
        unseeded |= loose & np.isin(labels, sorted(closed))
    if specks and silhouettes:
        # nor does a stray speck by a silhouette drawn from a closed contour: seeded, it flooded its colour across
        # the body up to that outline (``stray_specks``). Only there: elsewhere the speck's claim is the flood's
        # usual guess (every speck unseeded moved nine bench scenes and put the coffee's shadow 20 px off at 3x)
        walls = np.zeros(small_hole.shape, np.uint8)
        for index in silhouettes:
            cv2.polylines(walls, [np.round(curves[index]).astype(np.int32)], False, 1, 1, cv2.LINE_8)
        by_wall = cv2.distanceTransform(1 - walls, cv2.DIST_L2, 3) <= 2 * THIN
        unseeded |= stray_specks(labels, band_mask, small_hole) & by_wall
    alone = lone_pieces(labels, band_mask, small_hole) if lone else None
    zone = _lone_zone(alone, labels, drawn) if alone is not None and alone.any() else None
    full = label_hole(labels, small_hole, barrier > 0, fixed, quiet, unseeded, alone, zone)
    for inside, region in added:
        # what the silhouette added to the body (between the rim's contour, the silhouette and the contour's
        # visible end) is the body's where it took the rim's label: the two leave each other tangentially and run
        # 0-2 px apart for 15 px, and the barrier's px and that sliver took the rim's label from their neighbours
        # (the coffee's lip 1-2 px past the photo's white at its lower corner, seed 1). Only the rim's: what lies
        # past the silhouette may reach into that part where P is off (at 1.75x the bowl's shadow does, and taken
        # for the body it moved the shadow's edge 20 px)
        full[(region > 0) & small_hole & (fixed < 0) & np.isin(full, sorted(closed))] = inside
    if scale < 1.0:
        # labels back at full size through their one-hot maps (smooth boundaries, not nearest-neighbour steps)
        full = _labels_up(full, n, (w, h))
        curves = [c / scale for c in curves]
    kept_lines = {e.left: colour for e, colour in contact_colour if any(e is b for b in bands)}
    return Structure(full, n, curves, entries + bands, density, soft, kinds, kept_lines, silhouettes)


def _labels_up(labels: np.ndarray, n: int, size: tuple[int, int]) -> np.ndarray:
    """``labels`` (0..n-1, -1: none) at ``size`` (w, h) through their one-hot maps, bilinear (smooth
    boundaries, not nearest-neighbour steps): each pixel takes the label whose map is highest there, the first
    on a tie, and -1 where every map is 0. A running maximum over the labels: the argmax of a stack of n
    full-size maps along its last axis gave the same labels at ~4x the time and n times the memory (speed10).
    int32."""
    w, h = size
    out = np.full((h, w), -1, np.int32)
    top = np.zeros((h, w), np.float32)
    for k in range(n):
        m = cv2.resize((labels == k).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        out[m > top] = k  # strictly higher: an equal later map does not take a tie
        np.maximum(top, m, out=top)
    return out


def _analysis_scale(h: int, w: int) -> float:
    """The scale of the copy the structure is found on (at most ``ANALYSIS_SIDE`` px)."""
    return min(1.0, ANALYSIS_SIDE / max(h, w))


def _shrink(img: np.ndarray, scale: float) -> np.ndarray:
    """``img`` at the analysis ``scale`` (< 1), area-averaged."""
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_AREA)


def _smoothed(rgb: np.ndarray) -> np.ndarray:
    """What ``edge_step`` samples: the colours lightly smoothed, so grain does not count."""
    return cv2.GaussianBlur(np.ascontiguousarray(rgb[:, :, :3]).astype(np.float32), (0, 0), 1.0)


def edge_step(rgb: np.ndarray, entry: Entry) -> float:
    """How sharply the colour changes across an entry's boundary just before the hole (``rgb`` at the scale the
    entry was found at): the RGB distance between the mean colours 2 px to either side of it, along its last
    3-10 px (straight back along its heading, lightly smoothed so grain does not count). A real edge steps by
    tens of levels within those 4 px; the contour of a smooth gradient only by what the gradient moves in 4 px."""
    return _step_across(_smoothed(rgb), entry)


def _step_across(img: np.ndarray, entry: Entry) -> float:
    """``edge_step`` on colours already ``_smoothed``."""
    h, w = img.shape[:2]
    normal = np.array([entry.heading[1], -entry.heading[0]])
    back = entry.point[None, :] - np.arange(3, 11)[:, None] * entry.heading[None, :]

    def mean_at(offset: float) -> np.ndarray:
        pts = back + offset * normal
        x = np.clip(pts[:, 0], 0, w - 1).astype(np.float32)[:, None]
        y = np.clip(pts[:, 1], 0, h - 1).astype(np.float32)[:, None]
        return cv2.remap(img, x, y, cv2.INTER_LINEAR)[:, 0].mean(axis=0)

    return float(np.linalg.norm(mean_at(2.0) - mean_at(-2.0)))


def only_gradient_contours(rgb: np.ndarray, structure: Structure) -> bool:
    """Whether every boundary ``find_structure`` continued (on this ``rgb``, the crop it was given) is a contour
    of a smooth gradient (``MIN_STEP``) rather than an edge: a dusk sky that k-means cut into bands, perhaps with
    a thin mast across it too thin to be a region. Such a surround is smooth, and the caller fills it as one
    (backend/erase/patchmatch.py: the membrane's colour, PatchMatch's detail) instead of confining each hole
    pixel to one band of the gradient. A thin band's centre line (left = right) is an edge whatever its step."""
    if not structure.entries:
        return False
    scale = _analysis_scale(*rgb.shape[:2])
    small = rgb[:, :, :3] if scale >= 1.0 else _shrink(rgb[:, :, :3], scale)
    img = _smoothed(small)  # once for every entry
    return all(e.left != e.right and _step_across(img, e) < MIN_STEP for e in structure.entries)
