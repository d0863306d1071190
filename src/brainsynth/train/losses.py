"""GAN losses, one object per model kind behind one interface (stylegan2-ada style).

Each loss holds G, D and an optional augmentation, and gives the loop two calls::

    loss, stats = loss_fn.d_loss(reals, real_labels, z, fake_labels, res, alpha, step)
    loss, stats = loss_fn.g_loss(z, fake_labels, res, alpha)

``loss`` is a scalar to ``backward()``; ``stats`` maps names to detached 0-dim tensors (no
``.item()`` here, so no host sync; the loop reads them at its tick). The loop owns the
optimisers and should turn off ``requires_grad`` of D's parameters during the G step
(G's parameters get no graph in the D step: fakes are drawn under ``no_grad``).

Augmentation, when given, is applied to every image D sees: reals, fakes and the
gradient-penalty interpolates, which are mixed from the AUGMENTED reals and fakes, so the
Lipschitz constraint acts on the inputs D is trained on.

Mixed precision: under ``torch.autocast("cpu", dtype=torch.bfloat16)`` D's convolutions
run in bf16, but the interpolates stay fp32 leaf tensors, so their gradient comes back in
fp32 and the gradient norm, the penalty and every loss reduction are computed in fp32.

Label flip (the paper's "once in three times", ``label_flip_every=k``): on D steps with
``step % k == k - 1`` the roles of reals and fakes in D's ADVERSARIAL term are swapped.
For the DCGAN's cross-entropy that is the literal label flip (reals labelled fake, fakes
labelled real). For WGAN-GP the "labels" are the signs of the critic objective, so the
flipped step minimises ``D(real) - D(fake)``: one step in k pushes the critic backwards,
a form of label noise. The gradient penalty, drift and class terms are unchanged.

Lazy gradient penalty (``gp_every=k``, StyleGAN2's lazy regularisation): the penalty is
computed on the D steps with ``step % k == 0`` only, weighted by ``k`` so that its average
pull per step is unchanged. It costs a third D pass and a double backward, about half a
64 px D step (docs/training.md), so ``k = 4`` buys more steps for the same CPU seconds.
Its ``gp`` stat is the weighted penalty on those steps and 0 on the others, so a tick's mean
of it still estimates the penalty.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Stats = dict[str, torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def is_flip_step(step: int, label_flip_every: int) -> bool:
    """True on the D steps whose real/fake roles are swapped (every k-th, ``step % k == k-1``)."""
    return label_flip_every > 0 and step % label_flip_every == label_flip_every - 1


def is_penalty_step(step: int, gp_every: int) -> bool:
    """True on the D steps that compute the gradient penalty (every k-th, ``step % k == 0``)."""
    return step % gp_every == 0


def gradient_penalty(D: nn.Module, x_hat: torch.Tensor, labels: torch.Tensor, res: int, alpha: float,
                     target: float = 1.0) -> torch.Tensor:
    """Per-sample ``(||grad_x D(x_hat)|| - target)**2``, differentiable (create_graph).

    Parameters
    ----------
    D : nn.Module
        Critic with the ``D(x, labels, res, alpha) -> (score, logits)`` signature.
    x_hat : Tensor
        ``[N, C, H, W]`` interpolates; must be a leaf requiring grad (fp32).
    labels : LongTensor
        ``[N]`` labels passed to D (used by projection conditioning only).

    Returns
    -------
    Tensor
        ``[N]`` fp32 penalties.
    """
    score, _ = D(x_hat, labels, res, alpha)
    (grad,) = torch.autograd.grad(score.float().sum(), x_hat, create_graph=True)  # [N, C, H, W]
    norm = grad.float().square().sum(dim=(1, 2, 3)).add(1e-12).sqrt()  # [N]; eps keeps d/dx finite at 0
    return (norm - target).square()


class WGANGPLoss:
    """WGAN-GP with drift and optional AC-GAN class terms (the official PGGAN loss).

    D loss = mean(D(fake) - D(real)) + gp_lambda * mean((||grad D(x_hat)|| - 1)^2)
    + drift * mean(D(real)^2) + ac_weight * (CE(real) + CE(fake)); G loss =
    -mean(D(G(z))) + ac_weight * CE(fake). The class terms apply when D returns logits.

    Parameters
    ----------
    G, D : nn.Module
        Networks with the PGGAN forward signatures.
    augment : callable, optional
        Differentiable ``x -> x`` applied to every image D sees (see module notes).
    gp_lambda : float
        Gradient-penalty weight (official 10).
    drift : float
        Weight of ``D(real)^2`` keeping scores near 0 (official 0.001).
    ac_weight : float
        Weight of the softmax cross-entropy class terms (official 1).
    label_flip_every : int
        Paper option: swap reals/fakes in the adversarial term every k-th D step (0: off).
    gp_every : int
        Compute the penalty on every k-th D step only, weighted by k (1: every step, official).
    """

    def __init__(self, G: nn.Module, D: nn.Module, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 gp_lambda: float = 10.0, drift: float = 0.001, ac_weight: float = 1.0, label_flip_every: int = 0,
                 gp_every: int = 1):
        self.G, self.D = G, D
        self.augment = augment or _identity
        self.gp_lambda = float(gp_lambda)
        self.drift = float(drift)
        self.ac_weight = float(ac_weight)
        self.label_flip_every = int(label_flip_every)
        self.gp_every = int(gp_every)

    def d_loss(self, reals: torch.Tensor, real_labels: torch.Tensor, z: torch.Tensor, fake_labels: torch.Tensor,
               res: int, alpha: float, step: int) -> tuple[torch.Tensor, Stats]:
        """Critic loss on one minibatch.

        Parameters
        ----------
        reals : Tensor
            ``[N, 1, res, res]`` real images in [-1, 1], already faded (see
            :func:`brainsynth.train.schedule.blend_reals`).
        real_labels, fake_labels : LongTensor
            ``[N]`` labels of the reals and of the fakes to draw. The training loop passes
            the real batch's labels as both (official ``D_wgangp_acgan``), so that each
            gradient-penalty interpolate blends a real and a fake of one class.
        z : Tensor
            ``[N, z_dim]`` latents for the fakes.
        res, alpha
            Current phase.
        step : int
            D step counter (decides the label-flip and the penalty steps).

        Notes
        -----
        The interpolation weights of the penalty come from the global torch RNG (the
        checkpoint stores its state). With projection conditioning the interpolates are
        scored with ``real_labels``.
        """
        with torch.no_grad():
            fakes = self.G(z, fake_labels, res, alpha)  # [N, 1, res, res]
        reals_seen = self.augment(reals)
        fakes_seen = self.augment(fakes.detach())
        real_score, real_logits = self.D(reals_seen, real_labels, res, alpha)
        fake_score, fake_logits = self.D(fakes_seen, fake_labels, res, alpha)
        real_score, fake_score = real_score.float(), fake_score.float()  # [N]
        adversarial = fake_score.mean() - real_score.mean()
        if is_flip_step(step, self.label_flip_every):
            adversarial = -adversarial

        gp = real_score.new_zeros(())
        if is_penalty_step(step, self.gp_every):
            # Interpolates between what D saw, as fp32 leaves (see module notes).
            mix = torch.rand(reals.shape[0], 1, 1, 1, device=reals.device)  # [N, 1, 1, 1]
            x_hat = torch.lerp(reals_seen.detach().float(), fakes_seen.detach().float(), mix).requires_grad_(True)
            gp = self.gp_every * gradient_penalty(self.D, x_hat, real_labels, res, alpha).mean()
        drift = real_score.square().mean()
        loss = adversarial + self.gp_lambda * gp + self.drift * drift
        stats: Stats = {"score_real": real_score.mean(), "score_fake": fake_score.mean(), "gp": gp,
                        "drift": drift, "real_sign": real_score.sign().mean()}
        if real_logits is not None:
            ac_real = F.cross_entropy(real_logits.float(), real_labels)
            ac_fake = F.cross_entropy(fake_logits.float(), fake_labels)
            loss = loss + self.ac_weight * (ac_real + ac_fake)
            stats["ac_real"], stats["ac_fake"] = ac_real, ac_fake
        stats["loss_d"] = loss
        return loss, {k: v.detach() for k, v in stats.items()}

    def g_loss(self, z: torch.Tensor, fake_labels: torch.Tensor, res: int, alpha: float) -> tuple[torch.Tensor, Stats]:
        """Generator loss ``-mean(D(G(z)))`` (+ class term) on one minibatch of latents ``[N, z_dim]``."""
        fakes = self.G(z, fake_labels, res, alpha)  # [N, 1, res, res]
        score, logits = self.D(self.augment(fakes), fake_labels, res, alpha)
        score = score.float()
        loss = -score.mean()
        stats: Stats = {"score_fake": score.mean()}
        if logits is not None:
            ac_fake = F.cross_entropy(logits.float(), fake_labels)
            loss = loss + self.ac_weight * ac_fake
            stats["ac_fake"] = ac_fake
        stats["loss_g"] = loss
        return loss, {k: v.detach() for k, v in stats.items()}


class DCGANLoss:
    """The DCGAN's binary cross-entropy (non-saturating G loss).

    D loss = softplus(-D(real)) + softplus(D(fake)) (= BCE with targets 1 / 0, mean over
    the batch); G loss = softplus(-D(G(z))). Label conditioning lives inside the networks.

    Parameters
    ----------
    G, D : nn.Module
        Networks with the shared forward signatures; D returns ``(logit, None)``.
    augment : callable, optional
        Differentiable ``x -> x`` applied to reals and fakes seen by D.
    label_flip_every : int
        Paper option: on every k-th D step the real/fake targets are swapped (0: off).
    """

    def __init__(self, G: nn.Module, D: nn.Module, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 label_flip_every: int = 0):
        self.G, self.D = G, D
        self.augment = augment or _identity
        self.label_flip_every = int(label_flip_every)

    def d_loss(self, reals: torch.Tensor, real_labels: torch.Tensor, z: torch.Tensor, fake_labels: torch.Tensor,
               res: int, alpha: float, step: int) -> tuple[torch.Tensor, Stats]:
        """Discriminator BCE on one minibatch; arguments as :meth:`WGANGPLoss.d_loss`."""
        with torch.no_grad():
            fakes = self.G(z, fake_labels, res, alpha)  # [N, 1, R, R]
        real_logit = self.D(self.augment(reals), real_labels, res, alpha)[0].float()  # [N]
        fake_logit = self.D(self.augment(fakes.detach()), fake_labels, res, alpha)[0].float()  # [N]
        if is_flip_step(step, self.label_flip_every):
            loss = F.softplus(real_logit).mean() + F.softplus(-fake_logit).mean()
        else:
            loss = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
        stats = {"loss_d": loss, "score_real": real_logit.mean(), "score_fake": fake_logit.mean(),
                 "real_sign": real_logit.sign().mean()}
        return loss, {k: v.detach() for k, v in stats.items()}

    def g_loss(self, z: torch.Tensor, fake_labels: torch.Tensor, res: int, alpha: float) -> tuple[torch.Tensor, Stats]:
        """Non-saturating generator loss ``mean(softplus(-D(G(z))))``."""
        fakes = self.G(z, fake_labels, res, alpha)
        logit = self.D(self.augment(fakes), fake_labels, res, alpha)[0].float()  # [N]
        loss = F.softplus(-logit).mean()
        return loss, {"loss_g": loss.detach(), "score_fake": logit.mean().detach()}


LOSSES = {"pggan": WGANGPLoss, "dcgan": DCGANLoss}
"""Model kind -> its loss class."""
