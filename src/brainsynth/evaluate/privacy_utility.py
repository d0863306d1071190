"""Privacy and utility together: each generator's GAN-train HM against its memorisation rate.

The question an ethics board asks of a synthetic set is two-sided: are the images useful (a
classifier trained on them works on real patients: the GAN-train harmonic mean, Shmelkov et
al. 2018), and are they private (few of them are near-copies of a training slice: the audit's
memorisation rate)? :func:`privacy_utility` puts the two numbers of every generator side by
side with their 95% intervals, from the report's own sections, so that nothing is computed
twice: the HM and its interval are ``gan_train.<set>``'s, the rate is ``privacy.<set>``'s, and
its interval is the Wilson score interval (Wilson 1927) of the flagged count over the audited
images. Wilson rather than the normal approximation because the rates sit near 0, where the
normal interval collapses to a point or goes negative; at 0 flagged of 1,000 it is [0, 0.38%].
"""

from __future__ import annotations

import math
from typing import Mapping

from brainsynth.evaluate.schema import ClassifierResult, PrivacySummary, PrivacyUtility, PrivacyUtilityPoint
from brainsynth.evaluate.tables import REAL_KEY

Z_95 = 1.959963984540054
"""The standard normal 97.5% quantile (two-sided 95% intervals)."""

CI_METHOD = ("GAN-train HM: the report's bootstrap interval (gan_train.<set>.ci.hm); memorisation rate: Wilson "
             "score interval of the flagged count over the audited synthetic images, 95%")


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``successes / n``.

    Parameters
    ----------
    successes, n : int
        Flagged images and images audited (``0 <= successes <= n``).
    z : float
        Normal quantile of the two-sided level (1.96 for 95%).

    Returns
    -------
    (low, high) : tuple of float
        In [0, 1]; ``(0, 1)`` when ``n`` is 0 (nothing known).
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} must lie in [0, n={n}]")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 (or n) successes the bound is exactly 0 (or 1); the float sum leaves a rounding residue.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def privacy_utility(gan_train: Mapping[str, ClassifierResult], privacy: Mapping[str, PrivacySummary]
                    ) -> PrivacyUtility:
    """One :class:`PrivacyUtilityPoint` per synthetic set audited, plus the real HM for reference.

    Parameters
    ----------
    gan_train : dict
        The report's ``gan_train`` section (every synthetic set and ``real``).
    privacy : dict
        The report's ``privacy`` section (every synthetic set).
    """
    points = {}
    for name, audit in privacy.items():
        scores = gan_train.get(name)
        flagged = len(audit.flagged)  # the audit lists every flagged image
        points[name] = PrivacyUtilityPoint(
            hm=scores.hm if scores else None,
            hm_ci=scores.ci.hm if scores and scores.ci else None,
            memorization_rate=audit.memorization_rate,
            memorization_ci=wilson_interval(flagged, audit.n_synthetic),
            n_synthetic=audit.n_synthetic,
            holdout_flag_rate=audit.holdout_flag_rate,
        )
    real = gan_train.get(REAL_KEY)
    return PrivacyUtility(points=points, real_hm=real.hm if real else None,
                          real_hm_ci=real.ci.hm if real and real.ci else None, ci_method=CI_METHOD)


__all__ = ["CI_METHOD", "privacy_utility", "wilson_interval"]
