"""Aligning a training slice onto a synthetic image: the search behind the aligned pixel distance.

A synthetic image is a near-copy of a training slice when some plausible re-acquisition of that
slice reproduces it: mirrored left-right, rotated by a few degrees, scaled by a few per cent,
shifted by a few pixels, with another brightness curve and some noise. This module finds, for a
pair (synthetic image ``q``, training slice ``t``), the re-acquisition that brings ``t`` closest to
``q`` and reports how close that is.

The distance
------------
Both images are blurred by a Gaussian of :data:`BLUR_SIGMA_AT_64` px (per 64 px of image side;
this is what forgives noise) and reduced by area averaging to ``work_size`` px (default 32: after
the blur, a 64 px image has almost nothing above that resolution's Nyquist frequency, and the
cost no longer depends on the dataset's image size). ``t`` is warped by

    y = s R(theta) M x + d        (x: pixel of t, y: pixel of the copy, both from the image centre)

with ``M`` an optional left-right mirror, ``|theta| <= max_rotation`` degrees, ``|log s| <= log(1 +
max_scale)`` and ``|d| <= max_shift`` (a fraction of the side, per axis). The brightness curve is
then removed in closed form: ``q`` is regressed on ``1, w, w^2`` (``w`` the warped slice), which
absorbs ``a x + b`` exactly and a gamma of 0.7-1.4 to within a few thousandths of the variance. The
distance is ``sqrt(1 - R^2)``: the square root of the share of the synthetic image's variance that
the aligned slice cannot explain (0 = identical after alignment, 1 = unrelated).

The search
----------
Exhaustive search over every pair and every transform costs too much, so it is done coarse to
fine (Lucas & Kanade 1981; Baker & Matthews 2004 for the Gauss-Newton form):

1. *Coarse candidates* (:mod:`brainsynth.evaluate.privacy.search`). Each image is moved so that the
   centroid of its brain mask sits at the image centre (this removes translation in closed form)
   and reduced to :data:`COARSE_SIZE` px. Queries are correlated with references under a grid of
   mirror x rotation (5 degree steps) x scale (5 % steps) (:func:`coarse_bank`,
   :func:`coarse_similarity_of_pairs`), and each query keeps a few candidates (see that module,
   and its prefilter, for which pairs are ranked).
2. *Refinement* (:func:`refine`, :mod:`brainsynth.evaluate.privacy.gauss_newton`). For each candidate pair, the best grid
   transform of each mirror state (plus the shift implied by the two centroids) starts
   Levenberg-Marquardt steps over rotation, scale and shift at ``work_size``, the brightness
   fitted in closed form at every step (variable projection, Golub & Pereyra 2003), each
   parameter kept inside its bound. A brain is nearly symmetric, so both mirror states get two
   steps and the better one continues. Pairs that are not candidates get distance ``inf``.

Resampling uses torch's ``affine_grid``/``grid_sample`` (:mod:`brainsynth.evaluate.privacy.transforms`; border padding,
bicubic for the distance, bilinear for the steps): it is already a dependency, it warps thousands
of image pairs in one batched call, each with its own transform, and sampling the gradient images
at the same points gives the Jacobian the Gauss-Newton step needs. SimpleITK, the obvious
alternative, registers one pair per call (a Python loop over the ~30,000 candidate pairs of a
2,000-image audit) and would be a new compiled dependency; scikit-image's ``warp`` likewise works
one image at a time. Border padding repeats the background of a skull-stripped slice instead of
inventing a black frame. Everything runs on the device the images were prepared on (``prepare(...,
device=)``: CUDA when the command is given ``--device cuda``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from brainsynth.evaluate.privacy.gauss_newton import ITERATIONS, final_distance, gauss_newton, readable
from brainsynth.evaluate.privacy.nearest import Nearest, from_pairs
from brainsynth.evaluate.privacy.transforms import Family, affine, matrix, sample

BLUR_SIGMA_AT_64 = 1.0
"""Gaussian blur (px per 64 px of image side) applied before matching. Independent pixel noise
shrinks by about 3.5x at sigma 1 px while anatomy several pixels wide survives."""

COARSE_SIZE = 16
"""Side (px) of the centroid-centred images the candidates are ranked on."""

COARSE_ROTATION_STEP = 5.0  # degrees between the coarse grid's rotations
COARSE_SCALE_STEP = 0.05  # relative scale between the coarse grid's scales
MASK_LEVEL = 0.3  # brain mask: brighter than background + 0.3 x (bright - background)
PROBE_ITERATIONS = 2  # steps each mirror state gets before the better one is kept
PAIR_CHUNK = 4096  # candidate pairs warped per call: bounds memory at [4096, 3, S, S] floats
PAIR_BLOCK_BYTES = 64 << 20  # warped thumbnails and query rows per matrix product of the coarse grid on pairs


@dataclass
class Prepared:
    """Images made ready for matching (see :func:`prepare`), on one torch device."""

    work: torch.Tensor  # [N, 1, S, S] blurred, at the working size
    centred: torch.Tensor  # [N, C*C] centroid-centred, at the coarse size
    offset: torch.Tensor  # [N, 2] (x, y) brain centroid minus image centre, working px
    area: np.ndarray  # [N] share of the image inside the brain mask
    side: int  # the original image side (px)

    def __len__(self) -> int:
        return len(self.work)

    @property
    def size(self) -> int:
        return int(self.work.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.work.device

    def subset(self, rows: torch.Tensor) -> Prepared:
        """Some of the images (int tensor of rows)."""
        kept = rows.cpu().numpy()
        return Prepared(work=self.work[rows], centred=self.centred[rows],
                        offset=self.offset[rows], area=self.area[kept], side=self.side)


@dataclass
class Matches:
    """Aligned distances of candidate pairs (queries x references), as lists: pairs that are not
    listed were no candidate (distance ``inf``); see :mod:`brainsynth.evaluate.privacy.nearest`."""

    shape: tuple[int, int]  # (queries, references)
    pairs: np.ndarray  # [Np, 2] int (query, reference), sorted
    dist: np.ndarray  # [Np] float32 aligned distance of each pair
    params: np.ndarray  # [Np, 5] float (mirror 0/1, rotation deg, scale, dx px, dy px of the original image)
    coeffs: np.ndarray  # [Np, 3] brightness curve c0 + c1 w + c2 w^2 (w: aligned slice at the working size)

    def nearest(self, ref_groups: np.ndarray) -> tuple[Nearest, np.ndarray]:
        """Each query's nearest reference (:class:`~brainsynth.evaluate.privacy.nearest.Nearest`) and each
        reference's distance to its nearest query (``inf`` without a candidate)."""
        return from_pairs(self.shape[0], self.shape[1], self.pairs, self.dist, np.asarray(ref_groups))

    def dense(self) -> np.ndarray:
        """The [Nq, Nr] matrix (``inf`` where no candidate): for small cases and tests only."""
        out = np.full(self.shape, np.inf, dtype=np.float32)
        out[self.pairs[:, 0], self.pairs[:, 1]] = self.dist
        return out

    def transform(self, i: int, j: int) -> dict[str, float | bool | list[float]]:
        """The re-acquisition found for pair ``(i, j)``, in words-ready units."""
        hit = np.flatnonzero((self.pairs[:, 0] == i) & (self.pairs[:, 1] == j))
        if not len(hit):
            raise KeyError(f"pair ({i}, {j}) was not a candidate")
        p, c = self.params[hit[0]], self.coeffs[hit[0]]
        return {"mirrored": bool(p[0] > 0.5), "rotation_deg": float(p[1]), "scale": float(p[2]),
                "shift_px": [float(p[3]), float(p[4])], "brightness": [float(x) for x in c]}


# --- preparation ------------------------------------------------------------------------------

def prepare(images: np.ndarray, work_size: int, device: str | torch.device | None = None) -> Prepared:
    """Blur, reduce and centre images for matching.

    Parameters
    ----------
    images : np.ndarray
        float [N, H, H] in [0, 1] (square, as every brainsynth dataset).
    work_size : int
        Side (px) the distances are computed at; images smaller than that keep their size.
    device : str or torch.device, optional
        Where the prepared images live and every later step of the search runs (default: the CPU).

    Returns
    -------
    Prepared
    """
    from scipy.ndimage import gaussian_filter

    images = np.asarray(images, dtype=np.float32)
    n, side = len(images), int(images.shape[-1])
    sigma = BLUR_SIGMA_AT_64 * side / 64.0
    blurred = gaussian_filter(images, sigma=(0, sigma, sigma), mode="nearest") if sigma > 0 else images
    work = torch.from_numpy(np.ascontiguousarray(blurred))[:, None]  # [N, 1, H, H]
    size = min(int(work_size), side)
    if size != side:
        work = F.interpolate(work, size=(size, size), mode="area")  # [N, 1, S, S]
    mask = brain_mask(work[:, 0])  # [N, S, S]
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    count = mask.sum((1, 2)).clamp_min(1.0)  # [N]
    offset = torch.stack([(mask * coords[None, None, :]).sum((1, 2)) / count,
                          (mask * coords[None, :, None]).sum((1, 2)) / count], dim=1)  # [N, 2] (x, y)
    shift = torch.zeros(n, 2, 3)
    shift[:, 0, 0] = shift[:, 1, 1] = 1.0
    shift[:, :, 2] = 2 * offset / size  # sample at centroid + y: the centroid lands on the centre
    centred = sample(work, shift)  # [N, 1, S, S]
    coarse = min(COARSE_SIZE, size)
    if coarse != size:
        centred = F.interpolate(centred, size=(coarse, coarse), mode="area")  # [N, 1, C, C]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return Prepared(work=work.contiguous().to(dev),
                    centred=centred.flatten(1).contiguous().to(dev), offset=offset.to(dev),
                    area=mask.mean((1, 2)).numpy().astype(np.float32), side=side)


def brain_mask(images: torch.Tensor) -> torch.Tensor:
    """float {0, 1} [N, H, W]: brighter than background + :data:`MASK_LEVEL` x (bright - background).

    Background and bright are each image's 1st and 99th percentiles, so the mask does not move
    with a brightness change ``a x + b`` (a > 0).
    """
    flat = images.flatten(1)  # [N, H*W]
    low = torch.quantile(flat, 0.01, dim=1)[:, None, None]  # [N, 1, 1]
    high = torch.quantile(flat, 0.99, dim=1)[:, None, None]
    return ((images - low) > MASK_LEVEL * (high - low).clamp_min(1e-6)).float()


def brain_area(images: np.ndarray) -> np.ndarray:
    """Share of each image [N, H, W] inside its brain mask (after the matching blur); float32 [N]."""
    return prepare(images, work_size=32).area


# --- transforms -------------------------------------------------------------------------------

def coarse_grid(family: Family, rotation_step: float = COARSE_ROTATION_STEP,
                scale_step: float = COARSE_SCALE_STEP) -> torch.Tensor:
    """[T, 3] (mirror 0/1, rotation rad, log scale) of the coarse search (steps: degrees, relative scale)."""
    n_rot = 2 * math.ceil(family.max_rotation / rotation_step) + 1 if family.max_rotation > 0 else 1
    n_scale = 2 * math.ceil(family.max_scale / scale_step) + 1 if family.max_scale > 0 else 1
    rotations = torch.linspace(-family.max_rotation, family.max_rotation, n_rot) * math.pi / 180
    log_scales = torch.linspace(-math.log1p(family.max_scale), math.log1p(family.max_scale), n_scale)
    flips = (0.0, 1.0) if family.flip else (0.0,)
    return torch.tensor([(f, float(r), float(s)) for f in flips for r in rotations for s in log_scales])


# --- coarse similarity ------------------------------------------------------------------------

def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows centred and scaled to unit length (their dot products are correlations)."""
    x = x - x.mean(dim=-1, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def coarse_bank(refs: Prepared | torch.Tensor, grid: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """[stop - start, Nr, C*C] unit rows: every reference (its centred thumbnail, or thumbnails [Nr, C*C])
    under grid transforms start..stop."""
    centred = refs.centred if isinstance(refs, Prepared) else refs
    c = int(math.isqrt(centred.shape[1]))
    images = centred.view(-1, 1, c, c)
    out = []
    for f, r, s in grid[start:stop].to(images.device):
        a = matrix(f[None], r[None], s[None]).expand(len(images), 2, 2)
        theta = affine(a, torch.zeros(len(images), 2, device=images.device), c)
        out.append(unit_rows(sample(images, theta).flatten(1)))  # [Nr, C*C]
    return torch.stack(out)


def coarse_similarity_of_pairs(queries: Prepared, refs: Prepared, pairs: np.ndarray,
                               family: Family) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coarse similarity of listed pairs: the best correlation over the grid, overall and per mirror state.

    Pairs are grouped by reference, so each reference is warped once and compared with all its
    queries in one matrix product (a pair-by-pair gather of the warped thumbnails reads 50
    thumbnails from memory per pair, 10-30x slower).

    Returns
    -------
    best : np.ndarray
        float32 [Np], the best correlation over the whole grid.
    mirror_best : np.ndarray
        float32 [M, Np], the best correlation within each mirror state.
    mirror_arg : np.ndarray
        int64 [M, Np], the grid row that has it.
    """
    grid = coarse_grid(family)
    states = [np.flatnonzero(grid[:, 0].numpy() == m) for m in np.unique(grid[:, 0].numpy())]
    mirror_best = np.full((len(states), len(pairs)), -2.0, np.float32)
    mirror_arg = np.zeros((len(states), len(pairs)), np.int16)  # grid rows (at most 2 x 21 x 21)
    if not len(pairs):
        return np.zeros(0, np.float32), mirror_best, mirror_arg
    q = unit_rows(queries.centred)  # [Nq, P]
    order = np.argsort(pairs[:, 1], kind="stable")
    refs_in_order, first, counts = np.unique(pairs[order, 1], return_index=True, return_counts=True)
    # References in buckets by their number of queries, padded to a power of two: one bmm per chunk.
    bucket = np.ceil(np.log2(np.maximum(counts, 1))).astype(int)
    for b in np.unique(bucket):
        members, width = np.flatnonzero(bucket == b), 1 << int(b)
        chunk = max(1, PAIR_BLOCK_BYTES // (4 * (len(grid) * q.shape[1] + width * (q.shape[1] + len(grid)))))
        for lo in range(0, len(members), chunk):
            sel = members[lo:lo + chunk]
            slots = np.arange(width)[None, :]
            valid = slots < counts[sel][:, None]  # [R, W]
            pair_index = order[np.where(valid, first[sel][:, None] + slots, first[sel][:, None])]  # [R, W]
            sub = refs.subset(torch.as_tensor(refs_in_order[sel], device=refs.device))
            bank = coarse_bank(sub, grid, 0, len(grid)).transpose(0, 1)  # [R, T, P]
            query = q[torch.as_tensor(pairs[pair_index, 0], device=q.device)]  # [R, W, P]
            with torch.no_grad():
                sims = torch.bmm(bank, query.transpose(1, 2)).cpu().numpy()  # [R, T, W]
            for m, rows in enumerate(states):
                part = sims[:, rows, :]  # [R, Tm, W]
                arg = part.argmax(axis=1)  # [R, W]
                mirror_best[m, pair_index[valid]] = np.take_along_axis(part, arg[:, None], 1)[:, 0][valid]
                mirror_arg[m, pair_index[valid]] = rows[arg][valid]
    return mirror_best.max(axis=0), mirror_best, mirror_arg


def pair_starts(queries: Prepared, refs: Prepared, pairs: np.ndarray, family: Family,
                arg: np.ndarray | None = None) -> torch.Tensor:
    """``[M, Np, 5]``: the best coarse transform of each pair in each mirror state M (mirror, rotation
    rad, log scale, dx, dy working px; the shift implied by the two centroids, kept in its bound).

    ``arg`` [M, Np]: the pairs' ``mirror_arg`` from :func:`coarse_similarity_of_pairs`, when the caller has it.
    """
    grid = coarse_grid(family)
    if arg is None:
        _, _, arg = coarse_similarity_of_pairs(queries, refs, pairs, family)
    qi, rj = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    q_offset, r_offset = queries.offset.cpu()[qi], refs.offset.cpu()[rj]
    limit = family.max_shift * queries.size
    out = []
    for m in range(arg.shape[0]):
        chosen = grid[torch.from_numpy(arg[m].astype(np.int64))]  # [Np, 3]
        a = matrix(*chosen.unbind(1))  # [Np, 2, 2]
        # q(y + o_q) ~ t(A y + o_t)  =>  q(z) ~ t(A (z - d)) with d = o_q - A^-1 o_t
        d = q_offset - torch.linalg.solve(a, r_offset[:, :, None])[:, :, 0]  # [Np, 2]
        out.append(torch.cat([chosen, d.clamp(-limit, limit)], dim=1))
    return torch.stack(out)


# --- refinement -------------------------------------------------------------------------------

def refine(queries: Prepared, refs: Prepared, pairs: np.ndarray, family: Family,
           iterations: int = ITERATIONS, starts: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Newton alignment of each candidate pair, from its best coarse transform.

    A brain is nearly symmetric, so at the coarse level a mirror image plus a rotation can beat
    the true rotation. Both mirror states are therefore probed for :data:`PROBE_ITERATIONS` steps
    and the better one is refined to the end.

    Parameters
    ----------
    queries, refs : Prepared
        Same working size.
    pairs : np.ndarray
        int [Np, 2] (query, reference).
    starts : torch.Tensor, optional
        [M, Np, 5] from :func:`pair_starts` (computed here when not given).

    Returns
    -------
    dist : np.ndarray
        float32 [Np], ``sqrt(1 - R^2)`` at the best transform found.
    params : np.ndarray
        float [Np, 5]: mirror (0/1), rotation (degrees), scale, dx and dy in px of the ORIGINAL
        image (the slice is mirrored, rotated and scaled about the centre, then shifted).
    coeffs : np.ndarray
        float [Np, 3]: the brightness curve ``c0 + c1 w + c2 w^2`` (on the working-size images).
    """
    if queries.size != refs.size:
        raise ValueError(f"working sizes differ: {queries.size} vs {refs.size}")
    dist, params, coeffs = (np.zeros(len(pairs), np.float32), np.zeros((len(pairs), 5)), np.zeros((len(pairs), 3)))
    if not len(pairs):
        return dist, params, coeffs
    if starts is None:
        starts = pair_starts(queries, refs, pairs, family)  # [M, Np, 5]
    starts = starts.to(queries.device)
    for lo in range(0, len(pairs), PAIR_CHUNK):
        hi = min(lo + PAIR_CHUNK, len(pairs))
        q, source = _pair_tensors(queries, refs, pairs[lo:hi])
        probe = min(PROBE_ITERATIONS, iterations) if len(starts) > 1 else 0
        found = [gauss_newton(q, source, start[lo:hi], family, probe) for start in starts] if probe else []
        if found:
            r2 = torch.stack([r for _, r in found])  # [M, P]
            chosen = r2.argmax(dim=0)
            begin = torch.stack([p for p, _ in found])[chosen, torch.arange(hi - lo, device=q.device)]  # [P, 5]
        else:
            begin = starts[0, lo:hi]
        best, _ = gauss_newton(q, source, begin, family, iterations - probe)
        d, c = final_distance(q, source[:, :1], best, queries.size)
        dist[lo:hi], params[lo:hi], coeffs[lo:hi] = d, readable(best), c
    params[:, 3:] *= refs.side / refs.size  # working px -> px of the original image
    return dist, params, coeffs


def _pair_tensors(queries: Prepared, refs: Prepared, pairs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The queries [P, N] and the references with their gradients [P, 3, S, S] of some pairs (the gradients are
    computed here, per chunk of pairs, rather than kept for every image: 8 kB per image at 32 px)."""
    qi, rj = (torch.from_numpy(pairs[:, k]).to(queries.device) for k in (0, 1))
    refs_work = refs.work[rj]  # [P, 1, S, S]
    return queries.work[qi].flatten(1), torch.cat([refs_work, gradient(refs_work)], dim=1)


def gradient(work: torch.Tensor) -> torch.Tensor:
    """d/dx and d/dy [N, 2, S, S] of images [N, 1, S, S] (per pixel; central differences, replicated border)."""
    pad = F.pad(work, (1, 1, 1, 1), mode="replicate")  # [N, 1, S+2, S+2]
    return torch.cat([(pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2]) / 2,
                      (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1]) / 2], dim=1)  # [N, 2, S, S]


def align_image(ref: np.ndarray, transform: dict, side: int | None = None) -> np.ndarray:
    """A training slice [H, W] re-acquired by ``transform`` (from :meth:`Matches.transform`), in [0, 1].

    The brightness curve is applied to the unblurred slice, so the image shown is the slice as the
    audit aligned it, at the original resolution.
    """
    ref = np.asarray(ref, dtype=np.float32)
    side = side or ref.shape[-1]
    t = torch.from_numpy(ref)[None, None]  # [1, 1, H, W]
    f = torch.tensor([1.0 if transform["mirrored"] else 0.0])
    a = matrix(f, torch.tensor([transform["rotation_deg"] * math.pi / 180]),
                torch.tensor([math.log(transform["scale"])]))
    w = sample(t, affine(a, torch.tensor([transform["shift_px"]], dtype=torch.float32), side))[0, 0].numpy()
    c0, c1, c2 = transform["brightness"]
    return np.clip(c0 + c1 * w + c2 * w * w, 0.0, 1.0).astype(np.float32)
