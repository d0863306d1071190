"""The privacy audit: does a synthetic set copy its generator's training images, or tell who was in them?

Maths first, each module importing only those above it:

- :mod:`.transforms` (the re-acquisitions of a slice), :mod:`.registration` (aligning a training
  slice onto a synthetic image: the coarse grid and its refinement, :mod:`.gauss_newton`),
  :mod:`.search` (which pairs are aligned: exhaustive or prefiltered candidates), :mod:`.nearest`
  (the few numbers kept per image instead of a matrix), :mod:`.distances` (the aligned pixel
  distance and the feature distance, the latter in blocks);
- :mod:`.calibration` (thresholds on held-out half A and the training subjects, checked on half
  B), :mod:`.membership` (membership inference with subject-level intervals and p-values);
- :mod:`.fold` (one fold's audit: :func:`~.fold.fold_reference`, :func:`~.fold.audit_fold`),
  :mod:`.summary` (its JSON summary, nearest pairs, folds pooled);
- :mod:`.planting` and :mod:`.selftest` (``brainsynth audit --selftest``: planted copies).

The ``audit`` command itself is :mod:`brainsynth.evaluate.audit_command`; its files are written by
:mod:`brainsynth.evaluate.report.privacy_writers`. What it measures, in words: ``docs/privacy.md``.
"""
