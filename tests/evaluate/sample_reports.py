"""Typed reports for the writer and schema tests: every field filled, every shown number distinct.

Distinct numbers let a test tell which field a renderer read: a table that showed the synthetic
MS-SSIM where the real one belongs would print the wrong value, not the right one twice.
"""

from __future__ import annotations

from brainsynth.evaluate.privacy_utility import privacy_utility
from brainsynth.evaluate.schema import (
    AuditInputs,
    AuditReport,
    ClassifierResult,
    DataSummary,
    FeaturesInfo,
    FidelityResult,
    FlaggedImage,
    Intervals,
    LevelScores,
    MsSsim,
    PrivacyRules,
    PrivacySummary,
    RealData,
    Report,
    SpaceComparison,
    SpaceTexts,
    SpaceValues,
    SwdScores,
    SynthVsHoldout,
    SyntheticData,
    Timings,
)

FEATURES = FeaturesInfo(name="vgg16-random", layer="fc7", input_size=224,
                        channel_mapping="gray->rgb replicate, ImageNet mean/std", resize="bilinear",
                        weights="random(seed=0)", precision="fp32")


def intervals(sen: float, spe: float, hm: float) -> Intervals:
    return Intervals(sensitivity=(sen - 0.05, sen + 0.05), specificity=(spe - 0.05, spe + 0.05),
                     hm=(hm - 0.04, hm + 0.04))


def classifier(sen: float, spe: float, hm: float, *, subject_hm: float = 0.667, n_train: int | None = 48,
               subject_ci: bool = True) -> ClassifierResult:
    """Slice level (sen, spe, hm) on 120 test images of 4 subjects; subject level 1.0 / 0.5 / subject_hm."""
    slice_level = LevelScores(sensitivity=sen, specificity=spe, hm=hm, ci=intervals(sen, spe, hm), n=120, n_groups=4,
                              unit="slice (CI over subjects)")
    subject = LevelScores(sensitivity=1.0, specificity=0.5, hm=subject_hm,
                          ci=intervals(1.0, 0.5, subject_hm) if subject_ci else None, n=4, n_groups=4,
                          unit="subject (mean decision score)")
    return ClassifierResult(slice=slice_level, subject=subject, n_train=n_train)


def swd(avg: float) -> SwdScores:
    return SwdScores(levels={32: avg - 2.5, 16: avg + 2.5}, avg=avg)


def fidelity(fid: float = 41.234) -> FidelityResult:
    return FidelityResult(
        fid=fid, kid_mean=0.0123, kid_std=0.0021, swd=swd(12.5),
        swd_per_class={"control": swd(13.25), "adhd": swd(14.75)},
        ms_ssim=MsSsim(scales=3, synthetic={"control": 0.311, "adhd": 0.332}, real={"control": 0.293, "adhd": 0.274}),
        precision=0.712, recall=0.523, density=0.934, coverage=0.645,
    )


def privacy(rate: float, flagged: tuple[str, ...] = (), mia: float = 0.521, percentile: float = 1.0) -> PrivacySummary:
    return PrivacySummary(
        memorization_rate=rate,
        memorization_rate_by_space=SpaceValues(pixel=rate, feature=rate / 2),
        holdout_flag_rate=0.0075,
        percentile=percentile,
        threshold=SpaceValues(pixel=0.0314, feature=0.0815),
        calibration_quantile=0.0068,
        mia_auc=mia,
        mia_auc_by_space=SpaceValues(pixel=mia, feature=mia - 0.1),
        mia_auc_subject=0.583,
        authenticity=0.551,
        authenticity_by_space=SpaceComparison(pixel=SynthVsHoldout(synthetic=0.551, holdout=0.604),
                                              feature=SynthVsHoldout(synthetic=0.502, holdout=0.533)),
        nearest_distance_median=SpaceComparison(pixel=SynthVsHoldout(synthetic=0.05, holdout=0.06),
                                                feature=SynthVsHoldout(synthetic=0.2, holdout=0.21)),
        flagged=[FlaggedImage(file=f, train_id="sub-01:40", distance=0.0123 + i, feature_train_id="sub-02:41",
                              feature_distance=0.0456, spaces=["pixel"]) for i, f in enumerate(flagged)],
        n_synthetic=200,
        n_train=80,
        n_holdout=40,
        distances=SpaceTexts(pixel="RMS difference", feature="cosine distance"),
        rules=PrivacyRules(flagged="below a threshold", authenticity="not closer", mia_auc="AUC"),
        mia_auc_subject_by_space=SpaceValues(pixel=0.583, feature=0.5),
    )


def data_summary() -> DataSummary:
    return DataSummary(
        real=RealData(path="dataset", n_train=80, n_test=40, train_subjects=["s1", "s2", "s3", "s4"],
                      test_subjects=["s5", "s6"], image_size=64),
        synthetic={name: SyntheticData(path=f"synthetic/{name}", n_images=200, counts={"control": 100, "adhd": 100},
                                       source={"model": name, "checkpoint_sha256": "abc"})
                   for name in ("pggan", "dcgan")},
    )


def timings() -> Timings:
    return Timings(other_stages={"train_pggan": 1234.5}, evaluate_load=1.0, evaluate_features=12.3,
                   evaluate_gan_train=2.0, evaluate_fidelity=3.0, evaluate_privacy=4.0,
                   evaluate_images_per_s_features=50.5, evaluate_total=23.4)


def full_report(real_hm: float = 0.86, pggan_hm: float = 0.75, dcgan_hm: float = 0.6,
                rates: tuple[float, float] = (0.005, 0.0), simulated: bool = True) -> Report:
    """Real baseline, PGGAN and DCGAN, every section and every optional number present."""
    gan_train = {"real": classifier(0.9, 0.82, real_hm), "dcgan": classifier(0.6, 0.6, dcgan_hm),
                 "pggan": classifier(0.8, 0.7, pggan_hm, subject_hm=0.701)}
    privacy_sets = {"pggan": privacy(rates[0], ("adhd/000003.png",)), "dcgan": privacy(rates[1], mia=0.612)}
    return Report(
        brainsynth_version="0.1.0",
        created="2025-01-01T00:00:00+00:00",
        simulated=simulated,
        features=FEATURES,
        data=data_summary(),
        gan_train=gan_train,
        gan_test={"pggan": classifier(0.95, 0.9, 0.925), "dcgan": classifier(0.85, 0.8, 0.824)},
        fidelity={"pggan": fidelity(41.234), "dcgan": fidelity(87.654)},
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
        inputs=AuditInputs(train="dataset", synthetic="synthetic/pggan",
                           synthetic_provenance={"generator": {"model": "pggan"}}),
    )
