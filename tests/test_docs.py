"""Generated documentation stays in step with the code."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_current():
    page = _load(ROOT / "docs" / "config_reference.py").page()
    assert (ROOT / "docs" / "configuration.md").read_text() == page, (
        "docs/configuration.md is stale: run  python docs/config_reference.py > docs/configuration.md")
    for key in ("prepare.size", "train.lr", "evaluate.features", "audit.percentile", "run.models"):
        assert f"`{key}`" in page
