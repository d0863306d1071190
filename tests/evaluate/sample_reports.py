"""Typed reports for the writer and schema tests: every field filled, every shown number distinct.

Distinct numbers let a test tell which field a renderer read: a table that showed the synthetic
MS-SSIM where the real one belongs would print the wrong value, not the right one twice.

The report is that of a 2-fold cross-validation of 4 subjects (2 per class) with one repeat:
pooled rows have intervals, each fold's rows (1 subject per class) have none, with the reason.
"""

from __future__ import annotations

from brainsynth.evaluate.report.privacy_utility import privacy_utility
from brainsynth.evaluate.report.schema import (
    AuditInputs,
    AuditReport,
    Calibration,
    CalibrationBand,
    ClassifierResult,
    Comparison,
    DataSummary,
    FeaturesInfo,
    FidelityFold,
    FidelityResult,
    FidelitySummary,
    FlaggedImage,
    FoldData,
    FoldPrivacy,
    FoldScores,
    Intervals,
    LevelScores,
    Membership,
    MembershipAttack,
    MembershipVerdict,
    MsSsim,
    NearestPair,
    PrivacyFold,
    PrivacyPooled,
    PrivacyRules,
    PrivacySummary,
    Protocol,
    Rate,
    RealData,
    Report,
    SpaceComparison,
    SpaceTexts,
    SpaceValues,
    SwdScores,
    SynthVsHoldout,
    SyntheticData,
    SyntheticFold,
    Timings,
    Transform,
)

FOLD_NOTE = "n/a: 1 control, 1 adhd test subject(s); a CI needs at least 3 per class (pool the folds)"

FEATURES = FeaturesInfo(name="vgg16-random", layer="fc7", input_size=224,
                        channel_mapping="gray->rgb replicate, ImageNet mean/std", resize="bilinear",
                        weights="random(seed=0)", precision="fp32")


def intervals(sen: float, spe: float, hm: float) -> Intervals:
    return Intervals(sensitivity=(sen - 0.05, sen + 0.05), specificity=(spe - 0.05, spe + 0.05),
                     hm=(hm - 0.04, hm + 0.04))


def fold_scores(hm: float, fold: int) -> FoldScores:
    """One fold's row: no interval (one subject per class), the reason beside it."""
    return FoldScores(repeat=0, fold=fold, sensitivity=hm + 0.011 * (fold + 1), specificity=hm - 0.013 * (fold + 1),
                      hm=hm - 0.002 * (fold + 1), ci=None, ci_note=FOLD_NOTE, subject_hm=0.5, n=60,
                      n_subjects={"control": 1, "adhd": 1}, n_train=24)


def classifier(sen: float, spe: float, hm: float, *, subject_hm: float = 0.667, n_train: int | None = 48,
               subject_ci: bool = True, inputs: str = "image features (see features)") -> ClassifierResult:
    """Slice level (sen, spe, hm) on 120 test images of 4 subjects; subject level 1.0 / 0.5 / subject_hm."""
    slice_level = LevelScores(sensitivity=sen, specificity=spe, hm=hm, ci=intervals(sen, spe, hm), ci_note=None,
                              n=120, n_groups=4, unit="slice (CI over subjects)")
    subject = LevelScores(sensitivity=1.0, specificity=0.5, hm=subject_hm,
                          ci=intervals(1.0, 0.5, subject_hm) if subject_ci else None,
                          ci_note=None if subject_ci else "n/a: bootstrap = 0 (no resamples)", n=4, n_groups=4,
                          unit="subject per repeat (mean decision score)")
    return ClassifierResult(slice=slice_level, subject=subject, n_train=n_train,
                            per_fold=[fold_scores(hm, 0), fold_scores(hm, 1)], inputs=inputs)


def comparison(a: str, b: str, a_value: float, b_value: float, verdict: str | None = None, *,
               metric: str = "hm", width: float = 0.05) -> Comparison:
    """a vs b with a CI of half-width ``width`` around the difference; the verdict follows the CI unless given."""
    diff = a_value - b_value
    ci = (diff - width, diff + width)
    found = "better" if ci[0] > 0 else "worse" if ci[1] < 0 else "not distinguishable"
    ratio = a_value / b_value
    return Comparison(a=a, b=b, metric=metric, a_value=a_value, b_value=b_value, diff=diff, ci=ci, ci_note=None,
                      verdict=verdict or found, ratio=ratio, ratio_ci=(ratio - width, ratio + width))


def comparisons(real_hm: float, pggan_hm: float, dcgan_hm: float, shortcut_hm: float) -> list[Comparison]:
    rows = {"real": real_hm, "pggan": pggan_hm, "dcgan": dcgan_hm, "shortcut": shortcut_hm}
    names = list(rows)
    return [comparison(a, b, rows[a], rows[b], metric=metric)
            for i, a in enumerate(names) for b in names[i + 1:] for metric in ("hm", "subject_hm")]


def swd(avg: float) -> SwdScores:
    return SwdScores(levels={32: avg - 2.5, 16: avg + 2.5}, avg=avg)


def fidelity_values(fid: float = 41.234) -> FidelityResult:
    return FidelityResult(
        fid=fid, kid_mean=0.0123, kid_std=0.0021, swd=swd(12.5),
        swd_per_class={"control": swd(13.25), "adhd": swd(14.75)},
        ms_ssim=MsSsim(scales=3, synthetic={"control": 0.311, "adhd": 0.332}, real={"control": 0.293, "adhd": 0.274}),
        precision=0.712, recall=0.523, density=0.934, coverage=0.645, background=0.0187, background_real=0.0042,
    )


def fidelity(fid: float = 41.234) -> FidelitySummary:
    """The mean over two folds, an SD, and the two folds (FID fid - 1 and fid + 1)."""
    mean = fidelity_values(fid)
    sd = FidelityResult(
        fid=1.414, kid_mean=0.0011, kid_std=0.0002, swd=swd(1.5), swd_per_class={"control": swd(1.25), "adhd": swd(1.75)},
        ms_ssim=MsSsim(scales=0, synthetic={"control": 0.011, "adhd": 0.012}, real={"control": 0.013, "adhd": 0.014}),
        precision=0.021, recall=0.022, density=0.023, coverage=0.024, background=0.0031, background_real=0.0001)
    folds = [FidelityFold(repeat=0, fold=k, values=fidelity_values(fid + (2 * k - 1))) for k in (0, 1)]
    return FidelitySummary(**{k: getattr(mean, k) for k in FidelityResult.__dataclass_fields__}, sd=sd, per_fold=folds)


def transform(shift: float = 2.0) -> Transform:
    return Transform(mirrored=True, rotation_deg=-3.25, scale=1.04, shift_px=[shift, -1.0], brightness=[0.02, 0.95, 0.01])


def attack(space: str, level: str, auc: float) -> MembershipAttack:
    n = (120, 40) if level == "slice" else (4, 2)
    return MembershipAttack(space=space, level=level, auc=auc, ci=(auc - 0.11, auc + 0.09), p_value=0.0667,
                            p_value_exact=True, n_members=n[0], n_nonmembers=n[1], n_member_subjects=4,
                            n_nonmember_subjects=2)


def band(k: int) -> CalibrationBand:
    return CalibrationBand(area_low=0.05 if k == 0 else 0.21, area_high=0.21 if k == 0 else 0.52,
                           median=SpaceValues(pixel=0.81 + k / 100, feature=0.83), threshold=SpaceValues(
                               pixel=0.612 + k / 100, feature=0.645), n_calibration=50, n_half_a=10, n_half_b=10,
                           half_b_flagged=k,
                           n_synthetic=100, synthetic_flagged=1 - k)


def privacy(rate: float, flagged: tuple[str, ...] = (), mia: float = 0.521, percentile: float = 1.0) -> PrivacySummary:
    k = round(rate * 200)
    return PrivacySummary(
        memorization_rate=rate,
        memorization=Rate(rate=rate, ci=(max(0.0, rate - 0.004), rate + 0.027), k=k, n=200),
        memorization_rate_by_space=SpaceValues(pixel=rate, feature=rate / 2),
        false_flags=Rate(rate=0.025, ci=(0.0069, 0.0868), k=1, n=40),
        excess_memorization=rate - 0.025,
        percentile=percentile,
        calibration=Calibration(percentile=percentile, seed=0, half_a_subjects=["s5"], half_b_subjects=["s6"],
                                half_a_flag_rate=0.0, n_calibration=100, training_images=80,
                                relative_threshold=SpaceValues(pixel=0.755, feature=0.777),
                                quantile_level=0.0068, bands=[band(0), band(1)]),
        transforms="mirrored left-right or not, rotated by up to +/-10 degrees",
        mia_auc=mia,
        mia_ci=(mia - 0.11, mia + 0.09),
        mia_p_value=0.0667,
        membership=Membership(headline="pixel/slice", attacks={
            "pixel/slice": attack("pixel", "slice", mia), "pixel/subject": attack("pixel", "subject", 0.583),
            "feature/slice": attack("feature", "slice", mia - 0.1), "feature/subject": attack("feature", "subject", 0.5)},
            half_a=attack("pixel", "slice", mia - 0.007), half_b=attack("pixel", "slice", mia + 0.013)),
        authenticity=0.551,
        authenticity_by_space=SpaceComparison(pixel=SynthVsHoldout(synthetic=0.551, holdout=0.604),
                                              feature=SynthVsHoldout(synthetic=0.502, holdout=0.533)),
        nearest_distance_median=SpaceComparison(pixel=SynthVsHoldout(synthetic=0.05, holdout=0.06),
                                                feature=SynthVsHoldout(synthetic=0.2, holdout=0.21)),
        ratio_median=SpaceComparison(pixel=SynthVsHoldout(synthetic=0.88, holdout=0.89),
                                     feature=SynthVsHoldout(synthetic=0.9, holdout=0.91)),
        flagged=[FlaggedImage(file=f, train_id="sub-01:40", distance=0.0123 + i, other_distance=0.0987, ratio=0.125,
                              threshold=0.612, band=0, transform=transform(), feature_train_id="sub-02:41",
                              feature_distance=0.0456, feature_ratio=0.543, spaces=["pixel"])
                 for i, f in enumerate(flagged)],
        nearest_pairs=[NearestPair(synthetic_file=f"adhd/00000{i}.png", train_id=f"sub-01:4{i}", distance=0.0123 + i,
                                   ratio=0.125 + i / 10, threshold=0.612, flagged=i == 0, transform=transform(i))
                       for i in range(2)],
        n_synthetic=200,
        n_train=80,
        n_holdout=40,
        distances=SpaceTexts(pixel="sqrt(1 - R^2) after alignment", feature="cosine distance"),
        rules=PrivacyRules(flagged="ratio below a threshold", calibration="half A", false_flags="half B",
                           authenticity="not closer", membership="AUC"),
        limits=["It is not differential privacy.", "Small regions are not checked."],
    )


def membership_verdict(auc: float, p_value: float = 0.0833) -> MembershipVerdict:
    """The membership rule on half B: passed when auc <= 0.60 (p_value is above 0.05)."""
    return MembershipVerdict(rule="half B: AUC <= 0.60 and p >= 0.05", half="b", max_auc=0.6, min_p_value=0.05,
                             auc=auc, p_value=p_value, p_value_exact=True, smallest_p_value=1 / 36, n_folds=2,
                             passed=auc <= 0.6 and p_value >= 0.05)


def pooled_privacy(rate: float, flagged: tuple[str, ...] = (), mia: float = 0.521) -> PrivacyPooled:
    """Two folds' audits pooled (both folds' audits have the same numbers, for brevity)."""
    fold = privacy(rate, flagged, mia)
    k = 2 * round(rate * 200)
    return PrivacyPooled(
        n_folds=2, memorization=Rate(rate=k / 400, ci=(max(0.0, rate - 0.003), rate + 0.017), k=k, n=400),
        false_flags=Rate(rate=0.025, ci=(0.0069, 0.0868), k=2, n=80), excess_memorization=rate - 0.025,
        mia_auc=mia, mia_p_value=0.0444, mia_p_value_exact=True,
        membership_rule=membership_verdict(mia + 0.013),
        per_fold=[FoldPrivacy(fold=f"r0/f{k}", memorization_rate=rate, false_flag_rate=0.025, mia_auc=mia,
                              mia_auc_half_b=mia + 0.013, mia_p_value_half_b=0.1667)
                  for k in (0, 1)],
        audits=[PrivacyFold(repeat=0, fold=k, audit=fold) for k in (0, 1)])


def protocol() -> Protocol:
    return Protocol(folds=2, repeats=1, n_subjects=4, subjects_tested_per_repeat=4, folds_evaluated=2,
                    test_subjects_per_label={"control": 2, "adhd": 2}, bootstrap=500, ci_level=0.95,
                    min_subjects_for_ci=3, method="2-fold cross-validation by subject, stratified by label")


def data_summary() -> DataSummary:
    folds = [FoldData(repeat=0, fold=0, n_train=60, n_test=60, train_subjects=["s1", "s2"], test_subjects=["s3", "s4"]),
             FoldData(repeat=0, fold=1, n_train=60, n_test=60, train_subjects=["s3", "s4"], test_subjects=["s1", "s2"])]
    return DataSummary(
        real=RealData(path="dataset", n_images=120, n_subjects=4, image_size=64, folds=folds),
        synthetic={name: SyntheticData(path=f"r0/f0/synthetic/{name}", n_images=200,
                                       counts={"control": 100, "adhd": 100},
                                       source={"model": name, "checkpoint_sha256": "abc"},
                                       per_fold=[SyntheticFold(repeat=0, fold=k, path=f"r0/f{k}/synthetic/{name}",
                                                               n_images=100) for k in (0, 1)])
                   for name in ("pggan", "dcgan")},
    )


def timings() -> Timings:
    return Timings(other_stages={"train_pggan": 1234.5}, evaluate_load=1.0, evaluate_features=12.3,
                   evaluate_gan_train=2.0, evaluate_fidelity=3.0, evaluate_privacy=4.0,
                   evaluate_images_per_s_features=50.5, evaluate_total=23.4)


def full_report(real_hm: float = 0.86, pggan_hm: float = 0.75, dcgan_hm: float = 0.6,
                rates: tuple[float, float] = (0.005, 0.0), simulated: bool = True, shortcut_hm: float = 0.55) -> Report:
    """Real, PGGAN, DCGAN and shortcut rows, every section and every optional number present.

    The comparisons' intervals are the difference +/- 0.05, so a difference of 0.05 or less is
    "not distinguishable".
    """
    shortcut_inputs = "global slice features: brain area, mean and SD of brain intensity, slice position"
    gan_train = {"real": classifier(0.9, 0.82, real_hm), "dcgan": classifier(0.6, 0.6, dcgan_hm),
                 "pggan": classifier(0.8, 0.7, pggan_hm, subject_hm=0.701),
                 "shortcut": classifier(0.52, 0.58, shortcut_hm, inputs=shortcut_inputs)}
    privacy_sets = {"pggan": pooled_privacy(rates[0], ("adhd/000003.png",)),
                    "dcgan": pooled_privacy(rates[1], mia=0.612)}
    return Report(
        brainsynth_version="0.1.0",
        created="2025-01-01T00:00:00+00:00",
        simulated=simulated,
        features=FEATURES,
        device="cpu",
        protocol=protocol(),
        data=data_summary(),
        gan_train=gan_train,
        gan_test={"pggan": classifier(0.95, 0.9, 0.925), "dcgan": classifier(0.85, 0.8, 0.824)},
        comparisons=comparisons(real_hm, pggan_hm, dcgan_hm, shortcut_hm),
        fidelity={"pggan": fidelity(41.234), "dcgan": fidelity(87.654), "real-test": fidelity(3.21)},
        privacy=privacy_sets,
        privacy_utility=privacy_utility(gan_train, privacy_sets),
        timings=timings(),
    )


def audit_report(flagged: tuple[str, ...] = ("adhd/000003.png", "control/000007.png")) -> AuditReport:
    return AuditReport(
        brainsynth_version="0.1.0",
        created="2025-01-01T00:00:00+00:00",
        simulated=True,
        privacy=privacy(0.01, flagged),
        features=FEATURES,
        device="cpu",
        inputs=AuditInputs(train="dataset", synthetic="synthetic/pggan",
                           synthetic_provenance={"generator": {"model": "pggan"}}),
    )
