import pytest
import torch

from brainsynth.errors import ConfigError
from brainsynth.train.augment import P_MAX, Augment




def _images(n=6, size=16, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_identity_when_off_or_p_zero():
    x = _images()
    assert Augment("off", p=0.5)(x) is x
    assert Augment("fixed", p=0.0)(x) is x
    assert Augment("adaptive", p=0.0)(x) is x


def test_fixed_p_one_changes_every_image_and_is_differentiable():
    x = _images().requires_grad_(True)
    aug = Augment("fixed", p=0.999999, seed=3)
    y = aug(x)
    assert y.shape == x.shape
    changed = (y - x).abs().flatten(1).amax(dim=1) > 1e-6
    assert changed.all()
    (y * torch.linspace(0, 1, 256).view(1, 1, 16, 16)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_translation_moves_whole_pixels_and_fills_with_background():
    x = torch.full((4, 1, 16, 16), 0.0)
    x[:, :, 8, 8] = 1.0
    aug = Augment("fixed", p=0.5, seed=1)
    y = aug._translate(x)
    for img in y[:, 0]:
        ys, xs = torch.nonzero(img == 1.0, as_tuple=True)
        assert len(ys) == 1 and abs(ys.item() - 8) <= 2 and abs(xs.item() - 8) <= 2  # 1/8 of 16 px
        assert set(img.unique().tolist()) <= {-1.0, 0.0, 1.0}


def test_cutout_size_is_a_quarter_to_a_half():
    x = torch.zeros(64, 1, 16, 16)
    y = Augment("fixed", p=0.5, seed=2)._cutout(x)
    area = (y == -1.0).float().mean(dim=(1, 2, 3))
    assert area.max() <= 0.5 ** 2 + 1e-6
    assert area.min() >= 0.0 and area.mean() > 0.03  # clipped at borders, but clearly present


def _ada(**kwargs):
    return Augment("adaptive", p=kwargs.pop("p", 0.1), target=0.6, interval=4, speed_images=1000, batch_size=10,
                   **kwargs)


def test_ada_moves_p_every_interval_steps():
    aug = _ada()
    for _ in range(3):
        aug.update(torch.tensor(1.0))
    assert aug.p == 0.1  # not yet: every 4 steps
    aug.update(torch.tensor(1.0))
    assert aug.p == pytest.approx(0.1 + 10 * 4 / 1000)  # overfitting (E[sign] 1 > 0.6): p up
    for _ in range(4):
        aug.update(torch.tensor(0.2))
    assert aug.p == pytest.approx(0.1)  # below target: p down


def test_ada_clamps_to_zero_and_below_one():
    aug = _ada(p=0.01)
    for _ in range(8):
        aug.update(torch.tensor(-1.0))
    assert aug.p == 0.0
    high = _ada(p=0.99)
    for _ in range(8):
        high.update(torch.tensor(1.0), batch_size=100)
    assert high.p == P_MAX < 1.0


def test_fixed_mode_ignores_updates():
    aug = Augment("fixed", p=0.3)
    for _ in range(8):
        aug.update(torch.tensor(1.0))
    assert aug.p == 0.3


def test_state_dict_round_trip_resumes_exactly():
    aug = _ada(seed=5)
    x = _images()
    aug(x)
    for _ in range(6):  # 4 apply, 2 stay pending
        aug.update(torch.tensor(0.9))
    state = aug.state_dict()
    expected_next = aug(x)
    aug.update(torch.tensor(0.9))
    aug.update(torch.tensor(0.9))
    expected_p = aug.p

    resumed = _ada(seed=123)
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed(x), expected_next)
    resumed.update(torch.tensor(0.9))
    resumed.update(torch.tensor(0.9))
    assert resumed.p == pytest.approx(expected_p)
    with pytest.raises(ConfigError, match="augmentation mode 'adaptive' differs"):
        Augment("fixed", p=0.2).load_state_dict(state)


def test_bad_options():
    with pytest.raises(ConfigError, match="augment mode must be one of off, fixed, adaptive"):
        Augment("ada")
    with pytest.raises(ConfigError, match=r"augment p must be in \[0, 1\)"):
        Augment("fixed", p=1.0)
