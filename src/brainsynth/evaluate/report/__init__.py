"""The report: typed documents, and everything that renders them (tables, figures, files).

- :mod:`.typed_json` (dataclasses to and from JSON, strictly) under :mod:`.schema` (every key of
  ``report.json`` and ``fold.json``) and :mod:`.schema_privacy` (``privacy.json``,
  ``selftest.json``); :mod:`.schema_doc` generates ``docs/report-schema.md`` from them;
- :mod:`.privacy_utility` (each generator's GAN-train HM against its near-copy rate);
- :mod:`.figures` (PNG bytes), :mod:`.tables` (tables, three renderers), :mod:`.targets` (the
  reproduction targets judged on paired verdicts, the console table);
- :mod:`.writers` (report.json/.md/.html) and :mod:`.privacy_writers` (the audit's files).

Nothing here computes a metric: it reads the typed objects the evaluation built.
"""
