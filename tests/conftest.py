"""Fixtures shared by every test module.

Real media live in ``../shared/data`` (never copied into the project); tests that need them take the
``shared_data`` fixture. Where that area is absent they are skipped with a reason on a developer's machine, and
FAIL where ``DH_REQUIRE_SHARED=1`` (``.ci/run`` sets it): a CI run without the reference outputs must not be green
with none of the conformance tests run.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DH_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
REQUIRE_SHARED = os.environ.get("DH_REQUIRE_SHARED", "") == "1"


def missing_shared(what: str | Path) -> None:
    """A file or folder of ``../shared`` a test needs is absent: fail under ``DH_REQUIRE_SHARED=1``, else skip."""
    reason = f"{what} is absent (set DH_SHARED_DIR to point at the shared area)"
    if REQUIRE_SHARED:
        pytest.fail(f"DH_REQUIRE_SHARED=1 and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    """Tests never reach the network: huggingface_hub fails fast instead of retrying for 25 s."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from common.hub import hub_reachable

    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        missing_shared(f"shared area {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def shared_data(shared_dir) -> Path:
    data = shared_dir / "data"
    if not data.is_dir():
        missing_shared(f"real test media {data}")
    return data


@pytest.fixture(scope="session")
def shared_kb(shared_dir) -> Path:
    kb = shared_dir / "kb"
    if not kb.is_dir():
        missing_shared(f"sample knowledge base {kb}")
    return kb


@pytest.fixture
def out_dir(tmp_path) -> Path:
    """A fresh per-test output directory."""
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
def seeded():
    """Seed python, numpy and torch (when torch is importable); returns the seed."""
    seed = 1234
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard requirement, but keep fixtures import-light
        pass
    return seed


@pytest.fixture(scope="module")
def reference_shapes(shared_dir):
    """Every tensor name and shape of the public Wav2Lip-96 generator and SyncNet checkpoints."""
    ref = shared_dir / "reference" / "wav2lip96_state_dict_shapes.json"
    if not ref.is_file():
        missing_shared(f"reference shape table {ref}")
    return json.loads(ref.read_text())


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: tiny models gain nothing from two, and the CPU is shared."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def load_golden(shared: Path, name: str) -> dict:
    """The arrays of ``../shared/reference/golden/<name>`` (outputs of the public reference code), or skip/fail as
    :func:`missing_shared` says."""
    path = shared / "reference" / "golden" / name
    if not path.is_file():
        missing_shared(path)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
