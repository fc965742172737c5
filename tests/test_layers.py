"""The layers are enforced, not only described: ``lint-imports`` (import-linter) checks the contracts in
pyproject.toml, and CI runs it through this test.

Layers (README "Where things live"): common/ -> wav2lip384/, qa/, tts/ (independent of each other) -> services/
-> app.py; nothing below app.py imports gradio; inference never imports the trainers or the benchmarks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Packages allowed to import the trainers / benchmarks: they ARE them, or they are their command lines.
NOT_INFERENCE = {"wav2lip384.train", "wav2lip384.bench", "services.bench", "services.__main__"}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def _lint_imports() -> list[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:  # pinned in requirements-dev.txt: missing means the dev requirements were not installed
        pytest.fail("lint-imports not found: pip install -r requirements-dev.txt (import-linter)")
    return [exe]


def test_lint_imports_keeps_every_contract():
    done = subprocess.run(_lint_imports(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"lint-imports found a layer violation:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    assert "0 broken" in done.stdout, done.stdout[-3000:]


def test_the_contracts_cover_the_rules():
    c = _contracts()
    assert c["layers"]["layers"] == ["services", "wav2lip384 | qa | tts", "common"]
    assert set(c["foundation"]["forbidden_modules"]) == {"app", "services", "wav2lip384", "qa", "tts"}
    assert set(c["no-gradio-below-app"]["source_modules"]) == {"services", "wav2lip384", "qa", "tts", "common"}
    assert set(c["nothing-imports-app"]["forbidden_modules"]) == {"app"}
    assert set(c["inference-without-training"]["forbidden_modules"]) == {"wav2lip384.train", "wav2lip384.bench"}


def test_every_inference_module_is_under_the_training_contract():
    """A new sub-package of wav2lip384 or a new services module is inference unless it is named in NOT_INFERENCE:
    the forbidden contract lists its sources one by one, so this test keeps that list complete."""
    listed = set(_contracts()["inference-without-training"]["source_modules"])
    found = set()
    for child in sorted((ROOT / "wav2lip384").iterdir()):
        if child.is_dir() and (child / "__init__.py").is_file():
            found.add(f"wav2lip384.{child.name}")
        elif child.suffix == ".py" and child.name != "__init__.py":
            found.add(f"wav2lip384.{child.stem}")
    for child in sorted((ROOT / "services").glob("*.py")):
        if child.name != "__init__.py":
            found.add(f"services.{child.stem}")
    missing = sorted(found - NOT_INFERENCE - listed)
    assert not missing, f"add these to the inference-without-training contract in pyproject.toml: {missing}"
    assert not (listed & NOT_INFERENCE)
