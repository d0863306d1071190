"""Privacy and utility together: each generator's GAN-train HM against its memorisation rate.

The question an ethics board asks of a synthetic set is two-sided: are the images useful (a
classifier trained on them works on real patients: the GAN-train harmonic mean, Shmelkov et
al. 2018), and are they private (few of them are near-copies of a training slice: the audit's
memorisation rate)? :func:`privacy_utility` puts the two numbers of every generator side by
side with their 95% intervals, from the report's own sections, so that nothing is computed
twice: the HM and its interval are ``gan_train.<set>``'s, the rate, its flagged count and its
Wilson score interval (Wilson 1927) are the audit's pooled ``privacy.<set>.memorization`` (summed over folds), and the
reference a generator that copies nothing would reach is the audit's ``false_flags`` (held-out
half-B images, which did not set the thresholds). The Wilson interval is the audit's own
(:func:`~brainsynth.evaluate.privacy.calibration.wilson_interval`), not recomputed here.
"""

from __future__ import annotations

from typing import Mapping

from brainsynth.evaluate.report.schema import ClassifierResult, PrivacyPooled, PrivacyUtility, PrivacyUtilityPoint
from brainsynth.evaluate.report.tables import REAL_KEY

CI_METHOD = ("GAN-train HM: the report's 95% cluster-bootstrap interval over test subjects (gan_train.<set>.ci.hm); "
             "memorisation rate and false-flag rate: the audit's 95% Wilson score intervals "
             "(privacy.<set>.memorization.ci, privacy.<set>.false_flags.ci), which treat slices as independent")


def privacy_utility(gan_train: Mapping[str, ClassifierResult], privacy: Mapping[str, PrivacyPooled]
                    ) -> PrivacyUtility:
    """One :class:`PrivacyUtilityPoint` per synthetic set audited, plus the real HM for reference.

    Parameters
    ----------
    gan_train : dict
        The report's ``gan_train`` section (every synthetic set, ``real`` and ``shortcut``), pooled
        over folds.
    privacy : dict
        The report's ``privacy`` section (every synthetic set), pooled over folds: the rates are
        every fold's flagged images over every fold's audited images, as the audit pools them.
    """
    points = {}
    for name, audit in privacy.items():
        scores = gan_train.get(name)
        points[name] = PrivacyUtilityPoint(
            hm=scores.hm if scores else None,
            hm_ci=scores.ci.hm if scores and scores.ci else None,
            memorization_rate=audit.memorization.rate,
            memorization_ci=tuple(audit.memorization.ci),
            flagged=audit.memorization.k,
            n_synthetic=audit.memorization.n,
            false_flag_rate=audit.false_flags.rate,
            false_flag_ci=tuple(audit.false_flags.ci),
        )
    real = gan_train.get(REAL_KEY)
    return PrivacyUtility(points=points, real_hm=real.hm if real else None,
                          real_hm_ci=real.ci.hm if real and real.ci else None, ci_method=CI_METHOD)


__all__ = ["CI_METHOD", "privacy_utility"]
