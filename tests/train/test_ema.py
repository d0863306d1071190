"""G_ema and the DCGAN's batch norm (train.dcgan.ema_bn): statistics that belong to G_ema's own weights."""

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from brainsynth.config import load_config
from brainsynth.errors import ConfigError
from brainsynth.generate import image_seed, latent_for_seed, load_generator_from_checkpoint, sample_images
from brainsynth.models.dcgan import Generator, batch_statistics, recompute_batch_norm
from brainsynth.train import checkpoint as ckpt
from brainsynth.train.ema import ema_beta, recompute_statistics, update_ema
from brainsynth.train.loop import run_training


def _dcgan_g(seed=0):
    torch.manual_seed(seed)
    G = Generator(resolution=16, z_dim=6, n_classes=2, width=4)
    for bn in G.modules():  # statistics that belong to other weights, as copied from the raw G
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-3, 3)
            bn.running_var.uniform_(5, 9)
    return G.eval()


def _batches(n_batches, size=5, z_dim=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, z_dim, generator=g), torch.randint(2, (size,), generator=g)) for _ in range(n_batches)]


def _bn_input_moments(G, batches):
    """Per batch-norm layer: the mean over batches of each batch's channel mean and unbiased variance,
    read from the layers' inputs in a train-mode forward pass of G itself."""
    norms = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    seen = {i: [] for i in range(len(norms))}
    hooks = [bn.register_forward_pre_hook(lambda m, args, i=i: seen[i].append(args[0].detach().clone()))
             for i, bn in enumerate(norms)]
    with torch.no_grad(), batch_statistics(G):
        for z, y in batches:
            G(z, y)
    for h in hooks:
        h.remove()
    means = [torch.stack([x.mean(dim=(0, 2, 3)) for x in seen[i]]).mean(0) for i in seen]  # [C] per layer
    variances = [torch.stack([x.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for x in seen[i]]).mean(0)
                 for i in seen]
    return means, variances


@pytest.mark.parametrize("n_batches", [1, 3])
def test_recomputed_statistics_equal_those_of_a_forward_pass_of_g_ema_itself(n_batches):
    G = _dcgan_g()
    reference = copy.deepcopy(G)
    batches = _batches(n_batches)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    assert recompute_batch_norm(G, batches) == n_batches
    means, variances = _bn_input_moments(reference, batches)
    norms = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2
    for bn, mean, var in zip(norms, means, variances):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
        assert bn.momentum == 0.1 and not bn.training  # restored, and G is back in eval mode
    for key, value in G.state_dict().items():  # the weights are untouched
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(value, before[key]), key
    assert not torch.equal(norms[0].running_mean, before["net.1.running_mean"])


def test_with_recomputed_statistics_eval_mode_matches_the_train_mode_forward():
    G = _dcgan_g()
    ((z, y),) = batches = _batches(1, size=64)
    with torch.no_grad(), batch_statistics(G):
        train_mode = G(z, y)  # [64, 1, 16, 16]
    copied_stats = G(z, y).detach()
    recompute_batch_norm(G, batches)
    with torch.no_grad():
        eval_mode = G(z, y)
    # Only the biased (train) vs unbiased (running) variance differs: a factor 64/63 inside the sqrt.
    assert (eval_mode - train_mode).abs().max() < 0.02
    assert (copied_stats - train_mode).abs().max() > 0.2


def test_batch_statistics_leaves_the_buffers_and_modes_alone():
    G = _dcgan_g()
    state = {k: v.clone() for k, v in G.state_dict().items()}
    z, y = _batches(1)[0]
    with torch.no_grad(), batch_statistics(G):
        a = G(z, y)
    assert all(torch.equal(v, state[k]) for k, v in G.state_dict().items())
    assert not any(m.training for m in G.modules())
    with torch.no_grad():
        assert not torch.allclose(a, G(z, y))  # eval mode uses the running statistics again


@pytest.mark.parametrize("mode", ["copy", "recompute", "no_ema"])
def test_update_ema(mode):
    G_ema, G = _dcgan_g(0), _dcgan_g(1)
    old = copy.deepcopy(G_ema)
    update_ema(G_ema, G, 0.75, mode)
    for p_ema, p_old, p in zip(G_ema.parameters(), old.parameters(), G.parameters()):
        expected = p if mode == "no_ema" else torch.lerp(p_old, p, 0.25)
        torch.testing.assert_close(p_ema, expected)
    for b_ema, b_old, b in zip(G_ema.buffers(), old.buffers(), G.buffers()):
        assert torch.equal(b_ema, b_old if mode == "recompute" else b)


def test_ema_beta_from_the_half_life_or_per_step():
    cfg = load_config("tiny", ["train.pggan.ema_halflife_images=64"]).train["pggan"]
    assert ema_beta(cfg, 16) == pytest.approx(0.5 ** 0.25)
    cfg.ema_halflife_images = None
    assert ema_beta(cfg, 16) == cfg.ema_beta == 0.999


# --- in the training loop ------------------------------------------------------------------------

def _run(tiny_dataset, root, tiny_cfg, mode, **settings):
    cfg = tiny_cfg("dcgan", ema_bn=mode, total_images=64, tensorboard=False, **settings)
    return run_training(tiny_dataset, root / mode, cfg)


def _state(run):
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(run))


def test_recompute_saves_g_ema_statistics_of_its_own_weights(tiny_dataset, tmp_path, tiny_cfg):
    run = _run(tiny_dataset, tmp_path, tiny_cfg, "recompute", ema_bn_images=20)
    state = _state(run)
    G_ema = load_generator_from_checkpoint(state)
    saved = {k: v.clone() for k, v in G_ema.state_dict().items()}
    # The same recomputation on the saved weights: 20 latents = 3 batches of the training batch 8.
    cfg = load_config("tiny", ["train.dcgan.ema_bn_images=20"]).train["dcgan"]
    n = recompute_statistics(G_ema, cfg, torch.tensor([0.5, 0.5], dtype=torch.float64), 8, 64, torch.device("cpu"))
    assert n == 3
    for key, value in G_ema.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=1e-5, atol=1e-6)
    # ... and not the raw G's statistics, which the copy mode would have saved.
    assert not torch.allclose(saved["net.1.running_mean"], state["G"]["net.1.running_mean"])
    copied = _state(_run(tiny_dataset, tmp_path, tiny_cfg, "copy"))
    assert torch.equal(copied["G_ema"]["net.1.running_mean"], copied["G"]["net.1.running_mean"])


def test_no_ema_samples_g_itself(tiny_dataset, tmp_path, tiny_cfg):
    state = _state(_run(tiny_dataset, tmp_path, tiny_cfg, "no_ema"))
    assert all(torch.equal(state["G_ema"][k], v) for k, v in state["G"].items())


def test_train_mode_generation_uses_batch_statistics_at_the_training_batch_size(tiny_dataset, tmp_path, tiny_cfg):
    from brainsynth.generate import generate_images
    from brainsynth.imageset import read_image_set

    run = _run(tiny_dataset, tmp_path, tiny_cfg, "train_mode")
    gen_cfg = load_config("tiny", ["generate.images_per_label=5", "generate.format=npz"]).generate
    out = generate_images(run, tmp_path / "synthetic", gen_cfg, device="cpu")
    images = read_image_set(out)
    assert images.meta["generator"]["batch_norm"] == "batch statistics, batches of 8"
    G = load_generator_from_checkpoint(_state(run))
    seeds = [image_seed(0, c, i) for c in (0, 1) for i in range(5)]
    z = torch.stack([latent_for_seed(s, 16) for s in seeds[:8]])  # [8, 16]: the first batch
    y = torch.tensor([0] * 5 + [1] * 3)
    with torch.no_grad(), batch_statistics(G):
        expected = ((G(z, y)[:, 0] + 1) / 2).clamp(0, 1).numpy()  # [8, 8, 8]
    assert np.abs(images.images[:8] - expected).max() <= 1 / 255 + 1e-6
    eval_mode = sample_images(G, [0] * 5 + [1] * 3, seeds[:8], 8, 1.0, 16)
    assert np.abs(eval_mode - expected).max() > 0.05
    # The last, short batch (2 images) is padded to 8 and is reproducible.
    again = sample_images(G, [0] * 5 + [1] * 5, seeds, 8, 1.0, 16, batch_size=8, batch_stats=True)
    assert np.abs(again - images.images).max() <= 1 / 255 + 1e-6


def test_bad_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="ema_bn.*recompute"):
        load_config("tiny", ["train.dcgan.ema_bn=recomputed"])
