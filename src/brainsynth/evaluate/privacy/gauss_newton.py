"""Gauss-Newton refinement of one alignment per pair, and the distance at the end of it.

Levenberg-Marquardt steps (Lucas & Kanade 1981; Baker & Matthews 2004) on rotation, log scale and
shift, the mirror state fixed, the brightness fit ``a + b w`` solved in closed form at every step
(variable projection, Golub & Pereyra 2003). The distance at the end fits the increasing
brightness curve ``c0 + c1 w + c2 w^2`` (:func:`r2_curve`). Called by
:func:`brainsynth.evaluate.privacy.registration.refine`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from brainsynth.evaluate.privacy.transforms import STEP_INTERPOLATION, Family, affine, matrix, sample, sample_points

ITERATIONS = 8  # Gauss-Newton steps per candidate pair (most settle in 3-5)
CONVERGED_ROTATION, CONVERGED_SCALE, CONVERGED_SHIFT = 0.02, 2e-4, 0.01  # deg, log scale, px: a step this small ends


def _fit(q: torch.Tensor, basis: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares fit of q [P, N] on a constant plus ``basis`` ([P, N] each).

    Returns R^2 [P] and the fitted coefficients [P, 1 + len(basis)] (constant first).
    """
    x = torch.stack([torch.ones_like(q)] + basis, dim=1)  # [P, B, N]
    gram = x @ x.transpose(1, 2) + 1e-6 * torch.eye(x.shape[1], device=q.device)  # [P, B, B]
    coef = torch.linalg.solve(gram, (x @ q[:, :, None]))[:, :, 0]  # [P, B]
    resid = q - (coef[:, :, None] * x).sum(1)  # [P, N]
    qc = q - q.mean(1, keepdim=True)
    total = (qc * qc).sum(1).clamp_min(1e-12)
    return (1.0 - (resid * resid).sum(1) / total).clamp(0.0, 1.0), coef


def r2_curve(q: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R^2 [P] of the best increasing brightness curve c0 + c1 w + c2 w^2, and its coefficients [P, 3].

    A quadratic that decreases somewhere on the slice's range of values is not a brightness curve
    of a re-acquisition; such pairs fall back to the straight line (and to R^2 = 0 for a negative
    slope, i.e. inverted contrast).
    """
    r2_quad, c_quad = _fit(q, [w, w * w])
    r2_lin, c_lin = _fit(q, [w])
    lo, hi = w.min(1).values, w.max(1).values
    increasing = (c_quad[:, 1] + 2 * c_quad[:, 2] * lo >= 0) & (c_quad[:, 1] + 2 * c_quad[:, 2] * hi >= 0)
    r2_lin = torch.where(c_lin[:, 1] > 0, r2_lin, torch.zeros_like(r2_lin))
    c_lin = torch.cat([c_lin, torch.zeros_like(c_lin[:, :1])], 1)
    r2 = torch.where(increasing, r2_quad, r2_lin)
    return r2, torch.where(increasing[:, None], c_quad, c_lin)


def readable(p: torch.Tensor) -> np.ndarray:
    """[P, 5] (mirror, rotation rad, log scale, dx, dy) -> (mirror, degrees, scale, dx, dy)."""
    return torch.cat([p[:, :1], p[:, 1:2] * 180 / math.pi, torch.exp(p[:, 2:3]), p[:, 3:]], 1).double().cpu().numpy()


def final_distance(q: torch.Tensor, slices: torch.Tensor, p: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``sqrt(1 - R^2)`` [P] of the best increasing brightness curve at parameters ``p``, and its coefficients."""
    with torch.no_grad():
        w = sample(slices, affine(matrix(p[:, 0], p[:, 1], p[:, 2]), p[:, 3:], size)).flatten(1)  # [P, N]
        r2, coef = r2_curve(q, w)
    return torch.sqrt(1.0 - r2).cpu().numpy(), coef.double().cpu().numpy()


def gauss_newton(q: torch.Tensor, source: torch.Tensor, start: torch.Tensor, family: Family,
                 iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Levenberg-Marquardt steps on (rotation, log scale, dx, dy), the mirror state fixed.

    The steps look at every other pixel (a checkerboard): the blurred images vary little from one
    pixel to the next, so the step direction barely changes and each step costs half.

    Parameters
    ----------
    q : torch.Tensor
        [P, N] query pixels (working size, blurred).
    source : torch.Tensor
        [P, 3, S, S] the references and their x / y gradients.
    start : torch.Tensor
        [P, 5] (mirror, rotation rad, log scale, dx, dy working px).

    Returns
    -------
    params : torch.Tensor
        [P, 5], the best parameters seen.
    r2 : torch.Tensor
        [P], their straight-line R^2 on the checkerboard (step interpolation).
    """
    size, dev = source.shape[-1], source.device
    coords = torch.arange(size, dtype=torch.float32, device=dev) - (size - 1) / 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    steps = torch.arange(size, device=dev)
    board = ((steps[:, None] + steps[None, :]) % 2 == 0).flatten()  # [N]
    points = torch.stack([xx.flatten(), yy.flatten()], -1)[board]  # [n, 2] (x, y) from the centre
    limits = torch.tensor([family.max_rotation * math.pi / 180, math.log1p(family.max_scale),
                           family.max_shift * size, family.max_shift * size], device=dev)
    tiny = torch.tensor([CONVERGED_ROTATION * math.pi / 180, CONVERGED_SCALE, CONVERGED_SHIFT, CONVERGED_SHIFT],
                        device=dev)
    qs = q[:, board]
    qc = qs - qs.mean(1, keepdim=True)  # [P, n]
    q_ss = (qc * qc).sum(1).clamp_min(1e-12)  # [P]
    best = start.clone()  # [P, 5]
    best_r2 = torch.full((len(start),), -1.0, device=dev)
    best_warp = torch.zeros(len(start), 3, len(points), device=dev)
    damping = torch.full((len(start),), 1e-3, device=dev)  # Levenberg-Marquardt: grows after a rejected step
    active = torch.arange(len(start), device=dev)  # pairs still moving
    trial = start[:, 1:].clone()  # [P, 4] parameters to evaluate next
    with torch.no_grad():
        for step in range(iterations + 1):
            t = trial[active]
            warped = sample_points(source[active], matrix(best[active, 0], t[:, 0], t[:, 1]), t[:, 2:], points,
                                    STEP_INTERPOLATION)  # [A, 3, n]
            wc = warped[:, 0] - warped[:, 0].mean(1, keepdim=True)
            cov, w_ss = (qc[active] * wc).sum(1), (wc * wc).sum(1).clamp_min(1e-12)
            r2 = torch.where(cov > 0, cov * cov / (q_ss[active] * w_ss), torch.zeros_like(cov))  # straight-line fit
            better = r2 > best_r2[active]
            moved = (t - best[active, 1:]).abs()  # [A, 4]
            won = active[better]
            best[won, 1:], best_r2[won], best_warp[won] = t[better], r2[better], warped[better]
            damping[active] = torch.where(better, damping[active] / 3, damping[active] * 4)
            # A pair stops when an accepted step barely moved it, or after many rejections.
            settled = (better & (moved <= tiny).all(dim=1) & (step > 0)) | (damping[active] > 1e4)
            active = active[~settled]
            if step == iterations or not len(active):
                break
            new = _step(qc[active], best[active], best_warp[active], damping[active], points)
            trial[active] = torch.maximum(torch.minimum(new, limits), -limits)
    return best, best_r2


def _step(qc: torch.Tensor, p: torch.Tensor, warp: torch.Tensor, damping: torch.Tensor,
          points: torch.Tensor) -> torch.Tensor:
    """One damped Gauss-Newton step from ``p`` [A, 5]; returns the new (rotation, log scale, dx, dy) [A, 4].

    The brightness fit (a + b w) is solved in closed form, so the Jacobian is projected off 1 and w
    (variable projection); the projection is applied to the 4 x 4 normal equations rather than to
    the [A, 4, n] Jacobian, which is cheaper and the same (the residual is already orthogonal to both).
    """
    a = matrix(p[:, 0], p[:, 1], p[:, 2])  # [A, 2, 2]
    mirror = 1.0 - 2.0 * p[:, :1]  # [A, 1]
    w, gx, gy = warp.unbind(1)  # [A, n] the slice and its gradient at the sampled points
    n = w.shape[1]
    wc = w - w.mean(1, keepdim=True)
    w_ss = (wc * wc).sum(1, keepdim=True).clamp_min(1e-12)  # [A, 1]
    slope = (qc * wc).sum(1, keepdim=True) / w_ss  # [A, 1]
    resid = qc - slope * wc  # [A, n]
    vx = points[None, :, 0] - p[:, 3:4]  # [A, n] copy coordinates minus the shift
    vy = points[None, :, 1] - p[:, 4:5]
    c, s, e = torch.cos(p[:, 1:2]), torch.sin(p[:, 1:2]), torch.exp(-p[:, 2:3])  # [A, 1]
    # d(slice value)/d(parameter) = grad . du/dp with u = A (y - d), written out per entry
    # because batched 2x2 matrix products are slow on the CPU.
    ga_x = gx * a[:, 0, 0, None] + gy * a[:, 1, 0, None]  # [A, n] (grad^T A)_x
    ga_y = gx * a[:, 0, 1, None] + gy * a[:, 1, 1, None]
    j_rot = e * (mirror * gx * (c * vy - s * vx) - gy * (c * vx + s * vy))  # grad . dA/dtheta (y - d)
    jac = torch.stack([j_rot, -(ga_x * vx + ga_y * vy), -ga_x, -ga_y], dim=1)  # [A, 4, n], times slope below
    unit = (wc / w_ss.sqrt())[:, :, None]  # [A, n, 1]
    ones = jac.sum(2)  # [A, 4]
    along = (jac @ unit)[:, :, 0]  # [A, 4]
    hess = jac @ jac.transpose(1, 2) - ones[:, :, None] * ones[:, None, :] / n - along[:, :, None] * along[:, None, :]
    hess = hess * (slope * slope)[:, :, None]  # [A, 4, 4]
    grad = (jac @ resid[:, :, None])[:, :, 0] * slope  # [A, 4]; resid is orthogonal to 1 and w already
    diag = torch.diagonal(hess, dim1=1, dim2=2)
    hess = hess + torch.diag_embed(damping[:, None] * diag + 1e-9)
    return p[:, 1:] + torch.linalg.solve(hess, grad[:, :, None])[:, :, 0]
