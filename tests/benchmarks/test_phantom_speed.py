"""benchmarks/phantom_speed.py on a small voxel grid: the cohort is written and timed, the grid echoed."""

import json

import pytest


@pytest.fixture(scope="module")
def phantom_speed(load_benchmark):
    return load_benchmark("phantom_speed")


def test_a_small_grid_is_timed_and_echoed(phantom_speed, capsys):
    assert phantom_speed.main(["--shape", "16", "16", "16", "--subjects", "2", "--repeats", "1", "--threads", "1",
                               "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["grid"], result["subjects"], result["torch_threads"]) == ([16, 16, 16], 2, 1)
    assert len(result["seconds"]) == 1 and result["seconds"][0] > 0
    assert result["median_s"] == result["seconds"][0]
    assert result["per_subject_s"] == pytest.approx(result["median_s"] / 2, abs=0.01)


def test_the_default_grid_is_the_phantoms_and_a_bad_shape_is_one_line(phantom_speed, capsys):
    assert phantom_speed.cohort_config(12, 0, None).shape is None  # make_cohort's own 320 x 320 x 200 grid
    with pytest.raises(SystemExit) as exit_:
        phantom_speed.main(["--shape", "4", "16", "16", "--json"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "cohort.shape=[4, 16, 16] must be three sizes >= 8 voxels" in err and "Traceback" not in err
