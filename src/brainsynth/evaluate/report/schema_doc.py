"""Generate the key tables of ``docs/report-schema.md`` from :mod:`brainsynth.evaluate.report.schema`.

``python -m brainsynth.evaluate.report.schema_doc`` prints them; ``--update docs/report-schema.md``
rewrites the generated block of that file in place. A test compares the file with
:func:`schema_markdown`, so the documentation cannot drift from the dataclasses.
"""

from __future__ import annotations

import sys
from pathlib import Path

from brainsynth.evaluate.report.schema import AuditReport, FoldReport, Report, SelfTestReport
from brainsynth.evaluate.report.typed_json import schema_rows

DOC_BEGIN = "<!-- begin generated: python -m brainsynth.evaluate.report.schema_doc --update docs/report-schema.md -->"
DOC_END = "<!-- end generated -->"


def schema_markdown() -> str:
    """One table per file: every key path, its JSON type and its meaning."""
    out = []
    for title, cls in (("report.json", Report), ("fold.json (one fold, before pooling)", FoldReport),
                       ("privacy.json (brainsynth audit)", AuditReport),
                       ("selftest.json (brainsynth audit --selftest)", SelfTestReport)):
        out += [f"### {title}", "", "| key | type | meaning |", "|---|---|---|"]
        out += [f"| `{path}` | {kind} | {doc.replace('|', '/')} |" for path, kind, doc in schema_rows(cls)]
        out.append("")
    return "\n".join(out)


def generated_block(text: str) -> str:
    """The part of a document between :data:`DOC_BEGIN` and :data:`DOC_END` (empty when absent)."""
    _, begin, rest = text.partition(DOC_BEGIN)
    return rest.partition(DOC_END)[0].strip() if begin else ""


def update_doc(path: str | Path) -> None:
    """Replace the generated block of ``path`` with :func:`schema_markdown`."""
    path = Path(path)
    head, begin, rest = path.read_text().partition(DOC_BEGIN)
    if not begin:
        raise SystemExit(f"{path}: no line {DOC_BEGIN!r} to put the tables after")
    tail = rest.partition(DOC_END)[2]
    path.write_text(f"{head}{DOC_BEGIN}\n\n{schema_markdown()}\n{DOC_END}{tail}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--update"] and len(sys.argv) == 3:
        update_doc(sys.argv[2])
    else:
        print(schema_markdown())
