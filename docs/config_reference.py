"""Write docs/configuration.md: every config key, its default, its value in each preset, and its meaning.

The meaning is the comment beside the field in src/brainsynth/config.py, so the page cannot
drift from the code (tests/test_docs.py regenerates it and compares).

    python docs/config_reference.py > docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import inspect

from brainsynth import config as cfgmod
from brainsynth.config import MODELS, PRESETS, SECTIONS, load_config


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


def page() -> str:
    presets = {p: load_config(p) for p in PRESETS}
    lines = [
        "# Configuration reference",
        "",
        "Every key of a brainsynth configuration, by section. A preset file "
        "(`src/brainsynth/configs/<preset>.yaml`) or your own YAML sets them; `--set SECTION.KEY=VALUE` "
        "changes one on any command. `train` keys can also be set per model: `train.pggan.KEY`, "
        "`train.dcgan.KEY`, `train.ddpm.KEY`. The preset columns show the resolved value (for `train`, where "
        "the models differ: the PGGAN's / the DCGAN's / the diffusion model's).",
        "",
        "Generated from the comments in `src/brainsynth/config.py` by `python docs/config_reference.py`; "
        "do not edit by hand.",
        "",
    ]
    for name, cls in SECTIONS.items():
        lines += [f"## `{name}`", "", (cls.__doc__ or "").strip().split("\n")[0].replace("``", "`"), ""]
        lines += ["| key | default | " + " | ".join(PRESETS) + " | meaning |",
                  "|---|---|" + "---|" * len(PRESETS) + "---|"]
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            if f.name == "model":
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            cells = []
            for p in PRESETS:
                if name == "train":
                    values = [getattr(presets[p].train[m], f.name) for m in MODELS]
                    same = all(v == values[0] for v in values)
                    cells.append(show(values[0]) if same else " / ".join(show(v) for v in values))
                else:
                    cells.append(show(getattr(getattr(presets[p], name), f.name)))
            meaning = comments.get(f.name, "").replace("|", "\\|")
            lines.append(f"| `{name}.{f.name}` | {show(default)} | " + " | ".join(cells) + f" | {meaning} |")
        lines.append("")
    lines += [f"Model defaults under the preset (DCGAN, Radford et al. 2016): `{cfgmod.MODEL_DEFAULTS['dcgan']}`; "
              f"(diffusion model, Ho et al. 2020): `{cfgmod.MODEL_DEFAULTS['ddpm']}`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(page(), end="")
