"""Privacy audit: distances, calibration, planted copies, membership inference, the audit command."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from brainsynth.config import AuditConfig, EvaluateConfig
from brainsynth.errors import ConfigError, InputError, OutputExistsError
from brainsynth.evaluate import audit, privacy
from brainsynth.evaluate import features as feat
from brainsynth.evaluate.distances import best_shift, feature_distances, shift_tolerant_distances
from brainsynth.evaluate.privacy import calibrate_thresholds, neighbour_distance_excluding_subject, privacy_audit
from brainsynth.evaluate.schema import AuditReport
from brainsynth.imageset import read_image_set, write_image_set

H, W = 18, 22  # unequal sides catch axis mix-ups


def blob_images(rng, n, h=H, w=W):
    """Brain-like structured images: a common ellipse plus 3-6 random blobs, smoothed; float32 [n, h, w]."""
    yy, xx = np.mgrid[:h, :w]
    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        img = 0.35 * ((((yy - h / 2) / (h * 0.42)) ** 2 + ((xx - w / 2) / (w * 0.42)) ** 2) < 1)
        for _ in range(rng.integers(3, 7)):
            cy, cx = rng.uniform(3, h - 3), rng.uniform(3, w - 3)
            s, a = rng.uniform(1.0, 3.0), rng.uniform(0.2, 0.6)
            img = img + a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        out[i] = np.clip(gaussian_filter(img, 0.7), 0, 1)
    return out


class RandomProjection:
    """A fixed random ReLU projection standing in for a CNN feature extractor."""

    def __init__(self, n_pixels, dim=48, seed=0):
        self.matrix = np.random.default_rng(seed).normal(size=(n_pixels, dim)).astype(np.float32)

    def extract(self, images):
        return np.maximum(images.reshape(len(images), -1) @ self.matrix, 0.0)

    def describe(self):
        return {"name": "random-projection", "layer": "relu", "input_size": 0, "channel_mapping": "none",
                "resize": "none", "weights": "normal(seed=0)", "precision": "fp32"}


def run_audit(train, holdout, synth, percentile=1.0):
    feats = RandomProjection(train[0].size)
    return privacy_audit(
        train, holdout, synth,
        train_features=feats.extract(train), holdout_features=feats.extract(holdout),
        synth_features=feats.extract(synth), synth_files=[f"s{i:03d}.png" for i in range(len(synth))],
        train_ids=[f"sub-{i // 4:02d}:{i % 4}" for i in range(len(train))], percentile=percentile,
        holdout_ids=[f"sub-h{i // 4:02d}:{i % 4}" for i in range(len(holdout))],
    )


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(0)
    return {"train": blob_images(rng, 120), "holdout": blob_images(rng, 80), "other_real": blob_images(rng, 80),
            "novel": blob_images(rng, 60), "rng": rng}


# --- distances ---------------------------------------------------------------------------

def test_pixel_distance_is_rms_difference_and_forgives_shifts():
    rng = np.random.default_rng(1)
    a = blob_images(rng, 3)
    shifted = np.roll(a[0], (1, -2), axis=(0, 1))  # only the blur sees the rolled-in border
    brighter = np.clip(a[1] + 0.1, 0, 1)
    d = shift_tolerant_distances(np.stack([a[0], shifted, brighter]), a)
    assert d.shape == (3, 3)
    assert d[0, 0] < 1e-3 and d[1, 0] < 0.01
    # Blur keeps a constant offset, so a uniformly brighter copy is exactly 0.1 away (where unclipped).
    assert d[2, 1] == pytest.approx(0.1, abs=0.01)
    assert d[0, 1] > 0.03 and d[0, 2] > 0.03
    assert best_shift(shifted, a[0]) == (-1, 2)  # shifted[y, x] == a[0][y - 1, x + 2]


def test_feature_distance_is_centred_cosine():
    refs = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    queries = np.array([[2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], np.float32)
    d = feature_distances(queries, refs, centre=np.zeros(2, np.float32))
    np.testing.assert_allclose(d, [[0.0, 1.0], [2.0, 1.0], [1.0, 1.0]], atol=1e-6)


def test_train_neighbour_skips_the_same_subject():
    dist = np.array([[0, 1, 5], [1, 0, 3], [5, 3, 0]], np.float32)
    np.testing.assert_allclose(neighbour_distance_excluding_subject(dist, ["a", "a", "b"]), [5, 3, 3])
    np.testing.assert_allclose(neighbour_distance_excluding_subject(dist, ["a", "a", "a"]), [1, 1, 3])


def test_calibration_keeps_the_or_rule_at_the_requested_rate():
    rng = np.random.default_rng(2)
    independent = {"pixel": rng.random(1000), "feature": rng.random(1000)}
    thr, level = calibrate_thresholds(independent, 0.05)
    flagged = (independent["pixel"] < thr["pixel"]) | (independent["feature"] < thr["feature"])
    assert 0.04 <= flagged.mean() <= 0.05
    assert 0.02 < level < 0.03  # about half the rate for two independent spaces
    same = rng.random(1000)
    thr, level = calibrate_thresholds({"pixel": same, "feature": same}, 0.05)
    assert level == pytest.approx(0.05)


# --- the audit maths ---------------------------------------------------------------------

def test_planted_copies_are_flagged_and_real_held_out_images_are_not(cohort):
    train, rng = cohort["train"], np.random.default_rng(3)
    src = rng.choice(len(train), 30, replace=False)
    exact = train[src[:10]]
    noisy = np.clip(train[src[10:20]] + rng.normal(0, 0.04, (10, H, W)), 0, 1).astype(np.float32)
    shifted = np.roll(train[src[20:30]], 1, axis=2)
    synth = np.concatenate([exact, noisy, shifted, cohort["novel"]])
    summary, pairs = run_audit(train, cohort["holdout"], synth)

    flagged = {e["file"] for e in summary["flagged"]}
    planted = {f"s{i:03d}.png" for i in range(30)}
    assert len(flagged & planted) >= 0.95 * len(planted)
    assert len(flagged - planted) <= 0.05 * len(cohort["novel"])
    assert summary["memorization_rate"] == pytest.approx(len(flagged) / len(synth))
    # Each flagged exact copy names its true source.
    by_file = {e["file"]: e for e in summary["flagged"]}
    for i in range(10):
        assert by_file[f"s{i:03d}.png"]["train_id"] == f"sub-{src[i] // 4:02d}:{src[i] % 4}"
    assert len(pairs) == privacy.N_NEAREST_PAIRS and pairs[0]["distance"] < 1e-3
    assert pairs[0]["synthetic_image"].shape == (H, W)
    for key in ("memorization_rate", "mia_auc", "threshold", "percentile", "authenticity", "flagged",
                "n_synthetic", "n_train", "n_holdout", "distances"):
        assert key in summary
    assert set(summary["threshold"]) == {"pixel", "feature"}
    json.dumps(summary)  # report.json must be able to hold it

    for real in (cohort["holdout"], cohort["other_real"]):
        real_summary, _ = run_audit(train, cohort["holdout"], real)
        assert real_summary["memorization_rate"] <= 0.05


def test_membership_auc_is_half_for_independent_and_one_for_the_training_set(cohort):
    independent, _ = run_audit(cohort["train"], cohort["holdout"], cohort["novel"])
    assert abs(independent["mia_auc_by_space"]["pixel"] - 0.5) < 0.12
    assert abs(independent["mia_auc"] - 0.5) < 0.15
    leaked, _ = run_audit(cohort["train"], cohort["holdout"], cohort["train"])
    assert leaked["mia_auc"] == pytest.approx(1.0)
    assert leaked["mia_auc_subject"] == pytest.approx(1.0)
    assert leaked["memorization_rate"] == pytest.approx(1.0)


def test_authenticity_is_low_for_copies_and_near_the_real_reference_for_novel_images(cohort):
    copies, _ = run_audit(cohort["train"], cohort["holdout"], cohort["train"][:40])
    assert copies["authenticity"] <= 0.05
    novel, _ = run_audit(cohort["train"], cohort["holdout"], cohort["novel"])
    reference = novel["authenticity_by_space"]["pixel"]["holdout"]
    assert novel["authenticity"] >= 0.4
    assert abs(novel["authenticity"] - reference) < 0.2


def test_bad_percentile_and_mismatched_sizes_are_refused(cohort):
    with pytest.raises(ConfigError, match=r"audit.percentile=0.0 must be above 0 and at most 50"):
        run_audit(cohort["train"], cohort["holdout"], cohort["novel"], percentile=0)
    train, holdout = cohort["train"], cohort["holdout"]
    with pytest.raises(InputError, match="synthetic 10x10"):
        privacy_audit(train, holdout, np.zeros((4, 10, 10), np.float32), train_features=np.zeros((len(train), 3)),
                      holdout_features=np.zeros((len(holdout), 3)), synth_features=np.zeros((4, 3)),
                      synth_files=list("abcd"), train_ids=[str(i) for i in range(len(train))])


# --- `brainsynth audit` ------------------------------------------------------------------

AUDIT = AuditConfig()
FEATURES = EvaluateConfig()  # replaced by RandomProjection in audit_inputs

def write_dataset(root, images, subjects, labels, splits):
    """A prepared DATASET in the documented layout (images.npy, images.tsv, manifest.json)."""
    root.mkdir()
    np.save(root / "images.npy", (images * 255).round().astype(np.uint8))
    slices = [sum(s == t for t in subjects[:i]) + 30 for i, s in enumerate(subjects)]
    pd.DataFrame({"index": range(len(images)), "subject": subjects, "label": labels, "split": splits,
                  "slice": slices, "patch": 0}).to_csv(root / "images.tsv", sep="\t", index=False)
    (root / "manifest.json").write_text(json.dumps({"simulated": True, "n_images": len(images)}))
    return root


@pytest.fixture()
def audit_inputs(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    images = blob_images(rng, 40, 16, 16)
    subjects = [f"sub-{i // 8:02d}" for i in range(40)]  # 5 subjects of 8 slices
    labels = ["adhd" if i // 8 % 2 else "control" for i in range(40)]
    splits = ["test" if i >= 24 else "train" for i in range(40)]
    dataset = write_dataset(tmp_path / "dataset", images, subjects, labels, splits)
    copies = images[[0, 9, 17]]  # training slices of three subjects
    synth = np.concatenate([copies, blob_images(rng, 9, 16, 16)])
    records = [{"label": "control" if i % 2 else "adhd", "seed": i} for i in range(len(synth))]
    synthetic = write_image_set(tmp_path / "synthetic", synth, records, synthetic=True,
                                extra_meta={"generator": {"checkpoint_sha256": "abc"}})
    monkeypatch.setattr(feat, "get_extractor", lambda cfg, device=None: RandomProjection(16 * 16))
    return dataset, synthetic


def test_audit_writes_its_outputs_and_filters_flagged_images(audit_inputs, tmp_path, capsys):
    dataset, synthetic = audit_inputs
    out = tmp_path / "audit"
    result = audit(dataset, synthetic, out, AuditConfig(percentile=1.0), FEATURES, filter_flagged=True)
    assert "Privacy audit of 12 synthetic images" in capsys.readouterr().out

    doc = json.loads((out / "privacy.json").read_text())
    assert AuditReport.from_dict(doc).privacy.n_synthetic == 12 and doc["schema_version"] == 3
    for key in ("memorization_rate", "mia_auc", "mia_auc_subject", "threshold", "percentile", "authenticity",
                "flagged", "n_synthetic", "n_train", "n_holdout", "distances"):
        assert key in doc["privacy"], key
    assert doc["privacy"]["n_train"] == 24 and doc["privacy"]["n_holdout"] == 16
    assert doc["features"]["name"] == "random-projection" and doc["simulated"] is True
    flagged = {e["file"] for e in doc["privacy"]["flagged"]}
    assert {"adhd/000000.png", "control/000000.png", "adhd/000001.png"} <= flagged
    assert result["memorization_rate"] == doc["privacy"]["memorization_rate"] and result["out"] == str(out)
    assert "audit: {percentile: 1.0}" in (out / "config.yaml").read_text()

    for name in ("nearest_pairs.png", "distance_histogram.png", "privacy.md", "distances.tsv"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "nearest_pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "privacy.md").read_text()
    assert "SIMULATED" in md and "does **not** prove" in md

    filtered = read_image_set(out / "filtered")
    kept = {r["source_file"] for r in filtered.records}
    assert len(filtered) == 12 - len(flagged) and not kept & flagged
    assert set(filtered.meta["privacy_filter"]["removed"]) == flagged
    assert filtered.meta["generator"] == {"checkpoint_sha256": "abc"} and filtered.synthetic
    assert len(list(tmp_path.glob(".*partial"))) == 0


def test_audit_refuses_existing_output_and_replaces_it_with_force(audit_inputs, tmp_path):
    dataset, synthetic = audit_inputs
    out = tmp_path / "audit"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists; choose another --out or pass --force"):
        audit(dataset, synthetic, out, AUDIT, FEATURES)
    assert (out / "keep.txt").read_text() == "mine"
    audit(dataset, synthetic, out, AUDIT, FEATURES, force=True)
    assert not (out / "keep.txt").exists() and (out / "privacy.json").is_file()


def test_audit_refuses_size_mismatch_and_missing_test_split(audit_inputs, tmp_path):
    dataset, _ = audit_inputs
    small = write_image_set(tmp_path / "small", np.zeros((2, 8, 8), np.float32),
                            [{"label": "adhd"}, {"label": "control"}], synthetic=True)
    with pytest.raises(InputError) as err:  # the CLI prints a BrainsynthError as one line
        audit(dataset, small, tmp_path / "o", AUDIT, FEATURES)
    assert "\n" not in str(err.value)
    assert "synthetic set 'small' holds 8x8 px images but the dataset" in str(err.value)
    assert "same size" in str(err.value)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="audit.percentile=60.0 must be above 0 and at most 50"):
        audit(dataset, small, tmp_path / "o", AuditConfig(percentile=60.0), FEATURES)

    table = pd.read_csv(dataset / "images.tsv", sep="\t")
    table["split"] = "train"
    table.to_csv(dataset / "images.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="no test split.*--test-fraction"):
        audit(dataset, small, tmp_path / "o2", AUDIT, FEATURES)


def test_audit_with_the_random_vgg16_extractor(tmp_path):
    rng = np.random.default_rng(5)
    images = blob_images(rng, 24, 16, 16)
    subjects = [f"sub-{i // 6}" for i in range(24)]
    dataset = write_dataset(tmp_path / "dataset", images, subjects, ["adhd", "control"] * 12,
                            ["train"] * 12 + ["test"] * 12)
    synth = np.concatenate([images[:2], blob_images(rng, 4, 16, 16)])
    synthetic = write_image_set(tmp_path / "synthetic", synth, [{"label": "adhd"}] * 6, synthetic=True, fmt="npz")
    result = audit(dataset, synthetic, tmp_path / "audit", AUDIT, EvaluateConfig(feature_layer="pool5", input_size=32),
                   filter_flagged=True)
    assert {"images.npz#0", "images.npz#1"} <= {e["file"] for e in result["flagged"]}
    doc = json.loads((tmp_path / "audit" / "privacy.json").read_text())
    assert doc["features"]["name"] == "vgg16-random" and doc["features"]["layer"] == "pool5"
    assert read_image_set(tmp_path / "audit" / "filtered").meta["format"] == "npz"
