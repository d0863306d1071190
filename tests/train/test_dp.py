"""Differentially private D steps: per-sample gradients with the gradient penalty, per-person
clipping, subject sampling and the accountant."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import norm
from torch import nn

from brainsynth.errors import ConfigError
from brainsynth.models import build_models
from brainsynth.train import dp
from brainsynth.train.losses import DCGANLoss, WGANGPLoss

RES = 8


def _pggan(conditioning: str, mbstd_group: int = 1):
    torch.manual_seed(0)
    return build_models("pggan", resolution=RES, z_dim=8, n_classes=2, conditioning=conditioning,
                        mbstd_group=mbstd_group, widths={4: 8, 8: 8})


def _batch(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    reals = torch.rand(n, 1, RES, RES, generator=g) * 2 - 1  # [N, 1, 8, 8]
    z = torch.randn(n, 8, generator=g)  # [N, 8]
    labels = torch.arange(n) % 2  # [N]
    return reals, z, labels


def _autograd_d_grads(loss_fn, D, reals, z, labels, step=0):
    """D's gradient of the batch-mean loss by plain autograd, with the penalty's weights drawn after seeding."""
    D.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    loss, _ = loss_fn.d_loss(reals, labels, z, labels, RES, 1.0, step)
    loss.backward()
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in D.named_parameters()}  # unused at RES: 0


def _per_sample(G, D, reals, z, labels, sample_loss, step=0, **kw):
    torch.manual_seed(7)
    mix = torch.rand(len(reals), 1, 1, 1).flatten()  # the same draw as WGANGPLoss.d_loss makes
    with torch.no_grad():
        fakes = G(z, labels, RES, 1.0)
    return dp.per_sample_gradients(D, sample_loss, reals, fakes, labels, labels, mix, RES, 1.0, **kw)


@pytest.mark.parametrize("conditioning", ["projection", "acgan"])
def test_the_per_sample_gradient_with_the_penalty_equals_autograd_for_one_sample(conditioning):
    G, D = _pggan(conditioning)
    reals, z, labels = _batch(1)
    loss_fn = WGANGPLoss(G, D, gp_lambda=10.0, drift=0.001, ac_weight=1.0)
    reference = _autograd_d_grads(loss_fn, D, reals, z, labels)
    mine = _per_sample(G, D, reals, z, labels, dp.wgan_gp_sample_loss, gp_lambda=10.0, drift=0.001, ac_weight=1.0)
    assert set(mine) == set(reference)
    for name, g in reference.items():
        torch.testing.assert_close(mine[name][0], g, rtol=1e-4, atol=1e-6, msg=name)
    assert any(float(g.abs().max()) > 0 for g in reference.values())


def test_per_sample_gradients_sum_to_n_times_the_batch_gradient_on_flip_steps_too():
    G, D = _pggan("projection")
    reals, z, labels = _batch(5, seed=3)
    loss_fn = WGANGPLoss(G, D, gp_lambda=10.0, drift=0.001, ac_weight=1.0, label_flip_every=2)
    reference = _autograd_d_grads(loss_fn, D, reals, z, labels, step=1)  # step 1 of every 2: flipped
    mine = _per_sample(G, D, reals, z, labels, dp.wgan_gp_sample_loss, step=1, gp_lambda=10.0, drift=0.001,
                       ac_weight=1.0, flip=True)
    for name, g in reference.items():
        torch.testing.assert_close(mine[name].sum(0), 5 * g, rtol=1e-4, atol=1e-5, msg=name)
    # Samples differ: a per-sample gradient is not the batch's divided by N.
    name = next(iter(reference))
    assert not torch.allclose(mine[name][0], mine[name][1])


def test_the_dcgan_loss_per_sample_matches_its_batch_loss():
    torch.manual_seed(0)
    G, D = build_models("dcgan", resolution=RES, z_dim=8, n_classes=2, width=4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())  # at 8 px the DCGAN's D has none
    G.eval()
    reals, z, labels = _batch(3)
    reference = _autograd_d_grads(DCGANLoss(G, D), D, reals, z, labels)
    mine = _per_sample(G, D, reals, z, labels, dp.bce_sample_loss)
    for name, g in reference.items():
        torch.testing.assert_close(mine[name].sum(0), 3 * g, rtol=1e-4, atol=1e-6, msg=name)


def test_a_discriminator_that_mixes_samples_is_refused():
    _, D = _pggan("projection", mbstd_group=4)
    with pytest.raises(ConfigError, match="mbstd_group=1"):
        dp.check_per_sample_safe(D)
    _, D = build_models("dcgan", resolution=16, z_dim=8, n_classes=2, width=4)  # 16 px: one batch norm
    with pytest.raises(ConfigError, match="batch norm"):
        dp.check_per_sample_safe(D)


# --- per-person clipping -----------------------------------------------------------------------

def _private(per_sample, subjects, **kw):
    grads, stats = dp.clip_and_noise(per_sample, torch.as_tensor(subjects), **kw)
    return torch.cat([g.flatten() for g in grads.values()]), stats


def test_one_subject_repeated_many_times_moves_the_gradient_by_at_most_the_bound():
    # Real per-sample gradients of D: subject 0's slice 16 times, subjects 1 and 2 once each.
    G, D = _pggan("projection")
    reals, z, labels = _batch(3, seed=5)
    idx = torch.tensor([0] * 16 + [1, 2])
    per_sample = _per_sample(G, D, reals[idx], z[idx], labels[idx], dp.wgan_gp_sample_loss, gp_lambda=10.0,
                             drift=0.001, ac_weight=1.0)
    subjects = idx.numpy()
    bound, expected = 0.5, 2.0
    kw = dict(max_norm=bound, noise_multiplier=0.0, expected_subjects=expected)
    with_all, stats = _private(per_sample, subjects, **kw)
    others = {n: g[16:] for n, g in per_sample.items()}
    without_0, _ = _private(others, subjects[16:], **kw)
    # Adding or removing subject 0, with all 16 slices, changes the summed gradient by at most C.
    assert float((with_all - without_0).norm()) * expected <= bound * (1 + 1e-5)
    single = _private({n: g[:1] for n, g in per_sample.items()}, subjects[:1], **kw)[0]
    raw = torch.cat([g[:16].sum(0).flatten() for g in per_sample.values()])
    assert float(raw.norm()) > 10 * bound  # unclipped, its 16 slices would push 16 times one slice's gradient
    assert stats.subjects == 3 and stats.clipped == 1.0 and stats.median_norm > bound
    # Clipping per slice would have bounded each slice, not the person: 16 x C.
    assert float(single.norm()) * expected <= bound * (1 + 1e-5)


def test_noise_has_sd_sigma_times_c_over_the_expected_batch_and_follows_its_generator():
    zeros = {"w": torch.zeros(0, 2000)}
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, stats = _private(zeros, np.zeros(0, dtype=np.int64), max_norm=2.0, noise_multiplier=1.5,
                        expected_subjects=4.0, generator=g1)
    b, _ = _private(zeros, np.zeros(0, dtype=np.int64), max_norm=2.0, noise_multiplier=1.5,
                    expected_subjects=4.0, generator=g2)
    assert stats.subjects == 0 and torch.equal(a, b)  # an empty Poisson batch is a step of pure noise
    assert float(a.std()) == pytest.approx(1.5 * 2.0 / 4.0, rel=0.05)


def test_small_subject_gradients_are_summed_not_clipped():
    per_sample = {"w": torch.tensor([[0.1, 0.0], [0.0, 0.1], [0.2, 0.2]])}
    grads, stats = dp.clip_and_noise(per_sample, torch.tensor([4, 4, 9]), max_norm=1.0, noise_multiplier=0.0,
                                     expected_subjects=2.0)
    torch.testing.assert_close(grads["w"], torch.tensor([0.15, 0.15]))
    assert stats.clipped == 0.0 and stats.subjects == 2


# --- sampling subjects ---------------------------------------------------------------------------

def test_poisson_sampling_draws_subjects_at_the_rate_and_batches_their_slices():
    g = torch.Generator().manual_seed(0)
    counts = np.array([len(dp.poisson_subjects(12, 0.25, g)) for _ in range(2000)])
    assert counts.mean() == pytest.approx(3.0, abs=0.1) and (counts == 0).any()
    rows_of = [np.arange(10 * s, 10 * s + 10) for s in range(4)]
    rows, subjects = dp.subject_batch(rows_of, torch.tensor([1, 3]), 5, g)
    assert rows.shape == subjects.shape == (10,)
    assert set(rows[:5]) <= set(range(10, 20)) and set(rows[5:]) <= set(range(30, 40))
    np.testing.assert_array_equal(subjects, [1] * 5 + [3] * 5)
    empty = dp.subject_batch(rows_of, torch.tensor([], dtype=torch.long), 5, g)
    assert empty[0].shape == (0,)


# --- the accountant ------------------------------------------------------------------------------

def test_the_accountant_matches_opacus_stepped_one_step_at_a_time_and_survives_a_checkpoint():
    from opacus.accountants import RDPAccountant

    mine, theirs = dp.Accountant("rdp"), RDPAccountant()
    for k in range(300):
        sigma, q = (1.1, 0.25) if k < 200 else (1.5, 0.125)  # two phases (another batch size)
        mine.step(sigma, q)
        theirs.step(noise_multiplier=sigma, sample_rate=q)
    resumed = dp.Accountant.from_state_dict(mine.state_dict())
    assert resumed.history == [(1.1, 0.25, 200), (1.5, 0.125, 100)] and resumed.steps == 300
    assert resumed.epsilon(1e-5) == pytest.approx(theirs.get_epsilon(1e-5), rel=1e-9)
    assert dp.Accountant().epsilon(1e-5) == 0.0


def _exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Epsilon of the Gaussian mechanism of sensitivity 1 and noise 1/mu (Balle & Wang 2018, Theorem 8)."""
    def excess(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta
    return brentq(excess, 0.0, 100.0)


def test_without_subsampling_epsilon_bounds_the_exact_gaussian_mechanism():
    # q = 1: T steps of noise sigma compose to one Gaussian mechanism with mu = sqrt(T) / sigma.
    sigma, steps, delta = 4.0, 64, 1e-5
    exact = _exact_gaussian_epsilon(math.sqrt(steps) / sigma, delta)
    accountant = dp.Accountant("rdp", [(sigma, 1.0, steps)])
    rdp_eps = accountant.epsilon(delta)
    prv_eps = dp.Accountant("prv", [(sigma, 1.0, steps)]).epsilon(delta)
    assert exact <= rdp_eps <= 1.25 * exact  # RDP is an upper bound, and not a loose one here
    assert prv_eps == pytest.approx(exact, rel=0.02)


def test_subsampling_spends_less_and_the_noise_search_inverts_epsilon():
    delta = 1e-5
    full = dp.Accountant("rdp", [(1.0, 1.0, 100)]).epsilon(delta)
    sampled = dp.Accountant("rdp", [(1.0, 0.1, 100)]).epsilon(delta)
    assert sampled < full / 4
    prv = dp.Accountant("prv", [(1.0, 0.1, 100)]).epsilon(delta)
    assert prv <= sampled * 1.001 and prv > 0.5 * sampled
    sigma = dp.noise_for_epsilon(2.0, delta, sample_rate=0.25, steps=500)
    assert dp.Accountant("rdp", [(sigma, 0.25, 500)]).epsilon(delta) == pytest.approx(2.0, abs=0.02)


def test_delta_must_be_far_below_one_in_the_number_of_subjects():
    dp.check_delta(dp.DEFAULT_DELTA, 12)
    with pytest.raises(ConfigError, match="not far below 1/12"):
        dp.check_delta(1e-2, 12)


def test_a_private_step_writes_the_clipped_noised_gradient_into_d():
    G, D = _pggan("projection")
    reals, z, labels = _batch(4, seed=9)
    with torch.no_grad():
        fakes = G(z, labels, RES, 1.0)
    mix = torch.full((4,), 0.5)
    subjects = torch.tensor([0, 0, 1, 2])
    kw = dict(max_norm=0.3, noise_multiplier=0.0, expected_subjects=3.0)
    stats = dp.private_d_step_gradients("pggan", D, reals, fakes, labels, labels, mix, subjects, RES, 1.0,
                                        generator=None, gp_lambda=10.0, drift=0.001, ac_weight=1.0, **kw)
    per_sample = dp.per_sample_gradients(D, dp.wgan_gp_sample_loss, reals, fakes, labels, labels, mix, RES, 1.0,
                                         gp_lambda=10.0, drift=0.001, ac_weight=1.0)
    expected, _ = dp.clip_and_noise(per_sample, subjects, **kw)
    for name, p in D.named_parameters():
        torch.testing.assert_close(p.grad, expected[name])
    assert stats.subjects == 3
