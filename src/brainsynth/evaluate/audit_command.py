"""``brainsynth audit``: the privacy audit of one synthetic set on its own (OUT/privacy.json/.md, ...).

The maths is :mod:`brainsynth.evaluate.privacy.fold` (one fold: the dataset's train split against its test split); this
module reads the inputs, extracts features, runs it and writes the files through a staged folder.
``brainsynth audit --selftest DATASET`` (:mod:`brainsynth.evaluate.privacy.selftest`) checks that the audit finds planted
copies on the user's own data.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from brainsynth import __version__
from brainsynth.config import AuditConfig, EvaluateConfig, sections_yaml
from brainsynth.data.dataset import load_dataset
from brainsynth.devices import describe_device
from brainsynth.errors import InputError
from brainsynth.evaluate import features as extractors
from brainsynth.evaluate.commands import _created, _features_info, check_same_size
from brainsynth.evaluate.feature_cache import FeatureStore
from brainsynth.evaluate.folds import image_ids, record_name
from brainsynth.evaluate.privacy.fold import audit_fold
from brainsynth.evaluate.privacy.summary import nearest_pairs, summarise_privacy
from brainsynth.evaluate.report.schema import AuditInputs, AuditReport, PrivacySummary
from brainsynth.evaluate.report.privacy_writers import summary_paragraph, write_audit, write_filtered_set
from brainsynth.fsio import atomic_write_text, check_output_free, staged_output_dir
from brainsynth.imageset import read_image_set

log = logging.getLogger("brainsynth.audit")


def real_split(dataset) -> dict[str, Any]:
    """The train and test splits of a prepared dataset as the audit reads them (checked).

    Returns a dict with ``train_images``, ``holdout_images`` (float [N, H, W]), ``train_ids``,
    ``holdout_ids`` and ``holdout_labels``.
    """
    train_idx, hold_idx = dataset.indices("train"), dataset.indices("test")
    if len(train_idx) < 2:
        raise InputError(f"{dataset.root}: the train split has {len(train_idx)} images; the audit needs at least 2")
    if len(hold_idx) == 0:
        raise InputError(
            f"{dataset.root}: no test split, so there are no held-out real images to calibrate against; "
            "re-run 'brainsynth prepare' with --test-fraction above 0"
        )
    n_subjects = dataset.table["subject"].to_numpy()[hold_idx].astype(str)
    if len(set(n_subjects.tolist())) < 2:
        raise InputError(
            f"{dataset.root}: the test split holds 1 subject; the audit sets its thresholds on half of the held-out "
            "subjects and checks them on the other half, so it needs at least 2 (re-run 'brainsynth prepare' with a "
            "larger --test-fraction)"
        )
    return {
        "train_images": dataset.float_images(train_idx),
        "holdout_images": dataset.float_images(hold_idx),
        "train_ids": image_ids(dataset, train_idx),
        "holdout_ids": image_ids(dataset, hold_idx),
        "holdout_labels": dataset.table["label"].to_numpy()[hold_idx].astype(str),
    }


def images_fingerprint(images: np.ndarray) -> str:
    """SHA-256 of images (float [N, H, W] in [0, 1]) as the uint8 values written to disk."""
    return hashlib.sha256(np.round(np.asarray(images) * 255).astype(np.uint8).tobytes()).hexdigest()


def audit(
    train: str | Path,
    synthetic: str | Path,
    out: str | Path,
    cfg: AuditConfig,
    features: EvaluateConfig,
    *,
    filter_flagged: bool = False,
    device: str | None = None,
    feature_cache: str | Path | None = None,
    force: bool = False,
    fold: int = 0,
    repeat: int = 0,
) -> dict[str, Any]:
    """Audit a synthetic image set for copies of a prepared dataset's training images.

    Parameters
    ----------
    train : path
        Prepared DATASET; its ``train`` split is what the generator saw, its ``test`` split the
        held-out reference (split into half A, which sets the thresholds, and half B, which checks
        them).
    synthetic : path
        Image-set folder (``brainsynth generate``).
    out : path
        Output folder: ``privacy.json``, ``privacy.md``, ``distances.tsv``, ``nearest_pairs.png``,
        ``distance_histogram.png``, ``config.yaml`` and, with ``filter_flagged``, ``filtered/``.
    cfg : AuditConfig
        Calibration level, bands, search bounds, seed and resamples (see docs/privacy.md).
    features : EvaluateConfig
        The feature extractor (see :func:`brainsynth.evaluate.features.get_extractor`); its
        ``bootstrap`` and ``seed`` are not used here.
    filter_flagged : bool
        Also write the synthetic set minus every flagged image to ``OUT/filtered``.
    device : str, optional
        Where features are extracted.
    feature_cache : path, optional
        Folder of the content-addressed feature cache shared with ``brainsynth evaluate``
        (:mod:`brainsynth.evaluate.feature_cache`); None computes features in memory only.
    force : bool
        Replace an existing ``out``.
    fold, repeat : int
        The fold of the DATASET's subject cross-validation whose generator made ``synthetic``:
        its training subjects are what the generator saw, its test subjects the held-out
        reference (repeat 0, fold 0 by default: the stored split).

    Returns
    -------
    dict
        The privacy summary (as in ``privacy.json["privacy"]``) plus ``out``.
    """
    cfg.check()
    features.check()
    extractors.check_extractor_name(features.features)
    check_output_free(out, force)  # fail before the expensive part
    dataset = load_dataset(train, fold=fold, repeat=repeat)
    real = real_split(dataset)
    synth = read_image_set(synthetic)
    check_same_size(Path(synthetic).name, synthetic, synth, dataset)
    synth_files = [record_name(r, i) for i, r in enumerate(synth.records)]

    extractor = extractors.get_extractor(features, device=device)
    log.info("extracting features of %d training, %d held-out and %d synthetic images",
             len(real["train_images"]), len(real["holdout_images"]), len(synth))
    store = FeatureStore(extractor, feature_cache)
    real_f = store.dataset(dataset)  # [rows, D]: all rows once, shared with evaluate through the cache
    train_f, hold_f = real_f[dataset.indices("train")], real_f[dataset.indices("test")]  # real_split's rows
    synth_f = store.images(synth.images, what=f"synthetic set {Path(synthetic).name!r}")
    result = audit_fold(real["train_images"], real["holdout_images"], synth.images, train_features=train_f,
                        holdout_features=hold_f, synth_features=synth_f, train_ids=real["train_ids"],
                        holdout_ids=real["holdout_ids"], holdout_labels=real["holdout_labels"], cfg=cfg,
                        device=getattr(extractor, "device", None))
    summary = summarise_privacy(result, synth_files=synth_files)
    pairs = nearest_pairs(result, real["train_images"], synth.images, synth_files)
    document = AuditReport(
        brainsynth_version=__version__,
        created=_created(),
        simulated=bool(dataset.manifest.get("simulated", False)),
        privacy=PrivacySummary.from_dict(summary, source="privacy audit"),
        features=_features_info(extractor),
        device=describe_device(getattr(extractor, "device", "cpu")),
        inputs=AuditInputs(train=str(Path(train)), synthetic=str(Path(synthetic)),
                           synthetic_provenance={k: v for k, v in synth.meta.items() if k != "images"}),
    )
    with staged_output_dir(out, force=force) as stage:
        note = None
        if filter_flagged:
            note = write_filtered_set(stage, synth, result.flagged, synth_files, images_fingerprint(synth.images),
                                      document.privacy)
        write_audit(stage, document, result, pairs, synth_files, filtered_note=note)
        atomic_write_text(stage / "config.yaml", sections_yaml(features, cfg, what="privacy audit"))
    print(summary_paragraph(document.privacy, out))
    return {**document.privacy.to_dict(), "out": str(out)}
