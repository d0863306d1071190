"""Write docs/configuration.md: every config key, its default, its value in each preset, and its meaning.

The meaning is the comment beside the field in src/brainsynth/config.py, so the page cannot
drift from the code (tests/test_docs.py regenerates it and compares).

    python docs/config_reference.py > docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import inspect

from brainsynth.config import PRESETS, RENAMED_TRAIN_KEYS, SECTIONS, TRAIN_CONFIGS, TrainConfig, load_config


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment on its line in the class source."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        head, sep, comment = line.partition("  # ")
        name = head.strip().split(":", 1)[0]
        if sep and name.isidentifier():
            out[name] = comment.strip()
    return out


def show(value) -> str:
    text = "null" if value is None else str(value).replace("'", "")
    return f"`{text}`".replace("|", "\\|")


def default_of(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def table(prefix: str, fields: list[dataclasses.Field], comments: dict[str, str], cells) -> list[str]:
    """One markdown table: key, default, one column per preset (``cells(field) -> [str]``), meaning."""
    lines = ["| key | default | " + " | ".join(PRESETS) + " | meaning |", "|---|---|" + "---|" * len(PRESETS) + "---|"]
    for f in fields:
        meaning = comments.get(f.name, "").replace("|", "\\|")
        lines.append(f"| `{prefix}.{f.name}` | {show(default_of(f))} | " + " | ".join(cells(f)) + f" | {meaning} |")
    return lines + [""]


def shared_train_cells(presets, f: dataclasses.Field) -> list[str]:
    cells = []
    for p in PRESETS:
        values = [getattr(presets[p].train[m], f.name) for m in TRAIN_CONFIGS]
        same = all(v == values[0] for v in values)
        cells.append(show(values[0]) if same else " / ".join(show(v) for v in values))
    return cells


def page() -> str:
    presets = {p: load_config(p) for p in PRESETS}
    lines = [
        "# Configuration reference",
        "",
        "Every key of a brainsynth configuration, by section. A preset file "
        "(`src/brainsynth/configs/<preset>.yaml`) or your own YAML sets them; `--set SECTION.KEY=VALUE` "
        "changes one on any command.",
        "",
        "Generated from the comments in `src/brainsynth/config.py` by `python docs/config_reference.py`; "
        "do not edit by hand.",
        "",
    ]
    for name, cls in SECTIONS.items():
        lines += [f"## `{name}`", "", (cls.__doc__ or "").strip().split("\n")[0].replace("``", "`"), ""]
        if name == "train":
            lines += train_sections(presets)
            continue
        lines += table(name, dataclasses.fields(cls), field_comments(cls),
                       lambda f, name=name: [show(getattr(getattr(presets[p], name), f.name)) for p in PRESETS])
    return "\n".join(lines)


def train_sections(presets) -> list[str]:
    lines = [
        "Keys every model reads. Each may also be written in a model's own section (`train.pggan.lr`), where it "
        "wins for that model. The preset columns show the resolved value, and where the models differ: the "
        "PGGAN's / the DCGAN's / the diffusion model's.",
        "",
    ]
    lines += table("train", dataclasses.fields(TrainConfig), field_comments(TrainConfig),
                   lambda f: shared_train_cells(presets, f))
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    for model, cls in TRAIN_CONFIGS.items():
        own = [f for f in dataclasses.fields(cls) if f.name not in shared]
        lines += [f"### `train.{model}`", "", (cls.__doc__ or "").strip().split("\n")[0].replace("``", "`"), ""]
        if cls.family_defaults:
            lines += ["Its defaults of shared keys: " + ", ".join(f"`{k}: {show(v)[1:-1]}`"
                                                                 for k, v in cls.family_defaults.items()) + ".", ""]
        lines += table(f"train.{model}", own, field_comments(cls),
                       lambda f, model=model: [show(getattr(presets[p].train[model], f.name)) for p in PRESETS])
    lines += ["### Old names", "",
              "brainsynth 0.1 kept every training key in one flat `train` section. Those names are still read, "
              "with a warning, until the next release; a checkpoint written with them always resumes.", "",
              "| old key | new key |", "|---|---|"]
    lines += [f"| `train.{old}` | `train.{m}.{new}` |" for old, (m, new) in RENAMED_TRAIN_KEYS.items()]
    lines += ["| `train.KEY` of one model family (e.g. `train.widths`, `train.z_dim`) | `train.MODEL.KEY` of every "
              "family that reads it |", ""]
    return lines


if __name__ == "__main__":
    print(page(), end="")
