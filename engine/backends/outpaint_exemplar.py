"""Exemplar-based hole filling: coarse-to-fine PatchMatch completion (Wexler et al. 2007; Barnes et al.
2009).

Every hole pixel is rebuilt from patches copied out of the known image: at each pyramid level a
nearest-neighbour field (NNF) maps each patch that touches the hole to its most similar fully known patch
(PatchMatch: propagation plus random search), and each hole pixel becomes the weighted vote of the patches
that cover it. The coarse levels settle the layout (a horizon, a floor, a wall edge continue across the
seam); the fine levels copy real grain. A row penalty guides the search: a turning camera keeps the floor,
horizon and ceiling in their rows. Unlike mirroring across the seam, the copied texture does not fold back
on itself, and unlike a smooth fill it keeps the photo's detail, so a chain of views (360 mode) stays
textured and equally bright.

Kernels are numba-compiled (numba is already a dependency of the CPU rasterizer); timing against the
mirror method: benchmarks/bench_outpaint.py.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np
from scipy import ndimage


@numba.njit(cache=True, nogil=True)
def _patch_cost(img, ty, tx, sy, sx, half, cutoff, row_weight):  # pragma: no cover - numba
    """Sum of squared colour differences between the patches at (ty, tx) and (sy, sx), plus a penalty on the
    row change (row_weight * dy^2); stops past cutoff.

    The row penalty is the structure guide: when the camera turns, the horizon, floor and ceiling stay in
    their rows, so a patch is taken from about the same height. Target pixels outside the image are skipped
    (sources are always fully inside: see _valid_sources)."""
    h, w, c = img.shape
    total = row_weight * (sy - ty) * (sy - ty)
    for dy in range(-half, half + 1):
        y = ty + dy
        if y < 0 or y >= h:
            continue
        for dx in range(-half, half + 1):
            x = tx + dx
            if x < 0 or x >= w:
                continue
            for ch in range(c):
                d = img[y, x, ch] - img[sy + dy, sx + dx, ch]
                total += d * d
        if total > cutoff:
            return total
    return total


@numba.njit(cache=True, nogil=True)
def _patchmatch(
    img, targets_y, targets_x, index, valid, nnf, cost, half, iters, seed, row_weight
):  # pragma: no cover
    """Improve the NNF of every target patch in place (scan-order propagation + random search).

    index [H, W] int: target number of a pixel or -1; valid [H, W] bool: pixels usable as source centres."""
    np.random.seed(seed)
    h, w = valid.shape
    n = targets_y.shape[0]
    for t in range(n):
        cost[t] = _patch_cost(img, targets_y[t], targets_x[t], nnf[t, 0], nnf[t, 1], half, 1e30, row_weight)
    for it in range(iters):
        step = 1 if it % 2 == 0 else -1
        start = 0 if step == 1 else n - 1
        for k in range(n):
            t = start + step * k
            ty = targets_y[t]
            tx = targets_x[t]
            # Propagation: a neighbour's match shifted by one pixel is often a good match here too.
            for nb in range(2):
                ny = ty - step if nb == 0 else ty
                nx = tx if nb == 0 else tx - step
                if ny < 0 or ny >= h or nx < 0 or nx >= w:
                    continue
                j = index[ny, nx]
                if j < 0:
                    continue
                sy = nnf[j, 0] + (ty - ny)
                sx = nnf[j, 1] + (tx - nx)
                if sy < 0 or sy >= h or sx < 0 or sx >= w or not valid[sy, sx]:
                    continue
                c = _patch_cost(img, ty, tx, sy, sx, half, cost[t], row_weight)
                if c < cost[t]:
                    cost[t] = c
                    nnf[t, 0] = sy
                    nnf[t, 1] = sx
            # Random search in shrinking windows, alternately around the current match and around the
            # target's own row (where the structure guide wants the source).
            radius = max(h, w)
            r = 0
            while radius >= 1:
                cy = nnf[t, 0] if r % 2 == 0 else ty
                sy = cy + np.random.randint(-radius, radius + 1) // (1 if r % 2 == 0 else 4)
                sx = nnf[t, 1] + np.random.randint(-radius, radius + 1)
                r += 1
                if 0 <= sy < h and 0 <= sx < w and valid[sy, sx]:
                    c = _patch_cost(img, ty, tx, sy, sx, half, cost[t], row_weight)
                    if c < cost[t]:
                        cost[t] = c
                        nnf[t, 0] = sy
                        nnf[t, 1] = sx
                radius //= 2


@numba.njit(cache=True, nogil=True)
def _vote(img, hole, index, nnf, cost, half, out):  # pragma: no cover - numba
    """Each hole pixel = weighted mean of the source pixels proposed by every target patch covering it."""
    h, w, c = img.shape
    n = cost.shape[0]
    mean_cost = 0.0
    for t in range(n):
        mean_cost += cost[t]
    mean_cost = mean_cost / max(n, 1) + 1e-8
    acc = np.zeros(c)
    for y in range(h):
        for x in range(w):
            if not hole[y, x]:
                continue
            wsum = 0.0
            for ch in range(c):
                acc[ch] = 0.0
            for dy in range(-half, half + 1):
                qy = y - dy
                if qy < 0 or qy >= h:
                    continue
                for dx in range(-half, half + 1):
                    qx = x - dx
                    if qx < 0 or qx >= w:
                        continue
                    j = index[qy, qx]
                    if j < 0:
                        continue
                    wgt = np.exp(-cost[j] / mean_cost)
                    sy = nnf[j, 0] + dy
                    sx = nnf[j, 1] + dx
                    for ch in range(c):
                        acc[ch] += wgt * img[sy, sx, ch]
                    wsum += wgt
            if wsum > 0:
                for ch in range(c):
                    out[y, x, ch] = acc[ch] / wsum


@numba.njit(cache=True, nogil=True)
def _onion_fill(img, hole, valid, half, row_weight):  # pragma: no cover - numba
    """Coarsest-level start: fill the hole layer by layer from its border; each pixel copies the centre of the
    known patch that best matches its already filled neighbours (brute force: the level is tiny)."""
    h, w, c = img.shape
    filled = ~hole
    vy, vx = np.nonzero(valid)
    ns = vy.shape[0]
    remaining = hole.sum()
    while remaining > 0:
        front_y = []
        front_x = []
        for y in range(h):
            for x in range(w):
                if filled[y, x]:
                    continue
                touch = False
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w and filled[yy, xx]:
                            touch = True
                if touch:
                    front_y.append(y)
                    front_x.append(x)
        if len(front_y) == 0:
            break
        for i in range(len(front_y)):
            ty, tx = front_y[i], front_x[i]
            best, best_s = 1e30, 0
            for s in range(ns):
                sy, sx = vy[s], vx[s]
                total, count = 0.0, 0
                for dy in range(-half, half + 1):
                    y = ty + dy
                    if y < 0 or y >= h:
                        continue
                    for dx in range(-half, half + 1):
                        x = tx + dx
                        if x < 0 or x >= w or not filled[y, x]:
                            continue
                        for ch in range(c):
                            d = img[y, x, ch] - img[sy + dy, sx + dx, ch]
                            total += d * d
                        count += 1
                cost = total * (2 * half + 1) ** 2 / max(count, 1) + row_weight * (sy - ty) * (sy - ty)
                if cost < best:
                    best, best_s = cost, s
            for ch in range(c):
                img[ty, tx, ch] = img[vy[best_s], vx[best_s], ch]
        for i in range(len(front_y)):
            filled[front_y[i], front_x[i]] = True
        remaining -= len(front_y)


def _valid_sources(known: np.ndarray, half: int) -> np.ndarray:  # [H, W] bool
    """Centres whose whole patch lies inside the image and on known pixels."""
    size = 2 * half + 1
    valid = ndimage.binary_erosion(known, structure=np.ones((size, size), bool), border_value=0)
    if not valid.any():  # tiny known region: accept partly known patches rather than nothing
        valid = known.copy()
        valid[:half] = valid[-half:] = False
        valid[:, :half] = valid[:, -half:] = False
    return valid


def _pyramid(
    image: np.ndarray, hole: np.ndarray, known: np.ndarray, own: np.ndarray, min_side: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Finest first: (image, hole, known, own). A coarse pixel is a hole if any of its fine pixels is, known
    only if all are (known pixels stay exact); `own` marks the view's pixels (not the reference's)."""
    levels = [(image, hole, known, own)]
    while min(levels[-1][1].shape) // 2 >= min_side:
        img, hl, kn, ow = levels[-1]
        size = (img.shape[1] // 2, img.shape[0] // 2)

        def down(m: np.ndarray, size=size) -> np.ndarray:
            return cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA)

        img_small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        levels.append((img_small, down(hl) > 0, down(kn) > 1 - 1e-6, down(ow) > 0.5))
    return levels


def _targets(hole: np.ndarray, own: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches that touch the hole (hole dilated by the patch radius, inside the view's own pixels).

    -> ys [T], xs [T], index [H, W]."""
    size = 2 * half + 1
    touched = ndimage.binary_dilation(hole, structure=np.ones((size, size), bool)) & own
    ys, xs = np.nonzero(touched)
    index = np.full(hole.shape, -1, np.int64)
    index[ys, xs] = np.arange(len(ys))
    return ys.astype(np.int64), xs.astype(np.int64), index


def _random_field(valid: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:  # [n, 2] int64
    vy, vx = np.nonzero(valid)
    pick = rng.integers(0, len(vy), n)
    return np.stack([vy[pick], vx[pick]], axis=1).astype(np.int64)


def exemplar_fill(
    image: np.ndarray,  # [H, W, 3] float32, values inside `hole` are ignored
    hole: np.ndarray,  # [H, W] bool, True = fill
    initial: np.ndarray,  # [H, W, 3] float32 first guess for the hole at the coarsest level (a smooth fill)
    *,
    patch: int = 7,
    min_side: int = 12,
    iters_coarse: int = 6,
    iters_fine: int = 1,
    row_weight: float = 3.0,
    seed: int = 0,
    reference: np.ndarray | None = None,  # [H', W', 3] float32 more texture to copy from (e.g. the photo)
) -> np.ndarray:  # [H, W, 3] float32
    """Fill `hole` with texture copied from the rest of `image` (and from `reference`), coarse to fine.

    The reference sits beside the view, scaled to its height, behind a gap of replicated border pixels: its
    patches are sources like the view's known ones. In a chain of views (360 mode) the photo stays a sharp,
    correctly exposed source, where the view's known pixels are renders of renders."""
    h, w = hole.shape
    image = image.astype(np.float32)
    initial = initial.astype(np.float32)
    known = ~hole
    own = np.ones_like(hole)
    if reference is not None:
        rh, rw = reference.shape[:2]
        ref = cv2.resize(reference.astype(np.float32), (max(1, round(rw * h / rh)), h), cv2.INTER_AREA)
        gap = patch + 1

        def beside(a: np.ndarray, gap_value, ref_value) -> np.ndarray:
            g = np.repeat(a[:, -1:], gap, axis=1) if gap_value is None else np.full((h, gap), gap_value)
            r = ref if ref_value is None else np.full((h, ref.shape[1]), ref_value)
            return np.concatenate([a, g.astype(a.dtype), r.astype(a.dtype)], axis=1)

        image, initial = beside(image, None, None), beside(initial, None, None)
        hole, known, own = beside(hole, False, False), beside(known, False, True), beside(own, False, False)
    out = _fill_levels(
        image, hole, known, own, initial, patch, min_side, iters_coarse, iters_fine, row_weight, seed
    )
    return out[:, :w]


def _fill_levels(
    image, hole, known, own, initial, patch, min_side, iters_coarse, iters_fine, row_weight, seed
):
    half = patch // 2
    rng = np.random.default_rng(seed)
    levels = _pyramid(image, hole, known, own, min_side)
    init_levels = [initial.astype(np.float32)]
    for img, *_ in levels[1:]:
        init_levels.append(cv2.resize(init_levels[-1], (img.shape[1], img.shape[0]), cv2.INTER_AREA))
    current = None
    prev_nnf = prev_index = None
    prev_shape = None
    for li in range(len(levels) - 1, -1, -1):
        img_l, hole_l, known_l, own_l = levels[li]
        h, w = hole_l.shape
        if not known_l.any():
            return initial.astype(np.float32)
        valid = _valid_sources(known_l, half)
        if not valid.any():
            return initial.astype(np.float32)
        work = img_l.copy()
        # row_weight is in units of a full-patch colour mismatch of 0.1 per channel for a shift of 10 % of H.
        rw = row_weight * 0.01 * 3 * patch * patch / (0.1 * h) ** 2
        if current is None:
            work[hole_l] = init_levels[li][hole_l]
            _onion_fill(work, hole_l, valid, half, rw)
        else:
            up = cv2.resize(current, (w, h), interpolation=cv2.INTER_LINEAR).reshape(work.shape)
            work[hole_l] = up[hole_l]
        ys, xs, index = _targets(hole_l, own_l, half)
        nnf = _random_field(valid, len(ys), rng)
        if prev_nnf is not None:
            # Inherit the coarser match (doubled) where it lands on a valid source.
            py = np.minimum(ys // 2, prev_shape[0] - 1)
            px = np.minimum(xs // 2, prev_shape[1] - 1)
            j = prev_index[py, px]
            has = j >= 0
            cand = prev_nnf[j[has]] * 2 + np.stack([ys[has] % 2, xs[has] % 2], axis=1)
            cand[:, 0] = np.clip(cand[:, 0], 0, h - 1)
            cand[:, 1] = np.clip(cand[:, 1], 0, w - 1)
            ok = valid[cand[:, 0], cand[:, 1]]
            rows = np.nonzero(has)[0][ok]
            nnf[rows] = cand[ok]
        cost = np.zeros(len(ys), np.float64)
        iters = iters_coarse if li == len(levels) - 1 else (iters_fine if li == 0 else 2)
        for _ in range(iters):
            _patchmatch(work, ys, xs, index, valid, nnf, cost, half, 2, int(rng.integers(1 << 30)), rw)
            _vote(work, hole_l, index, nnf, cost, half, work)
        current = work
        prev_nnf, prev_index, prev_shape = nnf, index, (h, w)
    return current.astype(np.float32)
