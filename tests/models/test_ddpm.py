"""The diffusion model's networks: the denoiser (with and without patching) and its targets."""

import pytest
import torch

from brainsynth.errors import ConfigError
from brainsynth.models import build_models
from brainsynth.models.ddpm import Denoiser, diffusion_targets, make_schedulers

SMALL = {"channels": (8, 8), "attention": (False, True), "norm_groups": 4, "head_channels": 8}


@pytest.mark.parametrize("patch", [1, 2])
def test_denoiser_maps_images_to_images_and_starts_at_zero(patch):
    torch.manual_seed(0)
    net = Denoiser(16, patch=patch, **SMALL)
    x = torch.randn(3, 1, 16, 16)  # [N, 1, H, W]
    out = net(x, torch.tensor([0, 50, 999]), torch.tensor([0, 1, 2]))
    assert out.shape == (3, 1, 16, 16)
    assert torch.equal(out, torch.zeros_like(out))  # MONAI zero-initialises the output convolution
    assert net.unet.conv_in.conv.in_channels == patch * patch and net.null_label == 2
    assert net.unet.class_embedding.num_embeddings == 3  # control, adhd, null


def test_patching_is_a_lossless_fold():
    # pixel_unshuffle then pixel_shuffle is the identity, so a patched denoiser sees every pixel.
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16)
    folded = torch.nn.functional.pixel_unshuffle(x, 2)  # [2, 4, 8, 8]
    assert folded.shape == (2, 4, 8, 8) and torch.equal(folded[0, :, 0, 0], torch.tensor([0.0, 1.0, 16.0, 17.0]))
    assert torch.equal(torch.nn.functional.pixel_shuffle(folded, 2), x)


def test_build_models_gives_the_denoiser_and_no_discriminator():
    G, D = build_models("ddpm", resolution=8, n_classes=2, **SMALL)
    assert isinstance(G, Denoiser) and D is None
    with pytest.raises(ConfigError, match=r"unknown ddpm option\(s\) \['z_dim'\]"):
        build_models("ddpm", resolution=8, z_dim=4, **SMALL)


def test_bad_architectures_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="a 18 px image cannot go through 3 UNet levels after a patch of 1: the size "
                                          "must be divisible by 4; use fewer train.ddpm.channels"):
        Denoiser(18, channels=(8, 8, 8), attention=(False,) * 3, norm_groups=4, head_channels=8)
    with pytest.raises(ConfigError, match="head_channels 16 must divide the channels of every level with "
                                          "attention"):
        Denoiser(16, channels=(8, 24), attention=(False, True), norm_groups=4, head_channels=16)
    with pytest.raises(ConfigError, match="train.ddpm.channels has 2 levels but train.ddpm.attention 1"):
        Denoiser(16, channels=(8, 8), attention=(False,), norm_groups=4)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_targets_follow_the_forward_process(prediction):
    train, _ = make_schedulers(1000, "linear_beta", prediction)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    noise = torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    x_t, target = diffusion_targets(train, x0, noise, t)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 2e-2, 1000), 0)[t].view(4, 1, 1, 1)  # Ho et al. 2020
    assert torch.allclose(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * noise, atol=1e-5)
    expected = {"epsilon": noise, "sample": x0, "v_prediction": abar.sqrt() * noise - (1 - abar).sqrt() * x0}[prediction]
    assert torch.allclose(target, expected, atol=1e-5)


def test_min_snr_weights_clip_the_signal_to_noise_ratio():
    from brainsynth.train.diffusion import loss_weights

    abar = torch.tensor([0.99, 0.5, 0.01], dtype=torch.float64)  # SNR 99, 1, 1/99
    assert torch.equal(loss_weights(abar, "epsilon", 0.0), torch.ones(3, dtype=torch.float64))
    eps = loss_weights(abar, "epsilon", 5.0)
    assert eps.tolist() == pytest.approx([5 / 99, 1.0, 1.0])  # only the nearly clean step is down-weighted
    v = loss_weights(abar, "v_prediction", 5.0)
    assert v.tolist() == pytest.approx([5 / 100, 1 / 2, (1 / 99) / (1 / 99 + 1)])
    assert loss_weights(abar, "sample", 5.0).tolist() == pytest.approx([5.0, 1.0, 1 / 99])
