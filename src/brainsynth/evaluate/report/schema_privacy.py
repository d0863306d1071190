"""The privacy keys of ``report.json`` and ``privacy.json`` (re-exported by :mod:`brainsynth.evaluate.report.schema`).

Kept apart from the rest of the report's layout so that the audit's fields, which an ethics board
reads, are described in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from brainsynth.evaluate.report.typed_json import Record, json_key

Bounds = tuple[Optional[float], Optional[float]]


@dataclass
class SpaceValues(Record):
    """One number per distance space."""

    pixel: float = json_key("in pixel space (aligned distance, see distances.pixel)")
    feature: float = json_key("in feature space (cosine distance of features centred on the training mean)")


@dataclass
class SynthVsHoldout(Record):
    """One measure of the synthetic images beside the same measure of held-out real images."""

    synthetic: float = json_key("of the synthetic images")
    holdout: float = json_key("of the held-out real images (the reference a generator that copies nothing "
                              "would reach)")


@dataclass
class SpaceComparison(Record):
    """:class:`SynthVsHoldout` per distance space."""

    pixel: SynthVsHoldout = json_key("in pixel space")
    feature: SynthVsHoldout = json_key("in feature space")


@dataclass
class SpaceTexts(Record):
    """How each distance is computed, in words."""

    pixel: str = json_key("definition of the pixel distance")
    feature: str = json_key("definition of the feature distance")


@dataclass
class Rate(Record):
    """A share of images with its 95 % Wilson score interval (Wilson 1927)."""

    rate: Optional[float] = json_key("k / n, in [0, 1]; null when n = 0")
    ci: Bounds = json_key("95% Wilson score interval [low, high]; it treats images as independent, which "
                          "slices of one subject are not, so read it as a lower bound on the uncertainty")
    k: int = json_key("images counted")
    n: int = json_key("images in the group")


@dataclass
class CalibrationBand(Record):
    """Images of one brain-area band and the thresholds calibrated for them."""

    area_low: Optional[float] = json_key("smallest brain-area share of the band (null: no lower edge)")
    area_high: Optional[float] = json_key("largest brain-area share of the band (null: no upper edge)")
    median: SpaceValues = json_key("median distance ratio of the band's calibration images (its typical value)")
    threshold: SpaceValues = json_key("near-copy threshold per space in this band (relative_threshold x median): a "
                                      "distance ratio (nearest training image / nearest training image of another "
                                      "subject) strictly below it flags the image")
    n_calibration: int = json_key("calibration images in the band (half A plus training images)")
    n_half_a: int = json_key("held-out half-A images in the band")
    n_half_b: int = json_key("half-B images (check) in the band")
    half_b_flagged: int = json_key("half-B images flagged (false flags)")
    n_synthetic: int = json_key("synthetic images in the band")
    synthetic_flagged: int = json_key("synthetic images flagged")


@dataclass
class Calibration(Record):
    """How the near-copy thresholds were set, and on which held-out subjects they were checked."""

    percentile: float = json_key("share (%) of the calibration images the rule may flag")
    seed: int = json_key("seed of the half-A / half-B split of the held-out subjects")
    half_a_subjects: list[str] = json_key("held-out subjects whose images set the thresholds")
    half_b_subjects: list[str] = json_key("held-out subjects whose images check them (never used to set them)")
    half_a_flag_rate: float = json_key("share of half-A images flagged (in-sample)")
    n_calibration: int = json_key("images the thresholds were set on: half A plus training_images")
    training_images: int = json_key("training images scored against the OTHER training subjects (as if held out) "
                                    "among them; 0 when audit.calibrate_with_training is off or there are fewer than "
                                    "3 training subjects")
    relative_threshold: SpaceValues = json_key("threshold per space on the ratio divided by its band's median, set on "
                                               "all calibration images")
    quantile_level: float = json_key("quantile level (0-1) of those rescaled ratios used in both spaces, the largest "
                                     "at which the OR-rule flags at most percentile % of the calibration images")
    bands: list[CalibrationBand] = json_key("brain-area bands, smallest brains first; each band's ratios are divided by "
                                            "its own median before the threshold applies")


@dataclass
class Transform(Record):
    """The re-acquisition of a training slice that brings it closest to a synthetic image."""

    mirrored: bool = json_key("mirrored left-right first")
    rotation_deg: float = json_key("then rotated about the centre, degrees (clockwise as displayed, y down)")
    scale: float = json_key("then scaled about the centre (1 = same size)")
    shift_px: list[float] = json_key("then shifted by [dx, dy] px of the dataset's image (x right, y down)")
    brightness: list[float] = json_key("brightness curve [c0, c1, c2] mapping the aligned slice's value x to "
                                       "c0 + c1 x + c2 x^2")


@dataclass
class FlaggedImage(Record):
    """A synthetic image flagged as a near-copy of a training image."""

    file: str = json_key("the synthetic image ('adhd/000003.png', or 'images.npz#3' inside a stacked file)")
    train_id: str = json_key("its nearest training image in pixel space, '<subject>:<slice>' (':p<k>' for patch k)")
    distance: float = json_key("aligned pixel distance to that image")
    other_distance: float = json_key("aligned pixel distance to the nearest training image of another subject")
    ratio: float = json_key("distance / other_distance: 0 for an exact copy, near 1 for a new image")
    threshold: float = json_key("the pixel ratio threshold of its brain-area band")
    band: int = json_key("its brain-area band (index into calibration.bands)")
    transform: Transform = json_key("the re-acquisition of the training image that matched it")
    feature_train_id: str = json_key("its nearest training image in feature space")
    feature_distance: float = json_key("feature distance to that image")
    feature_ratio: float = json_key("the distance ratio in feature space")
    spaces: list[str] = json_key("the spaces ('pixel', 'feature') whose threshold it fell below")


@dataclass
class NearestPair(Record):
    """One of the synthetic images most like a copy (smallest pixel distance ratio), flagged or not."""

    synthetic_file: str = json_key("the synthetic image")
    train_id: str = json_key("its nearest training image")
    distance: float = json_key("aligned pixel distance")
    ratio: float = json_key("distance / the distance to the nearest training image of another subject")
    threshold: float = json_key("the pixel ratio threshold of the synthetic image's band")
    flagged: bool = json_key("flagged as a near-copy (in either space)")
    transform: Transform = json_key("the re-acquisition found")


@dataclass
class MembershipAttack(Record):
    """One membership-inference attack (GAN-Leaks full black-box, Chen et al. 2020)."""

    space: str = json_key("distance used: 'pixel' (aligned) or 'feature'")
    level: str = json_key("'slice' (each real image scored) or 'subject' (mean score of its slices)")
    auc: Optional[float] = json_key("AUC of training members vs held-out non-members, members guessed by the smaller "
                                    "distance to the nearest synthetic image; 0.5 = no leak, 1 = full leak")
    ci: Bounds = json_key("95% percentile bootstrap interval, member and non-member SUBJECTS resampled with "
                          "replacement (null without bootstrap)")
    p_value: Optional[float] = json_key("one-sided p-value of the AUC under 'membership does not matter': labels "
                                        "permuted among subjects (null without permutations)")
    p_value_exact: bool = json_key("true when every relabelling of the subjects was enumerated")
    n_members: int = json_key("training units scored (slices or subjects)")
    n_nonmembers: int = json_key("held-out units scored")
    n_member_subjects: int = json_key("training subjects")
    n_nonmember_subjects: int = json_key("held-out subjects")


@dataclass
class Membership(Record):
    """Membership inference: the pre-declared headline attack and the others beside it."""

    headline: str = json_key("key of the headline attack in attacks, declared before the data are seen: "
                             "'pixel/slice'")
    attacks: dict[str, MembershipAttack] = json_key("every attack, '<space>/<level>'", keys="attack")
    half_a: MembershipAttack = json_key("the headline attack against held-out half A's subjects only (the half "
                                        "that set the near-copy thresholds; what checkpoint selection may read)")
    half_b: MembershipAttack = json_key("the headline attack against held-out half B's subjects only (the half that "
                                        "set and chose nothing; what the membership rule is judged on)")


@dataclass
class MembershipVerdict(Record):
    """The pre-declared membership rule applied to a set's folds on one held-out half."""

    rule: str = json_key("the rule in words")
    half: str = json_key("the held-out half it is judged on: 'b' in reports (never used to set or choose anything)")
    max_auc: float = json_key("largest pooled headline AUC allowed")
    min_p_value: float = json_key("smallest pooled p-value allowed")
    auc: Optional[float] = json_key("mean over folds of the headline AUC against this half's subjects")
    p_value: Optional[float] = json_key("one-sided p-value of that mean, membership relabelled among the members and "
                                        "this half's subjects within every fold at once")
    p_value_exact: bool = json_key("true when every joint relabelling was enumerated")
    smallest_p_value: Optional[float] = json_key("the smallest p-value these group sizes can give (the test's "
                                                 "resolution: 1/45 for one fold of 8 training and 2 half-B subjects)")
    n_folds: int = json_key("folds judged (with training and half-B subjects)")
    passed: Optional[bool] = json_key("auc <= max_auc and p_value >= min_p_value; null when not measurable")


@dataclass
class PrivacyRules(Record):
    """The decision rules behind the headline privacy numbers, in words."""

    flagged: str = json_key("when a synthetic image is flagged as a near-copy")
    calibration: str = json_key("how the thresholds are set")
    false_flags: str = json_key("how the false-flag rate is measured")
    authenticity: str = json_key("what counts as authentic")
    membership: str = json_key("how the membership-inference headline is computed")


@dataclass
class PrivacySummary(Record):
    """The privacy audit of one synthetic set against one training set (one fold).

    The ``derived_keys`` repeat numbers of schema 2 that keep their meaning, for readers of the
    earlier layout; ``threshold`` (now per band) and ``rules.mia_auc`` (now ``rules.membership``)
    were retired in schema 3.
    """

    derived_keys: ClassVar[tuple[str, ...]] = ("holdout_flag_rate", "calibration_quantile", "mia_auc_by_space",
                                               "mia_auc_subject", "mia_auc_subject_by_space")

    memorization_rate: float = json_key("share of synthetic images flagged as near-copies, in [0, 1]")
    memorization: Rate = json_key("the same share with its Wilson interval and counts")
    memorization_rate_by_space: SpaceValues = json_key("share flagged by each space alone")
    false_flags: Rate = json_key("held-out half-B images (never used for calibration) flagged by the same rule: "
                                 "the rate a generator that copies nothing would score")
    excess_memorization: Optional[float] = json_key("memorization_rate minus false_flags.rate: the near-copies "
                                                    "beyond what chance explains")
    percentile: float = json_key("share (%) of the calibration images the rule may flag, in (0, 50]")
    calibration: Calibration = json_key("the thresholds and the held-out split")
    transforms: str = json_key("the re-acquisitions of a training slice the pixel distance forgives, in words")
    mia_auc: Optional[float] = json_key("the headline membership-inference AUC (membership.headline)")
    mia_ci: Bounds = json_key("its 95% subject-bootstrap interval")
    mia_p_value: Optional[float] = json_key("its subject-permutation p-value")
    membership: Membership = json_key("every membership-inference attack")
    authenticity: float = json_key("share of synthetic images at least as far from their nearest training image "
                                   "as that image is from its nearest other-subject training image (pixel space)")
    authenticity_by_space: SpaceComparison = json_key("authentic share per space, synthetic beside held-out")
    nearest_distance_median: SpaceComparison = json_key("median distance to the nearest training image")
    flagged: list[FlaggedImage] = json_key("every flagged synthetic image, smallest pixel ratio first")
    nearest_pairs: list[NearestPair] = json_key("the synthetic images with the smallest pixel distance ratio, "
                                                "smallest first")
    ratio_median: SpaceComparison = json_key("median distance ratio (nearest / nearest of another subject)")
    n_synthetic: int = json_key("synthetic images audited")
    n_train: int = json_key("real training images they were compared with")
    n_holdout: int = json_key("held-out real images (half A + half B)")
    distances: SpaceTexts = json_key("how the two distances are computed")
    rules: PrivacyRules = json_key("the rules in words")
    limits: list[str] = json_key("what the audit does not show, in plain words")

    @property
    def holdout_flag_rate(self) -> Optional[float]:
        """Share of held-out half-B images flagged (repeats false_flags.rate)."""
        return self.false_flags.rate

    @property
    def calibration_quantile(self) -> float:
        """Quantile level used for the thresholds (repeats calibration.quantile_level)."""
        return self.calibration.quantile_level

    def _auc(self, space: str, level: str) -> Optional[float]:
        attack = self.membership.attacks.get(f"{space}/{level}")
        return None if attack is None else attack.auc

    @property
    def mia_auc_by_space(self) -> dict[str, Optional[float]]:
        """Slice-level membership AUC per space (repeats membership.attacks.<space>/slice.auc)."""
        return {s: self._auc(s, "slice") for s in ("pixel", "feature")}

    @property
    def mia_auc_subject(self) -> Optional[float]:
        """Subject-level AUC of the headline space (repeats membership.attacks.pixel/subject.auc)."""
        return self._auc(self.membership.headline.split("/")[0], "subject")

    @property
    def mia_auc_subject_by_space(self) -> dict[str, Optional[float]]:
        """Subject-level membership AUC per space (repeats membership.attacks.<space>/subject.auc)."""
        return {s: self._auc(s, "subject") for s in ("pixel", "feature")}


@dataclass
class FoldPrivacy(Record):
    """One fold's numbers inside :class:`PooledPrivacy`."""

    fold: str = json_key("the fold's name")
    memorization_rate: float = json_key("share of that fold's synthetic images flagged")
    false_flag_rate: Optional[float] = json_key("share of that fold's half-B images flagged")
    mia_auc: Optional[float] = json_key("that fold's headline membership AUC")
    mia_auc_half_b: Optional[float] = json_key("that fold's headline AUC against its half-B subjects only")
    mia_p_value_half_b: Optional[float] = json_key("its subject-permutation p-value (with 2 half-B subjects no "
                                                   "value is below 1/45)")


@dataclass
class PooledPrivacy(Record):
    """Privacy audits of several folds pooled (each fold calibrated on its own half A)."""

    n_folds: int = json_key("folds pooled")
    memorization: Rate = json_key("synthetic images flagged, summed over folds")
    false_flags: Rate = json_key("half-B images flagged, summed over folds")
    excess_memorization: Optional[float] = json_key("memorization.rate minus false_flags.rate")
    mia_auc: Optional[float] = json_key("mean over folds of the headline membership AUC")
    mia_p_value: Optional[float] = json_key("one-sided p-value of that mean, labels permuted among subjects within "
                                            "each fold")
    mia_p_value_exact: bool = json_key("true when every joint relabelling was enumerated")
    membership_rule: MembershipVerdict = json_key("the pre-declared membership rule judged on held-out half B")
    per_fold: list[FoldPrivacy] = json_key("each fold's numbers")
