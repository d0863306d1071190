"""The GAN-train SVM's primal problem, solved without copying the features (large training sets).

brainsynth's classifier is scikit-learn's ``LinearSVC`` (squared hinge loss, L2 penalty, C = 1,
class-balanced weights, an intercept regularised like the weights) on standardised features.
With more samples than features scikit-learn solves the primal problem with liblinear's trust
region Newton method, after copying the standardised features twice: to float64 (8 bytes per
value) and into liblinear's sparse nodes (16 bytes per value). At ADHD-200's ~58,000 training
slices of 4,096 fc7 features that is 5.7 GB, for data already held as 0.95 GB of float32.

:class:`PrimalSVC` minimises the same objective

    0.5 ||(w, b)||^2 + sum_i C_i max(0, 1 - y_i (w . x'_i + b))^2,  x' = (x - mean) / sd

by Newton-CG (the standardisation is applied to the vectors, never to a copy of the data). The
gradient and the line search read every float32 row, a block at a time, in float64. The
conjugate-gradient products need only the rows whose margin is active, which within a few Newton
steps are about a tenth of the set (1,150-1,600 of 14,560 on the 240-subject benchmark fold):
:class:`ActiveRows` gathers them once per Newton step as float32, and each product reads that
small matrix (it stays in the cache) instead of converting every row to float64 again. The
products are inexact in float32 only where conjugate gradients already stop at a tenth of the
residual; the gradient that decides when to stop stays float64. The objective is
strictly convex, so both solvers approach one minimiser, and this one stops where liblinear's
primal solver stops: when the gradient norm falls below ``tol * max(min(n+, n-), 1) / n`` of its
value at w = 0 (``tol`` = LinearSVC's default 1e-4; 5e-5 for balanced classes). An earlier
version asked for 1e-6: on the 120-subject benchmark fold (7,280 x 4,096 features) Newton-CG
crawls below about 1e-4 (each step's line search keeps about 1/32 of the Newton step), and the
SVM took 1,000 s of the evaluation's 1,900 (benchmarks/README.md, "Cohort size").
:func:`brainsynth.evaluate.gan_train.fit_classifier` uses it
only where scikit-learn would take the primal path AND liblinear's copies would exceed
:data:`LIBLINEAR_MAX_BYTES`; smaller problems (the demo's) keep ``LinearSVC`` exactly.
"""

from __future__ import annotations

import numpy as np

LIBLINEAR_MAX_BYTES = 256 << 20
"""Largest training set (float64 copy + liblinear nodes, 24 bytes per value) left to LinearSVC."""

ROWS = 2048  # feature rows converted to float64 per block (64 MB at 4,096 features)
ACTIVE_BYTES = 256 << 20  # active rows gathered once per Newton step (float32) up to this size
TOLERANCE = 1e-4  # LinearSVC's default tol; the stop is liblinear's (gradient norm share, see stopping_share)
MAX_NEWTON = 100
MAX_CG = 250


class PrimalSVC:
    """Standardise, then a class-balanced L2-regularised squared-hinge linear SVM (``LinearSVC``'s primal).

    Parameters
    ----------
    C : float
        The penalty of ``LinearSVC``.
    """

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, x: np.ndarray, y: np.ndarray) -> PrimalSVC:
        """Fit on features ``x`` [N, D] (any float dtype; read in blocks) and labels ``y`` [N] in {0, 1}."""
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError("training labels must contain both classes")
        self.mean_, self.scale_ = _moments(x)
        sign = np.where(y == self.classes_[1], 1.0, -1.0)
        counts = {c: int(np.sum(y == c)) for c in self.classes_}
        cost = self.C * np.array([len(y) / (2.0 * counts[c]) for c in y])  # class_weight="balanced"
        self._x = x
        w = np.zeros(x.shape[1] + 1)
        grad, active, margin_loss = self._gradient(w, sign, cost)
        stop = stopping_share(list(counts.values())) * np.linalg.norm(grad)
        for _ in range(MAX_NEWTON):
            if np.linalg.norm(grad) <= stop:
                break
            step = self._newton_step(grad, active, cost)
            w, grad, active, margin_loss = self._line_search(w, step, grad, sign, cost, margin_loss)
        self.coef_, self.intercept_ = w[:-1], w[-1]
        del self._x
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """float64 [M]: > 0 for ``classes_[1]``."""
        return np.concatenate([_rows(x, lo) @ (self.coef_ / self.scale_) for lo in range(0, len(x), ROWS)]
                              or [np.zeros(0)]) - float(self.mean_ / self.scale_ @ self.coef_) + self.intercept_

    # --- the objective ------------------------------------------------------------------------------

    def _scores(self, w: np.ndarray) -> np.ndarray:
        """w . x'_i + b for every training row."""
        v = w[:-1] / self.scale_
        shift = float(self.mean_ @ v) - w[-1]
        return np.concatenate([_rows(self._x, lo) @ v for lo in range(0, len(self._x), ROWS)]) - shift

    def _transpose_times(self, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """sum_i u_i (x'_i, 1) over the given rows (``u`` aligned with ``rows``)."""
        total = np.zeros(self._x.shape[1])
        full = np.zeros(len(self._x))
        full[rows] = u
        for lo in range(0, len(self._x), ROWS):
            part = full[lo:lo + ROWS]
            if part.any():
                total += part @ _rows(self._x, lo)
        return np.r_[(total - self.mean_ * u.sum()) / self.scale_, u.sum()]

    def _gradient(self, w: np.ndarray, sign: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        z = self._scores(w)
        slack = 1.0 - sign * z
        active = np.flatnonzero(slack > 0)
        grad = w - 2.0 * self._transpose_times(cost[active] * sign[active] * slack[active], active)
        return grad, active, float(np.sum(cost[active] * slack[active] ** 2))

    def _newton_step(self, grad: np.ndarray, active: np.ndarray, cost: np.ndarray) -> np.ndarray:
        """Conjugate gradients on (I + 2 X_A' C_A X_A) d = -grad (the generalised Hessian of the active rows)."""
        rows, active_cost = ActiveRows(self._x, active, self.mean_, self.scale_), cost[active]

        def hessian_times(v: np.ndarray) -> np.ndarray:
            return v + 2.0 * rows.transpose_times(active_cost * rows.times(v))

        d, r = np.zeros_like(grad), -grad
        p, rr = r.copy(), float(r @ r)
        limit = (0.1 * np.linalg.norm(grad)) ** 2
        for _ in range(MAX_CG):
            if rr <= limit:
                break
            hp = hessian_times(p)
            alpha = rr / float(p @ hp)
            d += alpha * p
            r -= alpha * hp
            rr, previous = float(r @ r), rr
            p = r + (rr / previous) * p
        return d

    def _line_search(self, w, step, grad, sign, cost, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Backtracking (Armijo) along the Newton direction."""
        value = 0.5 * float(w @ w) + loss
        t = 1.0
        for _ in range(30):
            trial = w + t * step
            new_grad, new_active, new_loss = self._gradient(trial, sign, cost)
            if 0.5 * float(trial @ trial) + new_loss <= value + 0.01 * t * float(grad @ step):
                return trial, new_grad, new_active, new_loss
            t *= 0.5
        return trial, new_grad, new_active, new_loss


class ActiveRows:
    """The standardised rows ``(x'_i, 1)`` of the active set of one Newton step, for the products of its CG.

    The rows are gathered once as float32 when they fit in :data:`ACTIVE_BYTES` (the usual case after
    the first steps), else gathered a block of :data:`ROWS` at a time for every product, so memory
    never holds more than that bound.
    """

    def __init__(self, x: np.ndarray, active: np.ndarray, mean: np.ndarray, scale: np.ndarray):
        self.x, self.active, self.mean, self.scale = x, np.asarray(active), mean, scale
        fits = len(self.active) * x.shape[1] * 4 <= ACTIVE_BYTES
        self.gathered = np.asarray(x[self.active], dtype=np.float32) if fits else None  # [A, D]

    def _blocks(self):
        """(lo, float32 rows lo..lo + B of the active set)."""
        if self.gathered is not None:
            yield 0, self.gathered
            return
        for lo in range(0, len(self.active), ROWS):
            yield lo, np.asarray(self.x[self.active[lo:lo + ROWS]], dtype=np.float32)

    def times(self, v: np.ndarray) -> np.ndarray:
        """float64 [A]: (x'_i, 1) . v for every active row."""
        scaled = v[:-1] / self.scale
        u, shift = scaled.astype(np.float32), float(self.mean @ scaled) - v[-1]
        return np.concatenate([block @ u for _, block in self._blocks()] or [np.zeros(0, np.float32)]
                              ).astype(np.float64) - shift

    def transpose_times(self, u: np.ndarray) -> np.ndarray:
        """float64 [D + 1]: sum_i u_i (x'_i, 1) over the active rows (``u`` [A])."""
        total = np.zeros(self.x.shape[1])
        weights = u.astype(np.float32)
        for lo, block in self._blocks():
            total += weights[lo:lo + len(block)] @ block
        return np.r_[(total - self.mean * u.sum()) / self.scale, u.sum()]


def stopping_share(class_counts: list[int]) -> float:
    """The share of the starting gradient norm at which liblinear's primal solver stops (its ``primal_solver_tol``)."""
    return TOLERANCE * max(min(class_counts), 1) / sum(class_counts)


def _rows(x: np.ndarray, lo: int) -> np.ndarray:
    return np.asarray(x[lo:lo + ROWS], dtype=np.float64)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and SD (ddof 0; 1 where the SD is 0), as ``StandardScaler``, read in blocks."""
    total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for lo in range(0, len(x), ROWS):
        block = _rows(x, lo)
        total += block.sum(axis=0)
    mean = total / len(x)
    for lo in range(0, len(x), ROWS):
        squares += ((_rows(x, lo) - mean) ** 2).sum(axis=0)
    scale = np.sqrt(squares / len(x))
    return mean, np.where(scale > 0, scale, 1.0)


def liblinear_would_copy(n_samples: int, n_features: int) -> bool:
    """Whether ``LinearSVC`` would take the primal path on a copy larger than :data:`LIBLINEAR_MAX_BYTES`."""
    return n_samples >= n_features and 24 * n_samples * (n_features + 1) > LIBLINEAR_MAX_BYTES
