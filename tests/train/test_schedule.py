import pytest

from brainsynth.errors import ConfigError
from brainsynth.train.schedule import Phase, Schedule


def _small():
    # 4 -> 16 with unequal stable (100) and fade (40) lengths, so the two cannot be confused.
    return Schedule(16, start_res=4, stable_images=100, fade_images=40, batch_sizes={4: 8, 8: 6, 16: 4},
                    lr={4: 1e-3, 16: 5e-4})


@pytest.mark.parametrize("images, res, alpha, index, fading", [
    (0, 4, 1.0, 0, False),
    (99, 4, 1.0, 0, False),
    (100, 8, 0.0, 1, True),  # the 8 px fade starts: resolution (and Adam) change here
    (110, 8, 0.25, 1, True),
    (139, 8, 39 / 40, 1, True),
    (140, 8, 1.0, 1, False),
    (239, 8, 1.0, 1, False),
    (240, 16, 0.0, 2, True),
    (280, 16, 1.0, 2, False),
    (379, 16, 1.0, 2, False),
    (10_000, 16, 1.0, 2, False),  # past the end: the final phase
])
def test_phase_boundaries(images, res, alpha, index, fading):
    phase = _small().at(images)
    assert (phase.res, phase.index, phase.fading) == (res, index, fading)
    assert phase.alpha == pytest.approx(alpha)


def test_batch_sizes_lr_total_and_boundaries():
    s = _small()
    assert s.total_images == 100 + 2 * (40 + 100)
    assert [s.at(n).batch_size for n in (0, 100, 240)] == [8, 6, 4]
    assert [s.at(n).lr for n in (0, 100, 240)] == [1e-3, 1e-3, 5e-4]  # 8 px takes the nearest lower key
    assert s.boundaries() == [(0, "stable", 4), (100, "fade", 8), (140, "stable", 8), (240, "fade", 16),
                              (280, "stable", 16)]
    assert isinstance(s.at(0), Phase)
    with pytest.raises(Exception):
        s.at(0).res = 8  # frozen


def test_schedule_is_monotonic():
    s = _small()
    previous = s.at(0)
    for n in range(1, 400):
        phase = s.at(n)
        assert phase.res >= previous.res and phase.index >= previous.index
        if phase.index == previous.index:
            assert phase.alpha >= previous.alpha
        previous = phase


def test_official_defaults_and_explicit_total():
    s = Schedule(64, batch_sizes=16, lr=1e-3)
    assert s.at(599_999).res == 4 and s.at(600_000).res == 8 and s.at(900_000).alpha == 0.5
    assert s.total_images == 600_000 + 4 * 1_200_000
    assert Schedule(64, total_images=10_000_000).total_images == 10_000_000
    single = Schedule(8, start_res=8, stable_images=50, fade_images=1)
    assert single.at(0) == Phase(res=8, alpha=1.0, batch_size=16, lr=1e-3, index=0, fading=False)
    assert single.total_images == 50


def test_fit_budget_paper_preset():
    # The paper: 20,000 steps at batch 4 = 80,000 images, grown 4 -> 256.
    s = Schedule.fit_budget(256, 80_000, start_res=4, batch_sizes=4, lr=2e-4, final_share=0.5)
    assert s.total_images == 80_000
    assert s.stable_images == s.fade_images == 40_000 // 12
    final_start = s.boundaries()[-1]
    assert final_start == (12 * 3333, "stable", 256)
    assert s.at(79_999).res == 256 and s.at(79_999).alpha == 1.0
    assert s.at(final_start[0] - 1).fading


def test_fit_budget_demo_and_no_growth():
    s = Schedule.fit_budget(64, 20_000, start_res=8, batch_sizes={8: 32, 64: 16}, final_share=0.6)
    assert s.total_images == 20_000
    assert s.stable_images == int(20_000 * 0.4) // 6
    flat = Schedule.fit_budget(32, 5_000, start_res=32)
    assert flat.total_images == 5_000 and flat.at(4_999) == flat.at(0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(final_res=24), "final resolution must be a power of two"),
    (dict(final_res=8, start_res=16), "start resolution 16 is above the final resolution 8"),
    (dict(final_res=16, stable_images=0), "stable_images and fade_images must be >= 1"),
])
def test_bad_schedules_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Schedule(**kwargs)


def test_fit_budget_too_small():
    with pytest.raises(ConfigError, match="too small to grow 4 -> 256"):
        Schedule.fit_budget(256, 10)


def test_unlisted_batch_sizes_and_lrs_follow_the_official_table_scaled():
    # The demo's batches at 256 px: 16 at 64 px is half the official 32, so 8 at 128 and 4 at 256.
    s = Schedule(256, batch_sizes={4: 32, 8: 32, 16: 32, 32: 16, 64: 16}, lr={4: 1e-3, 32: 5e-4})
    assert s.batch_sizes == {4: 32, 8: 32, 16: 32, 32: 16, 64: 16, 128: 8, 256: 4}
    assert s.lrs == {4: 1e-3, 8: 1e-3, 16: 1e-3, 32: 5e-4, 64: 5e-4, 128: 5e-4, 256: 5e-4}  # the official lr is flat
    # Nothing listed below: the smallest listed resolution is the reference; never below 2 (minibatch stddev).
    assert Schedule(16, batch_sizes={8: 4}).batch_sizes == {4: 4, 8: 4, 16: 4}
    assert Schedule(1024, batch_sizes={256: 2}).batch_sizes[1024] == 2


# --- the compute schedule ----------------------------------------------------------------------

COST = {4: 1.0, 8: 2.0, 16: 4.0, 32: 8.0}  # e.g. CPU ms per image


def test_compute_schedule_gives_every_phase_the_same_cost_and_the_final_resolution_its_share():
    s = Schedule.fit_compute(32, 1_000, COST, start_res=4, batch_sizes=8, final_share=0.4)
    # 1,000 images at 32 px cost 8,000; 40% = 3,200 stays at 32 px (400 images); the rest, 4,800, is
    # split into 6 phases of 800: 800 images at 4 px, 400 at 8 px (fade and stable), 200 at 16, 100 in the 32 px fade.
    assert s.phase_images == [800, 400, 400, 200, 200, 100]
    assert s.boundaries() == [(0, "stable", 4), (800, "fade", 8), (1200, "stable", 8), (1600, "fade", 16),
                              (1800, "stable", 16), (2000, "fade", 32), (2100, "stable", 32)]
    assert s.total_images == 2100 + 400
    spans = list(zip(s.boundaries(), [b[0] for b in s.boundaries()[1:]] + [s.total_images]))
    costs = [(end - start) * COST[res] for (start, _, res), end in spans]
    assert costs[:-1] == [800.0] * 6 and costs[-1] == 3200.0
    assert s.at(1100).fading and s.at(1100).alpha == pytest.approx(0.75) and s.at(2050).alpha == pytest.approx(0.5)


def test_compute_boundaries_are_a_pure_function_of_the_budget():
    a = Schedule.fit_compute(32, 1_234, COST, final_share=0.3)
    b = Schedule.fit_compute(32, 1_234, dict(COST), final_share=0.3)
    assert a.boundaries() == b.boundaries() and a.total_images == b.total_images
    doubled = Schedule.fit_compute(32, 2_468, COST, final_share=0.3)
    # Twice the budget: every phase about twice as long (rounded down to whole images).
    assert all(abs(y - 2 * x) <= 1 for x, y in zip(a.phase_images, doubled.phase_images))
    # Only the ratios of the costs matter.
    scaled = Schedule.fit_compute(32, 1_234, {r: 1e6 * c for r, c in COST.items()}, final_share=0.3)
    assert scaled.boundaries() == a.boundaries()


def test_compute_schedule_refusals():
    with pytest.raises(ConfigError, match=r"image_cost needs a cost > 0 for every resolution 4..32; missing \[16\]"):
        Schedule.fit_compute(32, 1_000, {4: 1, 8: 2, 32: 8})
    with pytest.raises(ConfigError, match="too small to grow 4 -> 32"):
        Schedule.fit_compute(32, 1, COST)
    with pytest.raises(ConfigError, match=r"phase_images must list 2 phase lengths"):
        Schedule(8, start_res=4, phase_images=[5])


def test_uneven_phases_in_the_official_timeline():
    s = Schedule(16, start_res=4, batch_sizes=8, total_images=100, phase_images=[10, 20, 30, 40])
    assert s.boundaries() == [(0, "stable", 4), (10, "fade", 8), (30, "stable", 8), (60, "fade", 16),
                              (100, "stable", 16)]
    assert s.at(20).alpha == pytest.approx(0.5) and s.at(80).alpha == pytest.approx(0.5) and s.at(99).fading
    assert "phases=[10, 20, 30, 40]" in repr(s)
