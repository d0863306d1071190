import math

import pytest
import torch
import torch.nn.functional as F

from brainsynth.errors import ConfigError
from brainsynth.models import build_models
from brainsynth.config import CONDITIONINGS
from brainsynth.models.ops import avg_pool2x2, conv2d, leaky_relu, pixel_norm
from brainsynth.models.pggan import (GAIN_G_DENSE, Discriminator, EqualizedConv2d, EqualizedLinear, EqualizedUpConv2d,
                                     Generator, channel_widths, minibatch_stddev)




WIDTHS = [8, 8, 6, 4]  # 4, 8, 16, 32 px: small and unequal, so channel mix-ups show
Z_DIM = 7


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {c: (Generator(32, z_dim=Z_DIM, conditioning=c, widths=WIDTHS),
                Discriminator(32, conditioning=c, widths=WIDTHS)) for c in CONDITIONINGS}


def _inputs(n=5):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, Z_DIM, generator=g), torch.tensor([0, 1, 1, 0, 1][:n])


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_shapes_at_every_resolution_and_alpha(nets, conditioning):
    G, D = nets[conditioning]
    z, y = _inputs()
    with torch.no_grad():
        for res in (4, 8, 16, 32):
            for alpha in (0.0, 0.5, 1.0):
                img = G(z, y, res, alpha)
                score, logits = D(img, y, res, alpha)
                assert img.shape == (5, 1, res, res)
                assert score.shape == (5,)
                assert torch.isfinite(img).all() and torch.isfinite(score).all()
                if conditioning == "acgan":
                    assert logits.shape == (5, 2)
                else:
                    assert logits is None


@pytest.mark.parametrize("res", [8, 16, 32])
def test_generator_alpha_zero_is_the_previous_output_upsampled(nets, res):
    G, _ = nets["acgan"]
    z, y = _inputs()
    with torch.no_grad():
        faded_out = G(z, y, res, 0.0)
        previous = F.interpolate(G(z, y, res // 2, 1.0), scale_factor=2.0, mode="nearest")
        half = G(z, y, res, 0.5)
        new = G(z, y, res, 1.0)
    torch.testing.assert_close(faded_out, previous)
    torch.testing.assert_close(half, 0.5 * (previous + new), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(new, previous, atol=1e-3)


def test_discriminator_alpha_zero_reads_the_pooled_image_through_the_previous_path(nets):
    _, D = nets["acgan"]
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        s0, l0 = D(x, y, 16, 0.0)
        s_prev, l_prev = D(F.avg_pool2d(x, 2), y, 8, 1.0)
    torch.testing.assert_close(s0, s_prev)
    torch.testing.assert_close(l0, l_prev)


def test_fused_upsample_conv_equals_upsample_then_conv():
    torch.manual_seed(3)
    layer = EqualizedUpConv2d(3, 5)
    layer.bias.data.normal_()
    x = torch.randn(2, 3, 5, 6)  # non-square, odd: border handling shows
    ref = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), layer.weight * layer.scale, layer.bias, padding=1)
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)


def test_bilinear_upsample_conv_is_bilinear_upsample_then_conv():
    torch.manual_seed(3)
    layer = EqualizedUpConv2d(3, 5, mode="bilinear")
    x = torch.randn(2, 3, 5, 6)
    up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    ref = F.conv2d(up, layer.weight * layer.scale, layer.bias, padding=1)
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)
    # A smooth enlargement: no output pixel of the upsampled map repeats its neighbour, as nearest's do.
    assert not torch.equal(up[..., 0::2, :], up[..., 1::2, :])


def test_bilinear_generator_has_the_nearest_ones_parameters_and_fades_bilinearly():
    torch.manual_seed(0)
    nearest = Generator(32, z_dim=Z_DIM, conditioning="projection", widths=WIDTHS)
    bilinear = Generator(32, z_dim=Z_DIM, conditioning="projection", widths=WIDTHS, upsample="bilinear")
    bilinear.load_state_dict(nearest.state_dict())  # same parameters: one mode's weights load into the other
    z, y = _inputs()
    with torch.no_grad():
        previous = F.interpolate(bilinear(z, y, 8, 1.0), scale_factor=2.0, mode="bilinear", align_corners=False)
        torch.testing.assert_close(bilinear(z, y, 16, 0.0), previous)
        torch.testing.assert_close(bilinear(z, y, 4, 1.0), nearest(z, y, 4, 1.0))  # no upsampling at 4 px
        assert not torch.allclose(bilinear(z, y, 16, 1.0), nearest(z, y, 16, 1.0), atol=1e-3)


def test_equalised_lr_scale_and_variance_preservation():
    torch.manual_seed(4)
    conv = EqualizedConv2d(64, 32, 3)
    effective = conv.weight * conv.scale
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(64 * 9))
    assert effective.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert conv.bias.abs().sum().item() == 0.0
    x = torch.randn(16, 64, 12, 12)
    # He gain sqrt(2): a linear conv doubles the variance, which LReLU then roughly halves.
    assert conv(x).var().item() == pytest.approx(2.0, rel=0.15)
    lin = EqualizedLinear(256, 128, gain=1.0)
    assert lin(torch.randn(512, 256)).var().item() == pytest.approx(1.0, rel=0.1)
    G = Generator(8, z_dim=16, widths=[4, 4])
    assert G.dense.scale == pytest.approx(GAIN_G_DENSE / math.sqrt(16 + 2))
    assert G.to_rgb["8"].scale == pytest.approx(1.0 / math.sqrt(4))


def test_pixel_norm_gives_unit_rms_over_channels():
    x = torch.randn(3, 7, 5, 4, generator=torch.Generator().manual_seed(5)) * 10
    rms = pixel_norm(x).square().mean(dim=1).sqrt()
    torch.testing.assert_close(rms, torch.ones(3, 5, 4))
    y = pixel_norm(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float().square().mean(dim=1).sqrt(), torch.ones(3, 5, 4), rtol=2e-2, atol=2e-2)


def test_minibatch_stddev_hand_computed():
    x = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(4, 1, 1, 1).expand(4, 1, 2, 3).contiguous()
    out = minibatch_stddev(x, group_size=4)
    assert out.shape == (4, 2, 2, 3)
    # deviations -3, -1, 1, 3 -> biased variance 5
    torch.testing.assert_close(out[:, 1], torch.full((4, 2, 3), math.sqrt(5 + 1e-8)))
    torch.testing.assert_close(out[:, :1], x)
    # batch 8: official grouping, sample i in group i % 2
    v = torch.tensor([0.0, 10.0, 0.0, 10.0, 2.0, 10.0, 2.0, 14.0]).view(8, 1, 1, 1)
    stat = minibatch_stddev(v, 4)[:, 1, 0, 0]
    even = math.sqrt(1.0 + 1e-8)  # {0, 0, 2, 2}: variance 1
    odd = math.sqrt(3.0 + 1e-8)  # {10, 10, 10, 14}: variance 3
    torch.testing.assert_close(stat, torch.tensor([even, odd] * 4))


@pytest.mark.parametrize("n", range(1, 9))
def test_minibatch_stddev_any_batch_size_is_finite(n):
    x = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(n), requires_grad=True)
    out = minibatch_stddev(x, 4)
    assert out.shape == (n, 4, 4, 4)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    if n == 1:
        torch.testing.assert_close(out[:, 3], torch.full((1, 4, 4), 1e-4))


def test_discriminator_batch_of_one_has_no_nan(nets):
    _, D = nets["acgan"]
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    score, logits = D(x, torch.tensor([1]), 8, 1.0)
    score.sum().backward()
    assert torch.isfinite(score).all() and torch.isfinite(x.grad).all()


def test_official_widths():
    assert channel_widths(256) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}
    assert channel_widths(64, widths={"4": 3, 8: 3, 16: 2, 32: 2, 64: 1}) == {4: 3, 8: 3, 16: 2, 32: 2, 64: 1}


@pytest.mark.parametrize("kwargs, message", [
    (dict(widths=[8, 8]), "widths lists 2 values; give 4"),
    (dict(widths={}), "widths is empty"),
    (dict(conditioning="cgan"), "conditioning must be one of"),
    (dict(resolution=48), "power of two"),
    (dict(upsample="cubic"), "upsample must be one of nearest, bilinear"),
])
def test_bad_options_are_one_line_config_errors(kwargs, message):
    options = dict(resolution=32, widths=WIDTHS) | kwargs
    with pytest.raises(ConfigError, match=message):
        Generator(**options)


def test_bad_res_is_a_config_error(nets):
    G, D = nets["none"]
    z, y = _inputs()
    with pytest.raises(ConfigError, match="res must be a power of two in 4..32"):
        G(z, y, 64, 1.0)
    with pytest.raises(ConfigError, match="res must be a power of two in 4..32"):
        D(torch.zeros(1, 1, 12, 12), None, 12, 1.0)


def test_labels_condition_both_networks(nets):
    z, _ = _inputs(4)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    with torch.no_grad():
        G, D = nets["projection"]
        assert not torch.allclose(G(z, zeros, 8, 1.0), G(z, ones, 8, 1.0))
        x = torch.randn(4, 1, 8, 8)
        assert not torch.allclose(D(x, zeros, 8, 1.0)[0], D(x, ones, 8, 1.0)[0])
        G, D = nets["none"]
        torch.testing.assert_close(G(z, zeros, 8, 1.0), G(z, ones, 8, 1.0))


def test_bf16_autocast_and_channels_last(nets):
    G, D = nets["acgan"]
    z, y = _inputs()
    with torch.no_grad():
        ref = D(G(z, y, 16, 0.5), y, 16, 0.5)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            img = G(z, y, 16, 0.5)
            score, logits = D(img, y, 16, 0.5)
    assert img.dtype == torch.bfloat16 and torch.isfinite(score.float()).all()
    torch.testing.assert_close(score.float(), ref, rtol=0.1, atol=0.1)
    G2, D2 = build_models("pggan", resolution=16, z_dim=Z_DIM, widths=[8, 8, 6], conditioning="acgan")
    G2.load_state_dict({k: v for k, v in G.state_dict().items() if "32" not in k})
    G2 = G2.to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(G2(z, y, 16, 0.5), G(z, y, 16, 0.5), rtol=1e-4, atol=1e-5)


def test_build_models_rejects_unknown_options():
    with pytest.raises(ConfigError, match=r"unknown pggan option\(s\) \['fmap'\]"):
        build_models("pggan", resolution=8, fmap=3)
    with pytest.raises(ConfigError, match="model must be one of pggan, dcgan"):
        build_models("stylegan")


# --- the fast autograd functions compute what the stock ops compute, to every needed order --------

def _f64(*shape, seed):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


@pytest.mark.parametrize("k", [1, 3])
def test_conv2d_matches_stock_conv_and_its_first_and_second_derivatives(k):
    x, w, b = _f64(2, 3, 5, 6, seed=10), _f64(4, 3, k, k, seed=11), _f64(4, seed=12)
    torch.testing.assert_close(conv2d(x, w, b, k // 2), F.conv2d(x, w, b, padding=k // 2))
    assert torch.autograd.gradcheck(lambda *a: conv2d(*a, k // 2), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda *a: conv2d(*a, k // 2), (x, w, b))


def test_leaky_relu_avg_pool_and_pixel_norm_match_their_derivatives():
    x = _f64(2, 5, 4, 6, seed=13)
    torch.testing.assert_close(leaky_relu(x * 1.0), F.leaky_relu(x, 0.2))
    assert torch.autograd.gradgradcheck(lambda t: leaky_relu(t * 1.0), (x,))
    torch.testing.assert_close(avg_pool2x2(x), F.avg_pool2d(x, 2))
    assert torch.autograd.gradgradcheck(lambda t: avg_pool2x2(t).square(), (x,))
    assert torch.autograd.gradcheck(pixel_norm, (x,))
    torch.testing.assert_close(pixel_norm(x), x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8))


def test_gradient_penalty_graph_matches_stock_ops(monkeypatch):
    """D's input gradient and the penalty's weight gradients equal those of plain F.conv2d/F.leaky_relu."""
    from brainsynth.models import pggan

    torch.manual_seed(14)
    D = Discriminator(16, conditioning="acgan", widths=[6, 5, 4]).double()
    x = _f64(4, 1, 16, 16, seed=15)
    y = torch.tensor([0, 1, 1, 0])

    def penalty_grads():
        D.zero_grad(set_to_none=True)
        (grad,) = torch.autograd.grad(D(x, y, 16, 0.5)[0].sum(), x, create_graph=True)
        grad.square().sum().backward()
        return grad.detach(), [p.grad.clone() for p in D.parameters() if p.grad is not None]

    fast = penalty_grads()
    monkeypatch.setattr(pggan, "conv2d", lambda x, w, b, p: F.conv2d(x, w, b, padding=p))
    monkeypatch.setattr(pggan, "_act", lambda x: F.leaky_relu(x, 0.2))
    monkeypatch.setattr(pggan, "avg_pool2x2", lambda x: F.avg_pool2d(x, 2))
    stock = penalty_grads()
    torch.testing.assert_close(fast[0], stock[0])
    assert len(fast[1]) == len(stock[1])
    for a, b in zip(fast[1], stock[1]):
        torch.testing.assert_close(a, b)


def test_channels_last_discriminator_runs_channels_last_from_the_first_layer():
    """A 1-channel image is "contiguous" in both layouts; D must still hand oneDNN NHWC strides."""
    D = Discriminator(8, conditioning="none", widths=[4, 3]).to(memory_format=torch.channels_last)
    seen = []
    D.from_rgb["8"].register_forward_hook(lambda m, i, o: seen.append(o.stride(1)))
    D(torch.randn(2, 1, 8, 8), None, 8, 1.0)
    assert seen == [1]  # NHWC: channel stride 1


@pytest.mark.parametrize("resolution, given, expected", [
    # The official rule is 512 up to 32 px, then halves: a quarter of it stays a quarter.
    (128, {4: 128, 8: 128}, {4: 128, 8: 128, 16: 128, 32: 128, 64: 64, 128: 32}),
    # The demo's widths at 256 px: 16 at 64 px is 1/16 of the rule's 256, so 8 at 128 and 4 at 256.
    (256, {4: 64, 8: 64, 16: 32, 32: 16, 64: 16}, {4: 64, 8: 64, 16: 32, 32: 16, 64: 16, 128: 8, 256: 4}),
    # Only larger resolutions listed: the smallest one above is the reference.
    (16, {32: 16, 64: 8}, {4: 16, 8: 16, 16: 16}),
    # Listed beyond the final resolution: ignored.
    (8, {4: 8, 8: 8, 16: 8}, {4: 8, 8: 8}),
])
def test_unlisted_widths_follow_the_official_rule_scaled_to_the_nearest_listed(resolution, given, expected):
    assert channel_widths(resolution, widths=given) == expected
    G = Generator(resolution=resolution, z_dim=8, widths=given)
    assert G.widths == expected
