"""Image completion by PatchMatch: the embedded erase fill that continues texture and straight structure.

Diffusion-style fills (Telea, Navier-Stokes) smear the rim's colours inward: a saucer's rim becomes a brown
ghost, wood grain a blur. Patch-based completion (Wexler, Shechtman & Irani 2007, "Space-time completion of
video") instead rebuilds the hole from whole patches of real background, which is what Content-Aware Fill and
GIMP's Resynthesizer do:

- every patch that overlaps the hole gets its nearest neighbour among the fully known patches, found with
  PatchMatch (Barnes et al. 2009: random initialisation, propagation from the scan-order neighbours, random
  search at halving radii);
- each hole pixel becomes the weighted vote of the source pixels that those patches put on it: weights fall
  with depth into the hole (confidence: what is known at the rim decides, what was guessed deep inside follows)
  and with a patch's distance relative to the best patch covering the pixel (so the vote copies the best
  matches instead of averaging all of them into blur);
- the two steps alternate (an EM-like loop), coarse to fine: at the coarsest level the hole is a few pixels thick
  and large structures (a table edge, a horizon) are placed; finer levels inherit the nearest-neighbour field
  (offsets doubled) and only refine, so texture comes from copied pixels, never from resampling;
- optionally (``complete(meld=True)``), at the finest level each vote is rebuilt in the gradient domain
  (Image Melding, Darabi et al. 2012): the patches also vote their steps between neighbouring pixels, and a
  screened Poisson solve pinned to the real border turns them back into colours, so copies from different
  places no longer meet in hard seams or in blocks of a different brightness, while each copy's texture (its
  steps) stays.

Sources are restricted to a band of known pixels around the hole (``band``), not the whole photo: background
far from the object is less likely to belong there, and the search stays proportional to the hole. Everything
is deterministic for a given ``seed`` (the search runs on one thread with numba's seeded generator; the melding
vote runs on numba's threads, each pixel's sums in their own order, so any thread count gives the same bytes).

numba compiles the kernels once per machine (``cache=True`` keeps them in ``__pycache__``); ``warm_up()`` runs a
tiny completion so the backend pays the compile at start, not on the user's first erase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numba
import numpy as np
from numba import njit, prange

from backend.imaging import membrane


def _threadsafe_layer() -> bool:
    """Whether numba has a threading layer that may start parallel kernels from several threads at once (TBB or
    OpenMP). Its fallback, workqueue, aborts the process when two threads start one together, and the backend
    runs ops on worker threads while its warm-up thread may still run: without a safe layer (no libgomp, macOS
    without libomp) the kernels stay serial. GNU OpenMP is not fork-safe: the backend starts no child by fork
    alone (subprocess execs at once)."""
    import importlib

    for pool in ("tbbpool", "omppool"):
        try:
            importlib.import_module(f"numba.np.ufunc.{pool}")
        except (ImportError, OSError):
            continue
        return True
    return False


# the melding vote (_vote_with_steps: one call per completion, ~0.22 s serial on the 600 px speed scene) uses
# numba's threads where that is safe; when numba would pick its layer itself it may only pick a thread-safe one.
# _vote and _distances stay serial: ~60 calls of ~1-2 ms each, where a launch's overhead and OpenMP's
# spin-waiting cost more CPU than the second thread saves (bench/erase_fill.py, Day 9 speed)
PARALLEL = _threadsafe_layer()
if PARALLEL and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "threadsafe"

# ---- kernels ----------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _patch_dist(img, conf, ty, tx, sy, sx, r, limit):  # pragma: no cover - compiled
    """SSD between the patches centred at (ty, tx) and (sy, sx), each target pixel weighted by its confidence
    (1 where known, fading inside the hole), stopping once it exceeds ``limit``. Channels after the third are
    guide channels (``complete(guide=...)``): defined in the hole too, so they count with weight 1.

    Target pixels outside the image are skipped (a patch at the border is partial); sources are always whole."""
    h, w, channels = img.shape[0], img.shape[1], img.shape[2]
    total = 0.0
    for dy in range(-r, r + 1):
        y = ty + dy
        if y < 0 or y >= h:
            continue
        for dx in range(-r, r + 1):
            x = tx + dx
            if x < 0 or x >= w:
                continue
            acc = 0.0
            for c in range(3):
                d = img[y, x, c] - img[sy + dy, sx + dx, c]
                acc += d * d
            total += conf[y, x] * acc
            if channels == 5:  # the structure guide's two channels, spelled out: the hot loop's usual case
                d = img[y, x, 3] - img[sy + dy, sx + dx, 3]
                total += d * d
                d = img[y, x, 4] - img[sy + dy, sx + dx, 4]
                total += d * d
            else:
                for c in range(3, channels):  # guide channels (structure labels): known everywhere, weight 1
                    d = img[y, x, c] - img[sy + dy, sx + dx, c]
                    total += d * d
        if total > limit:
            return total
    return total


@njit(cache=True, nogil=True)
def _init_nnf(ty, tx, valid_y, valid_x, nnf, seed):  # pragma: no cover - compiled
    """Random valid source for every target (the coarsest level only)."""
    np.random.seed(seed)
    n = valid_y.shape[0]
    for i in range(ty.shape[0]):
        k = np.random.randint(0, n)
        nnf[ty[i], tx[i], 0] = valid_y[k]
        nnf[ty[i], tx[i], 1] = valid_x[k]


@njit(cache=True, nogil=True)
def _coherent(nnf, is_target, y, x, cy, cx):  # pragma: no cover - compiled
    """Whether the source (cy, cx) continues a 4-neighbour's copy (that neighbour's source, shifted by the same
    step as the target)."""
    h, w = is_target.shape
    for k in range(4):
        ny, nx = (y, x - 1) if k == 0 else (y, x + 1) if k == 1 else (y - 1, x) if k == 2 else (y + 1, x)
        if 0 <= ny < h and 0 <= nx < w and is_target[ny, nx]:
            if nnf[ny, nx, 0] + (y - ny) == cy and nnf[ny, nx, 1] + (x - nx) == cx:
                return True
    return False


@njit(cache=True, nogil=True)
def _biased_dist(img, conf, nnf, is_target, y, x, cy, cx, r, best, coherence):  # pragma: no cover - compiled
    """A candidate source's true patch distance and the one compared with ``best``: x (1 - ``coherence``) when it
    continues a neighbour's copy (``_patchmatch``'s coherence bias), so a copy is broken only for a clearly
    better patch."""
    f = 1.0
    if coherence > 0 and _coherent(nnf, is_target, y, x, cy, cx):
        f = 1.0 - coherence
    d = _patch_dist(img, conf, y, x, cy, cx, r, best / f)
    return d, d * f


# how many whole periods either way a target is moved along each dominant offset (``_patchmatch``'s ``shifts``):
# a hole a few tiles wide still reaches known tiles from its middle
SHIFT_REPEATS = 3
NO_SHIFTS = np.zeros((0, 2))  # no dominant offsets (``_patchmatch``'s default)


@njit(cache=True, nogil=True)
def _patchmatch(
    img,
    conf,
    ty,
    tx,
    is_target,
    valid,
    nnf,
    dist,
    r,
    iters,
    seed,
    max_radius,
    coherence,
    busy=None,
    limit=None,
    shifts=NO_SHIFTS,
):  # pragma: no cover
    """PatchMatch over the targets (given in raster order), ``dist`` holding each one's distance to its source
    for the current image (``_distances``): ``iters`` passes of propagation and random search (radius halving from ``max_radius``), alternating scan
    direction.

    ``coherence`` (Ashikhmin 2001's coherence bias): a source that continues a neighbour's copy is judged by
    (1 - coherence) x its distance, so a copy is broken only for a clearly better patch. Neighbouring targets
    then keep copying from one place, and the vote (each pixel the blend of the patches covering it) blends
    agreeing copies, not a mosaic of near-equal ones that averages into smudges. ``dist`` keeps the true
    distance: the vote weighs likeness, not the bias.

    ``busy`` / ``limit`` (HxW float32, or None): a source centre whose ``busy`` exceeds the target's ``limit``
    is not taken (``_surface_detail``: a surface busier than the target's own); a current one that does is
    replaced by any allowed source.

    ``shifts`` (Nx2 float64; 0x2: none): the surround's dominant offsets at this level (``_dominant_offsets``): the
    target's own position moved by k x each offset (|k| <= ``SHIFT_REPEATS``, rounded) is one more candidate,
    so a regular texture (tiles, brick, a fence) can be copied whole at its own period (He & Sun 2012); the
    patch distance decides, as for every candidate."""
    np.random.seed(seed)
    h, w = img.shape[0], img.shape[1]
    n = ty.shape[0]
    n_shifts = shifts.shape[0]
    for it in range(iters):
        step = 1 if it % 2 == 0 else -1
        for j in range(n):
            i = j if step == 1 else n - 1 - j
            y, x = ty[i], tx[i]
            by, bx = nnf[y, x, 0], nnf[y, x, 1]
            raw = dist[y, x]  # the chosen source's true distance; ``best`` is the biased one compared
            best = raw
            if coherence > 0 and _coherent(nnf, is_target, y, x, by, bx):
                best = raw * (1.0 - coherence)
            cap = 1e30 if limit is None else limit[y, x]
            if busy is not None and busy[by, bx] > cap:  # a source busier than the target's surface allows
                best = 1e300
            # propagation: the scan-order neighbours' sources, shifted by one pixel
            for k in range(2):
                ny, nx = (y, x - step) if k == 0 else (y - step, x)
                if ny < 0 or ny >= h or nx < 0 or nx >= w or not is_target[ny, nx]:
                    continue
                cy = nnf[ny, nx, 0] + (y - ny)
                cx = nnf[ny, nx, 1] + (x - nx)
                if cy < 0 or cy >= h or cx < 0 or cx >= w or not valid[cy, cx]:
                    continue
                if cy == by and cx == bx:
                    continue
                if busy is not None and busy[cy, cx] > cap:
                    continue
                f = 1.0 - coherence  # a propagated source continues that neighbour's copy by construction
                d = _patch_dist(img, conf, y, x, cy, cx, r, best / f)
                if d * f < best:
                    best, raw, by, bx = d * f, d, cy, cx
            # the texture's own period: the target moved by whole periods of the surround's dominant offsets
            for s in range(n_shifts):
                for k in range(-SHIFT_REPEATS, SHIFT_REPEATS + 1):
                    if k == 0:
                        continue
                    fy, fx = k * shifts[s, 0], k * shifts[s, 1]
                    if abs(fy - np.rint(fy)) > 0.25 or abs(fx - np.rint(fx)) > 0.25:
                        continue  # a period of 7.5 px at a coarse level: only its even multiples land in phase
                    cy = y + int(np.rint(fy))
                    cx = x + int(np.rint(fx))
                    if cy < 0 or cy >= h or cx < 0 or cx >= w or not valid[cy, cx]:
                        continue
                    if (cy == by and cx == bx) or (busy is not None and busy[cy, cx] > cap):
                        continue
                    d, biased = _biased_dist(img, conf, nnf, is_target, y, x, cy, cx, r, best, coherence)
                    if biased < best:
                        best, raw, by, bx = biased, d, cy, cx
            # random search around the best, radius halving from the whole image down to one pixel
            radius = min(max(h, w), max_radius)
            while radius >= 1:
                cy = by + np.random.randint(-radius, radius + 1)
                cx = bx + np.random.randint(-radius, radius + 1)
                if 0 <= cy < h and 0 <= cx < w and valid[cy, cx] and (busy is None or busy[cy, cx] <= cap):
                    d, biased = _biased_dist(img, conf, nnf, is_target, y, x, cy, cx, r, best, coherence)
                    if biased < best:
                        best, raw, by, bx = biased, d, cy, cx
                radius //= 2
            nnf[y, x, 0], nnf[y, x, 1] = by, bx
            dist[y, x] = raw


@njit(cache=True, nogil=True)
def _distances(img, conf, ty, tx, nnf, dist, r):  # pragma: no cover - compiled
    """Each target's distance to its current source."""
    for i in range(ty.shape[0]):
        y, x = ty[i], tx[i]
        dist[y, x] = _patch_dist(img, conf, y, x, nnf[y, x, 0], nnf[y, x, 1], r, 1e30)


# a patch whose similarity weight exp(-(d - d_best) / scale) is below exp(-VOTE_CUT) is left out of the vote
# (``_vote``, ``_vote_with_steps``) instead of being computed and added (the exp and the source reads were most of
# the vote's time). Against the best covering patch (weight conf, >= 1e-4) a skipped one weighs at most
# 1e4 x exp(-32) ~ 1.3e-10 of the total, at most ~1.6e-6 of a level for 49 patches of 255 levels: measured byte-identical
# on the 600 px speed scene's crop and the coffee (4 option sets each); _vote_with_steps -19 %, _vote -21 %
VOTE_CUT = 32.0


@njit(cache=True, nogil=True)
def _per_sample(py, px, is_target, dist, weight_sum, r):  # pragma: no cover - compiled
    """Each target patch's distance per sample, dist / (weight_sum * 3), for every patch that covers one of
    the pixels (py, px) (the target pixels in their box grown by ``r``; the rest of the array is never read):
    the votes read it instead of dividing again for every pixel a patch covers, twice. The same float64
    division, so the same bytes (speed9's idea, shipped by speed10: on the speed scene's calls _vote 67 -> 56 ms,
    _vote_with_steps 218 -> 189 ms CPU on one thread)."""
    h, w = is_target.shape
    nd = np.empty((h, w), np.float64)
    if py.shape[0] == 0:
        return nd
    y0, y1, x0, x1 = h, -1, w, -1
    for i in range(py.shape[0]):
        y0, y1 = min(y0, py[i]), max(y1, py[i])
        x0, x1 = min(x0, px[i]), max(x1, px[i])
    y0, x0 = max(y0 - r, 0), max(x0 - r, 0)
    y1, x1 = min(y1 + r + 1, h), min(x1 + r + 1, w)
    for y in range(y0, y1):
        for x in range(x0, x1):
            if is_target[y, x]:
                nd[y, x] = dist[y, x] / (weight_sum[y, x] * 3)
    return nd


@njit(cache=True, nogil=True)
def _vote(
    img, conf, weight_sum, hy, hx, is_target, nnf, dist, r, sharp, floor
):  # pragma: no cover - compiled
    """New values of the hole pixels: every target patch covering a pixel votes the source pixel it puts there,
    weighted by its confidence (patches anchored on known pixels count most: Wexler et al.) and its similarity
    exp(-(d - d_best) / (sharp * d_best)), d being the patch's confidence-weighted mean squared difference per
    sample and d_best the best d among the patches covering the pixel. Relative to the best: a poor match
    everywhere (texture against a blurry first guess) must still pick the best patches, not average them all
    (blur); a small ``sharp`` keeps only patches about as good as the best. Three channels."""
    h, w = img.shape[0], img.shape[1]
    nd = _per_sample(hy, hx, is_target, dist, weight_sum, r)
    out = np.empty((hy.shape[0], 3), np.float32)
    for i in range(hy.shape[0]):
        y, x = hy[i], hx[i]
        best = 1e300
        for dy in range(-r, r + 1):
            qy = y - dy
            if qy < 0 or qy >= h:
                continue
            for dx in range(-r, r + 1):
                qx = x - dx
                if qx < 0 or qx >= w or not is_target[qy, qx]:
                    continue
                d = nd[qy, qx]
                if d < best:
                    best = d
        scale = max(sharp * best, floor)
        a0 = a1 = a2 = 0.0
        total = 0.0
        for dy in range(-r, r + 1):
            qy = y - dy
            if qy < 0 or qy >= h:
                continue
            for dx in range(-r, r + 1):
                qx = x - dx
                if qx < 0 or qx >= w or not is_target[qy, qx]:
                    continue
                d = nd[qy, qx]
                if (d - best) / scale > VOTE_CUT:
                    continue  # its weight would round away against the best patch's (see VOTE_CUT)
                sy = nnf[qy, qx, 0] + dy
                sx = nnf[qy, qx, 1] + dx
                wgt = conf[qy, qx] * np.exp(-(d - best) / scale)
                a0 += wgt * img[sy, sx, 0]
                a1 += wgt * img[sy, sx, 1]
                a2 += wgt * img[sy, sx, 2]
                total += wgt
        if total > 0:
            out[i, 0], out[i, 1], out[i, 2] = a0 / total, a1 / total, a2 / total
        else:
            out[i, 0], out[i, 1], out[i, 2] = img[y, x, 0], img[y, x, 1], img[y, x, 2]
    return out


@njit(cache=True, nogil=True, parallel=PARALLEL)
def _vote_with_steps(
    img, conf, weight_sum, py, px, is_target, nnf, dist, r, sharp, floor
):  # pragma: no cover - compiled
    """``_vote`` for the pixels (py, px), and with it the voted steps (Image Melding, Darabi et al. 2012):
    steps[i, a] is what the patches say the step from the pixel to its next one along axis a (0: down,
    1: right) is. Every target patch covering both pixels votes the difference between the two source pixels
    it puts there (both inside one real patch, so the step is real), weighted as ``_vote`` weighs colours but
    relative to the best patch covering both; where two copies meet no patch spans the seam from both sides,
    so the voted steps carry no seam. One pass, and one exp per patch where the best patch covering the pixel
    covers its neighbour too (the usual case). A step no patch votes for is the current one. Pixels run on
    numba's threads (``PARALLEL``): each writes only its own row."""
    h, w = img.shape[0], img.shape[1]
    nd = _per_sample(py, px, is_target, dist, weight_sum, r)
    colours = np.empty((py.shape[0], 3), np.float32)
    steps = np.zeros((py.shape[0], 2, 3), np.float32)
    for i in prange(py.shape[0]):
        y, x = py[i], px[i]
        best = best_y = best_x = 1e300
        for dy in range(-r, r + 1):
            qy = y - dy
            if qy < 0 or qy >= h:
                continue
            for dx in range(-r, r + 1):
                qx = x - dx
                if qx < 0 or qx >= w or not is_target[qy, qx]:
                    continue
                d = nd[qy, qx]
                best = min(best, d)
                if dy < r:
                    best_y = min(best_y, d)
                if dx < r:
                    best_x = min(best_x, d)
        scale = max(sharp * best, floor)
        scale_y = max(sharp * best_y, floor)
        scale_x = max(sharp * best_x, floor)
        a0 = a1 = a2 = 0.0
        total = 0.0
        gy0 = gy1 = gy2 = gx0 = gx1 = gx2 = 0.0
        ty = tx = 0.0
        for dy in range(-r, r + 1):
            qy = y - dy
            if qy < 0 or qy >= h:
                continue
            for dx in range(-r, r + 1):
                qx = x - dx
                if qx < 0 or qx >= w or not is_target[qy, qx]:
                    continue
                d = nd[qy, qx]
                far = (d - best) / scale > VOTE_CUT  # the colour's weight, and each step's, negligible
                if far and dy < r:
                    far = (d - best_y) / scale_y > VOTE_CUT
                if far and dx < r:
                    far = (d - best_x) / scale_x > VOTE_CUT
                if far:
                    continue
                wgt = conf[qy, qx] * np.exp(-(d - best) / scale)
                sy = nnf[qy, qx, 0] + dy
                sx = nnf[qy, qx, 1] + dx
                a0 += wgt * img[sy, sx, 0]
                a1 += wgt * img[sy, sx, 1]
                a2 += wgt * img[sy, sx, 2]
                total += wgt
                if dy < r:  # the patch covers the pixel below too
                    wy = wgt if best_y == best else conf[qy, qx] * np.exp(-(d - best_y) / scale_y)
                    gy0 += wy * (img[sy + 1, sx, 0] - img[sy, sx, 0])
                    gy1 += wy * (img[sy + 1, sx, 1] - img[sy, sx, 1])
                    gy2 += wy * (img[sy + 1, sx, 2] - img[sy, sx, 2])
                    ty += wy
                if dx < r:  # and the pixel to the right
                    wx = wgt if best_x == best else conf[qy, qx] * np.exp(-(d - best_x) / scale_x)
                    gx0 += wx * (img[sy, sx + 1, 0] - img[sy, sx, 0])
                    gx1 += wx * (img[sy, sx + 1, 1] - img[sy, sx, 1])
                    gx2 += wx * (img[sy, sx + 1, 2] - img[sy, sx, 2])
                    tx += wx
        if total > 0:
            colours[i, 0], colours[i, 1], colours[i, 2] = a0 / total, a1 / total, a2 / total
        else:
            colours[i, 0], colours[i, 1], colours[i, 2] = img[y, x, 0], img[y, x, 1], img[y, x, 2]
        if ty > 0:
            steps[i, 0, 0], steps[i, 0, 1], steps[i, 0, 2] = gy0 / ty, gy1 / ty, gy2 / ty
        elif y + 1 < h:
            for c in range(3):
                steps[i, 0, c] = img[y + 1, x, c] - img[y, x, c]
        if tx > 0:
            steps[i, 1, 0], steps[i, 1, 1], steps[i, 1, 2] = gx0 / tx, gx1 / tx, gx2 / tx
        elif x + 1 < w:
            for c in range(3):
                steps[i, 1, c] = img[y, x + 1, c] - img[y, x, c]
    return colours, steps


@njit(cache=True, nogil=True)
def _sor(e, hy, hx, fy, fx, lam, omega, sweeps):  # pragma: no cover - compiled
    """Successive over-relaxation of the screened Poisson equation for the correction ``e`` (HxWx3) on the
    pixels (fy, fx): minimises lam_p e_p^2 (``lam`` HxW) + sum over each pixel's edges of (e_q - e_p - h_pq)^2,
    ``hy``/``hx``
    holding h for the edge from each pixel to the one below / right of it; e stays 0 elsewhere (Dirichlet:
    the real pixels). The box's own border has no edge beyond it (Neumann)."""
    h, w = e.shape[0], e.shape[1]
    for _ in range(sweeps):
        for i in range(fy.shape[0]):
            y, x = fy[i], fx[i]
            for c in range(3):
                s = 0.0
                deg = lam[y, x]
                if x + 1 < w:
                    s += e[y, x + 1, c] - hx[y, x, c]
                    deg += 1.0
                if x > 0:
                    s += e[y, x - 1, c] + hx[y, x - 1, c]
                    deg += 1.0
                if y + 1 < h:
                    s += e[y + 1, x, c] - hy[y, x, c]
                    deg += 1.0
                if y > 0:
                    s += e[y - 1, x, c] + hy[y - 1, x, c]
                    deg += 1.0
                e[y, x, c] += omega * (s / deg - e[y, x, c])


@njit(cache=True, nogil=True)
def _upsample_nnf(
    coarse, fine_ty, fine_tx, valid, valid_y, valid_x, nnf, seed
):  # pragma: no cover - compiled
    """Fine targets inherit their coarse parent's source (offset doubled, sub-pixel phase kept); a source that is
    not valid at the fine level falls back to a random valid one (PatchMatch repairs it)."""
    np.random.seed(seed)
    ch, cw = coarse.shape[0], coarse.shape[1]
    h, w = valid.shape
    n = valid_y.shape[0]
    for i in range(fine_ty.shape[0]):
        y, x = fine_ty[i], fine_tx[i]
        py, px = min(y // 2, ch - 1), min(x // 2, cw - 1)
        sy = coarse[py, px, 0] * 2 + (y - py * 2)
        sx = coarse[py, px, 1] * 2 + (x - px * 2)
        if sy < 0 or sy >= h or sx < 0 or sx >= w or not valid[sy, sx]:
            k = np.random.randint(0, n)
            sy, sx = valid_y[k], valid_x[k]
        nnf[y, x, 0] = sy
        nnf[y, x, 1] = sx


# ---- the algorithm ----------------------------------------------------------------------------------------


class NoSource(ValueError):
    """No whole patch of known pixels lies near the hole: nothing to copy from at this patch size."""


@dataclass
class _Level:
    img: np.ndarray  # HxWx3 float32, 0..255; hole pixels hold the current estimate
    hole: np.ndarray  # HxW bool
    band: np.ndarray  # HxW bool: known pixels close enough to the hole to lend patches
    hint: np.ndarray  # HxW bool, inside the hole: real colours kept and matched, never invented nor a source


def _downsample(img: np.ndarray, hole: np.ndarray, band: np.ndarray, hint: np.ndarray) -> _Level:
    """Half size. Known pixels average only known (or hinted) fine pixels (the object's colours must not bleed
    into the background at coarse levels); a coarse pixel with any missing fine pixel is missing, and hinted
    when all of its fine pixels are known or hinted."""
    h, w = hole.shape
    size = ((w + 1) // 2, (h + 1) // 2)
    real = (~hole | hint).astype(np.float32)
    num = cv2.resize(img[:, :, :3] * real[:, :, None], size, interpolation=cv2.INTER_AREA)
    den_real = cv2.resize(real, size, interpolation=cv2.INTER_AREA)
    den = cv2.resize((~hole).astype(np.float32), size, interpolation=cv2.INTER_AREA)
    small = num / np.maximum(den_real, 1e-6)[:, :, None]
    if img.shape[2] > 3:  # guide channels are known in the hole too: a plain average (OpenCV: <= 4 at once)
        guide = [
            cv2.resize(np.ascontiguousarray(img[:, :, c : c + 1]), size, interpolation=cv2.INTER_AREA)
            for c in range(3, img.shape[2])
        ]
        small = np.dstack([small, *guide])
    small_hole = den < 0.999
    small_band = cv2.resize(band.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    small_hint = small_hole & (den_real >= 0.999)
    return _Level(small.astype(np.float32), small_hole, small_band & ~small_hole, small_hint)


def _targets(hole: np.ndarray, r: int) -> np.ndarray:
    """Pixels whose (2r+1)^2 patch overlaps the hole."""
    return cv2.dilate(hole.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0


def _valid_sources(hole: np.ndarray, band: np.ndarray, r: int) -> np.ndarray:
    """Centres whose whole patch lies inside the image and on known pixels, and that lie in the band."""
    h, w = hole.shape
    known = (~hole).astype(np.uint8)
    whole = (
        cv2.erode(
            known, np.ones((2 * r + 1, 2 * r + 1), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
        )
        > 0
    )
    valid = whole & band
    valid[:r, :] = valid[h - r :, :] = False
    valid[:, :r] = valid[:, w - r :] = False
    return valid


# ``complete(periodic=...)``: the surround's dominant offsets (He & Sun 2012, "Statistics of Patch Offsets for Image
# Completion": a regular texture is best completed by copies of itself at its own period), found as the sharp peaks
# of the known band's normalised autocorrelation
PERIOD_SIGMA = 4.0  # px: the band's luma minus its Gaussian (shading and slow gradients correlate everywhere)
PERIOD_SIDE = 320  # px: the autocorrelation runs on the band's box halved until its long side is at most this
PERIOD_OVERLAP = 0.25  # an offset counts only where the band overlaps its shifted self by this fraction
PERIOD_DROP = 0.25  # a peak must fall by this much a few px along its own direction (a ridge is not a period)
# levels RMS: a pattern fainter than this (a quantised ramp, JPEG's blocks, sensor noise) is none
PERIOD_FLOOR = 3.0
PERIOD_NEAR = 0.15  # peaks this close to the highest one count alike; the shortest few are offered
PERIOD_COUNT = 4


def _dominant_offsets(rgb: np.ndarray, known: np.ndarray, patch: int, least: float) -> np.ndarray:
    """The dominant offsets (Nx2 float64, dy dx, full resolution; 0x2: none) of the texture on the ``known``
    pixels: the shortest sharp peaks of its masked normalised autocorrelation (Padfield's masked correlation by
    FFT) at least ``least`` high and at least a patch long. Sharp: the correlation falls by ``PERIOD_DROP`` a few
    px along the offset either way, so a stripe's or a horizon's direction (a ridge: any shift along it matches)
    and smooth or random surfaces (grass, a face, the coffee: no peak that high) give none."""
    none = np.zeros((0, 2), np.float64)
    ys, xs = np.nonzero(known)
    if ys.size < 4 * patch * patch:
        return none
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    luma = rgb[y0:y1, x0:x1, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    m = known[y0:y1, x0:x1].astype(np.float32)
    factor = 1
    while max(m.shape) > PERIOD_SIDE * factor:
        factor *= 2
    if factor > 1:
        size = (max(1, m.shape[1] // factor), max(1, m.shape[0] // factor))
        luma = cv2.resize(luma * m, size, interpolation=cv2.INTER_AREA)
        cover = cv2.resize(m, size, interpolation=cv2.INTER_AREA)
        m = (cover >= 0.999).astype(np.float32)
        luma = luma / np.maximum(cover, 1e-6)
    sigma = PERIOD_SIGMA / factor
    num = cv2.GaussianBlur(luma * m, (0, 0), sigma)
    den = np.maximum(cv2.GaussianBlur(m, (0, 0), sigma), 1e-6)
    f = (luma - num / den) * m
    h, w = f.shape
    size2 = (cv2.getOptimalDFTSize(2 * h), cv2.getOptimalDFTSize(2 * w))
    ff, fm, fe = (np.fft.rfft2(a, size2) for a in (f, m, f * f))
    auto = np.fft.irfft2(ff * np.conj(ff), size2)
    overlap = np.fft.irfft2(fm * np.conj(fm), size2)
    # the energy of f over the overlap at +d (at -d: the flipped one's)
    energy = np.fft.irfft2(fe * np.conj(fm), size2)
    flipped = np.roll(energy[::-1, ::-1], (1, 1), axis=(0, 1))
    # normalised, with a floor: a faint pattern correlates as well as a strong one once divided by its energy
    floor = np.maximum(overlap, 0.0) * PERIOD_FLOOR**2
    ncc = np.fft.fftshift(auto / (np.sqrt(np.maximum(energy * flipped, 0.0)) + floor + 1e-9))
    overlap = np.fft.fftshift(overlap)
    cy, cx = size2[0] // 2, size2[1] // 2
    dy, dx = np.mgrid[-cy : size2[0] - cy, -cx : size2[1] - cx]
    length = np.hypot(dy, dx)
    ok = (
        (overlap >= PERIOD_OVERLAP * m.sum())
        & (length >= patch / factor)
        & ((dy > 0) | ((dy == 0) & (dx > 0)))
    )
    score = np.where(ok, ncc, -1.0)
    peak = (score >= least) & (score == cv2.dilate(score, np.ones((5, 5), np.uint8)))
    found = []
    for py, px in zip(*np.nonzero(peak), strict=True):
        v, d = score[py, px], length[py, px]
        step = max(2.0, 0.1 * d)
        uy, ux = dy[py, px] / d * step, dx[py, px] / d * step
        side = []
        for sgn in (-1, 1):
            qy, qx = int(round(py + sgn * uy)), int(round(px + sgn * ux))
            side.append(ncc[qy, qx] if 0 <= qy < ncc.shape[0] and 0 <= qx < ncc.shape[1] else -1.0)
        if v - max(side) < PERIOD_DROP:
            continue
        # sub-pixel position: a parabola through the peak and its neighbours along each axis
        sub = [float(dy[py, px]), float(dx[py, px])]
        for axis, (a, b) in enumerate(
            ((ncc[py - 1, px], ncc[py + 1, px]), (ncc[py, px - 1], ncc[py, px + 1]))
        ):
            curve = a - 2 * v + b
            if curve < 0:
                sub[axis] += float(np.clip(0.5 * (a - b) / curve, -0.5, 0.5))
        found.append((float(v), d, sub))
    if not found:
        return none
    top = max(v for v, _, _ in found)
    chosen: list[list[float]] = []
    for _, _, sub in sorted((c for c in found if c[0] >= top - PERIOD_NEAR), key=lambda c: c[1]):
        # a multiple of an offset already chosen adds nothing: its repeats are offered already
        if any(_multiple(sub, c) for c in chosen):
            continue
        chosen.append(sub)
        if len(chosen) == PERIOD_COUNT:
            break
    return np.array(chosen, np.float64) * factor


def _multiple(d: list[float], base: list[float]) -> bool:
    """Whether ``d`` is about a whole multiple (either sign, 1 included: the same offset again) of ``base``."""
    k = round(float(np.dot(d, base) / np.dot(base, base)))
    return k != 0 and np.hypot(d[0] - k * base[0], d[1] - k * base[1]) <= 1.5


def _confidence(hole: np.ndarray, alpha: float) -> np.ndarray:
    """1 on known pixels, alpha^-(distance to the nearest known pixel) inside the hole (Wexler et al.): what was
    guessed deep inside counts less than the real pixels at the rim, in matching and in voting."""
    conf = np.ones(hole.shape, np.float64)
    if alpha > 1.0:
        depth = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
        conf[hole] = np.maximum(np.power(alpha, -depth[hole].astype(np.float64)), 1e-4)
    return conf


SEAM_SIGMA = 3.0  # px: how far along the border the step is smoothed
SEAM_STEP = 24.0  # levels: steps much larger than this are structure, not drift, and are left alone


GUIDE_WEIGHT = (
    40.0  # a patch pixel whose structure label differs from its source's costs 2 x 40^2 (~33 levels RGB)
)
# The band around a contour the structure closed across the hole (``Structure.contours``) in which the final meld
# keeps the voted colours' steps (``_meld``'s ``keep``; option ``contour_keep`` px, 0: off) is a patch's reach on
# either side of the contour: 2 x patch - 1 px (13 at the 7 px patch; ``_fill``). A copy that overlaps the contour
# carries its source's edge anywhere within a patch of it, so the voted steps put the lip's edge up to that far
# out. Day 11 (rim11) took 9 (+-4 px), the least that kept the README coffee's lip clean (at 5 the synthetic lip
# kept a 6-level haze, at 1 the coffee's pale streak down the saucer stayed); where the hole is wider by the lip
# (--grow 10; a JPEG-85 copy whose region takes a sliver of the lip) the meld still spread the lip's white 4-8 px
# over the saucer: at 13 neither (lip13). Bench: p14 (HaarPSI 0.457 -> 0.458) and held-out hp12 (unchanged) have one.
CONTOUR_EDGE = 0.7  # px: the Gaussian that anti-aliases that contour's edge in the hole (0: off)
STRUCTURE_SEED = 0  # k-means seed of find_structure: fixed, whatever the fill's seed (bulge11)
SMOOTH_RIM = 2.0  # levels RMS: below it the surround counts as smooth (see PatchMatchFiller._fill)
LOW_PASS_SIGMA = 12.0  # px: what is coarser than this comes from the membrane on a smooth surround


LOW_PASS_OUTLIER = 12.0  # levels: a pixel this far from the surface around it is a feature, not the surface
LOW_PASS_FEW = 0.1  # ... when they are few (a mast, stars, craters); many are a pattern (stripes, grain)


def _low_pass(rgb: np.ndarray, hole: np.ndarray, sigma: float, robust: bool = False) -> np.ndarray:
    """The image's low-pass (a Gaussian of the known pixels only, normalised), the hole and the pixels too
    close to it to have a reliable average filled by a membrane; float32 HxWx3. ``robust``: averaged again
    without the pixels more than ``LOW_PASS_OUTLIER`` from the first average (a thin mast, a star, a crater's
    rim): they belong to the detail, and averaged into the surface the membrane would carry their shade into
    the hole as a smudge beside them."""
    img = rgb.astype(np.float32)
    known = (~hole).astype(np.float32)
    for again in range(2 if robust else 1):
        num = cv2.GaussianBlur(img * known[:, :, None], (0, 0), sigma)
        den = cv2.GaussianBlur(known, (0, 0), sigma)
        low = num / np.maximum(den, 1e-6)[:, :, None]
        if robust and not again:
            outlier = (np.abs(img - low).max(axis=2) > LOW_PASS_OUTLIER) & (known > 0)
            if outlier.sum() > LOW_PASS_FEW * known.sum():  # stripes, wood grain: the pattern is the surface
                break
            known = known * ~outlier
    return membrane(low, (den < 0.5) | hole)


def _smooth_surround(rgb: np.ndarray, hole: np.ndarray, limit: float, rim_residual) -> bool:
    """Whether the rim of the hole's low-pass fits one quadratic colour surface within ``limit`` levels RMS,
    judged on a copy of at most 256 px (a 1200 px crop's low-pass would cost ~0.25 s just to decide)."""
    h, w = hole.shape
    scale = min(1.0, 256 / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        hole = cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        if hole.all():
            return False
    low = _low_pass(rgb, hole, LOW_PASS_SIGMA * scale)
    return rim_residual(low, hole, width=max(3, round(12 * scale))) < limit


def _blend_seams(img, hole, conf, weight_sum, targets, nnf, dist, r, sharp, floor) -> None:
    """Remove the colour step at the hole's border (Poisson-style seam blending, as a membrane): the patches
    that fill the hole also vote for the known pixels on a thin ring around it; the difference between the real
    ring and their vote, smoothed along the ring, is interpolated smoothly into the hole and added.

    Measured on bench/erase_fill.py: photos' PSNR +0.13 dB and one more HaarPSI win of 36, structure unchanged."""
    ring = (cv2.dilate(hole.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0) & ~hole & targets
    ry, rx = (a.astype(np.int64) for a in np.nonzero(ring))
    if ry.size == 0:
        return
    voted = _vote(img, conf, weight_sum, ry, rx, targets, nnf, dist, r, sharp, floor)
    pad = int(3 * SEAM_SIGMA) + 2  # only the window around the ring matters
    h, w = hole.shape
    y0, y1 = max(0, int(ry.min()) - pad), min(h, int(ry.max()) + pad + 1)
    x0, x1 = max(0, int(rx.min()) - pad), min(w, int(rx.max()) + pad + 1)
    step = img[ry, rx, :3] - voted
    # a small step is a brightness drift to smooth away; a large one is a structure the fill placed differently
    # (a white cup edge against a dark copy): spreading that would paint a glow into the hole, so it fades out
    trust = np.exp(-((np.abs(step).max(axis=1) / SEAM_STEP) ** 4)).astype(np.float32)
    diff = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    diff[ry - y0, rx - x0] = step * trust[:, None]
    weight = ring[y0:y1, x0:x1].astype(np.float32)
    blur = cv2.GaussianBlur(weight, (0, 0), SEAM_SIGMA)
    diff = cv2.GaussianBlur(diff, (0, 0), SEAM_SIGMA) / np.maximum(blur, 1e-6)[:, :, None]
    diff *= weight[:, :, None]  # the ring's smoothed step; zero elsewhere (not next to the hole)
    inside = hole[y0:y1, x0:x1]
    correction = membrane(diff, inside)
    img[y0:y1, x0:x1, :3][inside] += correction[inside]


# the voted colours' weight against the voted steps (``_meld``): small, so a block of the wrong brightness is
# pulled to its surround over ~1/sqrt(lam) = 22 px; 48 bench scenes, HaarPSI wins over Telea: 0.5 -> 68.8 %,
# 0.05 -> 72.9 %, 0.01 -> 77.1 %, 0.002 -> 77.1 % (81.2 % melding every round of the finest level)
MELD_LAMBDA = 0.002


def _restrict_steps(hy: np.ndarray, hx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The steps between 2x2-block means that the fine steps imply (what the half-size problem integrates):
    across a block boundary (h0 + 2 h1 + h2) / 2 along the axis, averaged over the block's two rows
    (columns)."""
    h, w = hy.shape[:2]
    hc, wc = (h + 1) // 2, (w + 1) // 2
    px = np.zeros((2 * hc, 2 * wc + 1, 3), np.float64)
    px[:h, :w] = hx
    s = px[:, 0 : 2 * wc : 2] + 2 * px[:, 1 : 2 * wc : 2] + px[:, 2 : 2 * wc + 1 : 2]
    cx = (s[0::2] + s[1::2]) / 4
    py = np.zeros((2 * hc + 1, 2 * wc, 3), np.float64)
    py[:h, :w] = hy
    s = py[0 : 2 * hc : 2] + 2 * py[1 : 2 * hc : 2] + py[2 : 2 * hc + 1 : 2]
    cy = (s[:, 0::2] + s[:, 1::2]) / 4
    return cy, cx


def _screened_poisson(
    hy: np.ndarray, hx: np.ndarray, free: np.ndarray, lam: np.ndarray, sweeps: int = 24
) -> np.ndarray:
    """The correction e (HxWx3, 0 off ``free``) minimising sum lam e^2 (``lam`` HxW) + sum (e_q - e_p - h_pq)^2
    over the edges touching ``free`` (``_sor``), solved coarse to fine (a cascadic multigrid): the half-size
    problem (steps restricted, lam x 4 per coarser pixel) gives the smooth part, enlarged; ``sweeps`` SOR
    sweeps then fix the detail. Measured: a 300k px hole in ~0.3 s where scipy's sparse direct solve took
    3-6 s; within 0.1 levels of it on average (tests/test_patchmatch.py)."""
    h, w = free.shape
    fy, fx = (a.astype(np.int64) for a in np.nonzero(free))
    e = np.zeros((h, w, 3), np.float64)
    lam = np.ascontiguousarray(np.broadcast_to(np.asarray(lam, np.float64), (h, w)))
    if fy.size == 0:
        return e
    if fy.size <= 4096 or min(h, w) < 16:
        _sor(e, hy, hx, fy, fx, lam, 1.9, 400)
        return e
    hc, wc = (h + 1) // 2, (w + 1) // 2
    pad = np.zeros((2 * hc, 2 * wc), bool)
    pad[:h, :w] = free
    blocks = pad.reshape(hc, 2, wc, 2)
    coarse_free = blocks.any(axis=(1, 3))
    lam_pad = np.zeros((2 * hc, 2 * wc))
    lam_pad[:h, :w] = np.where(free, lam, 0)
    coarse_lam = 4 * lam_pad.reshape(hc, 2, wc, 2).sum(axis=(1, 3)) / np.maximum(blocks.sum(axis=(1, 3)), 1)
    cy, cx = _restrict_steps(hy, hx)
    coarse = _screened_poisson(cy, cx, coarse_free, coarse_lam, sweeps)
    e[:] = cv2.resize(coarse, (2 * wc, 2 * hc), interpolation=cv2.INTER_LINEAR)[:h, :w]
    e[~free] = 0
    _sor(e, hy, hx, fy, fx, lam, 1.6, sweeps)
    return e


def _meld(
    img, free, conf, weight_sum, targets, nnf, dist, r, sharp, floor, lam, hint=None, hint_lam=1.0, keep=None
) -> None:
    """Vote the hole and rebuild it in the gradient domain (Image Melding, Darabi et al. 2012): the patches
    vote their steps with their colours (``_vote_with_steps``), and the hole becomes the image whose steps
    best match the voted ones and whose colours stay near the voted colours (weight ``lam``, small), pinned
    to the real pixels at its border (a screened Poisson equation). Where copies from different places meet
    the voted steps carry no seam, so the seam and any brightness step between copies (or against the
    surround) spread out smoothly, while each copy's texture, being its steps, stays. Generalises
    ``_blend_seams``, which fixed only the step at the hole's border. Solved on the hole's box only.

    ``hint`` pixels (real, kept, but possibly holding a faint halo of the erased object) are not a hard
    border: they join the solve held to their real colours with weight ``hint_lam`` (their result is thrown
    away), so a halo there bends the fill's edge a little instead of shifting all of it.

    ``keep`` (HxW bool): pixels near a contour the structure closed across the hole; the steps between two of
    them are the voted colours' own (what the colours say, not the patches' steps). Where the best patches of
    neighbouring pixels put a contour's edge a pixel apart (the lip's white against the wood), the colours keep
    the edge but the voted steps lose it (each patch's own step lies elsewhere): integrated, the white spread
    over the wood as a haze ~20 px wide and a pale streak down the saucer on the coffee
    (docs/benchmarks/erase-fill-targets.md, Day 11: rim11)."""
    h, w = free.shape
    domain = free if hint is None else free | hint
    ys, xs = np.nonzero(domain)
    if ys.size == 0:
        return
    y0, y1 = max(0, int(ys.min()) - 2), min(h, int(ys.max()) + 3)
    x0, x1 = max(0, int(xs.min()) - 2), min(w, int(xs.max()) + 3)
    box = free[y0:y1, x0:x1]
    dom = domain[y0:y1, x0:x1]
    near = cv2.dilate(dom.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    ly, lx = np.nonzero(near & targets[y0:y1, x0:x1])
    colours, steps = _vote_with_steps(
        img,
        conf,
        weight_sum,
        (ly + y0).astype(np.int64),
        (lx + x0).astype(np.int64),
        targets,
        nnf,
        dist,
        r,
        sharp,
        floor,
    )
    voted = box[ly, lx]
    img[ly[voted] + y0, lx[voted] + x0, :3] = colours[voted]
    cur = img[y0:y1, x0:x1, :3].astype(np.float64)
    k = None if keep is None else keep[y0:y1, x0:x1]
    hy = np.zeros(cur.shape, np.float64)
    hx = np.zeros(cur.shape, np.float64)
    hy[ly, lx] = steps[:, 0]
    hx[ly, lx] = steps[:, 1]
    hy[:-1] -= cur[1:] - cur[:-1]  # the voted step minus the current one: what the correction must add
    hx[:, :-1] -= cur[:, 1:] - cur[:, :-1]
    hy[:-1][~(dom[:-1] | dom[1:])] = 0  # only edges with a hole pixel at one end or both carry a step
    hy[-1] = 0
    hx[:, :-1][~(dom[:, :-1] | dom[:, 1:])] = 0
    hx[:, -1] = 0
    if k is not None:  # the correction adds nothing to a step between two pixels by a closed contour
        hy[:-1][k[:-1] & k[1:]] = 0
        hx[:, :-1][k[:, :-1] & k[:, 1:]] = 0
    e = _screened_poisson(hy, hx, dom, np.where(box, lam, hint_lam))
    img[y0:y1, x0:x1, :3][box] += e[box].astype(img.dtype)


def _nearest(src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel, the row and column of the nearest ``src`` pixel (Euclidean; ``src`` not empty)."""
    _, lab = cv2.distanceTransformWithLabels(
        (~src).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    sy, sx = np.nonzero(src)
    iy = np.zeros(int(lab.max()) + 1, np.int64)
    ix = np.zeros(int(lab.max()) + 1, np.int64)
    iy[lab[sy, sx]], ix[lab[sy, sx]] = sy, sx
    return iy[lab], ix[lab]


def _contour_edge(img: np.ndarray, free: np.ndarray, sides: np.ndarray, sigma: float) -> None:
    """Anti-alias a closed contour's edge in the hole (``sides``: ``Structure.contour_sides``, 1 the region
    the contour closes, 2 + label beyond it): each hole pixel of the band whose colour sides with the other
    class than a 4-neighbour's (nearer the inside's median colour, or nearer the median of the nearest region
    beyond) takes the Gaussian (``sigma`` px) average around it. The meld keeps the voted colours' steps there
    (``contour_keep``), and each pixel's colour is one source pixel's, so the edge was a binary step,
    stair-stepped at 3x, where the photo's own outline has an in-between pixel per row (review11)."""
    band = sides > 0
    inside, beyond = sides == 1, sides > 1
    if not (band & free).any() or not inside.any() or not beyond.any():
        return
    rgb = img[:, :, :3].astype(np.float64)
    ref = np.zeros(rgb.shape, np.float64)
    for s in np.unique(sides[band]):
        ref[sides == s] = np.median(rgb[sides == s], axis=0)
    oy, ox = _nearest(beyond)
    ref_in = ref[inside][0]
    cls = np.linalg.norm(rgb - ref_in, axis=-1) < np.linalg.norm(rgb - ref[oy, ox], axis=-1)
    differs = np.zeros(cls.shape, bool)
    differs[:-1] |= cls[:-1] != cls[1:]
    differs[1:] |= cls[1:] != cls[:-1]
    differs[:, :-1] |= cls[:, :-1] != cls[:, 1:]
    differs[:, 1:] |= cls[:, 1:] != cls[:, :-1]
    edge = band & free & differs
    blurred = cv2.GaussianBlur(rgb, (0, 0), sigma)
    img[edge, :3] = blurred[edge].astype(img.dtype)


# px: hole pixels this near a drawn silhouette take its anti-aliased edge (``_silhouette_edge``)
EDGE_REACH = 1.5


def _nearest_on(pts: np.ndarray, curve: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each point (Nx2), its distance to the polyline ``curve`` (Mx2) and its side (+1 left of the segment
    it is nearest to, walking the curve, -1 right, 0 on it); in chunks of points (N x M per chunk)."""
    p0, seg = curve[:-1], np.diff(curve, axis=0)
    length = np.maximum((seg**2).sum(1), 1e-9)
    dist, side = np.empty(len(pts)), np.empty(len(pts))
    for lo in range(0, len(pts), chunk):
        p = pts[lo : lo + chunk]
        t = np.clip(((p[:, None] - p0[None]) * seg[None]).sum(-1) / length[None], 0, 1)
        foot = p0[None] + t[..., None] * seg[None]
        d = np.hypot(p[:, None, 0] - foot[..., 0], p[:, None, 1] - foot[..., 1])
        k = d.argmin(1)
        rows = np.arange(len(p))
        off = p - foot[rows, k]
        dist[lo : lo + chunk] = d[rows, k]
        side[lo : lo + chunk] = np.sign(seg[k, 0] * off[:, 1] - seg[k, 1] * off[:, 0])
    return dist, side


def _silhouette_edge(img: np.ndarray, free: np.ndarray, structure) -> None:
    """Draw each silhouette a junction drew (``Structure.silhouettes``) as an anti-aliased step along its curve:
    hole pixels within ``EDGE_REACH`` px of it take the local colours of its two sides (Gaussian means of the
    pixels 1.5-4 px off it on each, by label) mixed by how much of the pixel lies on the body's side of the
    curve. No source shows that edge (on the coffee the only body | saucer edge is the cup's other side), so
    the patches along it were fragments of other edges: kept by the meld, a ragged, step-like outline; melded,
    none at all."""
    labels = structure.labels
    h, w = free.shape
    if labels.shape != (h, w):
        return
    rgb = img[:, :, :3]
    for index, inside in structure.silhouettes.items():
        curve = np.asarray(structure.curves[index], np.float64)
        if len(curve) < 2:
            continue
        drawn = np.zeros((h, w), np.uint8)
        cv2.polylines(drawn, [np.round(curve).astype(np.int32)], False, 1, 1, cv2.LINE_8)
        far = cv2.distanceTransform(1 - drawn, cv2.DIST_L2, 3)
        near = free & (far <= EDGE_REACH + 1)
        if not near.any():
            continue
        ys, xs = np.nonzero(near)
        d, side = _nearest_on(np.stack([xs, ys], 1).astype(np.float64), curve)
        mine = labels[ys, xs] == inside
        votes = side[mine & (d > 0.5)]
        if votes.size == 0:
            continue
        toward = np.sign(votes.sum()) or 1.0  # the side of the curve the body lies on
        ring = (far >= 1.5) & (far <= 4)
        colours = []
        for part in (ring & (labels == inside), ring & (labels != inside) & (labels >= 0)):
            weight = cv2.GaussianBlur(part.astype(np.float64), (0, 0), 2.0)
            mean = cv2.GaussianBlur(rgb * part[..., None], (0, 0), 2.0)
            colours.append((mean[ys, xs] / np.maximum(weight[ys, xs], 1e-9)[:, None], weight[ys, xs] > 1e-3))
        (body, has_body), (behind, has_behind) = colours
        cover = np.clip(0.5 + toward * side * d, 0, 1)[:, None]
        edge = (d <= EDGE_REACH) & has_body & has_behind
        mixed = cover * body + (1 - cover) * behind
        img[ys[edge], xs[edge], :3] = mixed[edge]


def _copy_start(
    img: np.ndarray, hy: np.ndarray, hx: np.ndarray, nnf: np.ndarray, gap: float, sigma: float
) -> None:
    """A finer level's first image made coherent: each hole pixel (hy, hx) takes its own inherited patch's
    centre (the source pixel the field puts there) instead of the unweighted vote of all the patches covering
    it, except where the two disagree on the local mean (Gaussian ``sigma``) by more than ``gap`` levels.

    The vote averages 49 copies that put their detail (a star, a stone's edge) at different places: the start
    is blurred, and the search then matches it best with empty or smooth sources, so the fill stays starless
    and the gravel flat (day 7-8's finding). The copy keeps each source's detail. Where the copies disagree
    on more than detail (a fence board's edge placed one coarse pixel apart by neighbouring patches, a block
    of grass inside a board) the average is the better start: it keeps the layout the coarser level settled,
    and a single outlying copy would be kept as a notch."""
    copied = img[nnf[hy, hx, 0], nnf[hy, hx, 1], :3]
    voted = img[hy, hx, :3].copy()
    as_copy = img[:, :, :3].copy()
    as_copy[hy, hx] = copied
    voted_img = np.ascontiguousarray(img[:, :, :3])
    gaps = np.abs(cv2.GaussianBlur(as_copy, (0, 0), sigma) - cv2.GaussianBlur(voted_img, (0, 0), sigma))
    agree = gaps[hy, hx].max(axis=1) <= gap
    img[hy, hx, :3] = np.where(agree[:, None], copied, voted)


DETAIL_SIGMA = 1.5  # px: the detail is the image minus its low-pass (a Gaussian of the known pixels)
DETAIL_WINDOW = 3.0  # px: the detail's energy is averaged over about a patch
DETAIL_RING = 3  # patches: the known pixels this close to the hole say how much detail the fill should carry
DETAIL_MIN_RING = 4  # patches^2: a structure label's own ring pixels must be this many to set its own prior
# px: ``struct_detail`` reaches only holes up to this size. Day 10 set it for a detail floor there (above it, a
# 600 px object at full resolution, the fine levels are voted rather than searched, where a floor cannot act, and
# its sixth channel would slow the patch distance's hot loop); since day 11 the default is only the sharper last
# vote, which larger holes (the speed bench's erase) keep at complete()'s own 0.1 / 0.1
STRUCT_DETAIL_MAX = 60_000
# a structure label part's sources may be up to this many times as busy as the target's own part (+ 1 level):
# the coffee's cup body (median detail 3.6) is not filled from the table's grain (10.2) that k-means put in its
# dark red; stripes, craters and wood grain have parts of one detail (their bench scenes do not move)
PART_FACTOR = 2.0
MIN_PART = 49  # known px: a smaller part (a speck, a sliver) says nothing about its surface: no cap, detail 0


def _detail_floor(
    rgb: np.ndarray,
    hole: np.ndarray,
    patch: int,
    weight: float,
    isotropic: float = 1.0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """A guide channel (HxW float32, ``complete(detail=...)``) that makes a source flatter than the hole's
    surround cost more.

    Why: each level's hole starts as a blurred estimate, and under a plain SSD a blurred patch matches an empty
    or smooth source best (a textured one adds its own detail to the difference), so the search picks the
    empty sky between stars and flat grey blobs in gravel, and the vote and the meld keep them (day 7/8).
    Newson et al. (2014) add texture features to the patch distance for this; here the feature is one-sided
    and its prior comes from the real ring, never from the blurred estimate: every known pixel carries its
    local detail (RMS of the image minus its low-pass, over about a patch) capped at C, the median of that
    detail over the known pixels within ``DETAIL_RING`` patches of the hole, and the hole carries C. A source
    as detailed as the ring's median or more costs nothing extra; a flatter one costs weight^2 x (C - its
    detail)^2 per pixel. (Capped at the ring's RMS instead of its median, the few strong edges in a ring set C
    so high that skies filled with invented edges: texture ratio 1.2 on the bench.)
    ``groups`` (HxW int, -1 unlabelled: ``_guide_groups``): each group found in the hole takes C from its own
    part of the ring when that part holds at least ``DETAIL_MIN_RING`` patches of pixels, so a wall beside
    grass is not asked for the grass's grain.

    ``isotropic``: the detail is weighted by (1 - the structure tensor's coherence)^isotropic over the window,
    so grain and stars (no one orientation) count and an edge (one orientation: a mortar line, a tripod leg, a
    badge's border) does not. Without it (0) the floor, unable to tell grain from structure, penalised flat
    bricks and left edge fragments free: a jumble of mortar in hp16 (-3.0 dB), a piece of the astronaut's badge
    in p24, dark spots beside hp19's tripod; with 1 they fill as without the floor (day 9)."""
    img = rgb.astype(np.float32)
    known = (~hole).astype(np.float32)
    num = cv2.GaussianBlur(img * known[:, :, None], (0, 0), DETAIL_SIGMA)
    den = np.maximum(cv2.GaussianBlur(known, (0, 0), DETAIL_SIGMA), 1e-6)
    energy = (((img - num / den[:, :, None]) ** 2).sum(axis=2) * known).astype(np.float32)
    if isotropic > 0:
        gray = img.mean(axis=2)
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
        jxx = cv2.GaussianBlur(gx * gx, (0, 0), DETAIL_WINDOW)
        jyy = cv2.GaussianBlur(gy * gy, (0, 0), DETAIL_WINDOW)
        jxy = cv2.GaussianBlur(gx * gy, (0, 0), DETAIL_WINDOW)
        coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / np.maximum(jxx + jyy, 1e-6)
        energy = energy * (1.0 - np.clip(coherence, 0.0, 1.0)) ** isotropic
    local = cv2.GaussianBlur(energy, (0, 0), DETAIL_WINDOW)
    rms = np.sqrt(np.maximum(local / np.maximum(cv2.GaussianBlur(known, (0, 0), DETAIL_WINDOW), 1e-6), 0.0))
    size = 2 * DETAIL_RING * patch + 1
    ring = (cv2.dilate(hole.astype(np.uint8), np.ones((size, size), np.uint8)) > 0) & ~hole
    cap = float(np.median(rms[ring])) if ring.any() else 0.0
    caps = np.full(hole.shape, cap, np.float32)
    if groups is not None:  # a prior per structure label: each region asks for its own ring's detail
        for k in np.unique(groups[hole]):
            own = groups == k
            if k < 0 or np.count_nonzero(ring & own) < DETAIL_MIN_RING * patch * patch:
                continue
            caps[own] = float(np.median(rms[ring & own]))
    out = np.minimum(rms, caps)
    out[hole] = caps[hole]
    return (weight * out).astype(np.float32)


def _guide_groups(guide: np.ndarray, bins: int = 72) -> np.ndarray:
    """Group pixels by the label a guide encodes (structure.Structure.guide: each label a point on a circle,
    unlabelled pixels at its centre): the angle, quantised, is the group; -1 where the guide is near the centre.
    Levels downsampled across a boundary give in-between angles: they form small groups of their own."""
    radius = np.hypot(guide[:, :, 0], guide[:, :, 1])
    angle = (
        np.round(np.arctan2(guide[:, :, 1], guide[:, :, 0]) * (bins / (2 * np.pi))).astype(np.int64) % bins
    )
    return np.where(radius > 0.5 * max(float(radius.max()), 1e-6), angle, -1)


def _first_guess(img: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The coarsest level's starting colours (HxWx3 uint8): Telea from the rim; with guide channels, Telea per
    guide label from that label's known pixels only (a boundary's two sides do not blur into each other)."""
    rgb = np.clip(img[:, :, :3], 0, 255).astype(np.uint8)
    filled = cv2.inpaint(rgb, hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
    if img.shape[2] <= 3:
        return filled
    label = _guide_groups(img[:, :, 3:5])
    for k in np.unique(label[hole]):
        if k < 0:
            continue
        own = label == k
        if not (own & ~hole).any():
            continue
        part = cv2.inpaint(rgb, (hole | ~own).astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
        filled[hole & own] = part[hole & own]
    return filled


def _periodic_guess(rgb: np.ndarray, hole: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A first guess for a regular texture (He & Sun 2012's shifted copies): each hole pixel the per-channel median
    of the known pixels whole periods away (k x each dominant offset, 0 < |k| <= ``SHIFT_REPEATS``), so the
    grout line or the board edge that runs inside a thin hole is there before the search starts: a patch on it
    has only plain tile in its known part, and against a blurred guess the plain tile wins. The median, not one
    copy: a stripe's offset is known to a fraction of a px, and one rounded copy lands out of phase. Returns the
    guess (HxWx3 float32) and where some copy was found (HxW bool)."""
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    copies = []
    for dy, dx in shifts:
        for k in range(-SHIFT_REPEATS, SHIFT_REPEATS + 1):
            if k == 0:
                continue
            sy, sx = ys + int(round(k * dy)), xs + int(round(k * dx))
            ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
            ok[ok] = ~hole[sy[ok], sx[ok]]
            value = np.full((ys.size, 3), np.inf, np.float32)  # a missing copy sorts last
            value[ok] = rgb[sy[ok], sx[ok], :3]
            copies.append(value)
    guess = np.zeros(hole.shape + (3,), np.float32)
    found = np.zeros(hole.shape, bool)
    if not copies:
        return guess, found
    stack = np.sort(np.stack(copies), axis=0)
    count = np.isfinite(stack[:, :, 0]).sum(axis=0)
    lo = np.take_along_axis(stack, np.maximum((count - 1) // 2, 0)[None, :, None], axis=0)[0]
    hi = np.take_along_axis(stack, (count // 2)[None, :, None], axis=0)[0]
    seen = count > 0
    guess[ys[seen], xs[seen]] = ((lo + hi) / 2)[seen]
    found[ys[seen], xs[seen]] = True
    return guess, found


def complete(
    rgb: np.ndarray,
    mask: np.ndarray,
    *,
    patch: int = 7,
    band: float = 0.5,
    seed: int = 0,
    min_side: int = 24,
    coarse_thickness: float | None = None,
    em_coarse: int = 12,
    em_fine: int = 2,
    pm_iters: int = 5,
    alpha: float = 2.0,
    fine_radius: int = 32,
    budget: int = 60_000,
    init_vote: bool = True,
    sharp: float = 0.5,
    sharp_final: float = 0.1,
    vote_floor: float = 0.1,
    huge_passes: int = 0,
    big_rounds: int = 1,
    seam_blend: bool = True,
    meld: bool = False,
    meld_lambda: float = MELD_LAMBDA,
    meld_every: int = 1,
    meld_hint: float = 0.5,
    keep_steps: np.ndarray | None = None,
    guide: np.ndarray | None = None,
    hint: np.ndarray | None = None,
    coherence: float = 0.0,
    init_copy: float = 0.0,
    detail: float = 0.0,
    detail_iso: float = 1.0,
    detail_labels: bool = False,
    source_busy: tuple[np.ndarray, np.ndarray] | None = None,
    periodic: float = 0.0,
    debug: list | None = None,
) -> np.ndarray:
    """Fill ``mask`` (True = missing) in ``rgb`` (HxWx3 uint8) by multi-scale patch completion; HxWx3 uint8.

    ``band``: sources lie within band x (the hole's long side) of the hole, at least 3 patches. The pyramid stops
    where the hole is about a patch thick or the image ``min_side`` px. ``em_coarse`` vote/search rounds at the
    coarsest level, falling to ``em_fine`` at the finest; ``pm_iters`` PatchMatch passes per round, searching
    the whole level at the coarsest and within ``fine_radius`` px of the inherited match above it. A fine level
    with more than ``budget`` target patches (a ~600 px object at full resolution) gets ``huge_passes``
    PatchMatch passes within fine_radius / 4 (0: its field is the level above's, upsampled, and only voted:
    the coarser levels were searched thoroughly); one with more than budget / 4 gets ``big_rounds`` rounds,
    budget / 16 at most 4. Together with the budget at 60k (was 100k) this halves the fill of a 600 px object
    (1.2 -> 0.6-0.9 s CPU on the project's loaded 2-core VM) with no visible loss; the 48-scene benchmark,
    whose holes stay under the budget, moves by < 0.05 dB. ``alpha``: confidence decay per pixel into the hole
    (Wexler et al.); ``sharp`` / ``sharp_final``: how much worse than the best patch a vote may be and still
    count (``_vote``); ``vote_floor``: the least that "worse" may be scaled by (1.0 made faint texture, a sky's
    grain or stars, average into blur: texture ratio 0.79 -> 0.81 at 0.1 on the benchmark). ``meld``: the hole
    is rebuilt in the gradient domain (``_meld``, Image Melding) after the final vote and after every vote of
    the ``meld_every`` finest levels (the search then sees melded images); ``meld_lambda``: the weight of the
    voted colours against the voted steps. Measured on bench/erase_fill.py (48 scenes, against the border-only
    blend): HaarPSI wins over Telea 66.7 -> 81.2 %, photos' PSNR -1.08 -> -0.18 dB against Telea's, held out
    80.6 -> 94.4 %; texture ratio 0.83 -> 0.76 (partly hard seams that had counted as texture, partly real
    softening: dense gravel and grass come out smudged in places).
    ``meld_hint``: how firmly the hint ring holds the solve (a hard border spread a faint halo left there over
    the whole fill: tests/test_erase_region.py's soft-edged disc, ring 1 at -5.0 levels; 0.5: -2.1, the plain
    vote -1.9); at 0.5 the 48 scenes give 77.1 % / +2.19 dB / photos -0.36 dB, held out 91.7 %. Off in
    ``complete`` itself; the erase filler turns it on together with the structure path (``EMBEDDED_DEFAULTS``):
    alone it turns the coffee's hard jags into a white haze off the cup's rim. Without it, ``seam_blend`` smooths away the colour step at the hole's
    border only (``_blend_seams``). ``guide``: HxWxG float channels known
    everywhere, the hole included (structure labels, backend/erase/structure.py): they join the patch distance
    (a patch is matched with a source whose guide agrees) but are never voted; the coarsest level starts each
    hole pixel from known pixels of its own guide label instead of Telea across everything.
    ``coherence`` (0 <= c < 1): how much a source that continues a neighbour's copy is preferred in the search
    (``_patchmatch``); 0, the default, is the plain search. Measured (day 6, docs/benchmarks/erase-fill-targets.md):
    0.25 raises the texture ratio (48 scenes 0.83 -> 0.88) for 0.3 dB of the photos' PSNR.
    ``detail`` (>= 0; 0, the default, is off): the weight of a one-sided detail floor in the patch distance
    (``_detail_floor``): a source flatter than the ring's median (isotropic, ``detail_iso``) detail costs more,
    so the search stops preferring the empty sky between stars and flat blobs in grain that match the blurred
    estimate best. Measured (day 9, docs/benchmarks/erase-fill-targets.md) off the structure path (the erase
    filler's ``options["plain_detail"]``, on top of the coherent start): on the plain path only, 0.15 raises the
    48 scenes' texture ratio 0.765 -> 0.782 and the held-out 0.813 -> 0.836 with the same HaarPSI wins, for
    0.06 dB of the photos' PSNR (the erase filler's default there, ``EMBEDDED_DEFAULTS``); on the smooth path too
    p11-moon's near tie flips to Telea. Off in ``complete`` itself. ``detail_labels`` (with a ``guide``): each
    structure label's hole pixels ask for the median detail of that label's own ring instead of one median over
    the whole ring (day 10: on the bench's structure path it gave hp03's rocket a dark blob, -1.7 dB, where
    the one median did not).
    With ``detail_iso=0`` (every detail counts) 0.1 reaches 0.808 but copies mortar fragments into bricks
    (hp16), a piece of the astronaut's badge into the suit (p24) and dark spots beside the tripod (hp19).
    ``hint``: HxW bool, hole pixels whose colours are real (erase's ring between the object and its grown
    region that looks like the surface beyond, not like the object's fringe): they keep their colours, count in
    matching as known pixels do, and are never invented nor copied from (they may hold a faint halo); the hole's
    shape, its pyramid and its sources stay those of the whole hole. ``init_vote``: start each finer level from a vote of the inherited field (True: measured better on the
    benchmark and on the coffee example) or from the coarser image enlarged. ``init_copy`` (levels; 0: off):
    that vote is replaced by each pixel's own inherited source pixel wherever the two agree on the local mean
    within ``init_copy`` (``_copy_start``). ``debug`` collects each level's result (for looking at them).
    ``keep_steps`` (HxW bool, or None): hole pixels by a contour the structure closed across the hole
    (``Structure.contours``); the finest level's melds keep the voted colours' steps between them (``_meld``).
    """
    if not 0.0 <= coherence < 1.0:
        raise ValueError(f"coherence must be in [0, 1), got {coherence}")
    if detail < 0.0:
        raise ValueError(f"detail must be >= 0, got {detail}")
    rgb = np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)
    hole = np.asarray(mask, bool)
    hinted = np.zeros_like(hole) if hint is None else np.asarray(hint, bool) & hole
    if not (hole & ~hinted).any():
        return rgb.copy()
    r = patch // 2
    ys, xs = np.nonzero(hole)
    extent = max(int(ys.max() - ys.min()), int(xs.max() - xs.min())) + 1
    reach = max(3 * patch, int(band * extent))
    far = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 3)
    band_mask = (far <= reach) & ~hole
    if not band_mask.any():
        raise NoSource("no known pixels around the hole")

    base = rgb.astype(np.float32)
    if guide is not None:
        base = np.concatenate([base, np.asarray(guide, np.float32).reshape(hole.shape + (-1,))], axis=2)
    labels = base.shape[2]  # the colours and the structure guide (``_first_guess`` reads its labels)
    if detail > 0:
        groups = None
        if detail_labels and guide is not None:  # a prior per structure label (off: measured worse, day 10)
            groups = _guide_groups(np.asarray(guide, np.float32).reshape(hole.shape + (-1,)))
        base = np.dstack([base, _detail_floor(rgb, hole, patch, detail, detail_iso, groups)])
    levels = [_Level(np.ascontiguousarray(base), hole, band_mask, hinted)]
    # a regular texture's own period (``_dominant_offsets``): offered to the search at every level, scaled to it
    shifts = _dominant_offsets(rgb, band_mask, patch, periodic) if periodic > 0 else np.zeros((0, 2))
    periodic_start = None
    if shifts.size:
        guess, found = _periodic_guess(rgb, hole & ~hinted, shifts)
        if found.any():
            periodic_start = (guess * found[:, :, None], found)
    thickness = float(cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3).max())
    stop = r + 1 if coarse_thickness is None else coarse_thickness
    while thickness > stop and min(levels[-1].hole.shape) // 2 >= max(min_side, 2 * patch + 2):
        nxt = _downsample(levels[-1].img, levels[-1].hole, levels[-1].band, levels[-1].hint)
        if not _valid_sources(nxt.hole, nxt.band, r).any():
            break
        levels.append(nxt)
        thickness /= 2

    nnf: np.ndarray | None = None
    prev = levels[-1].img
    n_levels = len(levels)
    for depth, lv in enumerate(reversed(levels)):
        level_seed = seed * 1000 + depth
        free = lv.hole & ~lv.hint  # the pixels to invent
        targets = _targets(free, r)
        valid = _valid_sources(lv.hole, lv.band, r)
        if not valid.any():  # the band is too thin for a whole patch here: grow it to every known pixel
            valid = _valid_sources(lv.hole, ~lv.hole, r)
            if not valid.any():
                raise NoSource("no whole patch of known pixels around the hole")
        ty, tx = (a.astype(np.int64) for a in np.nonzero(targets))
        vy, vx = (a.astype(np.int64) for a in np.nonzero(valid))
        hy, hx = (a.astype(np.int64) for a in np.nonzero(free))
        img = lv.img
        conf = _confidence(free, alpha)
        weight_sum = cv2.boxFilter(conf, -1, (patch, patch), normalize=False, borderType=cv2.BORDER_CONSTANT)
        weight_sum = np.maximum(weight_sum, 1e-9)
        new = np.zeros(lv.hole.shape + (2,), np.int64)
        if nnf is None:
            _init_nnf(ty, tx, vy, vx, new, level_seed)
            img[free, :3] = _first_guess(img[:, :, :labels], free)[free]
        else:
            _upsample_nnf(nnf, ty, tx, valid, vy, vx, new, level_seed)
        nnf = new
        dist = np.zeros(lv.hole.shape, np.float64)
        scaled = shifts / 2.0 ** (n_levels - 1 - depth)
        scaled = scaled[np.hypot(scaled[:, 0], scaled[:, 1]) >= 2.0]
        level_shifts = np.ascontiguousarray(scaled, np.float64)
        busy = limit = None
        if source_busy is not None and source_busy[0].shape == levels[0].hole.shape:
            busy, limit = _level_busy(source_busy, valid, lv.hole.shape)
        huge = depth > 0 and ty.size > budget
        if depth > 0 and init_vote and not huge:  # a first image at this level from the inherited field
            img[hy, hx, :3] = _vote(img, conf, weight_sum, hy, hx, targets, nnf, dist, r, 1.0, vote_floor)
            if init_copy > 0:
                _copy_start(img, hy, hx, nnf, init_copy, max(1.0, r / 2))
        elif depth > 0:  # a first guess for the hole: the level above, enlarged (search and vote sharpen it)
            up = cv2.resize(prev, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
            img[hy, hx, :3] = up[hy, hx, :3]
        if periodic_start is not None and (depth < n_levels - 1 or n_levels == 1):
            # a regular texture: its copies a whole period away, at this level's size; the finest level starts
            # from the field it inherits (the guess's median would leave grass between boards smooth there)
            size = (img.shape[1], img.shape[0])
            weight = cv2.resize(periodic_start[1].astype(np.float32), size, interpolation=cv2.INTER_AREA)
            small = cv2.resize(periodic_start[0], size, interpolation=cv2.INTER_AREA)
            small /= np.maximum(weight, 1e-6)[:, :, None]
            take = free & (weight >= 0.5)
            img[take, :3] = small[take]
        rounds = (
            em_fine if n_levels == 1 else round(em_coarse + (em_fine - em_coarse) * depth / (n_levels - 1))
        )
        last = depth == n_levels - 1
        passes, radius = pm_iters, max(img.shape) if depth == 0 else fine_radius  # finer levels refine
        if huge:  # a huge hole at a fine level: one short refinement keeps it fast
            rounds, passes, radius = 1, huge_passes, max(4, fine_radius // 4)
        elif depth > 0 and ty.size > budget // 4:
            rounds, passes = min(rounds, big_rounds), min(passes, 2)
        elif depth > 0 and ty.size > budget // 16:
            rounds, passes = min(rounds, 4), min(passes, 3)
        n_rounds = max(1, rounds)
        for k in range(n_rounds):
            _distances(img, conf, ty, tx, nnf, dist, r)
            _patchmatch(
                img,
                conf,
                ty,
                tx,
                targets,
                valid,
                nnf,
                dist,
                r,
                passes,
                level_seed * 100 + k,
                radius,
                coherence,
                busy,
                limit,
                level_shifts,
            )
            sharpness = sharp_final if last else sharp
            if meld and (depth >= n_levels - meld_every or (last and k == n_rounds - 1)):
                _meld(
                    img,
                    free,
                    conf,
                    weight_sum,
                    targets,
                    nnf,
                    dist,
                    r,
                    sharpness,
                    vote_floor,
                    meld_lambda,
                    lv.hint,
                    meld_hint,
                    keep_steps if keep_steps is not None and keep_steps.shape == free.shape else None,
                )
            else:
                img[hy, hx, :3] = _vote(
                    img, conf, weight_sum, hy, hx, targets, nnf, dist, r, sharpness, vote_floor
                )
        if seam_blend and last and not meld:
            _blend_seams(img, free, conf, weight_sum, targets, nnf, dist, r, sharp_final, vote_floor)
        prev = img
        if debug is not None:
            debug.append(np.clip(img[:, :, :3], 0, 255).astype(np.uint8))
    final = levels[0].img[:, :, :3]
    return np.clip(np.rint(final), 0, 255).astype(np.uint8)


def _level_busy(
    source_busy: tuple[np.ndarray, np.ndarray], valid: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``source_busy`` (each pixel's surface detail, each target's cap) at a pyramid level's size (nearest); a cap
    that no valid source meets is lifted (those targets search every source)."""
    busy, limit = source_busy
    if busy.shape != shape:
        busy = cv2.resize(busy, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        limit = cv2.resize(limit, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    least = float(busy[valid].min()) if valid.any() else 0.0
    limit = np.where(limit >= least, limit, np.float32(1e30))
    return np.ascontiguousarray(busy, np.float32), np.ascontiguousarray(limit, np.float32)


def _label_parts(labels: np.ndarray) -> np.ndarray:
    """Each structure label's connected parts (4-connected, over the known pixels and the hole's flood alike),
    HxW int32, -1 where unlabelled: one colour region is often several surfaces (the coffee's dark red is the
    cup's body and the table's dark grain), and a hole pixel's part is the surface its flood came from."""
    out = np.full(labels.shape, -1, np.int32)
    base = 0
    for label in np.unique(labels):
        if label < 0:
            continue
        n, parts = cv2.connectedComponents((labels == label).astype(np.uint8), connectivity=4)
        inside = parts > 0
        out[inside] = parts[inside] - 1 + base
        base += n - 1
    return out


def _surface_detail(
    rgb: np.ndarray, hole: np.ndarray, labels: np.ndarray, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each labelled pixel's surface detail (the median local detail, RMS of the luma minus its Gaussian, of the
    known pixels of its label's connected part) and each hole pixel's cap, ``factor`` x its own part's: sources
    of parts busier than the cap are not searched (a smooth cup's body is not filled from the grained table that
    k-means put in its colour group); a part with fewer than ``MIN_PART`` known pixels: no cap, detail 0."""
    # the unlabelled surround (beyond the structure's band) counts as one more region: its parts are surfaces too
    parts = _label_parts(np.where(labels >= 0, labels, int(labels.max()) + 1))
    known = ~hole
    luma = rgb[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    kn = known.astype(np.float32)
    num = cv2.GaussianBlur(luma * kn, (0, 0), DETAIL_SIGMA)
    den = np.maximum(cv2.GaussianBlur(kn, (0, 0), DETAIL_SIGMA), 1e-6)
    energy = (luma - num / den) ** 2 * kn
    rms = np.sqrt(
        cv2.GaussianBlur(energy, (0, 0), DETAIL_WINDOW)
        / np.maximum(cv2.GaussianBlur(kn, (0, 0), DETAIL_WINDOW), 1e-6)
    )
    n = int(parts.max()) + 1
    detail = np.zeros(n + 1, np.float32)
    cap = np.full(n + 1, 1e30, np.float32)
    ids, values = parts[known], rms[known]
    # by part, then by detail (one sort of a combined key): each part's median is its middle entry
    order = np.argsort(ids * (float(values.max()) + 1.0) + values.astype(np.float64))
    ids, values = ids[order], values[order]
    counts = np.bincount(ids, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    enough = counts >= MIN_PART
    lower = values[np.minimum(starts + (counts - 1) // 2, values.size - 1)]
    upper = values[np.minimum(starts + counts // 2, values.size - 1)]
    detail[:n][enough] = ((lower + upper) / 2)[enough]
    cap[:n][enough] = factor * detail[:n][enough] + 1.0
    return detail[parts], cap[parts]


def _parts(hole: np.ndarray, patch: int, band: float) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """The hole's separate parts (pieces closer than two patches count as one), each with its own window:
    the part's box grown by its own source band. A spoon's tip above a cup and its bowl on the saucer are
    filled each from its own surroundings, not both from a band sized by their joint extent."""
    near = cv2.dilate(hole.astype(np.uint8), np.ones((2 * patch + 1, 2 * patch + 1), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(near, connectivity=8)
    h, w = hole.shape
    parts = []
    for i in range(1, n):
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        reach = max(3 * patch, int(band * max(bw, bh))) + patch
        y0, y1, x0, x1 = max(0, y - reach), min(h, y + bh + reach), max(0, x - reach), min(w, x + bw + reach)
        part = hole[y0:y1, x0:x1] & (labels[y0:y1, x0:x1] == i)
        if part.any():
            parts.append(((y0, y1, x0, x1), part))
    return parts


# What the embedded fill runs with unless told otherwise (day 6, measured side by side on the 48 bench scenes
# and the 36 held-out ones, docs/benchmarks/erase-fill-targets.md): region boundaries continued across the hole
# first (structure) and the hole rebuilt in the gradient domain (meld: no hard seams or blocks between copies).
# Together they keep the coffee cup's rim and wall and leave no hard-edged block where the spoon's bowl lay;
# apart, structure gave blocky copies and meld alone softened the rim's jags into a haze. The coherence bias
# (0.25) would win back some texture (0.75 -> 0.79 on the bench) but spreads a soft edge's halo further
# (tests/test_erase_region.py) and keeps outlines less well (tests/test_structure.py), so it stays off.
# ``texture_vote`` (day 8): where no structure guides the fill (grain, skies, the smooth-surround path) the last
# vote weighs a patch 3 % worse than the best one covering a pixel by 1/e, not 10 % (``complete``'s sharp_final
# 0.1 -> 0.03, vote_floor 0.1 -> 0.01): fewer near-equal copies are averaged into the voted colours and steps, so the meld
# integrates a less smoothed field. Bench (48 scenes): HaarPSI wins 81.2 -> 83.3 %, texture 0.746 -> 0.754, photos
# -0.05 -> -0.07 dB against Telea; held out 91.7 % both, texture 0.783 -> 0.792. Keys given explicitly in
# ``options`` win. Not on the structure path then: on the coffee it made the hard inner edge of the cup's shadow
# (where the bowl lay) jaggier at 3x; since day 10 that area is reshaded (shading.py) and day 11 turns it on
# there too (``struct_detail`` below).
# ``plain_start`` (day 9): on the plain path only (no structure guide, not a smooth surround) each finer level
# starts from each hole pixel's own inherited source pixel where it agrees with the vote on the local mean
# within 10 levels (``complete(init_copy=...)``, ``_copy_start``), not from the vote of 49 patches, whose blur the
# search then matched with empty or smooth sources. Bench (48 scenes): HaarPSI wins 83.3 -> 87.5 %, texture
# 0.755 -> 0.765, photos -0.07 -> -0.14 dB against Telea; held out 91.7 -> 94.4 %, +3.24 -> +3.37 dB, texture
# 0.791 -> 0.813 (docs/benchmarks/erase-fill-targets.md, Day 9). Not on the smooth-surround path (the moon's and
# the rocket's skies lose their wins there), nor on the structure path (the coffee stays byte-identical).
# ``plain_detail`` (day 9): on the plain path only, like ``plain_start``, the search's detail floor at 0.15
# (``complete(detail=...)``, ``_detail_floor``: a source flatter than the ring's median isotropic detail costs
# more, so grass, gravel and stars are no longer filled from the flat or empty sources that match the blurred
# estimate best). Bench (48 scenes): HaarPSI wins 87.5 % both, texture 0.765 -> 0.782 (photos 0.704 -> 0.726),
# photos -0.14 -> -0.20 dB against Telea; held out 94.4 % both, texture 0.813 -> 0.836, GMSD wins 94.4 -> 97.2 %.
# Not on the smooth-surround path (there the moons' near ties p11/hp23 go to Telea), nor on the structure path
# (the coffee stays byte-identical).
# ``struct_detail`` (day 11): on the structure path (holes up to ``STRUCT_DETAIL_MAX``) the sharper last vote
# of ``texture_vote`` too. Bench (48 scenes): texture 0.782 -> 0.787 (photos 0.727 -> 0.733), HaarPSI wins 87.5 %
# both (the same 6 losers), photos -0.196 -> -0.203 dB against Telea; held out 94.4 % both, +3.39 -> +3.36 dB,
# texture 0.837 -> 0.842; the coffee (seeds 0-2, 1x and 3x) and the structure-path scenes look as before. Not the
# detail floor here: with it (0.15-0.25) the bench reaches 0.792-0.795 (0.800-0.802 with init_copy, coherence
# or detail_iso 0, which copy a ghost or fragments: p03, p34), but it pulls the fill off structure the guide
# continues: tests/test_structure.py fails with it, the penumbra strip at 0.15 (error 21 -> 25 levels) and the
# noisy disc's outline at 0.25 (6 px on the wrong side) (docs/benchmarks/erase-fill-targets.md, Day 11: texture).
# ``grain`` (day 11, grain11): after the fill, on every path, the fill's detail (the image minus a 3 px
# Gaussian) is raised toward its ring's (the robust grain of the known pixels within 21 px, edges left out; per
# structure label on the structure path; none where the ring is smooth), at most 2x, saturating at 1.5x the
# ring's grain, so steps keep their size, and none within 3 px of a coherent step (a seam, an edge: no halo)
# (backend/imaging/grain.py, the rule shading.py's soft shading uses). What is copied does not change: the
# sources are flatter than the ring (p25, p33, p07: 0.5-0.6 of its detail), not the vote. Bench (48 scenes):
# texture 0.787 -> 0.810 (photos 0.733 -> 0.760), HaarPSI wins 87.5 -> 89.6 % (p07 won, none lost; HaarPSI up
# on 36 scenes, down on 5 by <= 0.004; GMSD wins 85.4 -> 87.5 %), photos -0.203 -> -0.239 dB; held out 94.4 %
# both, +3.36 -> +3.33 dB, texture 0.842 -> 0.861; the README coffee the same by eye (<= 3 levels on 424-601 px,
# seeds 0-2, after day 11's selected-shadow region; 123-165 px before it). Per path: plain +0.015, structure +0.007, smooth +0.002. {"grain": {}} turns it off
# (docs/benchmarks/erase-fill-targets.md, Day 11: grain11).
# ``part_search`` (day 14, speck14): on the structure path (holes up to ``STRUCT_DETAIL_MAX``) the search keeps
# each hole pixel's source centres on surfaces at most ``PART_FACTOR`` x as busy as its own (+ 1 level): a
# surface is a label's connected part, its detail the median local detail of its known pixels
# (``_surface_detail``). k-means groups colours, not surfaces: the README coffee's dark red is the cup's body
# (3.6) and, beyond the saucer, the table's dark grain (10.2), and a tenth of the hole took its patches from a
# surface that busy; the mottled dark and pale specks along the cup's right silhouette and the dark slash by
# its foot were the table's grain (/work/reports/d14-notes.md). Bench (48 scenes, on b28c652): +2.114 -> +2.119 dB
# (photos -0.167 -> -0.160), HaarPSI wins 89.6 %, texture 0.809; held out +3.321 -> +3.310 dB, 94.4 %, texture
# 0.859; 13 scenes move, none by 0.5 dB (stripes, craters and wood grain have parts of one detail, so
# no cap between them: hs09's stripes, the moon, the wood do not move; a cap on the part alone, no detail test,
# cost hs09 -3.4 dB and hp11 -4.4 dB). {"part_search": False} turns it off (docs/benchmarks/erase-fill.md).
# ``periodic`` (session 15, grid15): on every path, a regular texture (tiles, a fence, stripes, wood rings) is copied at
# its own period (He & Sun 2012): the source band's dominant offsets (``_dominant_offsets``: sharp peaks of its masked
# normalised autocorrelation at least 0.5 high; none on the bench's photos, the README coffee or its robust variants)
# start every level but the finest from copies whole periods away (``_periodic_guess``) and join the search as
# candidates (``_patchmatch``'s ``shifts``). s07-tiles' grout line, lying inside a thin bar, had been lost at the
# coarsest level for good: its patches see only plain tile in their known part. Bench (48 scenes, on main 52f00f6):
# +2.119 -> +2.505 dB (photos -0.161, unchanged), HaarPSI wins 89.6 %, texture 0.809 -> 0.814; held out +3.310 ->
# +3.356 dB, 94.4 %, texture 0.859 -> 0.861; s07-tiles 19.87 -> 35.63 dB; 12 regular scenes move, 4 down by 0.6-1.5 dB
# with the same look (docs/benchmarks/erase-fill.md, regular textures). {"periodic": 0} turns it off.
EMBEDDED_DEFAULTS = {
    "structure": True,
    "meld": True,
    "texture_vote": {"sharp_final": 0.03, "vote_floor": 0.01},
    "plain_start": {"init_copy": 10.0},
    "plain_detail": {"detail": 0.15},
    "soft_shading": True,
    "struct_detail": {"sharp_final": 0.03, "vote_floor": 0.01},
    "grain": {"plain": 2.0, "structure": 2.0, "smooth": 2.0, "sigma": 3.0},
    "part_search": True,
    "periodic": 0.5,
}


@dataclass
class PatchMatchFiller:
    """The embedded erase fill: multi-scale PatchMatch completion (see the module docstring), each separate part
    of the hole in its own window (``_parts``; ``options["per_part"] = False`` fills them together).

    ``context`` (crop around the region, fraction of its long side) is 0.5: the band sources come from; more
    background costs search time without helping (far background rarely belongs in the hole)."""

    name: str = "patchmatch"
    target: int | None = None
    context: float = 0.5
    patch: int = 7
    seed: int = 0
    options: dict = field(default_factory=dict)  # more keyword arguments of ``complete`` (benchmarks)

    takes_hint = True  # ErasePipeline passes ``hint``: see ``complete``

    def __post_init__(self) -> None:
        self.options = {**EMBEDDED_DEFAULTS, **self.options}

    def __call__(self, rgb: np.ndarray, mask: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray:
        hole = np.asarray(mask, bool)
        hint = None if hint is None else np.asarray(hint, bool) & hole
        if not self.options.get("per_part", True):
            return self._fill(rgb, hole, hint)
        parts = _parts(hole, self.patch, float(self.options.get("band", 0.5)))
        if len(parts) <= 1:
            return self._fill(rgb, hole, hint)
        out = np.ascontiguousarray(rgb[:, :, :3]).copy()
        pending = hole.copy()  # the parts not filled yet still hold the object: missing, never a source
        for (y0, y1, x0, x1), part in parts:
            part_hint = None if hint is None else hint[y0:y1, x0:x1] & part
            filled = self._fill(out[y0:y1, x0:x1], pending[y0:y1, x0:x1], part_hint)
            out[y0:y1, x0:x1][part] = filled[part]
            pending[y0:y1, x0:x1][part] = False
        return out

    def _fill(self, rgb: np.ndarray, mask: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray:
        """On a smooth surround (the rim's low-pass fits one quadratic surface within ``smooth_rim`` levels:
        a gradient sky or studio backdrop, with or without fine grain or stripes) the colour comes from a
        membrane across the hole and PatchMatch fills only the detail (the image minus its low-pass): copies
        from different heights of a gradient no longer meet in blocks of different brightness. Elsewhere
        (edges, objects, coarse texture) PatchMatch fills the image itself. Measured: the real-Krita test
        scene (a gradient under faint stripes) lost its two-tone blocks; 48 scenes: photos +0.03 dB, GMSD
        wins +2 %, structure -0.2 dB (wood grain, whose rings partly live in the low-pass)."""
        from backend.imaging import rim_residual

        rgb = np.ascontiguousarray(rgb[:, :, :3])
        smooth = float(self.options.get("smooth_rim", SMOOTH_RIM))
        found = None
        is_smooth = smooth > 0 and (~mask).any() and _smooth_surround(rgb, mask, smooth, rim_residual)
        robust = False
        if not is_smooth and self.options.get("structure", False):
            from .structure import find_structure, only_gradient_contours

            # the picture's structure does not depend on the fill's seed (it varies the copies, not what the
            # regions are): k-means found the coffee lip's corner on 4 of 5 seeds (bulge11)
            found = find_structure(rgb, mask, seed=STRUCTURE_SEED)
            # boundaries that are only contour lines of a smooth gradient (a dusk sky cut into bands by the
            # segmentation) say the surround is smooth where the rim test saw a thin mast or a light cross it;
            # that mast's shade is kept out of the surface (robust), or the membrane smears it into the hole
            robust = is_smooth = smooth > 0 and found is not None and only_gradient_contours(rgb, found)
        if is_smooth:
            low = _low_pass(rgb, mask, LOW_PASS_SIGMA, robust=robust)
            detail = np.clip(np.rint(rgb.astype(np.float32) - low + 128), 0, 255).astype(np.uint8)
            out = self._complete(detail, mask, hint=hint).astype(np.float32) - 128 + low
            filled = rgb.copy()
            filled[mask] = np.clip(np.rint(out[mask]), 0, 255).astype(np.uint8)
            if hint is not None:
                filled[hint] = rgb[hint]  # the detail's rounding must not touch the real pixels
            return self._grain(filled, mask, hint, "smooth")
        if found is not None:
            # region boundaries that enter the hole are continued across it first; each hole pixel then draws
            # its patches from its own region (backend/erase/structure.py); none found: the plain completion.
            # With the plain vote it lost on the held-out scenes (day 4: stripes, wood grain and a horizon
            # filled with a wrong region's block); with the gradient-domain vote (meld) it wins there too
            weight = float(self.options.get("guide_weight", GUIDE_WEIGHT))
            # by a contour closed across the hole (a cup's lip) the meld keeps the voted colours' steps
            width = int(self.options.get("contour_keep", 2 * self.patch - 1))  # a patch's reach either side
            sides = found.contour_sides(mask.shape, width) if width > 0 else None
            keep = None if sides is None else sides > 0
            outline = found.silhouette_band(mask.shape, width) if width > 0 else None
            if outline is not None:  # a body's silhouette drawn from its rim: an edge the meld keeps as well
                keep = outline if keep is None else keep | outline
            busy = None
            if self.options.get("part_search", False) and np.count_nonzero(mask) <= STRUCT_DETAIL_MAX:
                # a surface is not filled from a busier one (specks); a huge hole keeps its speed (0.3 s at 1300^2)
                busy = _surface_detail(
                    rgb, mask, found.labels, float(self.options.get("part_factor", PART_FACTOR))
                )
            filled = self._complete(rgb, mask, guide=found.guide(weight), hint=hint, keep=keep, busy=busy)
            sigma = float(self.options.get("contour_edge", CONTOUR_EDGE))
            if sides is not None and sigma > 0:
                # the kept steps are binary: the edge anti-aliased as the photo's own outline is
                free = mask if hint is None else mask & ~hint
                edged = filled.astype(np.float64)
                _contour_edge(edged, free, sides, sigma)
                filled = np.clip(np.rint(edged), 0, 255).astype(np.uint8)
            if outline is not None:
                free = mask if hint is None else mask & ~hint
                edged = filled.astype(np.float64)
                _silhouette_edge(edged, free, found)
                filled = np.clip(np.rint(edged), 0, 255).astype(np.uint8)
            filled = self._grain(filled, mask, hint, "structure", found.labels)
            if self.options.get("soft_shading", False):
                # a soft shadow's penumbra (a strip the structure found, or a mid tone's edge by its colours):
                # the shading away from hard edges comes from the ring (shading.py); none: None, kept as filled
                from .shading import reshade

                shaded = reshade(rgb, mask, filled, found, hint)
                if shaded is not None:
                    return shaded
            return filled
        return self._grain(self._complete(rgb, mask, hint=hint, plain=True), mask, hint, "plain")

    def _grain(
        self,
        filled: np.ndarray,
        mask: np.ndarray,
        hint: np.ndarray | None,
        path: str,
        labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """The fill's grain raised toward its ring's (``options["grain"]``: a gain per path, ``raise_grain``)."""
        opts = dict(self.options.get("grain", {}))
        gain = float(opts.pop(path, 0.0))
        if gain <= 1.0:
            return filled
        from backend.imaging.grain import raise_grain

        for name in ("plain", "structure", "smooth"):
            opts.pop(name, None)
        per_label = opts.pop("labels", True)
        free = mask if hint is None else mask & ~hint
        return raise_grain(filled, free, gain, labels=labels if per_label else None, **opts)

    def _complete(
        self,
        rgb: np.ndarray,
        mask: np.ndarray,
        guide: np.ndarray | None = None,
        hint: np.ndarray | None = None,
        plain: bool = False,
        keep: np.ndarray | None = None,
        busy: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        # a crop too small for one whole patch of known pixels: smaller patches, then Telea (a few pixels wide)
        skip = (
            "per_part",
            "smooth_rim",
            "structure",
            "guide_weight",
            "texture_vote",
            "plain_start",
            "plain_detail",
            "soft_shading",
            "struct_detail",
            "contour_keep",
            "contour_edge",
            "grain",
            "part_search",
            "part_factor",
        )
        told = {k: v for k, v in self.options.items() if k not in skip}
        options = {}
        if guide is None:  # no structure guides this fill: the sharper last vote (EMBEDDED_DEFAULTS)
            options.update(self.options.get("texture_vote", {}))
        elif np.count_nonzero(mask) <= STRUCT_DETAIL_MAX:  # the structure path's (EMBEDDED_DEFAULTS)
            options.update(self.options.get("struct_detail", {}))
        if plain:  # nor a smooth surround: the coherent start (EMBEDDED_DEFAULTS)
            options.update(self.options.get("plain_start", {}))
            options.update(self.options.get("plain_detail", {}))  # the detail floor (EMBEDDED_DEFAULTS)
        options.update(told)  # keys given explicitly win
        if keep is not None and keep.any():
            options["keep_steps"] = keep
        if busy is not None:
            options["source_busy"] = busy
        first = options.pop("patch", self.patch)
        for patch in sorted({first, 5, 3}, reverse=True):
            if patch > first:
                continue
            try:
                return complete(rgb, mask, patch=patch, seed=self.seed, guide=guide, hint=hint, **options)
            except NoSource:
                continue
        free = np.asarray(mask, bool) if hint is None else np.asarray(mask, bool) & ~hint
        return cv2.inpaint(
            np.ascontiguousarray(rgb[:, :, :3]), free.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA
        )


def warm_up() -> float:
    """Compile (or load from numba's cache) every kernel by completing a tiny image; returns the seconds taken.
    The backend calls this at start so the user's first erase does not pay for it."""
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    hole = np.zeros((48, 48), bool)
    hole[18:34, 16:30] = True
    for busy in (None, (np.zeros(hole.shape, np.float32), np.full(hole.shape, 1e30, np.float32))):
        complete(  # the search with and without the structure path's surface caps (``_surface_detail``)
            img,
            hole,
            em_coarse=1,
            em_fine=1,
            pm_iters=1,
            meld=EMBEDDED_DEFAULTS["meld"],
            source_busy=busy,
        )
    from .structure import label_hole  # the structure path's one numba kernel (its flood)

    label_hole(np.where(hole, -1, 0).astype(np.int32), hole, np.zeros_like(hole))
    return time.perf_counter() - t
