"""The typed report: every key of ``report.json`` (and of ``fold.json`` and the audit's ``privacy.json``), described once.

Each key of the files is a field of a dataclass below, with its meaning beside it
(:func:`~brainsynth.evaluate.report.typed_json.json_key`). ``docs/report-schema.md`` is generated from
those descriptions (``python -m brainsynth.evaluate.report.schema_doc --update docs/report-schema.md``) and a
test fails when the two disagree, so the documentation cannot drift from the files.

Writing is :meth:`Report.to_dict` (plain JSON types; NaN and infinity become ``null``). Reading
is :meth:`Report.from_dict` / :func:`read_report`, which is strict: a missing or unknown key, or a
value of the wrong type, is one :class:`~brainsynth.errors.InputError` line naming the key's path
(``gan_train.pggan.slice: missing key 'hm'``). A renamed key therefore fails loudly instead of
reading as "n/a".

Absent numbers are ``Optional`` fields (``None`` in Python, ``null`` in JSON): a confidence
interval without bootstrap, an MS-SSIM of a class with fewer than two images. Building from the
maths turns a NaN into ``None`` for those fields. A plain ``float`` field read as ``null`` (a NaN
that was not expected) becomes NaN again, so every file written here reads back.

Versions: ``schema_version`` 2 is the first typed report, 3 the privacy audit with a checked
calibration (:mod:`brainsynth.evaluate.report.schema_privacy`), 4 the cross-validated protocol (``protocol``, ``per_fold``
in every classifier, fidelity and privacy entry, ``comparisons``, the ``shortcut`` and
``real-test`` rows), 5 adds the privacy-utility summary (``privacy_utility``), 6 the background
of every compared set, 7 membership per held-out half and the membership rule, 8 the device
(``device``). Files without a
version are the untyped schema 1 of earlier brainsynth versions, refused with a message saying so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

from brainsynth.errors import InputError
from brainsynth.evaluate.report.schema_privacy import (  # noqa: F401  (re-exported: the privacy keys live there)
    Calibration,
    CalibrationBand,
    FlaggedImage,
    FoldPrivacy,
    Membership,
    MembershipAttack,
    MembershipVerdict,
    NearestPair,
    PooledPrivacy,
    PrivacyRules,
    PrivacySummary,
    Rate,
    SpaceComparison,
    SpaceTexts,
    SpaceValues,
    SynthVsHoldout,
    Transform,
)
from brainsynth.evaluate.report.typed_json import Record, json_key

SCHEMA_VERSION = 8
"""Version of the report files written by this module (1 = the untyped report before 2; 3 = the privacy
audit with half-A/half-B calibration, aligned distances and membership intervals; 4 = the cross-validated
protocol: folds, pooled intervals, paired verdicts; 5 = the privacy-utility summary,
``privacy_utility``; 7 = membership per held-out half and the membership rule, ``membership_rule``;
8 = the device the evaluation ran on, ``device``)."""


# --- GAN-train and GAN-test --------------------------------------------------------------------

Bounds = tuple[Optional[float], Optional[float]]


@dataclass
class Intervals(Record):
    """95% bootstrap percentile intervals of the three classifier scores."""

    sensitivity: Bounds = json_key("[low, high] of the sensitivity (null bounds when no resample could score it)")
    specificity: Bounds = json_key("[low, high] of the specificity")
    hm: Bounds = json_key("[low, high] of the harmonic mean")


@dataclass
class LevelScores(Record):
    """The paper's scores at one level: per test image (slice) or per test subject."""

    sensitivity: Optional[float] = json_key("TP / (TP + FN), ADHD the positive class, in [0, 1]; null without "
                                            "ADHD test units")
    specificity: Optional[float] = json_key("TN / (TN + FP), in [0, 1]; null without control test units")
    hm: Optional[float] = json_key("harmonic mean 2 Sen Spe / (Sen + Spe), in [0, 1] (0 when both are 0)")
    ci: Optional[Intervals] = json_key("95% cluster-bootstrap intervals: test subjects resampled with replacement "
                                       "within each label, each bringing all its slices of every repeat (images "
                                       "for GAN-test), the scores recomputed; null when ci_note says why")
    ci_note: Optional[str] = json_key("why ci is null ('n/a: 2 adhd test subjects, a CI needs at least 3 per "
                                      "class', 'n/a: bootstrap = 0'); null when there is a ci")
    n: int = json_key("test units scored: images at the slice level, subjects at the subject level (counted "
                      "once per repeat)")
    n_groups: int = json_key("units the bootstrap resamples: distinct test subjects (images for GAN-test)")
    unit: str = json_key("what one test unit is, e.g. 'slice (CI over subjects)', 'subject (mean decision "
                         "score)', 'image'")


@dataclass
class FoldScores(Record):
    """One fold's classifier: fit on that fold's training data, tested on its test subjects."""

    repeat: int = json_key("repeat of the cross-validation (0-based)")
    fold: int = json_key("fold within the repeat (0-based)")
    sensitivity: Optional[float] = json_key("slice-level sensitivity of this fold; null without ADHD test subjects")
    specificity: Optional[float] = json_key("slice-level specificity; null without control test subjects")
    hm: Optional[float] = json_key("slice-level harmonic mean")
    ci: Optional[Intervals] = json_key("95% cluster-bootstrap intervals over this fold's test subjects; null "
                                       "when ci_note says why (usually: fewer than 3 test subjects of a class)")
    ci_note: Optional[str] = json_key("why ci is null; null when there is a ci")
    subject_hm: Optional[float] = json_key("subject-level harmonic mean (mean decision score per subject)")
    n: int = json_key("test images of this fold (GAN-test: synthetic images)")
    n_subjects: dict[str, int] = json_key("test subjects of this class in this fold (0 for GAN-test)",
                                          keys="label")
    n_train: Optional[int] = json_key("images the SVM was fit on in this fold")


@dataclass
class ClassifierResult(Record):
    """One linear SVM (Shmelkov et al. 2018 protocol), fit per fold and scored on the pooled predictions.

    Each fold's SVM scores its fold's test subjects; the pooled scores count every test slice
    of every fold and repeat, so each subject is tested once per repeat. The slice-level
    ``sensitivity``, ``specificity``, ``hm``, ``ci`` and ``ci_note`` are repeated at the top of
    the entry, where readers of the report look for them (``gan_train.pggan.hm``).
    """

    derived_keys: ClassVar[tuple[str, ...]] = ("sensitivity", "specificity", "hm", "ci", "ci_note")

    slice: LevelScores = json_key("pooled per test image ('slice'): SVM decision score > 0 means ADHD")
    subject: LevelScores = json_key("pooled per test subject and repeat, from the mean SVM decision score of its "
                                    "slices; GAN-test has no subjects and repeats the image level")
    n_train: Optional[int] = json_key("GAN-train of a synthetic set only: synthetic images the SVMs were fit on, "
                                      "summed over folds (each fold subsamples every class to the smallest); null "
                                      "for real, shortcut and GAN-test")
    per_fold: list[FoldScores] = json_key("each fold's own scores, repeat-major")
    inputs: str = json_key("what the SVM was fit on: 'image features' (see features) or the shortcut's "
                           "'global slice features: ...'")

    @property
    def sensitivity(self) -> Optional[float]:
        """Slice-level sensitivity (repeats ``slice.sensitivity``)."""
        return self.slice.sensitivity

    @property
    def specificity(self) -> Optional[float]:
        """Slice-level specificity (repeats ``slice.specificity``)."""
        return self.slice.specificity

    @property
    def hm(self) -> Optional[float]:
        """Slice-level harmonic mean, the paper's headline number (repeats ``slice.hm``)."""
        return self.slice.hm

    @property
    def ci(self) -> Optional[Intervals]:
        """Slice-level intervals (repeats ``slice.ci``)."""
        return self.slice.ci

    @property
    def ci_note(self) -> Optional[str]:
        """Why the slice-level interval is null (repeats ``slice.ci_note``)."""
        return self.slice.ci_note


VERDICTS = ("better", "worse", "not distinguishable", "n/a")
"""A comparison's verdict: ``a`` better or worse than ``b`` (the CI of a - b excludes 0), or not."""


@dataclass
class Comparison(Record):
    """A paired comparison of two GAN-train rows on the same test subjects."""

    a: str = json_key("the first row ('real', a synthetic set, 'shortcut')")
    b: str = json_key("the row it is compared with")
    metric: str = json_key("'hm' (pooled slice-level HM) or 'subject_hm' (pooled subject-level HM)")
    a_value: Optional[float] = json_key("the metric of a")
    b_value: Optional[float] = json_key("the metric of b")
    diff: Optional[float] = json_key("a - b")
    ci: Optional[Bounds] = json_key("95% paired cluster-bootstrap interval of a - b: the same resampled test subjects "
                                    "(stratified by label, all their slices of every fold and repeat) for both rows; "
                                    "null when ci_note says why")
    ci_note: Optional[str] = json_key("why ci is null; null when there is a ci")
    verdict: str = json_key("'better' (ci above 0: a better than b), 'worse' (ci below 0), 'not distinguishable' "
                            "(ci holds 0), or 'n/a' (no ci)")
    ratio: Optional[float] = json_key("a / b")
    ratio_ci: Optional[Bounds] = json_key("95% paired bootstrap interval of a / b, from the same resamples")


# --- fidelity ----------------------------------------------------------------------------------

@dataclass
class SwdScores(Record):
    """Sliced Wasserstein distance of Laplacian-pyramid patches (Karras et al. 2018), x 1e3."""

    levels: dict[int, float] = json_key("SWD x 1e3 at the pyramid level of this side (px): 128 random 7x7 patches "
                                        "per image, each set normalised by its own mean/std, 4 x 128 random "
                                        "directions; lower = closer", flatten=True, keys="side")
    avg: float = json_key("mean over the levels")


@dataclass
class MsSsim(Record):
    """Diversity within each class: MS-SSIM between random pairs of distinct images (lower = more diverse)."""

    scales: int = json_key("MS-SSIM scales used: 5 (11 px window) from 176 px, fewer (7 px window) below; 0 when "
                           "a class has fewer than 2 images")
    synthetic: dict[str, Optional[float]] = json_key("mean MS-SSIM of 250 random pairs of synthetic images of "
                                                     "this class, in [0, 1]; null below 2 images", keys="label")
    real: dict[str, Optional[float]] = json_key("the same for the real training images of this class",
                                                keys="label")


@dataclass
class FidelityResult(Record):
    """How close a synthetic set is to the real TRAIN split, and how diverse it is."""

    fid: Optional[float] = json_key("Frechet distance between Gaussians fitted to real and synthetic features "
                                    "(Heusel et al. 2017); >= 0, lower = closer")
    kid_mean: Optional[float] = json_key("Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with "
                                         "the cubic polynomial kernel, mean over 100 random subsets of half the "
                                         "smaller set (at most 1000 images), so no subset is a whole set; about 0 "
                                         "for one distribution (can be slightly negative)")
    kid_std: Optional[float] = json_key("standard deviation of KID over those subsets")
    swd: SwdScores = json_key("SWD of all images")
    swd_per_class: dict[str, SwdScores] = json_key("SWD within one class", keys="label")
    ms_ssim: MsSsim = json_key("MS-SSIM diversity per class, synthetic beside real")
    precision: Optional[float] = json_key("improved precision (Kynkaanniemi et al. 2019, k = 3): share of synthetic "
                                          "features inside a real k-NN ball, in [0, 1]; a real image's ball reaches "
                                          "its k-th nearest image of ANOTHER subject (adjacent slices of one subject "
                                          "would shrink it)")
    recall: Optional[float] = json_key("improved recall (k = 3): share of real features inside a k-NN ball of the "
                                       "compared set (other-subject neighbours for real-test), in [0, 1]")
    density: Optional[float] = json_key("density (Naeem et al. 2020, k = 5, other-subject balls): mean number of "
                                        "real k-NN balls holding a synthetic feature, / k; about 1 for one "
                                        "distribution")
    coverage: Optional[float] = json_key("coverage (k = 5): share of real k-NN balls holding a synthetic "
                                         "feature, in [0, 1]")
    background: Optional[float] = json_key("mean intensity in [0, 1] of the compared images outside the real "
                                           "brains: over the pixels that at most 1% of the real training images "
                                           "reach; a clean black background gives about background_real, a grey "
                                           "smudge more; null when the real brains reach every pixel")
    background_real: Optional[float] = json_key("the same mean for the real training images (the value the "
                                                "compared set's background is read against)")


@dataclass
class FidelityFold(Record):
    """The fidelity numbers of one fold."""

    repeat: int = json_key("repeat of the cross-validation")
    fold: int = json_key("fold within the repeat")
    values: FidelityResult = json_key("every fidelity number of this fold: the set against this fold's real "
                                      "training images")


@dataclass
class FidelitySummary(FidelityResult):
    """:class:`FidelityResult` averaged over folds (the keys above), with the spread and every fold.

    For a synthetic set, each fold's set is compared with the real training images of the fold
    its generator was trained on. The ``real-test`` entry compares the real training images of
    each fold with its real test images (other subjects of the same cohort): the scale on which
    a synthetic set's numbers read.
    """

    sd: Optional[FidelityResult] = json_key("standard deviation over folds of every number (ddof 1); null with "
                                            "one fold")
    per_fold: list[FidelityFold] = json_key("each fold's numbers, repeat-major")


# --- privacy: the audit's keys in schema_privacy (re-exported here); per fold and pooled ---------

@dataclass
class PrivacyFold(Record):
    """The privacy audit of one fold: its generator against its own training and held-out subjects."""

    repeat: int = json_key("repeat of the cross-validation")
    fold: int = json_key("fold within the repeat")
    audit: PrivacySummary = json_key("the audit of this fold (held-out = this fold's test subjects)")


@dataclass
class PrivacyPooled(PooledPrivacy):
    """The privacy audits of one synthetic set's folds: pooled (the keys of :class:`PooledPrivacy`,
    :func:`brainsynth.evaluate.privacy.summary.pool_folds`), then every fold's own audit.

    Each fold's generator is audited against that fold's training subjects and calibrated on
    its own held-out subjects; ``per_fold[].fold`` names it ``r<repeat>/f<fold>``.
    """

    derived_keys: ClassVar[tuple[str, ...]] = ("memorization_rate",)

    audits: list[PrivacyFold] = json_key("each fold's whole audit, repeat-major")

    @property
    def memorization_rate(self) -> Optional[float]:
        """Share of every fold's synthetic images flagged (repeats memorization.rate)."""
        return self.memorization.rate


# --- privacy and utility together --------------------------------------------------------------

@dataclass
class PrivacyUtilityPoint(Record):
    """One generator on the privacy-utility plane: how useful its images are, how many are near-copies."""

    hm: Optional[float] = json_key("utility: the GAN-train harmonic mean of this set (gan_train.<set>.hm, slice "
                                   "level), in [0, 1]; higher = more useful")
    hm_ci: Optional[Bounds] = json_key("its 95% interval (gan_train.<set>.ci.hm); null without bootstrap")
    memorization_rate: Optional[float] = json_key("privacy: the share of this set flagged as near-copies of training "
                                                  "images (privacy.<set>.memorization.rate), in [0, 1]; lower = more "
                                                  "private; null when nothing was audited")
    memorization_ci: Bounds = json_key("its 95% Wilson score interval (privacy.<set>.memorization.ci)")
    flagged: int = json_key("synthetic images flagged (privacy.<set>.memorization.k)")
    n_synthetic: int = json_key("synthetic images audited (privacy.<set>.memorization.n)")
    false_flag_rate: Optional[float] = json_key("the share of held-out half-B real images the same rule flags "
                                                "(privacy.<set>.false_flags.rate): the memorisation rate of a "
                                                "generator that copies nothing; null without half-B images")
    false_flag_ci: Bounds = json_key("its 95% Wilson score interval (privacy.<set>.false_flags.ci)")


@dataclass
class PrivacyUtility(Record):
    """Every generator placed by utility (GAN-train HM) against privacy (memorisation rate), with CIs."""

    points: dict[str, PrivacyUtilityPoint] = json_key("one point per synthetic set", keys="set")
    real_hm: Optional[float] = json_key("the GAN-train HM of the real training images (the utility reference)")
    real_hm_ci: Optional[Bounds] = json_key("its 95% interval; null without bootstrap")
    ci_method: str = json_key("how the two intervals were computed, in words")


# --- provenance --------------------------------------------------------------------------------

@dataclass
class FeaturesInfo(Record):
    """Everything that determines the features (every feature-based number depends on it)."""

    name: str = json_key("extractor: 'vgg16' (ImageNet weights, the paper's) or 'vgg16-random' (fixed-seed "
                         "random weights, offline)")
    layer: str = json_key("'fc7' (4096-d, after the second fully connected layer + ReLU) or 'pool5' (512-d)")
    input_size: int = json_key("side (px) of the square network input")
    channel_mapping: str = json_key("how a gray slice becomes the RGB input")
    resize: str = json_key("interpolation used to reach input_size")
    weights: str = json_key("weights file, or 'random(seed=0)'")
    precision: str = json_key("'fp32' or 'bf16' (autocast)")


@dataclass
class FoldData(Record):
    """Which subjects one fold trains on and tests."""

    repeat: int = json_key("repeat of the cross-validation")
    fold: int = json_key("fold within the repeat")
    n_train: int = json_key("real images of the fold's training subjects")
    n_test: int = json_key("real images of the fold's test subjects")
    train_subjects: list[str] = json_key("subject ids trained on (generators and the real/shortcut SVMs)")
    test_subjects: list[str] = json_key("subject ids tested")


@dataclass
class RealData(Record):
    """The prepared real DATASET."""

    path: str = json_key("DATASET folder")
    n_images: int = json_key("images in the dataset")
    n_subjects: int = json_key("subjects in the dataset")
    image_size: int = json_key("image side (px)")
    folds: list[FoldData] = json_key("every fold evaluated, repeat-major")


@dataclass
class SyntheticFold(Record):
    """One fold's synthetic image set."""

    repeat: int = json_key("repeat of the cross-validation")
    fold: int = json_key("fold whose training subjects the generator learned")
    path: str = json_key("image-set folder")
    n_images: int = json_key("images in the set")


@dataclass
class SyntheticData(Record):
    """One synthetic set: a generator's images, one image set per fold."""

    path: str = json_key("image-set folder of the first fold")
    n_images: int = json_key("images over all folds")
    counts: dict[str, int] = json_key("images of this class over all folds", keys="label")
    source: dict[str, Any] = json_key("the first fold's generator provenance as recorded by brainsynth generate "
                                      "(free form)")
    per_fold: list[SyntheticFold] = json_key("each fold's image set")


@dataclass
class Protocol(Record):
    """How the real subjects were split, and how the pooled numbers and their intervals were computed."""

    folds: int = json_key("K: subject folds per repeat (1 = one hold-out split)")
    repeats: int = json_key("repeats of the fold assignment, each from its own seed")
    n_subjects: int = json_key("subjects in the dataset")
    subjects_tested_per_repeat: int = json_key("distinct subjects tested in each repeat of the evaluated folds "
                                               "(n_subjects when every fold was evaluated)")
    folds_evaluated: int = json_key("(repeat, fold) pairs evaluated and pooled")
    test_subjects_per_label: dict[str, int] = json_key("distinct test subjects of this class in the pooled "
                                                       "result", keys="label")
    bootstrap: int = json_key("bootstrap resamples behind every interval (0: no intervals)")
    ci_level: float = json_key("coverage of every interval (0.95)")
    min_subjects_for_ci: int = json_key("an interval needs at least this many test subjects of each class; "
                                        "otherwise it is null with a ci_note")
    method: str = json_key("the protocol in words")


@dataclass
class DataSummary(Record):
    """What was evaluated."""

    real: RealData = json_key("the real dataset and its folds")
    synthetic: dict[str, SyntheticData] = json_key("each synthetic set", keys="set")


@dataclass
class Timings(Record):
    """Wall seconds per stage."""

    other_stages: dict[str, float] = json_key("seconds of a stage outside this command (brainsynth run's prepare, "
                                              "train_<model>, generate_<model>, evaluate)", flatten=True,
                                              keys="stage")
    evaluate_load: float = json_key("seconds reading and checking the inputs, summed over folds")
    evaluate_features: float = json_key("seconds extracting features of every set, summed over folds")
    evaluate_gan_train: float = json_key("seconds of the classifiers (GAN-train, GAN-test, real and shortcut "
                                         "baselines), summed over folds")
    evaluate_fidelity: float = json_key("seconds of the fidelity metrics, summed over folds")
    evaluate_privacy: float = json_key("seconds of the privacy audits, summed over folds")
    evaluate_images_per_s_features: float = json_key("feature extraction throughput, images per second")
    evaluate_total: float = json_key("seconds of the evaluation: every fold, the pooling and writing")


# --- the two documents -------------------------------------------------------------------------

def _check_version(data: Any, source: str) -> None:
    """Refuse a file of another schema before its keys are compared (a clearer message)."""
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version is None:
        raise InputError(f"{source}: no schema_version, so it is an untyped report (schema 1) of an older "
                         f"brainsynth; re-run 'brainsynth evaluate' to write schema {SCHEMA_VERSION}")
    if version != SCHEMA_VERSION:
        raise InputError(f"{source}: schema_version {version!r}, but this brainsynth reads {SCHEMA_VERSION}")


@dataclass(kw_only=True)
class Report(Record):
    """``report.json``: the results of ``brainsynth evaluate``."""

    schema_version: int = json_key(f"version of this layout ({SCHEMA_VERSION})", default=SCHEMA_VERSION)
    brainsynth_version: str = json_key("brainsynth version that wrote the report")
    created: str = json_key("when, ISO 8601 UTC")
    simulated: bool = json_key("true when the real data is the SIMULATED cohort (brainsynth phantom), not patients")
    features: FeaturesInfo = json_key("the feature extractor behind GAN-train, GAN-test, FID/KID, P/R/D/C and the "
                                      "feature distances")
    device: str = json_key("where the features and the privacy audit's distances were computed: 'cpu', or "
                           "'cuda:N (GPU name)'")
    protocol: Protocol = json_key("the cross-validation by subject behind every pooled number")
    data: DataSummary = json_key("the inputs")
    gan_train: dict[str, ClassifierResult] = json_key("paper Table 1: per fold, an SVM fit on each synthetic set "
                                                      "('real': on the fold's real training subjects; 'shortcut': "
                                                      "the same on four global numbers per slice), tested on the "
                                                      "fold's real test subjects; pooled over folds", keys="set")
    gan_test: dict[str, ClassifierResult] = json_key("per fold, an SVM fit on the real training subjects, tested on "
                                                     "the fold's synthetic set; pooled over folds", keys="set")
    comparisons: list[Comparison] = json_key("paired comparisons of GAN-train rows: real vs each set, every pair of "
                                             "synthetic sets, each row vs shortcut")
    fidelity: dict[str, FidelitySummary] = json_key("each synthetic set against the real training subjects of its "
                                                    "fold, and 'real-test' (real test subjects against them: the "
                                                    "reference scale); mean over folds", keys="set")
    privacy: dict[str, PrivacyPooled] = json_key("the privacy audit of each synthetic set, per fold (training and "
                                                 "held-out subjects of the fold) and pooled", keys="set")
    privacy_utility: PrivacyUtility = json_key("each generator's GAN-train HM against its memorisation rate, both "
                                               "with 95% intervals (the report's privacy-utility figure)")
    timings: Timings = json_key("wall time")

    @classmethod
    def from_dict(cls, data: Any, source: str = "report.json") -> Report:
        _check_version(data, source)
        return super().from_dict(data, source)


@dataclass(kw_only=True)
class FoldReport(Record):
    """``fold.json``: one fold's evaluation before pooling (``brainsynth run``'s per-fold stage)."""

    schema_version: int = json_key(f"version of this layout ({SCHEMA_VERSION})", default=SCHEMA_VERSION)
    repeat: int = json_key("repeat of the cross-validation")
    fold: int = json_key("fold within the repeat")
    features: FeaturesInfo = json_key("the feature extractor behind this fold's feature-based numbers")
    device: str = json_key("where the features and the privacy audit's distances were computed: 'cpu', or "
                           "'cuda:N (GPU name)'")
    data: FoldData = json_key("the fold's training and test subjects")
    synthetic: dict[str, SyntheticFold] = json_key("this fold's image set of each synthetic set", keys="set")
    counts: dict[str, dict[str, int]] = json_key("images per class of each synthetic set", keys="set")
    sources: dict[str, dict[str, Any]] = json_key("each synthetic set's provenance (free form)", keys="set")
    n_train: dict[str, int] = json_key("images each GAN-train row's SVM was fit on ('real', 'shortcut', each set)",
                                       keys="row")
    fidelity: dict[str, FidelityResult] = json_key("each set, and 'real-test', against this fold's real training "
                                                   "images", keys="set")
    privacy: dict[str, PrivacySummary] = json_key("the audit of each set (held-out = this fold's test subjects)",
                                                  keys="set")
    seconds: dict[str, float] = json_key("wall seconds of this fold's steps (load, features, gan_train, fidelity, "
                                         "privacy)", keys="step")

    @classmethod
    def from_dict(cls, data: Any, source: str = "fold.json") -> FoldReport:
        _check_version(data, source)
        return super().from_dict(data, source)


@dataclass
class AuditInputs(Record):
    """What ``brainsynth audit`` compared."""

    train: str = json_key("the prepared DATASET (train split = what the generator saw, test split = held out)")
    synthetic: str = json_key("the synthetic image-set folder")
    synthetic_provenance: dict[str, Any] = json_key("the image set's metadata (free form)")


@dataclass(kw_only=True)
class AuditReport(Record):
    """``privacy.json``: the results of ``brainsynth audit``."""

    schema_version: int = json_key(f"version of this layout ({SCHEMA_VERSION})", default=SCHEMA_VERSION)
    brainsynth_version: str = json_key("brainsynth version that wrote the file")
    created: str = json_key("when, ISO 8601 UTC")
    simulated: bool = json_key("true when the real data is the SIMULATED cohort")
    privacy: PrivacySummary = json_key("the audit (same keys as report.json's privacy.<set>)")
    features: FeaturesInfo = json_key("the feature extractor behind the feature distances")
    device: str = json_key("where the features and the privacy audit's distances were computed: 'cpu', or "
                           "'cuda:N (GPU name)'")
    inputs: AuditInputs = json_key("the inputs")

    @classmethod
    def from_dict(cls, data: Any, source: str = "privacy.json") -> AuditReport:
        _check_version(data, source)
        return super().from_dict(data, source)


@dataclass
class PlantedFamily(Record):
    """Detection of one family of planted copies in the self-test."""

    family: str = json_key("the transform family (exact, shift, flip, rotate, scale, intensity, gamma, noise, combined)")
    description: str = json_key("what a copy of this family went through, with the ranges drawn from")
    detection: Rate = json_key("planted copies flagged (by either space)")
    source_found: float = json_key("share of copies whose nearest training image (pixel space) is the slice they "
                                   "were made from")
    median_distance: float = json_key("median aligned pixel distance of the copies to their nearest training image")
    median_ratio: float = json_key("median pixel distance ratio (nearest / nearest of another subject) of the copies")


@dataclass(kw_only=True)
class SelfTestReport(Record):
    """``selftest.json``: the results of ``brainsynth audit --selftest``."""

    schema_version: int = json_key(f"version of this layout ({SCHEMA_VERSION})", default=SCHEMA_VERSION)
    brainsynth_version: str = json_key("brainsynth version that wrote the file")
    created: str = json_key("when, ISO 8601 UTC")
    simulated: bool = json_key("true when the real data is the SIMULATED cohort")
    dataset: str = json_key("the prepared DATASET tested")
    target: float = json_key("least share of planted copies flagged in every family (audit.selftest_target)")
    max_false_flags: float = json_key("most half-B false flags allowed (audit.max_false_flags)")
    passed: bool = json_key("every family reached the target and the false flags stayed within their maximum")
    families: list[PlantedFamily] = json_key("one entry per transform family, in table order")
    false_flags: Rate = json_key("held-out half-B images (real, not planted) flagged")
    calibration: Calibration = json_key("the thresholds and the held-out split (as in privacy.json)")
    transforms: str = json_key("the re-acquisitions the pixel distance forgives")
    distances: SpaceTexts = json_key("how the two distances are computed")
    features: FeaturesInfo = json_key("the feature extractor behind the feature distances")

    @classmethod
    def from_dict(cls, data: Any, source: str = "selftest.json") -> SelfTestReport:
        if isinstance(data, Mapping) and "schema_version" in data:
            _check_version(data, source)
        return super().from_dict(data, source)


def read_report(path: str | Path) -> Report:
    """Read a ``report.json`` (or the REPORT_DIR holding it) back into a :class:`Report`."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable report ({type(exc).__name__}: {exc})") from None
    return Report.from_dict(data, source=str(path))
