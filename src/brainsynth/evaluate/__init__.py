"""Evaluation of synthetic images: GAN-train/GAN-test, fidelity, privacy, and the report.

Layers, each importing only the ones above it:

- maths (arrays in, numbers out): :mod:`.features` (VGG-16 in :mod:`.vgg16`, cached by content in
  :mod:`.feature_cache`), :mod:`.gan_train`, :mod:`.fidelity` (pixel metrics in
  :mod:`.image_fidelity`), :mod:`.shortcut` (global slice features), :mod:`.protocol` (pooled
  scores, cluster bootstrap, paired verdicts), and the privacy audit, :mod:`.privacy`;
- :mod:`.report`: the typed ``report.json``, ``fold.json``, ``privacy.json`` and ``selftest.json``,
  and their figures, tables and files;
- commands: :mod:`.folds` (one fold of the cross-validation), :mod:`.pooling` (the folds into one
  report), :mod:`.commands` (``evaluate``), :mod:`.audit_command` (``audit``); ``audit
  --selftest`` is :mod:`.privacy.selftest`.

The two commands are loaded on first use: they bring torch and scikit-learn, which a tool that
only reads ``report.json`` (:func:`brainsynth.evaluate.report.schema.read_report`) does not need.
"""

from __future__ import annotations

from typing import Any

__all__ = ["audit", "evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from brainsynth.evaluate import commands

        return commands.evaluate
    if name == "audit":
        from brainsynth.evaluate import audit_command

        return audit_command.audit
    raise AttributeError(f"module 'brainsynth.evaluate' has no attribute {name!r}")
