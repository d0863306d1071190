"""The typed report: every field reaches report.json, reads back strictly, and is documented."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
from sample_reports import audit_report, full_report

from brainsynth.errors import InputError
from brainsynth.evaluate.report.schema import (
    SCHEMA_VERSION,
    AuditReport,
    ClassifierResult,
    FidelityResult,
    PrivacySummary,
    Report,
    read_report,
)
from brainsynth.evaluate.report.schema_doc import generated_block, schema_markdown
from brainsynth.evaluate.report.typed_json import Record, schema_rows

DOC = Path(__file__).parents[2] / "docs" / "report-schema.md"

# Every key path of report.json before the typed schema (schema 1), from a real run. README and
# other tools read these; none may disappear or be renamed.
SCHEMA_1_KEYS = """
brainsynth_version created simulated timings.<stage>
data.real.image_size data.real.path data.synthetic.<set>.counts.<label> data.synthetic.<set>.n_images
data.synthetic.<set>.path data.synthetic.<set>.source
features.channel_mapping features.input_size features.layer features.name features.precision features.resize
features.weights
fidelity.<set>.coverage fidelity.<set>.density fidelity.<set>.fid fidelity.<set>.kid_mean fidelity.<set>.kid_std
fidelity.<set>.ms_ssim.real.<label> fidelity.<set>.ms_ssim.scales fidelity.<set>.ms_ssim.synthetic.<label>
fidelity.<set>.precision fidelity.<set>.recall fidelity.<set>.swd.<side> fidelity.<set>.swd.avg
fidelity.<set>.swd_per_class.<label>.<side> fidelity.<set>.swd_per_class.<label>.avg
privacy.<set>.authenticity privacy.<set>.authenticity_by_space.feature.holdout
privacy.<set>.authenticity_by_space.feature.synthetic privacy.<set>.authenticity_by_space.pixel.holdout
privacy.<set>.authenticity_by_space.pixel.synthetic privacy.<set>.calibration_quantile
privacy.<set>.distances.feature privacy.<set>.distances.pixel privacy.<set>.flagged[].distance
privacy.<set>.flagged[].feature_distance privacy.<set>.flagged[].feature_train_id privacy.<set>.flagged[].file
privacy.<set>.flagged[].spaces privacy.<set>.flagged[].train_id privacy.<set>.holdout_flag_rate
privacy.<set>.memorization_rate privacy.<set>.memorization_rate_by_space.feature
privacy.<set>.memorization_rate_by_space.pixel privacy.<set>.mia_auc privacy.<set>.mia_auc_by_space.feature
privacy.<set>.mia_auc_by_space.pixel privacy.<set>.mia_auc_subject privacy.<set>.mia_auc_subject_by_space.feature
privacy.<set>.mia_auc_subject_by_space.pixel privacy.<set>.n_holdout privacy.<set>.n_synthetic
privacy.<set>.n_train privacy.<set>.nearest_distance_median.feature.holdout
privacy.<set>.nearest_distance_median.feature.synthetic privacy.<set>.nearest_distance_median.pixel.holdout
privacy.<set>.nearest_distance_median.pixel.synthetic privacy.<set>.percentile privacy.<set>.rules.authenticity
privacy.<set>.rules.flagged privacy.<set>.rules.mia_auc privacy.<set>.threshold.feature
privacy.<set>.threshold.pixel
""".split()
for _section in ("gan_train", "gan_test"):
    for _prefix in ("", "slice.", "subject."):
        SCHEMA_1_KEYS += [f"{_section}.<set>.{_prefix}{k}" for k in ("sensitivity", "specificity", "hm", "ci.hm",
                                                                      "ci.sensitivity", "ci.specificity")]
    SCHEMA_1_KEYS += [f"{_section}.<set>.{level}.{k}" for level in ("slice", "subject") for k in ("n", "n_groups",
                                                                                                    "unit")]
SCHEMA_1_KEYS.append("gan_train.<set>.n_train")
# Schema 4 (cross-validation) moved the real split's keys into each fold's entry, and each fold's
# privacy audit into privacy.<set>.audits[].audit (the pooled entry keeps memorization_rate).
MOVED_IN_4 = {f"data.real.{k}": f"data.real.folds[].{k}" for k in ("n_train", "n_test", "train_subjects",
                                                                    "test_subjects")}
POOLED_PRIVACY = {"privacy.<set>.memorization_rate"}

# Keys whose meaning the privacy audit of schema 3 changed (issue 12), with what replaces them; the
# schema documentation names each.
RETIRED_IN_3 = {
    "privacy.<set>.threshold.pixel": "privacy.<set>.calibration.bands[].threshold.pixel",
    "privacy.<set>.threshold.feature": "privacy.<set>.calibration.bands[].threshold.feature",
    "privacy.<set>.rules.mia_auc": "privacy.<set>.rules.membership",
}


def json_paths(obj, prefix: str = "") -> dict[str, object]:
    """Leaf path -> value of parsed JSON; list items of objects as ``[i]``."""
    out: dict[str, object] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(json_paths(v, f"{prefix}.{k}" if prefix else k))
    elif isinstance(obj, list) and obj and isinstance(obj[0], dict):
        for i, v in enumerate(obj):
            out.update(json_paths(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


def generic(path: str) -> str:
    """``gan_train.pggan.hm`` -> ``gan_train.<set>.hm`` (the documentation's placeholders)."""
    path = re.sub(r"^(gan_train|gan_test|fidelity|privacy|data\.synthetic)\.(real|pggan|dcgan)", r"\1.<set>", path)
    path = re.sub(r"\.(control|adhd)(\.|$)", r".<label>\2", path)
    path = re.sub(r"\.(16|32)$", ".<side>", path)
    path = re.sub(r"\[\d+\]", "[]", path)
    path = re.sub(r"^data\.synthetic\.<set>\.source\..*", "data.synthetic.<set>.source", path)
    return re.sub(r"^timings\.(?!evaluate_).*", "timings.<stage>", path)


def typed_leaves(obj, prefix: str = ""):
    """(JSON path, value) of every leaf of a typed record, walking fields, not JSON."""
    if isinstance(obj, Record):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata["flatten"]:
                yield from ((f"{prefix}.{k}", v) for k, v in value.items())
            else:
                yield from typed_leaves(value, f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from typed_leaves(v, f"{prefix}.{k}")
    elif isinstance(obj, list) and obj and isinstance(obj[0], Record):
        for i, v in enumerate(obj):
            yield from typed_leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


@pytest.mark.parametrize("document", [full_report(), audit_report()], ids=["report.json", "privacy.json"])
def test_every_field_is_filled_and_reaches_the_json(document):
    on_disk = json_paths(json.loads(json.dumps(document.to_dict(), allow_nan=False)))
    leaves = list(typed_leaves(document))
    assert len(leaves) > 50
    filled = {path for path, value in leaves if value is not None}
    for path, value in leaves:
        if path.endswith(".ci_note") and value is None:  # null exactly when its interval is there
            ci = path[:-len("_note")]
            assert ci in filled or any(p.startswith(ci + ".") for p in filled), path
            continue
        if path.endswith(".ci") and value is None:  # and an absent interval says why
            assert path + "_note" in filled, path
            continue
        assert value is not None, f"{path}: the sample report must fill every field"
        expected = list(value) if isinstance(value, tuple) else value
        assert on_disk[str(path)] == expected, path


@pytest.mark.parametrize("document", [full_report(), audit_report()], ids=["report.json", "privacy.json"])
def test_round_trip_through_json_is_exact(document):
    text = json.dumps(document.to_dict(), allow_nan=False)
    assert type(document).from_dict(json.loads(text)) == document


def replacement(key: str) -> str:
    """Where a schema-1 key is written now: itself, or its schema-3 replacement, then moved per fold (schema 4)."""
    key = RETIRED_IN_3.get(key, key)
    key = MOVED_IN_4.get(key, key)
    if key.startswith("privacy.<set>.") and key not in POOLED_PRIVACY:
        key = key.replace("privacy.<set>.", "privacy.<set>.audits[].audit.", 1)
    return key


def test_the_keys_of_schema_1_are_all_still_written_retired_with_a_replacement_or_moved_per_fold():
    written = {generic(p) for p in json_paths(full_report().to_dict())}
    assert sorted(replacement(k) for k in SCHEMA_1_KEYS if replacement(k) not in written) == []
    assert sorted(k for k in set(SCHEMA_1_KEYS) - written if replacement(k) == k) == []  # each gone key was moved
    assert {"schema_version", "gan_test.<set>.n_train", "protocol.folds", "protocol.repeats", "protocol.n_subjects",
            "protocol.subjects_tested_per_repeat", "comparisons[].verdict", "gan_train.<set>.per_fold[].hm",
            "fidelity.<set>.per_fold[].values.fid", "privacy.<set>.memorization.rate"} <= written
    doc = DOC.read_text()
    for name in ("threshold", "rules.mia_auc"):
        assert f"`{name}`" in doc, name


def test_slice_level_scores_sit_at_the_top_of_each_classifier_entry():
    entry = full_report().to_dict()["gan_train"]["pggan"]
    assert list(entry)[:5] == ["sensitivity", "specificity", "hm", "ci", "ci_note"]
    assert (entry["hm"], entry["ci"]) == (entry["slice"]["hm"], entry["slice"]["ci"])
    assert entry["hm"] == 0.75 and entry["ci"]["hm"] == pytest.approx([0.71, 0.79])
    assert entry["n_train"] == 48 and entry["subject"]["hm"] == 0.701


def test_nan_is_written_as_null_and_absent_numbers_read_back_as_none():
    data = full_report().to_dict()
    data["fidelity"]["pggan"]["coverage"] = None
    data["gan_train"]["pggan"]["subject"]["ci"] = None
    report = Report.from_dict(data)
    assert report.fidelity["pggan"].coverage is None and report.gan_train["pggan"].subject.ci is None
    numbers = dict(data["fidelity"]["pggan"]["per_fold"][0]["values"], coverage=float("nan"), kid_std=float("nan"))
    built = FidelityResult.from_dict(numbers)  # the maths' NaN becomes None where a number may be absent
    assert built.coverage is None and built.kid_std is None
    unexpected = dataclasses.replace(built, swd=dataclasses.replace(built.swd, avg=float("nan")))
    written = json.loads(json.dumps(unexpected.to_dict(), allow_nan=False))  # strict JSON: no NaN token
    assert written["swd"]["avg"] is None and math.isnan(FidelityResult.from_dict(written).swd.avg)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["privacy"]["pggan"].pop("memorization_rate"),
     r"report.json: privacy.pggan: missing key 'memorization_rate'"),
    (lambda d: d["privacy"]["pggan"].__setitem__("memorisation_rate", 0.1),
     r"privacy.pggan: unknown key 'memorisation_rate' \(did you mean 'memorization_rate'\?\)"),
    (lambda d: d["gan_train"]["real"]["slice"].__setitem__("n", "ten"),
     r"gan_train.real.slice.n: expected int, got str 'ten'"),
    (lambda d: d["gan_train"]["real"].__setitem__("hm", 0.5),
     r"gan_train.real: hm = 0.5 disagrees with the value it repeats \(0.86\)"),
    (lambda d: d["fidelity"]["pggan"]["ms_ssim"].__setitem__("synthetic", [0.3]),
     r"fidelity.pggan.ms_ssim.synthetic: expected an object, got list"),
    (lambda d: d["gan_train"]["real"]["slice"]["ci"].__setitem__("hm", [0.1]),
     r"gan_train.real.slice.ci.hm: expected a list of 2 values"),
])
def test_from_dict_refuses_a_missing_unknown_or_mistyped_key(edit, message):
    data = full_report().to_dict()
    edit(data)
    with pytest.raises(InputError, match=message) as err:
        Report.from_dict(data)
    assert "\n" not in str(err.value)


def test_other_schema_versions_are_refused_with_a_clear_message():
    data = full_report().to_dict()
    del data["schema_version"]
    with pytest.raises(InputError, match=r"no schema_version, so it is an untyped report \(schema 1\)"):
        Report.from_dict(data)
    with pytest.raises(InputError, match=f"schema_version 2, but this brainsynth reads {SCHEMA_VERSION}"):
        Report.from_dict({**data, "schema_version": 2})
    with pytest.raises(InputError, match="no schema_version"):
        AuditReport.from_dict({"privacy": {}})


def test_read_report_accepts_the_folder_or_the_file(tmp_path):
    report = full_report()
    (tmp_path / "report.json").write_text(json.dumps(report.to_dict()))
    assert read_report(tmp_path) == report == read_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text("{")
    with pytest.raises(InputError, match="unreadable report"):
        read_report(tmp_path)


def test_building_from_the_maths_dicts():
    level = {"sensitivity": 1.0, "specificity": float("nan"), "hm": float("nan"), "ci": None,
             "ci_note": "n/a: bootstrap = 0 (no resamples)", "n": 3, "n_groups": 3, "unit": "image"}
    entry = {"slice": level, "subject": dict(level), "n_train": None, "per_fold": [], "inputs": "image features",
             **{k: level[k] for k in ("sensitivity", "specificity", "hm", "ci", "ci_note")}}
    result = ClassifierResult.from_dict(entry)
    assert result.n_train is None and result.hm is None and result.slice.specificity is None
    assert result.ci_note == "n/a: bootstrap = 0 (no resamples)"
    summary = full_report().privacy["pggan"].audits[0].audit
    assert PrivacySummary.from_dict(summary.to_dict()) == summary


def test_the_documentation_lists_every_key_and_is_up_to_date():
    text = DOC.read_text()
    assert generated_block(text) == schema_markdown().strip(), (
        "docs/report-schema.md is stale: run python -m brainsynth.evaluate.report.schema_doc --update docs/report-schema.md")
    documented = {path for cls in (Report, AuditReport) for path, _, _ in schema_rows(cls)}
    for document in (full_report(), audit_report()):
        for path in json_paths(document.to_dict()):
            key = generic(path)
            # A key is documented itself or, inside a repeated block (the top-level ci), by its parent.
            assert any(key == d or key.startswith(d + ".") for d in documented), key
    assert all(doc.strip() for cls in (Report, AuditReport) for _, _, doc in schema_rows(cls))


def test_a_flattened_key_may_not_overwrite_a_field():
    report = full_report()
    report.timings.other_stages["evaluate_total"] = 1.0
    with pytest.raises(ValueError, match="Timings.other_stages: key 'evaluate_total' would overwrite a field"):
        report.to_dict()
