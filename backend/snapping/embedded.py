"""The embedded (download-free) snap: several candidate masks, one chosen by evidence that needs no truth.

Candidates (all on the crop around the selection, at a working resolution of at most ``side`` px):
- ``grabcut``: OpenCV GrabCut, the whole selection as probable foreground.
- ``grabcut-lifted``: the same on a gamma-lifted copy (dark tones spread out): a dark object on a dark background.
- ``grabcut-core``: when plain GrabCut collapsed, again with the selection's deepest part as sure foreground.
- ``grabcut+u2netp`` and ``u2netp``: u2netp's confident pixels as sure foreground; u2netp alone.
- ``edges``: a watershed on the image's colour edges between the selection's outside and the deep core of the
  best candidate so far: two touching objects of similar colour split at the edge between them.

A candidate that leaves a narrow end of the selection unexplained gets what GrabCut finds there with that end's
middle line as sure foreground, where a thin part joins it (``far_ridge``, ``ridge_pieces``: the spoon's tip,
which GrabCut's whole-crop colour model loses after a JPEG re-encode).

Evidence per candidate (``score_candidate``): how strongly its boundary sits on image edges (``edge``), how
well its colours separate from the surroundings (``separation``), how much of the selection's inner rim it
covers (``touch``: an object lies inside a rough selection, the background reaches its rim), its share of the
selection (``area``), how fragmented (``fragments``) and how solid (``solidity``) it is, and how much of the
selection's middle it covers (``centre``: a candidate off to the side is likely not what the selection was
drawn around, however good its edges: it loses to the best plausible one that reaches the middle unless it leads
by ``OFF_CENTRE_LEAD``; a check, not a weight). The winner is
refined at full resolution: thin parts the working resolution lost come back where their colour matches the
object, and the edge follows the image (guided filter). At full resolution the outline gets alpha on a 2 px
band from a colour-guided filter (the local colour-line model of closed-form matting): soft where the picture's
edge is soft, crisp where it is sharp. (pymatting itself was measured and left out: its numba import took 95 s
the first time here; see docs/benchmarks/snap-realphoto.md.) Last, a part of the object that the selection's edge
cuts and that ends a few px outside it (a spoon's reflection on a glossy cup, half inside the lasso) is followed
to its end (``follow_across``): erasing half of it would leave a cut shape where the object was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np

from backend.imaging import resize

# candidate checks (bench/erase_replace.py scenes): a collapsed GrabCut keeps < 8 % of the selection's area;
# one that picked the background covers much of the selection's inner rim
MIN_AREA = 0.08
MAX_TOUCH = 0.35
# a boundary that sits on no image edge at all (mean strength < 0.4 of the selection's 90th percentile; the
# weakest true winner on both benches scores 0.66) is no evidence of an object: a flat or featureless crop
MIN_EDGE = 0.4
# a rough selection is drawn AROUND the object, so the object reaches the selection's middle: its deepest part
# (the pixels at least CENTRE_DEPTH of the way from the rim to the deepest point: the middle of a lasso, the
# middle line of a rectangle). A candidate that covers under MIN_CENTRE of it (holes filled: a ring's middle is
# its own) lies off to the side: a neighbour the selection takes in or slices, which on edges and colour alone
# can outscore the object (review 5: the red fender beside the seat, from a lasso 8 px looser). It loses to the
# best plausible candidate that does reach the middle (best_of); when none does (an open C or a horseshoe in a
# rectangle: its middle is the gap) the choice is as before. On bench/realphoto.py the right answers cover
# 0.115-1.0 of the middle (the tripod's spread legs in a rectangle: 0.115); the neighbours that won from looser
# lassos, 0.00-0.04.
CENTRE_DEPTH = 0.8
MIN_CENTRE = 0.05
# ... unless it leads by this factor: a selection drawn around the object with room on one side puts the object
# off its middle too (review 6: the rocket's mast in a lasso stretched 40 px sideways, right candidate 5.21,
# the best central one, sky and mast, 2.96: x1.76; a disc 0.35 off-centre in a lasso, x1.45-2.0). The neighbours
# the check is for led by x1.03-1.22 on bench/realphoto.py (the fender over the seat x1.18 at +8 px, the
# housing over the tail light x1.03-1.08).
OFF_CENTRE_LEAD = 1.35
# a candidate that runs across the selection's edge: it covers at least MIN_CROSS of the inner rim, and at
# least MIN_CONTINUES of the band just outside beside where it does has the colours it has on the rim (within
# CONTINUE_LAB in OpenCV's 8-bit Lab): a neighbour the rough selection slices (the saucer or the cup a loose box or ellipse
# takes in with the spoon), not the object's own outline meeting a tight selection, where the colours change.
# Such a winner loses to the best plausible central candidate that does not cross, unless it leads it by
# OFF_CENTRE_LEAD (the middle check's rule); GrabCut again with the crossing parts as sure background
# ('grabcut-trimmed') is one more candidate then.
MIN_CROSS = 0.08
MIN_CONTINUES = 0.5
CONTINUE_LAB = 14.0

# a part of the object that the selection's edge cuts is followed at most FOLLOW_PX outside the selection (the
# pipeline's result never reaches beyond its margin, 24 px by default), and only when it ends there: at least
# MIN_FOLLOW_EDGE of its outline outside the selection lies on image edges (Evidence's MIN_EDGE strength; the
# coffee's reflection hook: 0.93; a neighbour that runs on, which the watershed cuts across where the two floods
# meet: 0.48-0.64 in the test scene), and at least MIN_FOLLOW_SHARE of what the watershed gives it has its own
# colours rather than the surroundings' (the hook: 0.63)
FOLLOW_PX = 16
MIN_FOLLOW_EDGE = 0.8
MIN_FOLLOW_SHARE = 1 / 3
# and it ends on its own outline: with the limit FOLLOW_SHIFT px farther out, the watershed gives it (IoU) at
# least MIN_FOLLOW_STAYS of the same pixels (the hook: 1.0; fur beside a cat's eye, where a loosened lasso's mask
# had leaked: 0.68; the test scene's stripe, cut across where the floods meet: 0.62-0.68)
FOLLOW_SHIFT = 8
MIN_FOLLOW_STAYS = 0.9
# and it has the object's colours more than the surroundings' (mean colour ratio against the object's body away
# from the cut; stray_spurs' rule the other way round)
MIN_FOLLOW_COLOUR = 0.5


T = TypeVar("T")


@dataclass
class Candidate:
    name: str
    mask: np.ndarray  # bool, working resolution
    scores: dict[str, float] = field(default_factory=dict)
    total: float = 0.0


Models = tuple[np.ndarray, np.ndarray]  # GrabCut's background and foreground colour models (1x65 float64)


def _grabcut(
    small: np.ndarray, gc: np.ndarray, iterations: int = 5, min_keep: int = 0, start: Models | None = None
) -> np.ndarray:
    """GrabCut from the label map ``gc``, one iteration at a time. It stops early once an iteration changes
    under 0.2 % of the pixels (converged: most crops need 2-3 of the 5), and when an iteration collapses the
    foreground below ``min_keep`` px (its colour model swallowed by the background's, seen on dark real photos)
    the last result before the collapse is kept. ``start``: the colour models GrabCut starts from
    (``gmm_start``: the k-means of ``small`` and of a label map with the same foreground and background pixels
    as ``gc``); None: its own k-means."""
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    if not (gc == cv2.GC_BGD).any() or not fg.any():
        return fg
    gc = gc.copy()
    img = np.ascontiguousarray(small)
    if start is None:
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # deterministic GMM initialisation
        cv2.grabCut(img, gc, None, bgd, fgd, 1, cv2.GC_INIT_WITH_MASK)
    else:  # the k-means already done: its first iteration from those models (GrabCut updates them in place)
        bgd, fgd = start[0].copy(), start[1].copy()
        cv2.grabCut(img, gc, None, bgd, fgd, 1, cv2.GC_EVAL)
    last = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    for _ in range(iterations - 1):
        if last.sum() <= min_keep:
            break
        cv2.grabCut(img, gc, None, bgd, fgd, 1, cv2.GC_EVAL)
        now = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
        if now.sum() <= min_keep:
            break
        changed = int((now != last).sum())
        last = now
        if changed < 0.002 * now.size:
            break
    return last


def gmm_start(small: np.ndarray, gc: np.ndarray) -> Models | None:
    """The colour models GrabCut starts from for the label map ``gc`` (OpenCV's k-means of its foreground,
    sure and probable, and of its background pixels, seeded as ``_grabcut`` seeds it), None when ``gc`` lacks
    either. They depend only on the image and on which pixels are foreground: label maps that differ only in
    sure against probable foreground (the snap's plain, u2netp-helped and cored GrabCuts) share them, and
    ``_grabcut(start=...)`` from them gives the bytes its own k-means gives (tests/test_snap_embedded.py). The
    k-means is ~20 ms of each ~90 ms GrabCut on the 600 px speed scene."""
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    if not (gc == cv2.GC_BGD).any() or not fg.any():
        return None
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(small), gc.copy(), None, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
    return bgd, fgd


def lifted(rgb: np.ndarray, gamma: float = 0.45) -> np.ndarray:
    """Dark tones spread out (x ** 0.45): near-black differences become visible to GrabCut's colour model."""
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
    return lut[rgb]


def edge_map(rgb: np.ndarray) -> np.ndarray:
    """Colour edge strength (Lab gradient magnitude), float32."""
    f = cv2.GaussianBlur(rgb.astype(np.float32) / 255.0, (0, 0), 0.8)
    lab = cv2.cvtColor(f, cv2.COLOR_RGB2Lab)
    gx = cv2.Sobel(lab, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt((gx**2 + gy**2).sum(axis=2))


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)) > 0


def _hist(lab_q: np.ndarray, where: np.ndarray, bins: int) -> np.ndarray:
    h = np.bincount(lab_q[where], minlength=bins**3).astype(np.float64)
    return h / max(1.0, h.sum())


@dataclass
class Evidence:
    """What every candidate is scored against (computed once per snap)."""

    seed: np.ndarray  # bool, the selection at working resolution
    core: np.ndarray  # bool, the deepest part of the selection
    centre: (
        np.ndarray
    )  # bool, its very middle (depth >= CENTRE_DEPTH of the maximum): what it was drawn around
    rim: np.ndarray  # bool, the selection's inner rim (3 px)
    inner: np.ndarray  # bool, the selection minus a few px at its edge: boundaries here are the snap's own
    ring: np.ndarray  # bool, a band just outside the selection: surely background
    edges: np.ndarray  # float32, colour edge strength normalised by its 90th percentile in the selection
    colours: np.ndarray  # int, quantised colour index per pixel
    bins: int

    @classmethod
    def of(cls, rgb: np.ndarray, seed: np.ndarray) -> Evidence:
        k3 = np.ones((3, 3), np.uint8)
        s8 = seed.astype(np.uint8)
        rim = seed & ~(cv2.erode(s8, k3, iterations=3, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0)
        inner = cv2.erode(s8, k3, iterations=2, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
        ring = (cv2.dilate(s8, k3, iterations=6) > 0) & ~seed
        e = edge_map(rgb)
        ref = float(np.percentile(e[seed], 90)) if seed.any() else 1.0
        bins = 12
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).astype(np.int32)
        q = (lab * bins) // 256
        colours = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
        depth = cv2.distanceTransform(s8, cv2.DIST_L2, 5)
        core = depth >= 0.6 * depth.max()
        centre = depth >= CENTRE_DEPTH * depth.max()
        e = cv2.dilate(
            e, k3
        )  # an outline 1 px beside the ridge (a watershed line, a resampled edge) still sits on it
        return cls(seed, core, centre, rim, inner, ring, e / max(ref, 1e-6), colours, bins)


def score_candidate(mask: np.ndarray, ev: Evidence) -> dict[str, float]:
    """Truth-free evidence that ``mask`` is the object the selection was drawn around."""
    area = float(mask.sum() / max(1, ev.seed.sum()))
    touch = float(mask[ev.rim].mean()) if ev.rim.any() else 1.0
    core = float(mask[ev.core].mean()) if ev.core.any() else 0.0
    if not mask.any():
        return {
            "edge": 0.0,
            "separation": 0.0,
            "touch": touch,
            "area": area,
            "fragments": 1.0,
            "core": core,
            "centre": 0.0,
            "solidity": 0.0,
        }
    centre = float(_filled(mask)[ev.centre].mean()) if ev.centre.any() else 1.0
    line = _outline(mask) & ev.inner
    edge = float(np.minimum(ev.edges[line], 2.0).mean()) if line.any() else 0.0
    outside = (ev.seed & ~mask) | ev.ring
    h_in, h_out = _hist(ev.colours, mask, ev.bins), _hist(ev.colours, outside, ev.bins)
    separation = 1.0 - float(np.sqrt(h_in * h_out).sum())  # 1 - Bhattacharyya coefficient
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    fragments = 1.0 - float(stats[1:, cv2.CC_STAT_AREA].max() / max(1, mask.sum())) if n > 1 else 1.0
    pts = cv2.findNonZero(mask.astype(np.uint8))
    hull = cv2.contourArea(cv2.convexHull(pts)) if pts is not None and len(pts) >= 3 else 0.0
    solidity = float(min(1.0, mask.sum() / hull)) if hull > 0 else 0.0  # a bite out of the object lowers it
    return {
        "edge": edge,
        "separation": separation,
        "touch": touch,
        "area": area,
        "fragments": fragments,
        "core": core,
        "centre": centre,
        "solidity": solidity,
    }


def _filled(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled (background not connected to the crop's border): a ring, a frame or a
    wheel drawn around covers its own middle."""
    outside = np.pad(mask, 1).astype(
        np.uint8
    )  # a 0 border joins every background pixel that reaches the edge
    cv2.floodFill(outside, None, (0, 0), 2)
    return outside[1:-1, 1:-1] != 2


def plausible(s: dict[str, float]) -> bool:
    """The checks every candidate must pass before its score counts: not collapsed, not the selection's own
    outline, an outline on image edges."""
    return s["area"] >= MIN_AREA and s["touch"] <= MAX_TOUCH and s["edge"] >= MIN_EDGE


def central(s: dict[str, float]) -> bool:
    """Whether the candidate reaches the middle of what the user drew around (``centre``; scores without it,
    from older logs, count as reaching it)."""
    return s.get("centre", 1.0) >= MIN_CENTRE


def total_score(s: dict[str, float]) -> float:
    """One number per candidate. Weights from a small grid search on bench/realphoto.py and
    bench/erase_replace.py together (many neighbouring weightings score within 0.005 mean IoU on both: the
    choice is not knife-edge). Solidity counts because a real object rarely has a bite out of it, which is
    what GrabCut leaves where part of the object shares the background's colours."""
    return (
        s["edge"]
        + 3.0 * s["separation"]
        - 4.0 * max(0.0, s["touch"] - 0.05)
        - 0.5 * s["fragments"]
        + 2.0 * s["solidity"]
    )


def make_candidates(
    small: np.ndarray, seed: np.ndarray, u2net: Callable[[np.ndarray], np.ndarray] | None
) -> list[Candidate]:
    """Every candidate mask at working resolution (``small``: HxWx3 uint8, ``seed``: bool HxW). The
    independent ones run on two threads (OpenCV and onnxruntime release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    base = np.where(seed, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    keep = int(MIN_AREA * seed.sum())

    def plain_grabcut() -> tuple[np.ndarray, Models | None]:
        # the plain GrabCut's k-means, kept: the helped and cored ones only make some of its probable
        # foreground sure, so they start from the same models (gmm_start)
        start = gmm_start(small, base)
        return _grabcut(small, base, min_keep=keep, start=start), start

    with ThreadPoolExecutor(max_workers=2) as pool:
        plain = pool.submit(plain_grabcut)
        lift = pool.submit(_grabcut, lifted(small), base, min_keep=keep)
        prob = u2net(small) if u2net is not None else None
        plain_mask, start = plain.result()
        out = [Candidate("grabcut", plain_mask), Candidate("grabcut-lifted", lift.result())]
        jobs = {}
        if prob is not None:
            helped = base.copy()
            helped[(prob > 0.95) & seed] = cv2.GC_FGD
            jobs["grabcut+u2netp"] = pool.submit(_grabcut, small, helped, min_keep=keep, start=start)
        depth = cv2.distanceTransform(seed.astype(np.uint8), cv2.DIST_L2, 5)
        if out[0].mask.sum() <= keep and depth.max() >= 3:
            # GrabCut collapsed: the deepest part of the selection is the object whatever the kind of
            # selection; as sure foreground it keeps GrabCut from collapsing where the surroundings share the
            # object's colours
            cored = base.copy()
            cored[depth >= 0.7 * depth.max()] = cv2.GC_FGD
            jobs["grabcut-core"] = pool.submit(_grabcut, small, cored, min_keep=keep, start=start)
        out += [Candidate(name, job.result()) for name, job in jobs.items()]
    if prob is not None:
        out.append(Candidate("u2netp", (prob > 0.5) & seed))
    return out


# a selection's end farther than its half-width (the deepest point's depth) from a candidate's parts is where
# the candidate leaves it unexplained, worth a second look from MIN_LOCAL of the selection's area; its middle line
# there is the pixels at least RIDGE_DEPTH of the way from its rim to its deepest point
MIN_LOCAL = 0.02
RIDGE_DEPTH = 0.95
# ... where the selection narrows to at most NARROW_END of its widest (the README lasso's end around the spoon's
# tip: 0.37, at 0.8x too): drawn around something there. A rectangle is as wide at its far end as in its middle
# (the bench's rectangle around the spoon: 0.64-1.0), and its middle there lies on whatever is there (the cup).
NARROW_END = 0.5


def far_ridge(seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The middle line of each end of the selection that ``mask``'s parts (``sizeable``) leave unexplained:
    farther than the selection's half-width from them, at least MIN_LOCAL of its area, and narrow (NARROW_END).
    A rough selection is drawn around the object, so where it narrows its middle runs along the object (the
    middle check's premise). bool HxW."""
    depth = cv2.distanceTransform(seed.astype(np.uint8), cv2.DIST_L2, 5)
    body = sizeable(mask)
    out = np.zeros(seed.shape, bool)
    if not body.any():
        return out
    far = seed & (
        cv2.distanceTransform((~body).astype(np.uint8), cv2.DIST_L2, 5) > max(4.0, float(depth.max()))
    )
    n, labels, stats, _ = cv2.connectedComponentsWithStats(far.astype(np.uint8), connectivity=8)
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < MIN_LOCAL * seed.sum():
            continue
        end = labels == i
        half = float(depth[end].max())
        if half <= NARROW_END * float(depth.max()):
            out |= end & (depth >= RIDGE_DEPTH * half)
    return out


def ridge_pieces(small: np.ndarray, seed: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """What GrabCut finds around ``ridge`` (far_ridge) held as sure foreground: the pieces that hold it. GrabCut's
    colour model is the whole crop's, five components for the saucer, the cup, the wood and the spoon's metal;
    a small far part of the object (the spoon's tip, 2 % of the selection, beige like the wood's highlights)
    gets one of its own only by luck. On the PNG 20 of 20 k-means seeds keep the tip; after a JPEG re-encode
    (4:2:0: the chroma that tells the tip from the wood at half resolution) 0-12 of 20, and GrabCut's
    iterations never win back what the first one dropped. With its middle line sure, 5 of 5 on every JPEG
    quality. bool HxW: pieces for join_pieces, which keeps one only where a thin part joins it."""
    gc = np.where(seed, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    gc[ridge] = cv2.GC_FGD
    fg = _grabcut(small, gc)
    k3 = np.ones((3, 3), np.uint8)
    s8 = seed.astype(np.uint8)
    rim = seed & ~(cv2.erode(s8, k3, iterations=3, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0)
    ring = (cv2.dilate(s8, k3, iterations=6) > 0) & ~seed
    _, parts = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    out = np.zeros(seed.shape, bool)
    for i in np.unique(parts[ridge & fg]):
        if i == 0:
            continue
        piece = parts == i
        # a piece of the surroundings (colour ratio against the selection's outside under MIN_FOLLOW_COLOUR: a
        # block of a texture that is all around, 0.23-0.35; the tip 0.79) or of a neighbour the selection slices
        # (the cup in a rectangle's corner, running on outside with its colours) is not the object's
        own = float(_colour_ratio(small, piece, ~seed)[piece].mean())
        if own >= MIN_FOLLOW_COLOUR and _crossing_at(small, piece, rim, ring)[1] < MIN_CONTINUES:
            out |= piece
    return out


def edges_candidate(small: np.ndarray, seed: np.ndarray, best: np.ndarray) -> np.ndarray | None:
    """Watershed on the image between the selection's outside and the deep core of each part of ``best``: the
    boundary lands on the strongest edge between them (a neighbour of the same colour, which a rough selection
    only slices, is cut off at the edge that separates it; the slice is never deep inside the selection)."""
    depth = cv2.distanceTransform(seed.astype(np.uint8), cv2.DIST_L2, 5)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(best.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    markers = np.zeros(seed.shape, np.int32)
    markers[~seed] = 1
    big = stats[1:, cv2.CC_STAT_AREA].max()
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] >= 0.02 * big:
            part = labels == i
            markers[part & (depth >= 0.5 * float(depth[part].max()))] = 2
    cv2.watershed(np.ascontiguousarray(small), markers)
    return markers == 2


def choose(
    small: np.ndarray, seed: np.ndarray, u2net: Callable | None
) -> tuple[Candidate | None, list[Candidate]]:
    """(the best plausible candidate or None, every candidate with its scores)."""
    ev = Evidence.of(small, seed)
    cands = make_candidates(small, seed, u2net)
    found: dict[bytes, np.ndarray] = {}
    for c in cands:
        # a far part of the object the candidate's colour model lost (the spoon's tip after a JPEG re-encode):
        # kept when a thin part joins it, as the candidates keep it on the PNG
        ridge = far_ridge(seed, c.mask)
        if ridge.any():
            key = np.packbits(ridge).tobytes()
            if key not in found:
                found[key] = ridge_pieces(small, seed, ridge)
            # what the candidate has not, 3 px apart from it: join_pieces joins pieces, not what touches
            extra = found[key] & ~(cv2.dilate(c.mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0)
            if extra.any():
                c.mask = c.mask | (join_pieces(small, seed, c.mask, extra)[0] & extra)
        c.scores = score_candidate(c.mask, ev)
        c.total = total_score(c.scores)
    # the edges candidate grows from the core of the two leading candidates (plausible ones first)
    leads = sorted(cands, key=lambda c: (plausible(c.scores), central(c.scores), c.total), reverse=True)[:2]
    for lead in leads:
        ws = edges_candidate(small, seed, lead.mask)
        if ws is not None and not any((ws == c.mask).all() for c in cands):
            c = Candidate("edges" if lead is leads[0] else "edges-2", ws)
            c.scores = score_candidate(ws, ev)
            c.total = total_score(c.scores)
            cands.append(c)
    best = best_of(cands)
    if best is not None and crosses(small, best, ev):
        trimmed = trimmed_candidates(small, seed, best, ev)
        if trimmed:
            cands += trimmed
            best = uncrossed(small, best, trimmed, cands, ev)
    return best, cands


def uncrossed(
    small: np.ndarray, best: Candidate, trimmed: list[Candidate], cands: list[Candidate], ev: Evidence
) -> Candidate:
    """``best`` crosses the selection's edge: the best plausible central candidate that neither crosses it
    nor is mostly what trimming took away (the neighbour: a watershed grown from the winner's core, kept inside
    the selection, is still the neighbour), unless ``best`` leads it by OFF_CENTRE_LEAD."""
    away = best.mask & ~np.logical_or.reduce([t.mask for t in trimmed])
    inner = [
        c
        for c in cands
        if plausible(c.scores)
        and central(c.scores)
        and not crosses(small, c, ev)
        and (c.mask & away).sum() < 0.5 * c.mask.sum()
    ]
    if not inner:
        return best
    rival = max(inner, key=lambda c: c.total)
    return rival if best.total - rival.total <= (OFF_CENTRE_LEAD - 1.0) * abs(rival.total) else best


def crossing(rgb: np.ndarray, mask: np.ndarray, ev: Evidence) -> tuple[np.ndarray, float]:
    """Where ``mask`` runs across the selection's edge: its pixels on the selection's inner rim whose colours
    go on just outside (the ``ring``), and the share of the ring beside them that does. A tight selection
    around an object meets the object's own outline, and outside it the colours change. (bool HxW, share)"""
    return _crossing_at(rgb, mask, ev.rim, ev.ring)


def _crossing_at(
    rgb: np.ndarray, mask: np.ndarray, rim: np.ndarray, ring: np.ndarray
) -> tuple[np.ndarray, float]:
    """``crossing`` with the selection's inner ``rim`` and outside ``ring`` given (any resolution)."""
    cut, _, share = _going_on(rgb, mask, rim, ring)
    return cut, share


def _going_on(
    rgb: np.ndarray, mask: np.ndarray, rim: np.ndarray, ring: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """``_crossing_at``'s rim pixels, the ``ring`` pixels beside them that have their colours (where the part
    the selection's edge cuts goes on outside), and the share of the ring beside them that does."""
    on = mask & rim
    if not on.any():
        return on, on, 0.0
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).astype(np.float32)
    k = (13, 13)
    weight = cv2.boxFilter(on.astype(np.float32), -1, k, normalize=False)
    local = cv2.boxFilter(lab * on[..., None], -1, k, normalize=False) / np.maximum(weight, 1e-6)[..., None]
    beside = ring & (weight > 0)
    if not beside.any():
        return np.zeros_like(on), np.zeros_like(on), 0.0
    goes_on = beside & (np.linalg.norm(lab - local, axis=2) < CONTINUE_LAB)
    # the rim pixels beside an outside pixel that has their colours
    near = cv2.dilate(goes_on.astype(np.uint8), np.ones(k, np.uint8)) > 0
    return on & near, goes_on, float(goes_on.sum() / beside.sum())


def crosses(rgb: np.ndarray, c: Candidate, ev: Evidence) -> bool:
    """Whether candidate ``c`` runs across the selection's edge (MIN_CROSS, MIN_CONTINUES); the share of the
    outside band that goes on with its colours is kept in its scores (``continues``) for the meta."""
    if c.scores.get("touch", 0.0) < MIN_CROSS:
        return False
    if "continues" not in c.scores:
        c.scores["continues"] = crossing(rgb, c.mask, ev)[1]
    return found_crossing(c.scores)


def found_crossing(scores: dict) -> bool:
    """Whether scores that ``crosses`` filled in say the candidate runs across the selection's edge."""
    return scores.get("continues", 0.0) >= MIN_CONTINUES and scores.get("touch", 0.0) >= MIN_CROSS


def trimmed_candidates(small: np.ndarray, seed: np.ndarray, best: Candidate, ev: Evidence) -> list[Candidate]:
    """GrabCut, plain and on the lifted copy, with what ``best`` has across the selection's edge (``crossing``,
    and its pixels within 4 px of it) as sure background: the object without the neighbour a rough selection
    slices (the two differ in thin parts: a spoon's tip, which the bridge step takes from either). [] when
    nothing of it crosses."""
    cut, _ = crossing(small, best.mask, ev)
    if not cut.any():
        return []
    gc = np.where(seed, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    near = cv2.dilate(cut.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=4) > 0
    gc[cut | (near & best.mask)] = cv2.GC_BGD
    keep = int(MIN_AREA * seed.sum())
    out = []
    for name, img in (("grabcut-trimmed", small), ("grabcut-lifted-trimmed", lifted(small))):
        c = Candidate(name, _grabcut(img, gc, min_keep=keep))
        c.scores = score_candidate(c.mask, ev)
        c.total = total_score(c.scores)
        out.append(c)
    return out


def best_of(cands: list[Candidate]) -> Candidate | None:
    """The plausible candidate with the highest score (None: none is plausible), except that one off to the
    side of the selection's middle beats the best candidate that reaches the middle only by a wide lead
    (``OFF_CENTRE_LEAD``): a sliced neighbour that edges and colour slightly prefer loses, a whole object the
    user drew the lasso around off-centre still wins. When none reaches the middle (an open C in a rectangle)
    every plausible one competes."""
    good = [c for c in cands if plausible(c.scores)]
    return prefer_central(good, lambda c: c.total, lambda c: central(c.scores)) if good else None


def prefer_central(pool: list[T], total: Callable[[T], float], is_central: Callable[[T], bool]) -> T:
    """The highest ``total`` of ``pool`` (not empty), unless it lies off the selection's middle and leads the
    best one that reaches it by less than ``OFF_CENTRE_LEAD`` (best_of's rule; bench/snap_chooser.py applies
    it to logged scores)."""
    best = max(pool, key=total)
    inner = [c for c in pool if is_central(c)]
    if not inner or is_central(best):
        return best
    rival = max(inner, key=total)
    # a lead relative to the rival's size (scores are positive in practice; abs keeps it a lead if not)
    return best if total(best) - total(rival) > (OFF_CENTRE_LEAD - 1.0) * abs(total(rival)) else rival


def _colour_ratio(rgb: np.ndarray, fg: np.ndarray, bg: np.ndarray, bins: int = 16) -> np.ndarray:
    """Per pixel p(fg colour) / (p(fg) + p(bg)) from colour histograms of ``fg`` and ``bg`` (float32 HxW)."""
    q = (rgb.astype(np.int32) * bins) // 256
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    h_fg = np.bincount(idx[fg], minlength=bins**3).astype(np.float32) + 0.5
    h_bg = np.bincount(idx[bg], minlength=bins**3).astype(np.float32) + 0.5
    h_fg /= h_fg.sum()
    h_bg /= h_bg.sum()
    return np.take(h_fg / (h_fg + h_bg), idx)  # what indexing gives, faster on a 2-D index (speed10)


def recover_thin(rgb: np.ndarray, seed: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """Parts of the object thinner than ``width`` px that ``mask`` lost (a spoon's handle at a working
    resolution of 1/4): pixels inside the selection whose colour is clearly the object's, that form structures
    an opening of ``width`` px removes, and that touch the mask. bool HxW, the pixels to add."""
    ring = (cv2.dilate(seed.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=4) > 0) & ~seed
    ratio = _colour_ratio(rgb, mask, (seed & ~mask) | ring)
    likely = seed & ~mask & (ratio > 0.8)
    if not likely.any():
        return likely
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    thin = likely & ~(cv2.morphologyEx(likely.astype(np.uint8), cv2.MORPH_OPEN, k) > 0)
    n, labels = cv2.connectedComponents(thin.astype(np.uint8), connectivity=8)
    if n <= 1:
        return thin
    touching = np.unique(labels[(cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & thin])
    return np.isin(labels, touching[touching > 0])


def colour_guided_filter(rgb: np.ndarray, p: np.ndarray, radius: int, eps: float = 1e-3) -> np.ndarray:
    """He et al.'s guided filter with the colour image as guide: locally q = a . I + b, the colour-line model
    closed-form matting rests on, so a red lens on a red housing keeps the edge a grey guide cannot see."""
    img = rgb.astype(np.float32) / 255.0
    k = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)

    mean_i = [box(img[..., c]) for c in range(3)]
    mean_p = box(p)
    cov_ip = [box(img[..., c] * p) - mean_i[c] * mean_p for c in range(3)]
    var = {
        (i, j): box(img[..., i] * img[..., j]) - mean_i[i] * mean_i[j] + (eps if i == j else 0.0)
        for i in range(3)
        for j in range(i, 3)
    }
    rr, rg, rb, gg, gb, bb = var[0, 0], var[0, 1], var[0, 2], var[1, 1], var[1, 2], var[2, 2]
    inv = [gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb, rr * bb - rb * rb, rb * rg - rr * gb]
    inv.append(rr * gg - rg * rg)  # cofactors of the symmetric 3x3: 00, 01, 02, 11, 12, 22
    det = rr * inv[0] + rg * inv[1] + rb * inv[2]
    c00, c01, c02, c11, c12, c22 = (x / det for x in inv)
    a0 = c00 * cov_ip[0] + c01 * cov_ip[1] + c02 * cov_ip[2]
    a1 = c01 * cov_ip[0] + c11 * cov_ip[1] + c12 * cov_ip[2]
    a2 = c02 * cov_ip[0] + c12 * cov_ip[1] + c22 * cov_ip[2]
    b = mean_p - a0 * mean_i[0] - a1 * mean_i[1] - a2 * mean_i[2]
    q = box(a0) * img[..., 0] + box(a1) * img[..., 1] + box(a2) * img[..., 2] + box(b)
    return np.clip(q, 0.0, 1.0).astype(np.float32)


def soft_edge(rgb: np.ndarray, mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Alpha on a thin band (``width`` px either side of the outline) from the picture: where its edge is
    sharp the alpha stays sharp, where it is soft (motion blur, defocus, fur) the alpha follows its ramp.
    Off the band the mask's 0 or 1 stay."""
    m8 = mask.astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    band = (cv2.dilate(m8, k) > 0) & ~(cv2.erode(m8, k) > 0)
    out = mask.astype(np.float32)
    if band.any():
        ys, xs = np.nonzero(band)
        pad = 2 * width + 2
        y0, y1 = max(0, ys.min() - pad), min(mask.shape[0], ys.max() + pad + 1)
        x0, x1 = max(0, xs.min() - pad), min(mask.shape[1], xs.max() + pad + 1)
        soft = colour_guided_filter(rgb[y0:y1, x0:x1], out[y0:y1, x0:x1], radius=width)
        sub = band[y0:y1, x0:x1]
        out[y0:y1, x0:x1][sub] = soft[sub]
    return out


def _geodesic(
    cost: np.ndarray, allowed: np.ndarray, start: np.ndarray, goal: np.ndarray
) -> list[tuple[int, int]]:
    """The cheapest 8-connected path from any ``start`` pixel to any ``goal`` pixel through ``allowed`` ones
    (Dijkstra; callers keep ``allowed`` to a narrow corridor, so a few hundred pixels). [] when none."""
    import heapq

    h, w = cost.shape
    dist = np.full(h * w, np.inf)
    prev = np.full(h * w, -1, np.int64)
    heap = [(0.0, int(i)) for i in np.flatnonzero(start & allowed)]
    for _, i in heap:
        dist[i] = 0.0
    heapq.heapify(heap)
    flat_cost, flat_ok, flat_goal = cost.ravel(), allowed.ravel(), goal.ravel()
    steps = [(dy, dx, float(np.hypot(dy, dx))) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    while heap:
        d, i = heapq.heappop(heap)
        if d > dist[i]:
            continue
        if flat_goal[i]:
            path = []
            while i >= 0:
                path.append(divmod(i, w))
                i = int(prev[i])
            return path[::-1]
        y, x = divmod(i, w)
        for dy, dx, step in steps:
            yy, xx = y + dy, x + dx
            j = yy * w + xx
            if 0 <= yy < h and 0 <= xx < w and flat_ok[j]:
                nd = d + step * 0.5 * (flat_cost[i] + flat_cost[j])
                if nd < dist[j]:
                    dist[j], prev[j] = nd, i
                    heapq.heappush(heap, (nd, j))
    return []


# a bridge joins a piece of at least this share of the main piece (the spoon's tip is 15 % of its bowl), along
# a path whose mean thin-structure response (thin_map, relative to the selection's 90th percentile) is at least
# MIN_BRIDGE_THIN (the spoon's handle: 0.74); a gap across flat background or a wide region has ~0
MIN_PIECE = 0.03
MIN_BRIDGE_THIN = 0.5
MIN_THIN_REF = 32.0
MAX_BRIDGES = 4


def thin_map(rgb: np.ndarray, width: int = 7) -> np.ndarray:
    """How much each pixel belongs to a bright or dark structure narrower than ``width`` px (white plus black
    top-hat, strongest colour channel): high along a thin part and its borders, zero on flat areas and on a
    plain step edge between two wide regions. float32 HxW."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    out = np.zeros(rgb.shape[:2], np.float32)
    for c in range(3):
        ch = np.ascontiguousarray(rgb[..., c])
        hat = cv2.morphologyEx(ch, cv2.MORPH_TOPHAT, k).astype(np.float32)
        hat += cv2.morphologyEx(ch, cv2.MORPH_BLACKHAT, k)
        np.maximum(out, hat, out=out)
    return out


def sizeable(mask: np.ndarray) -> np.ndarray:
    """``mask``'s pieces of at least MIN_PIECE of its largest one (and 20 px): the object's parts, not the stray
    slivers a candidate picks up beside it (the saucer's bright rim beside a spoon's tip). bool, same shape."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(mask.shape, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    floor = max(20, MIN_PIECE * float(areas.max()))
    return np.isin(labels, 1 + np.flatnonzero(areas >= floor))


def other_pieces(best: Candidate, cands: list[Candidate]) -> np.ndarray:
    """Pieces that other plausible candidates found and the winner lacks (a spoon's tip that GrabCut keeps and
    u2netp drops), at least MIN_PIECE of the winner's area: offered to bridge_pieces, which keeps one only if a
    thin part joins it to the winner. A piece the winner touches only with a stray sliver of its own (a rough
    rectangle's winner took a sliver of the saucer's rim beside the tip and lost the tip) still counts as
    lacking: only the winner's sizeable pieces (``sizeable``) rule one out. bool, working resolution."""
    out = np.zeros(best.mask.shape, bool)
    floor = max(20, MIN_PIECE * float(best.mask.sum()))
    body = sizeable(best.mask)
    for c in cands:
        if c is best or not plausible(c.scores):
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(c.mask.astype(np.uint8), connectivity=8)
        for i in range(1, n):
            part = labels == i
            if stats[i, cv2.CC_STAT_AREA] >= floor and not (part & body).any():
                out |= part
    return out


def _thickness_near(mask: np.ndarray, p: tuple[int, int], reach: int = 10) -> float:
    """Half the width of ``mask`` near pixel ``p`` (the deepest point within ``reach`` px of it)."""
    y0, x0 = max(0, p[0] - reach), max(0, p[1] - reach)
    sub = mask[y0 : p[0] + reach + 1, x0 : p[1] + reach + 1].astype(np.uint8)
    return float(cv2.distanceTransform(sub, cv2.DIST_L2, 5).max())


def bridge_pieces(rgb: np.ndarray, seed: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Join pieces of the object that a thin part connects but the mask lost (a spoon's handle where it runs
    along the cup, its colour the saucer's: no colour model keeps it). The user drew one selection around one
    object, so a sizeable second piece inside the same selection is most likely the far end of a thin part:
    between the two pieces' nearest points, in a narrow corridor around the straight line (thin parts are
    mostly straight), the path that follows thin structure (thin_map) becomes part of the mask, about as wide as
    the pieces are where they face each other (3-7 px). A path with no thin structure along it (two separate
    things on a flat background) is not bridged. (bool mask with the bridges, what each bridge was: the meta)"""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask, []
    areas = stats[1:, cv2.CC_STAT_AREA]
    main = int(np.argmax(areas)) + 1
    thin = thin_map(rgb)
    # relative to the selection's 90th percentile, but never below a contrast of 32 levels: texture and noise
    # are not thin parts
    ref = max(float(np.percentile(thin[seed], 90)) if seed.any() else 0.0, MIN_THIN_REF)
    along = np.minimum(thin / ref, 2.0)
    # the constant: among paths along thin structure, the straighter one
    cost = 0.5 + 1.0 / (0.05 + along)
    n_sel, sel_labels = cv2.connectedComponents(seed.astype(np.uint8), connectivity=8)
    anchor = np.unravel_index(int(np.argmax(labels == main)), labels.shape)
    floor = max(20, MIN_PIECE * areas[main - 1])
    # the largest few: a bounded cost on any crop
    pending = [
        i
        for i in (np.argsort(-areas) + 1)[: 1 + MAX_BRIDGES]
        if i != main and stats[i, cv2.CC_STAT_AREA] >= floor
    ]
    out, done = mask.copy(), {}
    while pending:
        left = []
        for i in pending:
            # the body is the main piece and what is joined to it so far, not every other piece: a stray sliver
            # beside the far end (the saucer's rim beside the spoon's tip) must not stand in for the main piece
            _, now = cv2.connectedComponents(out.astype(np.uint8), connectivity=8)
            piece, body = labels == i, (now == now[anchor]) & (labels != i)
            added, info = _bridge(piece, body, seed, sel_labels, cost, along)
            if info is not None:
                done[i] = info  # the last attempt at each piece
            if added is None:
                left.append(i)
            else:
                out |= added
        # again while something joined: a piece may reach the body only through a piece joined after it was
        # tried (a bent handle lost in three pieces, its far end tried first as the largest)
        pending = left if len(left) < len(pending) else []
    return out, list(done.values())


def _bridge(piece, body, seed, sel_labels, cost, along) -> tuple[np.ndarray | None, dict | None]:
    """One bridge from ``piece`` to ``body`` (bridge_pieces): the pixels it adds (None: not joined) and what it
    was (None: not tried: touching, or the two ends in different parts of the selection)."""
    # the two pieces' nearest points
    d_body = cv2.distanceTransform((~body).astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero(piece)
    k = int(np.argmin(d_body[ys, xs]))
    a = (int(ys[k]), int(xs[k]))
    d_piece = cv2.distanceTransform((~piece).astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero(body)
    k = int(np.argmin(d_piece[ys, xs]))
    b = (int(ys[k]), int(xs[k]))
    gap = float(np.hypot(a[0] - b[0], a[1] - b[1]))
    if gap < 2 or sel_labels[a] != sel_labels[b]:
        return None, None
    line = np.zeros(piece.shape, np.uint8)
    cv2.line(line, (a[1], a[0]), (b[1], b[0]), 1)
    half = int(np.clip(round(0.05 * gap), 2, 8))  # the corridor stays narrow however long the gap
    corridor = cv2.dilate(line, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * half + 1,) * 2)) > 0
    ring = np.zeros(piece.shape, bool)
    ring[
        max(0, min(a[0], b[0]) - half) : max(a[0], b[0]) + half + 1,
        max(0, min(a[1], b[1]) - half) : max(a[1], b[1]) + half + 1,
    ] = True
    allowed = corridor & ring & (seed | piece | body)
    path = _geodesic(cost, allowed, piece & corridor, body & corridor)
    if not path:
        return None, None
    on = np.zeros(piece.shape, bool)
    pys, pxs = np.array(path).T
    on[pys, pxs] = True
    outside = on & ~piece & ~body
    score = float(along[outside].mean()) if outside.any() else 0.0
    info = {"length": round(gap, 1), "thin": round(score, 3), "joined": False}
    if score < MIN_BRIDGE_THIN:
        return None, info
    thick = [_thickness_near(m, p) for m, p in ((piece, a), (body, b))]
    # as wide as the pieces where they face each other; thin_map sees structures up to ~6 px wide
    r = int(np.clip(round(float(np.mean(thick))), 1, 3))
    info.update(radius=r, ends=[round(t, 1) for t in thick])
    # a thin part is longer than wide: a gap under twice the bridge's width is the pieces' own outline (a
    # neighbour's sliver beside the object), not a handle between them
    if gap < 2 * (2 * r + 1):
        return None, info
    width = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    info["joined"] = True
    return (cv2.dilate(on.astype(np.uint8), width) > 0) & seed, info


def join_pieces(
    rgb: np.ndarray, seed: np.ndarray, mask: np.ndarray, extra: np.ndarray
) -> tuple[np.ndarray, list[dict]]:
    """``mask`` with its pieces bridged (bridge_pieces), plus those ``extra`` pieces (other candidates' finds)
    that a bridge joins to it: the winner's own pieces stay either way, another candidate's piece only when a
    thin part connects it. An extra piece that touches one of the winner's sizeable pieces is not a piece the
    winner lost but the neighbour beside what it found (u2netp's sliver of a cup's white lip beside the spoon's
    neck on a JPEG: it lay between the spoon's tip and bowl, so the bridge ran to it and the lip went with the
    spoon): it is left out before bridging. (bool mask, the bridges for the meta)"""
    _, bits = cv2.connectedComponents(extra.astype(np.uint8), connectivity=8)
    beside = cv2.dilate(sizeable(mask).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    extra = extra & ~np.isin(bits, np.unique(bits[beside & extra]))
    joined, bridges = bridge_pieces(rgb, seed, mask | extra)
    if not bridges:
        return mask, []
    # what a bridge reached from the winner's sizeable pieces: an extra piece that merely touches one of the
    # winner's stray slivers is not joined by that
    _, parts = cv2.connectedComponents(joined.astype(np.uint8), connectivity=8)
    anchors = np.unique(parts[sizeable(mask)])
    return mask | (np.isin(parts, anchors[anchors > 0])), bridges


def refine_full(rgb: np.ndarray, seed: np.ndarray, small_mask: np.ndarray, scale: float) -> np.ndarray:
    """The working-resolution mask at full resolution: thin parts recovered by colour, edge on the image."""
    from .grabcut import guided_refine

    h, w = seed.shape
    if scale >= 1.0:
        return soft_edge(rgb, small_mask)
    prob = resize(small_mask.astype(np.float32), (w, h))
    prob = guided_refine(rgb, prob, radius=max(2, round(2 / scale)))
    thin = recover_thin(rgb, seed, prob > 0.5, width=2 * int(np.ceil(1 / scale)) + 1)
    prob[thin] = np.maximum(prob[thin], 1.0)
    return prob


# a crop at most this much larger than the working side is snapped at full resolution: resampling by 0.95-1
# loses nothing thin, yet the step that brings thin parts back after a resample (recover_thin, 5 px wide at any
# scale above 0.5) would add background texture around the object (the seat's lasso: a 323 px crop for 320)
FULL_RES_SLACK = 0.95
# recover_thin's width at the working resolutions between 0.5 and 1 (2 * ceil(1 / scale) + 1): what follow_across
# starts from at full resolution too. A fixed px width, not the formula at scale 1 (3): with 3 the coffee at
# 0.8-0.9x finds nothing to follow (review13); it is the 1x coffee's width carried over, whatever the photo's size
FULL_RES_THIN = 5


def working_scale(h: int, w: int, side: int) -> float:
    """The working resolution's scale for an h x w crop and a working side of ``side`` px (1.0: full)."""
    scale = side / max(h, w)
    return 1.0 if scale >= FULL_RES_SLACK else scale


def snap_embedded(
    rgb: np.ndarray, seed: np.ndarray, *, side: int, u2net: Callable | None, follow: int = FOLLOW_PX
) -> tuple[np.ndarray, str, dict]:
    """(probability at the crop's resolution, the candidate that won, meta with every candidate's scores)."""
    h, w = seed.shape
    scale = working_scale(h, w, side)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small = resize(rgb, size) if scale < 1.0 else rgb
    s_seed = resize(seed.astype(np.uint8), size, smooth=False) > 0 if scale < 1.0 else seed
    best, cands = choose(small, s_seed, u2net)
    meta: dict = {
        "candidates": {
            c.name: {k: round(v, 3) for k, v in c.scores.items()}
            | {"score": round(c.total, 3), "plausible": plausible(c.scores), "central": central(c.scores)}
            for c in cands
        },
        "scale": round(scale, 3),
    }
    if best is None:
        meta["fallback"] = True
        meta["why"] = (
            "no candidate passed the checks (area >= 8 % of the selection, covering <= 35 % of its inner rim, "
            "boundary on image edges): the selection is kept"
        )
        return seed.astype(np.float32), "selection", meta
    good = [c for c in cands if plausible(c.scores)]
    # when the winner reaches the selection's middle, the candidates off to the side were not in the running
    aside = [c for c in good if not central(c.scores)] if central(best.scores) else []
    # the ones the crossing check turned away (choose: uncrossed)
    crossed = found_crossing(best.scores)
    across = [c for c in good if not crossed and c.total > best.total and found_crossing(c.scores)]
    rivals = sorted((c for c in good if c is not best and c not in aside + across), key=lambda c: -c.total)
    meta["fallback"] = False
    if across:
        meta["why"] = (
            f"{best.name} {best.total:.2f}: the object without the neighbour the selection slices; passed over, "
            "running across the selection's edge: "
            + ", ".join(
                f"{c.name} {c.total:.2f} (on {c.scores['touch']:.0%} of its rim, going on outside)"
                for c in across
            )
        )
    else:
        meta["why"] = f"{best.name}: the highest score of the plausible candidates ({best.total:.2f}" + (
            f"; next {rivals[0].name} {rivals[0].total:.2f})" if rivals else "; the only one)"
        )
    passed = [c for c in aside if c.total > best.total]
    if passed:  # the neighbours the middle check turned away: a user's log shows it
        meta["why"] += "; passed over, off to the side of the selection's middle: " + ", ".join(
            f"{c.name} {c.total:.2f} (covers {c.scores['centre']:.0%})" for c in passed
        )
    prob = refine_full(rgb, seed, best.mask, scale)
    mask = prob > 0.5
    extra = other_pieces(best, cands)
    if scale < 1.0:
        extra = resize(extra.astype(np.uint8), (w, h), smooth=False) > 0
    extra &= seed & ~mask
    keep, bridges = join_pieces(rgb, seed, mask, extra)
    if bridges:
        meta["bridges"] = bridges
        added = keep & ~mask  # the winner keeps its own (soft) edge
        prob[added] = 1.0
    spurs = stray_spurs(rgb, seed, prob > 0.5)
    if spurs.any():
        # the spur and its soft edge, not the 1-2 px where it meets the object
        rest = cv2.dilate(((prob > 0.5) & ~spurs).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        prob[(cv2.dilate(spurs.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0) & ~rest] = 0.0
        meta["spurs_dropped"] = int(spurs.sum())
    mask = prob > 0.5
    # below full resolution the mask holds the thin parts recover_thin brings back (refine_full); at full
    # resolution they stay out of the mask (they would add background texture around the object, session 5),
    # but a part they lead to across the selection's edge is followed as it is below full resolution (session
    # 13: the coffee at 0.8-0.9x, snapped at full resolution, kept the reflection's hook that at 1x, snapped at
    # 0.877, goes: recover_thin takes the hook's inner half up to the lasso, and follow_across the rest)
    thin = recover_thin(rgb, seed, mask, width=FULL_RES_THIN) if scale >= 1.0 else np.zeros_like(mask)
    rest, followed = follow_across(rgb, seed, mask | thin, reach=follow)
    if followed:
        if thin.any():  # the thin parts that lead to what was followed come with it
            _, parts = cv2.connectedComponents((thin | rest).astype(np.uint8), connectivity=8)
            ids = np.unique(parts[rest])
            rest |= thin & np.isin(parts, ids[ids > 0])
        prob[rest] = 1.0
        meta["followed"] = followed
    return prob, best.name, meta


def follow_across(
    rgb: np.ndarray, seed: np.ndarray, mask: np.ndarray, reach: int = FOLLOW_PX
) -> tuple[np.ndarray, list[dict]]:
    """The rest of a part of ``mask`` that runs across the selection's edge and ends within ``reach`` px
    outside it (the spoon's reflection on a glossy cup, half inside a tight lasso: erasing half of it leaves a
    cut shape that shows where the spoon was; the whole of it goes with the spoon). Where the mask's colours go
    on outside (``crossing``), a watershed between the mask and everything beyond ``reach`` (and the
    selection's surely-not-object middle) puts the boundary on the strongest edge. What it gives the mask
    outside the selection is kept when it stops short of ``reach``, its outline there lies on image edges and
    it stays the same with the limit farther out (a part that ends on its own outline; a neighbour the
    selection slices runs on, and the watershed cuts it across where the two floods meet, which moves with the
    limit), less what has the surroundings' colours and is not enclosed by it. Either all of the part goes or
    none of it is added. A part the flood reached mostly in the surroundings' colours is flooded again from
    where the mask's colours go on just outside (session 14: the mask may stop short of the selection's edge
    behind a line of other colours). (bool HxW to add, what each part was for the meta; a part kept by that
    second flood says ``again``)"""
    none = np.zeros(seed.shape, bool)
    k3 = np.ones((3, 3), np.uint8)
    s8 = seed.astype(np.uint8)
    rim = seed & ~(cv2.erode(s8, k3, iterations=3, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0)
    # the object's own parts only: a stray sliver of a neighbour's rim the mask holds as an island of its own
    # (a loose rectangle's, beside the spoon) is a line, all of its outline on edges, and would be followed
    body = sizeable(mask)
    on = body & rim
    if reach < 2 or not on.any() or not (~seed).any():
        return none, []
    # a window around where the mask meets the selection's edge: the rest of the crop cannot change
    ys, xs = np.nonzero(on)
    pad = 2 * reach + 8
    y0, y1 = max(0, ys.min() - pad), min(seed.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(seed.shape[1], xs.max() + pad + 1)
    win = (slice(y0, y1), slice(x0, x1))
    img, sd, m = np.ascontiguousarray(rgb[win]), seed[win], mask[win]
    ring = (cv2.dilate(sd.astype(np.uint8), k3, iterations=6) > 0) & ~sd
    cut, going, _ = _going_on(img, body[win], rim[win], ring)
    if not cut.any():
        return none, []
    out_d = cv2.distanceTransform((~sd).astype(np.uint8), cv2.DIST_L2, 5)
    # the object's colours (its body away from the cut) against the surroundings' (the selection's rest and a
    # ring outside it), over the whole crop: a part followed outside is the object's, not a neighbour's
    cut_full = np.zeros(seed.shape, bool)
    cut_full[win] = cut
    body_far = body & (cv2.distanceTransform((~cut_full).astype(np.uint8), cv2.DIST_L2, 5) > reach)
    ring_full = (cv2.dilate(s8, k3, iterations=4) > 0) & ~seed
    own_colour = _colour_ratio(rgb, body_far, (seed & ~mask) | ring_full)[win] if body_far.any() else None
    inside = sd & ~(cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0)
    # the part's own colours (the mask within ``reach`` of the cut) against the surroundings just beyond reach
    to_cut = cv2.distanceTransform((~cut).astype(np.uint8), cv2.DIST_L2, 5)
    own = m & (to_cut <= reach)
    beyond = ~sd & (out_d > reach) & (out_d <= reach + 6) & (to_cut <= 3 * reach)
    ratio = _colour_ratio(img, own, beyond) if beyond.any() else np.ones(sd.shape, np.float32)
    near = cv2.dilate(cut.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    e = edge_map(img)
    e /= max(float(np.percentile(e[sd], 90)), 1e-6)
    e = cv2.dilate(e, k3)  # a watershed line lies beside the edge's ridge
    beside_sel = cv2.dilate(sd.astype(np.uint8), k3) > 0

    def judged(start: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, dict]]:
        """What the flood from ``start`` gives each cut part outside: (part, what of it goes, its record)."""
        got = _flooded(img, sd, start, inside, out_d > reach)
        # the same with the limit FOLLOW_SHIFT px farther out: a part that ends on its own outline stays where it
        # is; where the watershed line only marks where the two floods met (texture, fur, a band running on), it
        # moves
        farther = _flooded(img, sd, start, inside, out_d > reach + FOLLOW_SHIFT)
        n, parts = cv2.connectedComponents(got.astype(np.uint8), connectivity=8)
        if n <= 1:
            return []
        _, parts_far = cv2.connectedComponents(farther.astype(np.uint8), connectivity=8)
        out = []
        for i in np.unique(parts[near & got]):
            part = parts == i
            far = float(out_d[part].max())
            line = _outline(part) & ~beside_sel
            ends = float((e[line] >= MIN_EDGE).mean()) if line.any() else 0.0
            ids = np.unique(parts_far[part & farther])
            moved = np.isin(parts_far, ids[ids > 0])
            stays = float((part & moved).sum() / (part | moved).sum())
            # the watershed's line may sit on a stronger edge of the surroundings beyond the part's own outline
            # (a band of the cup's shading above the reflection): what has the surroundings' colours and is not
            # enclosed by the part goes back
            alike = part & (ratio >= 0.5)
            _, joined = cv2.connectedComponents((alike | (m & sd)).astype(np.uint8), connectivity=8)
            ids = np.unique(joined[cut])
            whole = _filled(np.isin(joined, ids[ids > 0]) & part | m) & part
            share = float(whole.sum() / part.sum())
            colour = float(own_colour[whole].mean()) if own_colour is not None and whole.any() else 0.0
            ok = (
                far < reach - 1
                and stays >= MIN_FOLLOW_STAYS
                and ends >= MIN_FOLLOW_EDGE
                and share >= MIN_FOLLOW_SHARE
                and colour >= MIN_FOLLOW_COLOUR
            )
            record = {
                "px": int(whole.sum()),
                "reach": round(far, 1),
                "stays": round(stays, 2),
                "on_edges": round(ends, 2),
                "share": round(share, 2),
                "colour": round(colour, 2),
                "kept": ok,
            }
            out.append((part, whole if ok else np.zeros_like(whole), record))
        return out

    first = judged(m)
    add = np.logical_or.reduce([w for _, w, _ in first]) if first else np.zeros(sd.shape, bool)
    info = [r for _, _, r in first]
    # a part the flood from the mask reached but that is mostly not the object's colours (MIN_FOLLOW_SHARE: the
    # flood took the surroundings' px, not the part's): again with the flood also started from the px just
    # outside that go on with the mask's colours where it is cut (``going``). GrabCut, with the outside sure
    # background, keeps a part that runs on outside back from the selection's edge where the outside has its
    # colours (the smoothness term): with the README lasso 4 px tighter the mask's last px at the spoon's
    # reflection were the hook's dark lower rim, 1-3 px short of the lasso, the surroundings' flood took the
    # hook's inside over its outline's weaker step (share 0.15) and the glint by the cup's handle stayed
    # (snap14). A part that fails on its outline (not ending on edges, moving with the limit, too far: a
    # neighbour running on) gets no second flood; the checks are the same, and what the first flood kept stays.
    failed = [p for p, _, r in first if not r["kept"] and r["share"] < MIN_FOLLOW_SHARE]
    if failed and going.any():  # (``going`` lies outside the selection: the ring)
        lost = np.logical_or.reduce(failed)
        for part, whole, record in judged(m | going):
            if record["kept"] and (part & lost).any() and not (part & add).any():
                add |= whole
                info.append(record | {"again": True})
    out = none.copy()
    out[win] = add
    return out, info


def _flooded(
    img: np.ndarray, seed: np.ndarray, mask: np.ndarray, inside: np.ndarray, beyond: np.ndarray
) -> np.ndarray:
    """What a watershed between ``mask`` and the ``inside`` and ``beyond`` markers gives the mask outside
    ``seed`` (follow_across). bool HxW."""
    markers = np.zeros(seed.shape, np.int32)
    markers[(~seed & beyond) | inside] = 1
    markers[mask] = 2
    cv2.watershed(img, markers)
    return (markers == 2) & ~seed


# a spur is thinner than SPUR_WIDTH px (an opening of that size removes it) and covers at least 4 x SPUR_WIDTH px
# (a 2 px line 14 px long: the few px an opening shaves off an outline's corner are not one); it is dropped when
# its colours are the surroundings' more than the object's (mean colour ratio under MAX_SPUR_RATIO)
SPUR_WIDTH = 7
MAX_SPUR_RATIO = 0.5


def stray_spurs(rgb: np.ndarray, seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Thin spurs of ``mask`` that belong to another surface: parts narrower than SPUR_WIDTH that hang off one
    wide piece only (a handle between two pieces joins two, and stays) and whose colours are the
    surroundings' rather than the wide pieces' (``_colour_ratio``). A rough box's winner picked up the bright
    rim of the saucer beside the spoon's tip, and the erase broke the saucer's rim there. bool HxW."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (SPUR_WIDTH, SPUR_WIDTH))
    wide = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, k) > 0
    thin = mask & ~wide
    out = np.zeros(mask.shape, bool)
    if not wide.any() or not thin.any():
        return out  # an object thin all over (a pole, a wire) has no body to hang off
    _, pieces = cv2.connectedComponents(wide.astype(np.uint8), connectivity=8)
    n, parts, stats, _ = cv2.connectedComponentsWithStats(thin.astype(np.uint8), connectivity=8)
    ring = (cv2.dilate(seed.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=4) > 0) & ~seed
    ratio = _colour_ratio(rgb, wide, (seed & ~mask) | ring)
    k3 = np.ones((3, 3), np.uint8)
    h, w = mask.shape
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < 4 * SPUR_WIDTH:
            continue
        # the part's box and the 1 px its 3x3 dilation reaches: what the whole crop gave, without a pass over
        # the crop per part (a loose selection's winner has hundreds of specks; speed10)
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        win = np.s_[max(0, y - 1) : min(h, y + bh + 1), max(0, x - 1) : min(w, x + bw + 1)]
        part = parts[win] == i
        touches = np.unique(pieces[win][(cv2.dilate(part.astype(np.uint8), k3) > 0) & wide[win]])
        if len(touches) == 1 and float(ratio[win][part].mean()) < MAX_SPUR_RATIO:
            out[win] |= part
    return out
