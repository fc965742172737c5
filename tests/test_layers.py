"""The layers are enforced, not only described: ``lint-imports`` (import-linter) checks the contracts in
pyproject.toml, and CI runs it through this test.

Layers (README "Where things live"): common/ -> wav2lip384/, qa/, tts/ (independent of each other) -> services/
-> app.py; nothing below app.py imports gradio; inference never imports the trainers or the benchmarks.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Packages allowed to import the trainers / benchmarks: they ARE them, or they are their command lines.
NOT_INFERENCE = {"wav2lip384.train", "wav2lip384.bench", "services.bench", "services.talk_bench", "services.__main__"}


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
    assert set(c["nothing-imports-app"]["forbidden_modules"]) == {"app", "presenters"}
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


def test_presenters_format_without_gradio():
    """presenters.py (beside app.py, outside the contracts' root packages) turns typed results into text only."""
    tree = ast.parse((ROOT / "presenters.py").read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"gradio", "app"}, imported


def _model_id_literals(tree: ast.AST, ids: set[str]) -> list[tuple[int, str]]:
    """Where a model id is used as data outside the registry: compared against, a dict key or value, an element of a
    literal tuple/list/set, a keyword argument or a parameter default (docstrings and messages do not count)."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            found = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            found = [k for k in node.keys if k is not None] + node.values
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            found = node.elts
        elif isinstance(node, ast.keyword):
            found = [node.value]
        elif isinstance(node, ast.arguments):
            found = [d for d in node.defaults + node.kw_defaults if d is not None]
        else:
            continue
        hits += [(c.lineno, c.value) for c in found if isinstance(c, ast.Constant) and c.value in ids]
    return hits


def test_the_registry_is_the_only_place_for_model_facts():
    """Adding a model = one registry entry (+ config data, + its test rows): no other product module may hold a
    per-model fact (a batch table, a default model, a special case ``if model == "paper384"``, a picker default).
    ``models/config.py`` is exempt: its keys are architecture names, some of which equal a model id."""
    from wav2lip384.models import registry

    ids = set(registry.ids())
    exempt = {"wav2lip384/models/registry.py", "wav2lip384/models/config.py"}
    files = [ROOT / "app.py", *(p for d in ("services", "wav2lip384", "qa", "tts", "common")
                                for p in sorted((ROOT / d).rglob("*.py")))]
    found = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel not in exempt:
            found += [f"{rel}:{line}: {value}" for line, value in
                      _model_id_literals(ast.parse(path.read_text(encoding="utf-8")), ids)]
    assert not found, "per-model facts outside wav2lip384/models/registry.py:\n" + "\n".join(found)


def test_long_modules_and_functions_say_why():
    """No module over ~500 lines and no function over ~80 without a ``size-reason:`` at its top (.ci/sizes.py)."""
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "sizes.py")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, "split these, or write a `# size-reason: ...` line at their top:\n" + done.stdout


def test_readme_where_things_live_matches_the_tree():
    """Every package and module of the layers is named in README's "Where things live", and every path the
    section names in backticks exists."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Where things live"):]
    tree = section[section.index("```\nwav2lip384/"):]
    tree = tree[:tree.index("```", 4)]
    for sub in sorted(p for p in (ROOT / "wav2lip384").iterdir() if (p / "__init__.py").is_file()):
        assert f"  {sub.name}/" in tree, f"wav2lip384/{sub.name}/ missing from README's tree"
        for module in sorted(sub.glob("*.py")):
            if module.stem not in ("__init__", "__main__"):
                assert module.stem in tree, f"wav2lip384/{sub.name}/{module.name} missing from README's tree"
    for pkg in ("services", "common", "qa", "tts"):
        for module in sorted((ROOT / pkg).glob("*.py")):
            if module.stem not in ("__init__", "__main__"):
                assert f"`{module.name}`" in section, f"{pkg}/{module.name} missing from README's Where things live"
    for path in set(re.findall(r"`((?:app|services|common|qa|tts|wav2lip384|docs|tests|\.ci)[\w/.]*)`", section)):
        assert (ROOT / path.rstrip("/")).exists(), f"README names {path}, absent"
