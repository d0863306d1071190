"""Differentially private discriminator updates, with the PERSON as the unit of privacy.

Only the discriminator of a GAN sees real images, so privatising its updates privatises the
generator too (post-processing; Xie et al. 2018, DPGAN). One D step here is DP-SGD (Abadi et
al. 2016) with three changes for brain MRI, where one person gives many slices:

1. **Subjects are sampled, not slices** (:func:`poisson_subjects`): every subject of the
   training set joins a step's batch independently with probability ``q`` (Poisson sampling,
   the sampling Opacus's accountants assume), and brings ``slices_per_subject`` of its slices
   (:func:`subject_batch`). The batch size varies from step to step; an empty batch is a step
   of pure noise, which still counts.
2. **Per-person clipping** (:func:`clip_and_noise`): the gradients of one subject's slices are
   summed, and that sum is clipped to norm ``C``, so one person moves D by at most ``C`` however
   many of its slices are in the batch. Gaussian noise of standard deviation ``sigma * C`` is
   added to the sum over subjects, and the result is divided by the expected number of subjects
   per step, ``q * n_subjects``.
3. **Per-sample gradients by torch.func** (:func:`per_sample_gradients`): ``vmap(grad(loss))``
   over the batch, with :func:`torch.func.functional_call`. The WGAN-GP gradient penalty is a
   gradient inside the loss, which ``torch.func.grad`` nests; Opacus's hooks cannot take that
   double backward. A sample's loss holds every term the real image enters: its score, the
   drift, the class term, and the penalty at the interpolate between it and the fake it is
   paired with (the fake's terms ride along, they carry no private data).

The discriminator must not mix samples: batch norm, or the PGGAN's minibatch-stddev layer,
lets one person's slice change every other sample's gradient, so clipping per person would
bound nothing (:func:`check_per_sample_safe` refuses them).

The privacy spent is accounted by Opacus's RDP accountant (Mironov 2017; Mironov, Talwar &
Zhang 2019 for the sampled Gaussian mechanism), through :class:`Accountant`, which keeps its
history in plain types for the checkpoint. Its epsilon is for adding or removing ONE SUBJECT
with all its slices, at the stated delta, for the D steps counted (docs/privacy.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from brainsynth.errors import ConfigError

ACCOUNTANTS = ("rdp", "prv")
DEFAULT_DELTA = 1e-5
"""The delta epsilon is stated at: far below one in the number of subjects of any cohort here."""
MAX_PEOPLE_TIMES_DELTA = 0.01
"""Largest ``n_subjects * delta`` accepted (the chance that the guarantee fails for anybody)."""


# --- the discriminator must keep samples apart ----------------------------------------------------

def check_per_sample_safe(D: nn.Module) -> None:
    """Refuse a discriminator whose output for one sample depends on the others in its batch.

    Raises
    ------
    ConfigError
        Naming the layer (batch norm, minibatch standard deviation) and what to set instead.
    """
    norms = [name for name, m in D.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        raise ConfigError(f"differential privacy needs a discriminator without batch norm (found {norms[0]}): a "
                          "slice would move every other sample's gradient, so no per-person bound holds; use a "
                          "discriminator with group norm or none")
    if getattr(D, "mbstd_group", 1) > 1:
        raise ConfigError(f"differential privacy needs the minibatch-stddev layer off (mbstd_group={D.mbstd_group}): "
                          "it mixes the samples of a batch; set train.pggan.mbstd_group=1")


# --- one sample's discriminator loss --------------------------------------------------------------

Critic = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def wgan_gp_sample_loss(critic: Critic, real: torch.Tensor, fake: torch.Tensor, real_label: torch.Tensor,
                        fake_label: torch.Tensor, mix: torch.Tensor, *, gp_lambda: float, drift: float,
                        ac_weight: float, flip: bool = False) -> torch.Tensor:
    """The WGAN-GP critic loss of ONE (real, fake) pair; summed over a batch it is N x
    :meth:`brainsynth.train.losses.WGANGPLoss.d_loss` (same interpolation weights, D without
    batch-mixing layers).

    Parameters
    ----------
    critic : callable
        ``critic(x [1, C, H, W], labels [1]) -> (score [1], logits [1, K] or None)``.
    real, fake : Tensor
        ``[C, H, W]``: the real image and its paired fake, as D sees them (augmented).
    real_label, fake_label : Tensor
        0-dim class indices.
    mix : Tensor
        0-dim interpolation weight of the gradient penalty (``lerp(real, fake, mix)``).
    """
    real_score, real_logits = critic(real[None], real_label[None])
    fake_score, fake_logits = critic(fake[None], fake_label[None])
    real_score, fake_score = real_score.float().sum(), fake_score.float().sum()
    adversarial = fake_score - real_score
    if flip:
        adversarial = -adversarial
    x_hat = torch.lerp(real.float(), fake.float(), mix)  # [C, H, W]
    slope = grad(lambda x: critic(x[None], real_label[None])[0].float().sum())(x_hat)  # [C, H, W]
    penalty = (slope.square().sum().add(1e-12).sqrt() - 1.0).square()
    loss = adversarial + gp_lambda * penalty + drift * real_score.square()
    if real_logits is not None:
        loss = loss + ac_weight * (F.cross_entropy(real_logits.float(), real_label[None])
                                   + F.cross_entropy(fake_logits.float(), fake_label[None]))
    return loss


def bce_sample_loss(critic: Critic, real: torch.Tensor, fake: torch.Tensor, real_label: torch.Tensor,
                    fake_label: torch.Tensor, mix: torch.Tensor | None = None, *, flip: bool = False,
                    **_: Any) -> torch.Tensor:
    """The DCGAN discriminator's cross-entropy on ONE (real, fake) pair (see
    :meth:`brainsynth.train.losses.DCGANLoss.d_loss`); ``mix`` is unused."""
    real_logit = critic(real[None], real_label[None])[0].float().sum()
    fake_logit = critic(fake[None], fake_label[None])[0].float().sum()
    if flip:
        return F.softplus(real_logit) + F.softplus(-fake_logit)
    return F.softplus(-real_logit) + F.softplus(fake_logit)


SAMPLE_LOSSES = {"pggan": wgan_gp_sample_loss, "dcgan": bce_sample_loss}
"""Model kind -> the loss of one (real, fake) pair."""


# --- per-sample gradients -----------------------------------------------------------------------

def per_sample_gradients(D: nn.Module, sample_loss: Callable[..., torch.Tensor], reals: torch.Tensor,
                         fakes: torch.Tensor, real_labels: torch.Tensor, fake_labels: torch.Tensor,
                         mix: torch.Tensor, res: int, alpha: float, **loss_kwargs: Any) -> dict[str, torch.Tensor]:
    """The gradient of each sample's loss with respect to D's trainable parameters.

    Parameters
    ----------
    D : nn.Module
        The discriminator, ``D(x, labels, res, alpha) -> (score, logits)``; checked with
        :func:`check_per_sample_safe` first.
    sample_loss : callable
        :data:`SAMPLE_LOSSES` entry (``loss_kwargs`` go to it: ``gp_lambda``, ``drift``,
        ``ac_weight``, ``flip``).
    reals, fakes : Tensor
        ``[N, C, H, W]`` as D sees them (augmented); the fakes detached.
    real_labels, fake_labels : LongTensor
        ``[N]``.
    mix : Tensor
        ``[N]`` interpolation weights of the penalty.

    Returns
    -------
    dict
        parameter name -> ``[N, *shape]`` per-sample gradients.
    """
    check_per_sample_safe(D)
    names = [n for n, p in D.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in D.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in D.named_parameters() if not p.requires_grad}
    buffers = dict(D.named_buffers())

    def one(p, real, fake, real_label, fake_label, w):
        def critic(x, y):
            return functional_call(D, ({**p, **frozen}, buffers), (x, y, res, alpha))
        return sample_loss(critic, real, fake, real_label, fake_label, w, **loss_kwargs)

    if len(reals) == 0:
        return {n: params[n].new_zeros((0, *params[n].shape)) for n in names}
    grads = vmap(grad(one), in_dims=(None, 0, 0, 0, 0, 0))(params, reals, fakes.detach(), real_labels, fake_labels,
                                                          mix)
    return {n: grads[n] for n in names}


# --- per-person clipping and noise --------------------------------------------------------------

@dataclass
class ClipStats:
    """What one private step did (for the loop's statistics)."""

    subjects: int  # subjects in the batch
    clipped: float  # share of them whose summed gradient was above the bound
    median_norm: float  # median norm of a subject's summed gradient, before clipping


def clip_and_noise(per_sample: dict[str, torch.Tensor], subjects: torch.Tensor, *, max_norm: float,
                   noise_multiplier: float, expected_subjects: float,
                   generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], ClipStats]:
    """The private gradient: per-subject sums clipped to ``max_norm``, summed, noised, averaged.

    ``(sum_s min(1, C / ||g_s||) g_s + N(0, (sigma C)^2 I)) / expected_subjects`` with
    ``g_s`` the sum of subject ``s``'s per-sample gradients in the batch (every parameter
    together, one norm).

    Parameters
    ----------
    per_sample : dict
        parameter name -> ``[N, *shape]`` (:func:`per_sample_gradients`).
    subjects : LongTensor
        ``[N]`` the subject of each sample (any integer ids).
    max_norm : float
        ``C``, the most one subject may move the summed gradient.
    noise_multiplier : float
        ``sigma``; the noise's standard deviation is ``sigma * C``.
    expected_subjects : float
        ``q * n_subjects``: the divisor (the expected, not the drawn, batch: dividing by the
        drawn size would leak it).
    generator : torch.Generator, optional
        Source of the noise (the loop's, so that a resumed run continues the same stream).

    Returns
    -------
    grads : dict
        parameter name -> gradient of D's parameter shape.
    stats : ClipStats
    """
    if max_norm <= 0 or noise_multiplier < 0 or expected_subjects <= 0:
        raise ValueError("max_norm and expected_subjects must be > 0 and noise_multiplier >= 0")
    _, index = torch.unique(subjects, return_inverse=True)  # [N] 0..S-1
    n_subjects = int(index.max()) + 1 if len(index) else 0
    summed = {}
    for name, g in per_sample.items():
        out = g.new_zeros((n_subjects, *g.shape[1:]))
        summed[name] = out.index_add_(0, index, g)  # [S, *shape]
    if n_subjects:
        norms = torch.sqrt(sum(g.reshape(n_subjects, -1).square().sum(1) for g in summed.values()))  # [S]
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # [S]
    grads = {}
    for name, g in summed.items():
        total = torch.einsum("s,s...->...", scale, g) if n_subjects else g.new_zeros(g.shape[1:])
        noise = torch.randn(total.shape, generator=generator, dtype=total.dtype, device="cpu").to(total.device)
        grads[name] = (total + noise_multiplier * max_norm * noise) / expected_subjects
    stats = ClipStats(subjects=n_subjects,
                      clipped=float((scale < 1.0).float().mean()) if n_subjects else 0.0,
                      median_norm=float(norms.median()) if n_subjects else 0.0)
    return grads, stats


def assign_gradients(module: nn.Module, grads: dict[str, torch.Tensor]) -> None:
    """Write ``grads`` into the ``.grad`` of ``module``'s parameters (replacing what was there)."""
    for name, p in module.named_parameters():
        if name in grads:
            p.grad = grads[name].to(p.dtype).reshape(p.shape).clone()


def private_d_step_gradients(model: str, D: nn.Module, reals: torch.Tensor, fakes: torch.Tensor,
                             real_labels: torch.Tensor, fake_labels: torch.Tensor, mix: torch.Tensor,
                             subjects: torch.Tensor, res: int, alpha: float, *, max_norm: float,
                             noise_multiplier: float, expected_subjects: float, generator: torch.Generator | None,
                             **loss_kwargs: Any) -> ClipStats:
    """One private D step's gradients, written into ``D``'s ``.grad`` (the loop then steps its optimiser
    and records the step in its :class:`Accountant`).

    ``model`` picks the per-sample loss (:data:`SAMPLE_LOSSES`); ``loss_kwargs`` are its weights
    (``gp_lambda``, ``drift``, ``ac_weight``, ``flip``); the other arguments are those of
    :func:`per_sample_gradients` and :func:`clip_and_noise`.
    """
    per_sample = per_sample_gradients(D, SAMPLE_LOSSES[model], reals, fakes, real_labels, fake_labels, mix, res,
                                      alpha, **loss_kwargs)
    grads, stats = clip_and_noise(per_sample, subjects, max_norm=max_norm, noise_multiplier=noise_multiplier,
                                  expected_subjects=expected_subjects, generator=generator)
    assign_gradients(D, grads)
    return stats


# --- sampling subjects ---------------------------------------------------------------------------

def poisson_subjects(n_subjects: int, sample_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Subjects (indices) of one step: each joins independently with probability ``sample_rate``."""
    return torch.nonzero(torch.rand(n_subjects, generator=generator) < sample_rate).flatten()


def subject_batch(rows_of_subject: Sequence[np.ndarray], chosen: torch.Tensor, slices_per_subject: int,
                  generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dataset rows of one step: ``slices_per_subject`` slices of each chosen subject (drawn with
    replacement, so a subject with few slices is no exception).

    Returns
    -------
    rows : np.ndarray
        int [B] dataset rows.
    subjects : np.ndarray
        int [B] subject index of each row (for :func:`clip_and_noise`).
    """
    rows, subjects = [], []
    for s in chosen.tolist():
        own = np.asarray(rows_of_subject[s])
        pick = torch.randint(len(own), (slices_per_subject,), generator=generator).numpy()
        rows.append(own[pick])
        subjects.append(np.full(slices_per_subject, s))
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(subjects).astype(np.int64)


# --- the accountant -----------------------------------------------------------------------------

class Accountant:
    """The privacy spent so far: a history of ``(noise_multiplier, sample_rate, steps)`` segments.

    Epsilon comes from Opacus's accountant of the same name (``"rdp"``: Rényi DP of the
    sampled Gaussian mechanism, Mironov et al. 2019, converted with Balle et al. 2020;
    ``"prv"``: the privacy-random-variable accountant, Gopi et al. 2021, tighter). The history
    is plain numbers, so it travels in a checkpoint (:meth:`state_dict`).
    """

    def __init__(self, mechanism: str = "rdp", history: Sequence[Sequence[float]] = ()):
        if mechanism not in ACCOUNTANTS:
            raise ConfigError(f"accountant {mechanism!r}: choose one of {', '.join(ACCOUNTANTS)}")
        self.mechanism = mechanism
        self.history: list[tuple[float, float, int]] = [(float(s), float(q), int(n)) for s, q, n in history]

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` private D steps (consecutive steps with the same settings are merged)."""
        if self.history and self.history[-1][:2] == (float(noise_multiplier), float(sample_rate)):
            s, q, n = self.history[-1]
            self.history[-1] = (s, q, n + int(steps))
        else:
            self.history.append((float(noise_multiplier), float(sample_rate), int(steps)))

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.history)

    def epsilon(self, delta: float) -> float:
        """Epsilon at ``delta`` for everything recorded (0 before the first step)."""
        if not self.history:
            return 0.0
        if not 0 < delta < 1:
            raise ConfigError(f"delta={delta!r} must be in (0, 1) (choose it well below 1 / number of subjects)")
        return float(opacus_accountant(self.mechanism, self.history).get_epsilon(delta))

    def state_dict(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism, "history": [list(h) for h in self.history]}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Accountant:
        return cls(state["mechanism"], state["history"])


def opacus_accountant(mechanism: str, history: Sequence[tuple[float, float, int]]):
    """An Opacus accountant holding ``history`` (imported here: only private training needs Opacus)."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    accountant = RDPAccountant() if mechanism == "rdp" else PRVAccountant()
    accountant.history = [tuple(h) for h in history]
    return accountant


def noise_for_epsilon(epsilon: float, delta: float, sample_rate: float, steps: int, mechanism: str = "rdp") -> float:
    """The smallest noise multiplier whose ``steps`` steps at ``sample_rate`` spend at most ``epsilon`` (Opacus)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=mechanism))


def check_delta(delta: float, n_subjects: int) -> None:
    """Refuse a delta that is not far below one in the number of subjects.

    Delta bounds the probability that the epsilon guarantee fails; with ``n`` people, ``n * delta``
    bounds the chance that it fails for any of them, which is kept at 1 % or less.
    """
    if not 0 < delta <= MAX_PEOPLE_TIMES_DELTA / max(1, n_subjects):
        raise ConfigError(f"dp_delta={delta:g} is not far below 1/{n_subjects} subjects: choose delta <= "
                          f"{MAX_PEOPLE_TIMES_DELTA / max(1, n_subjects):.2g} (the default {DEFAULT_DELTA:g} fits up to "
                          f"{round(MAX_PEOPLE_TIMES_DELTA / DEFAULT_DELTA)} people)")


def guarantee(cfg: Any, family_state: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a privately trained run guarantees, for the provenance of what it releases; None without DP.

    ``cfg`` is the run's training config, ``family_state`` its checkpoint's ``family`` entry.
    """
    if getattr(cfg, "dp_noise", None) is None or not family_state:
        return None
    accountant = Accountant.from_state_dict(family_state["accountant"])
    return {"epsilon": accountant.epsilon(cfg.dp_delta), "delta": cfg.dp_delta, "accountant": accountant.mechanism,
            "unit": "one person (every slice of one subject)", "noise_multiplier": cfg.dp_noise,
            "clip": cfg.dp_clip, "slices_per_subject": cfg.dp_slices_per_subject, "d_steps": accountant.steps,
            "sampling": "Poisson sampling of subjects"}
