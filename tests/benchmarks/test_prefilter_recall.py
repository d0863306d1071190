"""benchmarks/prefilter_recall.py on a tiny dataset: the exhaustive reference and one prefilter, each case."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "evaluate"))
from privacy_data import write_dataset  # noqa: E402

from brainsynth.imageset import write_image_set  # noqa: E402


def test_prefilter_recall_reports_every_case_against_the_exhaustive_search(load_benchmark, tmp_path, capsys):
    script = load_benchmark("prefilter_recall")
    dataset = write_dataset(tmp_path / "dataset", n_train=6, n_test=4, n_slices=8, size=24)
    rng = np.random.default_rng(0)
    images = rng.random((12, 24, 24)).astype(np.float32)
    synth = write_image_set(tmp_path / "synth", images, [{"label": ("control", "adhd")[i % 2]} for i in range(12)],
                            synthetic=True, fmt="npz")
    assert script.main([str(dataset), "--synthetic", f"noise={synth}", "--prefilter", "0", "8", "--projection",
                        "--config", "tiny", "--set", "audit.selftest_copies=2", "--set", "audit.bootstrap=10",
                        "--set", "audit.permutations=10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n_train"], out["n_holdout"]) == (48, 32) and 0 <= out["others_cpu_share"] <= 1
    runs = {(r["prefilter"], r["case"]): r for r in out["runs"]}
    assert set(runs) == {(0, "selftest"), (0, "noise"), (8, "selftest"), (8, "noise")}
    for case in ("selftest", "noise"):
        reference = runs[(0, case)]
        assert reference["kept"] in (None, 1.0) and reference["added"] == 0 and reference["same_nearest"] == 1.0
        assert reference["flagged"] == reference["reference_flagged"]
    selftest = runs[(8, "selftest")]
    assert selftest["images"] == 2 * 9 + 16  # 2 copies of 9 families, 16 half-B images
    assert set(selftest["detection"]) == set(selftest["reference_detection"]) and len(selftest["detection"]) == 9
    assert 0.0 <= selftest["kept"] <= 1.0 and selftest["reference_flagged"] >= 2 * 9 * 0.5
    assert "mia_auc" in runs[(8, "noise")] and "detection" not in runs[(8, "noise")]
