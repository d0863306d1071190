import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.models.pggan import Discriminator, Generator
from brainsynth.train.losses import WGANGPLoss, gradient_penalty, is_flip_step
from brainsynth.train.schedule import blend_reals




class _FixedG(nn.Module):
    def __init__(self, images):
        super().__init__()
        self.images = images

    def forward(self, z, labels, res, alpha):
        return self.images


class _LinearCritic(nn.Module):
    """D(x) = <w, x> + b: its input gradient is w everywhere, so the GP is (||w|| - 1)^2."""

    def __init__(self, size, logits=None):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(1, 1, size, size, generator=g) * 0.7)
        self.b = nn.Parameter(torch.tensor(0.3))
        self.logits = logits

    def forward(self, x, labels, res, alpha):
        score = (x * self.w).sum(dim=(1, 2, 3)) + self.b
        return score, (None if self.logits is None else self.logits[: x.shape[0]])


def _batch(size=4, n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randn(n, 1, size, size, generator=g)


def test_wgan_gp_d_loss_equals_hand_computation():
    reals, fakes = _batch()
    D = _LinearCritic(4)
    y = torch.tensor([0, 1, 1])
    loss, stats = WGANGPLoss(_FixedG(fakes), D).d_loss(reals, y, torch.zeros(3, 2), y, 4, 1.0, step=0)
    with torch.no_grad():
        dr = (reals * D.w).sum(dim=(1, 2, 3)) + D.b
        df = (fakes * D.w).sum(dim=(1, 2, 3)) + D.b
        gp = (D.w.norm() - 1) ** 2
        expected = df.mean() - dr.mean() + 10 * gp + 0.001 * (dr ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["gp"].item() == pytest.approx(gp.item(), rel=1e-5)
    assert stats["score_real"].item() == pytest.approx(dr.mean().item(), rel=1e-5)
    assert stats["real_sign"].item() == pytest.approx(dr.sign().mean().item())
    assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())
    loss.backward()  # the penalty is differentiable w.r.t. D's weights: d/dw 10(||w||-1)^2 is in w.grad
    assert torch.isfinite(D.w.grad).all()


def test_gradient_penalty_uses_per_sample_interpolates():
    # D(x) = sum(x^2): grad 2 x_hat, so the penalty depends on where each x_hat lies.
    class Quadratic(nn.Module):
        def forward(self, x, labels, res, alpha):
            return x.square().sum(dim=(1, 2, 3)), None

    reals, fakes = _batch(n=4, seed=2)
    torch.manual_seed(7)
    loss, stats = WGANGPLoss(_FixedG(fakes), Quadratic(), drift=0.0).d_loss(
        reals, torch.zeros(4, dtype=torch.long), torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), 4, 1.0, 0)
    torch.manual_seed(7)
    mix = torch.rand(4, 1, 1, 1)
    x_hat = reals + (fakes - reals) * mix
    expected = ((2 * x_hat).flatten(1).norm(dim=1) - 1).square().mean()
    assert stats["gp"].item() == pytest.approx(expected.item(), rel=1e-5)
    x = x_hat.clone().requires_grad_(True)
    direct = gradient_penalty(Quadratic(), x, None, 4, 1.0)
    assert direct.shape == (4,)


def test_drift_term_alone():
    reals, fakes = _batch()
    D = _LinearCritic(4)
    loss, stats = WGANGPLoss(_FixedG(fakes), D, gp_lambda=0.0, drift=0.5).d_loss(
        reals, torch.zeros(3, dtype=torch.long), torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), 4, 1.0, 0)
    dr, df = stats["score_real"].item(), stats["score_fake"].item()
    assert loss.item() == pytest.approx(df - dr + 0.5 * stats["drift"].item(), rel=1e-5)
    assert stats["drift"].item() > 0


def test_label_flip_swaps_the_adversarial_term_on_every_third_step():
    reals, fakes = _batch()
    D = _LinearCritic(4)
    loss_fn = WGANGPLoss(_FixedG(fakes), D, gp_lambda=0.0, drift=0.0, label_flip_every=3)
    y = torch.zeros(3, dtype=torch.long)
    values = [loss_fn.d_loss(reals, y, torch.zeros(3, 1), y, 4, 1.0, step)[0].item() for step in range(6)]
    base = values[0]
    assert base != 0
    assert values == pytest.approx([base, base, -base, base, base, -base], rel=1e-6)
    assert [is_flip_step(s, 3) for s in range(6)] == [False, False, True, False, False, True]
    assert not any(is_flip_step(s, 0) for s in range(6))


def test_acgan_terms_in_d_and_g_losses():
    reals, fakes = _batch()
    logits = torch.tensor([[2.0, -1.0], [0.0, 1.0], [0.5, 0.5]])
    D = _LinearCritic(4, logits=logits)
    y_real, y_fake = torch.tensor([0, 1, 0]), torch.tensor([1, 1, 0])
    loss_fn = WGANGPLoss(_FixedG(fakes), D, gp_lambda=0.0, drift=0.0, ac_weight=2.0)
    loss, stats = loss_fn.d_loss(reals, y_real, torch.zeros(3, 1), y_fake, 4, 1.0, 0)
    ce_real, ce_fake = F.cross_entropy(logits, y_real), F.cross_entropy(logits, y_fake)
    assert stats["ac_real"].item() == pytest.approx(ce_real.item(), rel=1e-6)
    assert stats["ac_fake"].item() == pytest.approx(ce_fake.item(), rel=1e-6)
    adv = stats["score_fake"].item() - stats["score_real"].item()
    assert loss.item() == pytest.approx(adv + 2.0 * (ce_real + ce_fake).item(), rel=1e-5)
    g, gstats = loss_fn.g_loss(torch.zeros(3, 1), y_fake, 4, 1.0)
    assert g.item() == pytest.approx(-gstats["score_fake"].item() + 2.0 * ce_fake.item(), rel=1e-5)
    # 0.5/0.5 logits: CE of the third sample is log 2
    assert F.cross_entropy(logits[2:], y_real[2:]).item() == pytest.approx(math.log(2))


def test_bf16_autocast_keeps_the_penalty_in_fp32():
    torch.manual_seed(0)
    G = Generator(8, z_dim=4, widths=[4, 4])
    D = Discriminator(8, widths=[4, 4])
    reals = torch.rand(4, 1, 8, 8) * 2 - 1
    y = torch.tensor([0, 1, 0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = WGANGPLoss(G, D).d_loss(reals, y, torch.randn(4, 4), y, 8, 0.5, 0)
    assert loss.dtype == torch.float32 and stats["gp"].dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)


def test_blend_reals_is_the_official_fade():
    x = torch.tensor([[1.0, 3.0], [5.0, 7.0]]).view(1, 1, 2, 2)
    assert blend_reals(x, 1.0) is x
    torch.testing.assert_close(blend_reals(x, 0.0), torch.full((1, 1, 2, 2), 4.0))
    torch.testing.assert_close(blend_reals(x, 0.25), 0.25 * x + 0.75 * 4.0)


def test_blend_reals_enlarges_the_coarse_image_as_the_generator_does():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    coarse = F.avg_pool2d(x, 2)  # [[2.5, 4.5], [10.5, 12.5]]
    torch.testing.assert_close(blend_reals(x, 0.0, "bilinear"),
                               F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=False))
    # Bilinear: 3/4 of the own coarse pixel and 1/4 of the next one (2.5 + (4.5 - 2.5) / 4 = 3.0)
    assert blend_reals(x, 0.0, "bilinear")[0, 0, 0, 1].item() == pytest.approx(3.0)
    assert blend_reals(x, 0.0, "nearest")[0, 0, 0, 1].item() == pytest.approx(2.5)


def test_a_few_wgan_gp_steps_separate_reals_from_fakes():
    # Tiny overfit check: 8x8 PGGAN critic, fixed reals (bright) vs G's images.
    torch.manual_seed(0)
    G = Generator(8, z_dim=4, widths=[4, 4], conditioning="none")
    D = Discriminator(8, widths=[4, 4], conditioning="none")
    opt = torch.optim.Adam(D.parameters(), lr=3e-3, betas=(0.0, 0.99))
    loss_fn = WGANGPLoss(G, D)
    reals = torch.full((8, 1, 8, 8), 0.8) + 0.05 * torch.randn(8, 1, 8, 8)
    z = torch.randn(8, 4)
    losses = []
    for step in range(40):
        opt.zero_grad()
        loss, stats = loss_fn.d_loss(reals, None, z, None, 8, 1.0, step)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert (stats["score_real"] - stats["score_fake"]).item() > 0.5
