import math

import pytest
import torch
from torch import nn

from brainsynth.errors import ConfigError
from brainsynth.models import build_models
from brainsynth.models.dcgan import Discriminator, Generator
from brainsynth.train.losses import DCGANLoss




@pytest.mark.parametrize("resolution", [16, 64])
def test_shapes_and_range(resolution):
    torch.manual_seed(0)
    G, D = build_models("dcgan", resolution=resolution, z_dim=6, width=4)
    z, y = torch.randn(3, 6), torch.tensor([0, 1, 1])
    img = G(z, y, resolution, 1.0)
    logit, extra = D(img, y, resolution, 0.3)
    assert img.shape == (3, 1, resolution, resolution)
    assert img.abs().max() < 1.0  # tanh output
    assert logit.shape == (3,) and extra is None
    # 4x4 .. R/2 hidden sizes: width doubles towards 4x4
    convs = [m for m in G.net if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) == int(math.log2(resolution)) - 1
    assert convs[0].out_channels == 4 * 2 ** (len(convs) - 2)


def test_discriminator_layout_and_label_planes():
    D = Discriminator(16, n_classes=2, width=4)
    assert isinstance(D.net[0], nn.Conv2d) and D.net[0].in_channels == 3  # image + 2 one-hot planes
    assert isinstance(D.net[1], nn.LeakyReLU) and D.net[1].negative_slope == 0.2  # no BN after the first conv
    assert any(isinstance(m, nn.BatchNorm2d) for m in D.net)
    D.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        a = D(x, torch.tensor([0, 0]), 16)[0]
        b = D(x, torch.tensor([1, 1]), 16)[0]
    assert not torch.allclose(a, b)


def test_generator_uses_the_label():
    G = Generator(16, z_dim=6, width=4).eval()
    z = torch.randn(2, 6)
    with torch.no_grad():
        assert not torch.allclose(G(z, torch.tensor([0, 0])), G(z, torch.tensor([1, 1])))


def test_res_must_equal_resolution():
    G = Generator(16, z_dim=6, width=4)
    with pytest.raises(ConfigError, match="res must equal resolution 16"):
        G(torch.randn(1, 6), torch.tensor([0]), 8, 1.0)
    with pytest.raises(ConfigError, match="power of two >= 8"):
        Generator(12)


class _FixedG(nn.Module):
    def __init__(self, images):
        super().__init__()
        self.images = images

    def forward(self, z, labels, res, alpha):
        return self.images


class _Logit(nn.Module):
    """D whose logit is the image mean, so the BCE can be computed by hand."""

    def forward(self, x, labels, res, alpha):
        return x.mean(dim=(1, 2, 3)), None


def _softplus(v):
    return math.log1p(math.exp(v))


def test_bce_values_and_label_flip():
    reals = torch.tensor([1.0, -2.0]).view(2, 1, 1, 1).expand(2, 1, 4, 4)
    fakes = torch.tensor([0.5, 3.0]).view(2, 1, 1, 1).expand(2, 1, 4, 4)
    loss = DCGANLoss(_FixedG(fakes), _Logit(), label_flip_every=3)
    y = torch.tensor([0, 1])
    d, stats = loss.d_loss(reals, y, torch.zeros(2, 1), y, 4, 1.0, step=0)
    # BCE(real -> 1) = softplus(-l), BCE(fake -> 0) = softplus(l)
    expected = (_softplus(-1) + _softplus(2)) / 2 + (_softplus(0.5) + _softplus(3)) / 2
    assert d.item() == pytest.approx(expected, rel=1e-6)
    assert stats["real_sign"].item() == 0.0 and stats["score_fake"].item() == pytest.approx(1.75)
    flipped, _ = loss.d_loss(reals, y, torch.zeros(2, 1), y, 4, 1.0, step=2)
    expected_flip = (_softplus(1) + _softplus(-2)) / 2 + (_softplus(-0.5) + _softplus(-3)) / 2
    assert flipped.item() == pytest.approx(expected_flip, rel=1e-6)
    g, gstats = loss.g_loss(torch.zeros(2, 1), y, 4, 1.0)
    assert g.item() == pytest.approx((_softplus(-0.5) + _softplus(-3)) / 2, rel=1e-6)
    assert set(gstats) == {"loss_g", "score_fake"}
