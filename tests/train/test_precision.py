"""bf16 autocast and fp32 training steps agree: same init, same batch, one D step and one G step.

Why these tolerances. bf16 keeps 8 mantissa bits (relative rounding 2**-9 = 0.2%) and
autocast rounds every convolution operand, while the penalty's gradient norm, the pixel-norm
statistics and every loss reduction stay fp32. Measured here (torch 2.13, CPU): losses within
about 1e-3 relative, gradient cosines >= 0.997. Bounds with margin: 1e-2 on the losses (the
WGAN-GP D loss is dominated by the penalty, a square of a gradient norm, which doubles
relative errors), cosine > 0.99 between the bf16 and fp32 gradients of each network. Adam's
first step with beta1 = 0 moves every weight by ``lr * g / (|g| + eps)``, about
``lr * sign(g)``, so a gradient within bf16 rounding of zero flips its update: there the
bounds are on the share of weights that move the same way (measured 0.97-0.99, bound 0.95)
and on the cosine of the updates (measured 0.94-0.98, bound 0.9).
"""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from brainsynth.models.pggan import Discriminator, Generator
from brainsynth.train.losses import WGANGPLoss

RES, WIDTHS, Z_DIM, N = 16, [16, 12, 8], 16, 8




def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1).float() for t in tensors])


def _one_step(precision: str, channels_last: bool) -> dict:
    torch.manual_seed(0)
    G = Generator(RES, z_dim=Z_DIM, widths=WIDTHS)
    D = Discriminator(RES, widths=WIDTHS)
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    reals = torch.rand(N, 1, RES, RES, generator=g) * 2 - 1  # [N, 1, R, R]
    labels = torch.randint(0, 2, (N,), generator=g)
    z_d, z_g = torch.randn(N, Z_DIM, generator=g), torch.randn(N, Z_DIM, generator=g)
    loss = WGANGPLoss(G, D)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    d_before = [p.detach().clone() for p in D.parameters()]
    g_before = [p.detach().clone() for p in G.parameters()]

    torch.manual_seed(2)  # the penalty's interpolation weights
    with amp:
        loss_d, stats = loss.d_loss(reals, labels, z_d, labels, RES, 0.5, step=0)  # fading: both paths run
    loss_d.backward()
    d_grad = _flat(p.grad for p in D.parameters() if p.grad is not None)
    opt_d.step()
    D.requires_grad_(False)
    with amp:
        loss_g, _ = loss.g_loss(z_g, labels, RES, 0.5)
    loss_g.backward()
    g_grad = _flat(p.grad for p in G.parameters() if p.grad is not None)
    opt_g.step()
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "gp": stats["gp"].item(), "d_grad": d_grad,
            "g_grad": g_grad,
            "d_delta": _flat(p.detach() - b for p, b in zip(D.parameters(), d_before)),
            "g_delta": _flat(p.detach() - b for p, b in zip(G.parameters(), g_before))}


@pytest.fixture(scope="module")
def fp32_step():
    return _one_step("fp32", channels_last=False)


def test_fp32_step_is_the_same_in_either_memory_format(fp32_step):
    other = _one_step("fp32", channels_last=True)
    for key in ("loss_d", "loss_g", "gp"):
        assert other[key] == pytest.approx(fp32_step[key], rel=1e-5)
    for key in ("d_grad", "g_grad"):
        torch.testing.assert_close(other[key], fp32_step[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_step_agrees_with_fp32(fp32_step, channels_last):
    bf16 = _one_step("bf16", channels_last)
    for key in ("loss_d", "loss_g", "gp"):
        assert bf16[key] == pytest.approx(fp32_step[key], rel=1e-2), key
    for key in ("d_grad", "g_grad"):
        assert F.cosine_similarity(bf16[key], fp32_step[key], dim=0) > 0.99, key
    for key in ("d_delta", "g_delta"):
        moved = fp32_step[key] != 0
        same_way = (torch.sign(bf16[key]) == torch.sign(fp32_step[key]))[moved].float().mean()
        assert same_way > 0.95, key
        assert F.cosine_similarity(bf16[key], fp32_step[key], dim=0) > 0.9, key
