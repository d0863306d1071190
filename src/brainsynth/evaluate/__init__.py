"""Evaluation of synthetic images: GAN-train/GAN-test, fidelity, privacy, and the report.

``evaluate`` is the ``brainsynth evaluate`` command; the pieces live in :mod:`.features`,
:mod:`.gan_train`, :mod:`.fidelity`, :mod:`.privacy` and :mod:`.report`.
"""

from brainsynth.evaluate.run import evaluate

__all__ = ["evaluate"]
