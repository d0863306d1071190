"""``generate.select``: which of a run's kept checkpoints to sample the synthetic set from.

``last`` (the default) is the newest checkpoint. ``private-best`` audits every kept checkpoint
(the snapshots at a geometric series of images shown and the rolling last ones,
:func:`brainsynth.train.checkpoint.kept_checkpoints`) and samples the one with the best
fidelity among those that meet both privacy rules, judged on held-out **half A only**:

* near-copies at most 1 point above half A's own flag rate (the report's near-copy target,
  :data:`brainsynth.evaluate.report.targets.TARGETS`, with half A in the place of half B);
* the membership rule (:mod:`brainsynth.evaluate.privacy.membership_rule`) on the headline
  attack against half A's subjects: AUC <= 0.60 and p >= 0.05.

Fidelity is one number declared in advance: the sliced Wasserstein distance (SWD, average over
the Laplacian-pyramid levels) of the checkpoint's synthetic set to the fold's TRAINING images,
lower is better; precision and recall are recorded beside it. When no checkpoint meets both
rules, the one with the fewest near-copies beyond half A's flag rate (then the lowest half-A
AUC) is sampled and the record says so: nothing is passed off as private.

Why this is not selection on the test set: held-out half B and the GAN-train test never take
part. Half B's images are not even loaded (:func:`half_a_images` reads the half-A rows of the
dataset only), the GAN-train classifiers are not run, and the report's verdicts on the chosen
checkpoint (near-copies against half B's false flags, membership on half B, GAN-train on the
test subjects) are computed afterwards on data the choice never saw. Half A already set the
near-copy thresholds, so choosing on it too spends nothing new (docs/privacy.md).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from brainsynth import LABELS
from brainsynth.config import AuditConfig, EvaluateConfig, GenerateConfig
from brainsynth.devices import resolve_device
from brainsynth.errors import CheckpointError, InputError
from brainsynth.evaluate import fidelity as fidelity_metrics
from brainsynth.evaluate.image_fidelity import laplacian_pyramid, swd_many
from brainsynth.evaluate.privacy import membership_rule
from brainsynth.evaluate.privacy.calibration import split_holdout
from brainsynth.evaluate.privacy.fold import FoldReference, audit_fold, fold_reference
from brainsynth.evaluate.report.targets import TARGETS
from brainsynth.generate import sample_state
from brainsynth.train import checkpoint as ckpt

log = logging.getLogger("brainsynth.selection")

CRITERION = ("lowest SWD (average over Laplacian-pyramid levels, x1e3) of the checkpoint's synthetic set to the "
             "fold's training images")
RULES = (f"judged on held-out half A only: near-copies at most {100 * TARGETS['max_excess_memorization']:g} point "
         f"above half A's flag rate, and the membership headline against half A's subjects with AUC <= "
         f"{membership_rule.MAX_AUC:.2f} and p >= {membership_rule.MIN_P:g}")


@dataclass
class HalfA:
    """The fold's real images a selection may read: its training images and held-out half A."""

    train_images: np.ndarray  # float32 [M, H, W]
    train_ids: list[str]
    train_labels: np.ndarray  # str [M]
    holdout_images: np.ndarray  # float32 [A, H, W], half A only
    holdout_ids: list[str]
    holdout_labels: np.ndarray  # str [A]

    @property
    def train_subjects(self) -> np.ndarray:
        return np.array([i.split(":", 1)[0] for i in self.train_ids])


def half_a_images(view, audit_cfg: AuditConfig) -> HalfA:
    """The fold's training images and the images of held-out half A; half B's rows are never read.

    The half-A / half-B split is the audit's own (:func:`~brainsynth.evaluate.privacy.calibration.split_holdout`
    with ``audit.seed`` on the held-out subjects and labels), decided from the dataset's table alone.
    """
    from brainsynth.evaluate.folds import image_ids

    train_idx, test_idx = view.indices("train"), view.indices("test")
    table = view.table
    subjects = table["subject"].to_numpy()[test_idx].astype(str)
    labels = table["label"].to_numpy()[test_idx].astype(str)
    in_a = split_holdout(subjects, labels, audit_cfg.seed)  # bool [H], from the table, no pixels
    a_idx = test_idx[in_a]
    return HalfA(train_images=view.float_images(train_idx), train_ids=image_ids(view, train_idx),
                 train_labels=table["label"].to_numpy()[train_idx].astype(str),
                 holdout_images=view.float_images(a_idx), holdout_ids=image_ids(view, a_idx),
                 holdout_labels=labels[in_a])


@dataclass
class Candidate:
    """One kept checkpoint, scored on half A."""

    checkpoint: str  # file name
    images_shown: int
    near_copies: float  # share of its synthetic images flagged
    half_a_flag_rate: float  # share of half-A images flagged (in-sample: half A set the thresholds)
    mia_auc: Optional[float]  # headline membership AUC against half A's subjects
    mia_p_value: Optional[float]
    swd: float
    precision: float
    recall: float

    @property
    def copies_ok(self) -> bool:
        return self.near_copies - self.half_a_flag_rate <= TARGETS["max_excess_memorization"] + 1e-12

    @property
    def membership_ok(self) -> Optional[bool]:
        return membership_rule.passes(self.mia_auc, self.mia_p_value)

    @property
    def private(self) -> bool:
        return self.copies_ok and bool(self.membership_ok)

    def record(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "near_copies_ok": self.copies_ok, "membership_ok": self.membership_ok}


@dataclass
class Selection:
    """The checkpoint to sample and how it was chosen."""

    mode: str
    path: Path
    candidates: list[Candidate]
    private: Optional[bool]  # the chosen one met both rules on half A (None: not judged, mode "last")
    reason: str

    def record(self) -> dict[str, Any]:
        """Plain types for the synthetic set's metadata (no path, no subject id)."""
        return {"mode": self.mode, "chosen": self.path.name, "images_shown": ckpt.images_of(self.path),
                "private_on_half_a": self.private, "reason": self.reason, "rules": RULES, "criterion": CRITERION,
                "candidates": [c.record() for c in self.candidates]}


def decide(candidates: Sequence[Candidate]) -> tuple[int, bool, str]:
    """Index of the checkpoint to sample, whether it met both rules, and why it was chosen."""
    private = [k for k, c in enumerate(candidates) if c.private]
    if private:
        best = min(private, key=lambda k: (candidates[k].swd, -candidates[k].images_shown))
        return best, True, (f"lowest SWD among the {len(private)} of {len(candidates)} kept checkpoints that meet "
                            "both privacy rules on held-out half A")

    def shortfall(k: int) -> tuple[float, float]:
        c = candidates[k]
        return c.near_copies - c.half_a_flag_rate, c.mia_auc if c.mia_auc is not None else 1.0

    best = min(range(len(candidates)), key=shortfall)
    broken = {"near-copies": sum(not c.copies_ok for c in candidates),
              "membership": sum(not c.membership_ok for c in candidates)}
    return best, False, (f"none of the {len(candidates)} kept checkpoints meets both privacy rules on held-out half A "
                         f"({broken['near-copies']} break the near-copy rule, {broken['membership']} the membership "
                         "rule); sampled the one with the fewest near-copies beyond half A's flag rate: NOT private "
                         "by these rules")


@dataclass
class CheckpointAudit:
    """One checkpoint's synthetic set (as ``generate`` samples it) and its privacy audit against a fold."""

    checkpoint: str  # file name
    images_shown: int
    images: np.ndarray  # float32 [N, H, W]
    features: np.ndarray  # [N, D]
    result: Any  # PrivacyResult


def audit_checkpoint(path: Path, cfg: GenerateConfig, reference: FoldReference, store, device: Any) -> CheckpointAudit:
    """Sample ``path`` with ``cfg`` (every class, the per-image seeds of ``generate``) and audit the set."""
    state = ckpt.load_checkpoint(path)
    images, _, _, _ = sample_state(state, cfg, list(range(len(LABELS))), device)  # [N, H, W]
    if images.shape[-1] != reference.side:
        raise InputError(f"{path.name} samples {images.shape[-1]} px images, the fold's are {reference.side} px: "
                         "audit checkpoints of the final resolution")
    features = store.images(images, what=f"checkpoint {path.name}")
    result = audit_fold(None, None, images, synth_features=features, reference=reference)
    return CheckpointAudit(path.name, int(state["progress"]["images_shown"]), images, features, result)


def score_checkpoint(path: Path, cfg: GenerateConfig, real: HalfA, train_features: np.ndarray,
                     reference: FoldReference, store, device: Any) -> tuple[Candidate, np.ndarray]:
    """:func:`audit_checkpoint` on half A, as a :class:`Candidate`, with its images
    (``train_features``: [M, D] of ``real.train_images``, for precision and recall).

    The candidate's ``swd`` is still NaN: :func:`choose_checkpoint` computes every candidate's
    SWD against one pyramid of the training images.
    """
    audited = audit_checkpoint(path, cfg, reference, store, device)
    result, half_a = audited.result, audited.result.halves["a"]
    precision, recall = fidelity_metrics.precision_recall(train_features, audited.features,
                                                          real_groups=real.train_subjects)
    return Candidate(checkpoint=path.name, images_shown=audited.images_shown, near_copies=float(result.flagged.mean()),
                     half_a_flag_rate=float(result.holdout_flagged.mean()), mia_auc=half_a.auc,
                     mia_p_value=half_a.p_value, swd=float("nan"), precision=float(precision),
                     recall=float(recall)), audited.images


def choose_checkpoint(run_dir: str | Path, cfg: GenerateConfig, audit_cfg: AuditConfig, evaluate_cfg: EvaluateConfig,
                      *, dataset: str | Path | None = None, store=None, device: Any = None) -> Selection:
    """The checkpoint of ``run_dir`` to sample, by ``cfg.select``.

    Parameters
    ----------
    run_dir : path
        A training run.
    cfg, audit_cfg, evaluate_cfg : sections
        ``generate`` (``select``, and the images sampled per candidate: the set that would be
        shared), ``audit`` (thresholds, half-A split seed, permutations) and ``evaluate`` (the
        feature extractor, the SWD seed).
    dataset : path, optional
        The run's prepared DATASET (default: the one its checkpoint names); the fold is the run's.
    store : FeatureStore, optional
        Features by content (default: the ``evaluate`` extractor, in memory).
    """
    newest = ckpt.latest_checkpoint(run_dir)
    if cfg.select == "last":
        return Selection("last", newest, [], None, "the newest checkpoint (generate.select=last)")
    from brainsynth.data.dataset import load_dataset

    data = ckpt.load_checkpoint(newest)["data"]
    root = Path(dataset) if dataset is not None else Path(data.get("dataset", ""))
    if not (root / "images.tsv").is_file():
        raise InputError(f"generate.select=private-best audits every kept checkpoint on the run's held-out half A, "
                         f"but the run's DATASET {root} is not there; pass it (--dataset DIR)")
    view = load_dataset(root, fold=int(data.get("fold", 0)), repeat=int(data.get("repeat", 0)))
    real = half_a_images(view, audit_cfg)
    if store is None:
        from brainsynth.evaluate.feature_cache import FeatureStore
        from brainsynth.evaluate.features import get_extractor

        store = FeatureStore(get_extractor(evaluate_cfg, device=device), None)
    audit_a = dataclasses.replace(audit_cfg, bootstrap=0)  # the rules read the AUC and p-value, not the interval
    train_features = store.images(real.train_images)  # [M, D]
    reference = fold_reference(real.train_images, real.holdout_images, train_features=train_features,
                               holdout_features=store.images(real.holdout_images), train_ids=real.train_ids,
                               holdout_ids=real.holdout_ids, holdout_labels=real.holdout_labels, cfg=audit_a,
                               half_a=np.ones(len(real.holdout_ids), dtype=bool))
    final = final_checkpoints(run_dir, real.train_images.shape[-1])
    candidates, pyramids, dev = [], {}, resolve_device(device)
    for path in final:
        candidate, images = score_checkpoint(path, cfg, real, train_features, reference, store, dev)
        candidates.append(candidate)
        pyramids[candidate.checkpoint] = laplacian_pyramid(images)
    # Every candidate against one pyramid of the training images (the real side computed once).
    numbers = swd_many(laplacian_pyramid(real.train_images), pyramids, seed=evaluate_cfg.seed)
    for candidate in candidates:
        candidate.swd = float(numbers[candidate.checkpoint]["avg"])
        log.info("%s: near-copies %.1f%% (half A %.1f%%), half-A AUC %s p %s, SWD %.2f", candidate.checkpoint,
                 100 * candidate.near_copies, 100 * candidate.half_a_flag_rate, candidate.mia_auc,
                 candidate.mia_p_value, candidate.swd)
    index, private, reason = decide(candidates)
    log.info("selected %s: %s", candidates[index].checkpoint, reason)
    return Selection("private-best", final[index], candidates, private, reason)


def generate_selected(run_dir: str | Path, out: str | Path, config, *, label: str = "both", device: Any = None,
                      force: bool = False, dataset: str | Path | None = None, store=None) -> tuple[Path, Selection]:
    """``brainsynth generate``: choose the checkpoint by ``generate.select``, then sample it.

    ``config`` is the resolved :class:`~brainsynth.config.RunConfig` (its ``generate``, ``audit``
    and ``evaluate`` sections). The choice is recorded in the set's metadata as
    ``generator.selection`` unless it is ``last``.
    """
    from brainsynth.fsio import check_output_free
    from brainsynth.generate import generate_images

    check_output_free(out, force)  # before auditing checkpoints
    chosen = choose_checkpoint(run_dir, config.generate, config.audit, config.evaluate, dataset=dataset, store=store,
                               device=device)
    path = generate_images(run_dir, out, config.generate, label=label, device=device, force=force,
                           checkpoint=chosen.path, selection=chosen.record() if chosen.mode != "last" else None)
    return path, chosen


def final_checkpoints(run_dir: str | Path, size: int) -> list[Path]:
    """The kept checkpoints of ``run_dir`` that sample ``size`` px images (a PGGAN checkpoint of an earlier
    growth phase, or of the final one's fade-in, is not one)."""
    def final(path: Path) -> bool:
        progress = ckpt.load_checkpoint(path)["progress"]
        return int(progress["resolution"]) == size and float(progress["alpha"]) >= 1.0

    found = [p for p in ckpt.kept_checkpoints(run_dir) if final(p)]
    if not found:
        raise CheckpointError(f"{run_dir}: no kept checkpoint at the dataset's image size ({size} px)")
    return found
