"""render.gpu: the ZeroGPU wrapper is a no-op without ``spaces``; the measured precision choice on CUDA (skips
without a GPU)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from wav2lip384.render import gpu


def test_on_gpu_is_a_no_op_without_spaces(monkeypatch):
    monkeypatch.setattr(gpu, "zero_gpu_available", lambda: False)

    def render(x):
        return x + 1

    assert gpu.on_gpu(render) is render
    assert gpu.on_gpu(duration=60)(render) is render


def test_on_gpu_uses_spaces_gpu_when_present(monkeypatch):
    calls = []

    class FakeSpaces(types.ModuleType):
        def GPU(self, fn=None, duration=None):  # noqa: N802 (the package's name)
            if fn is None:
                return lambda f: calls.append(("duration", duration)) or f
            calls.append(("plain", None))
            return fn

    monkeypatch.setitem(sys.modules, "spaces", FakeSpaces("spaces"))
    monkeypatch.setattr(gpu, "zero_gpu_available", lambda: True)
    f = lambda: 1  # noqa: E731
    assert gpu.on_gpu(f)() == 1 and gpu.on_gpu(f, duration=90)() == 1
    assert calls == [("plain", None), ("duration", 90)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_precision_is_measured_and_verified(tmp_path):
    from wav2lip384.models import build_model
    from wav2lip384.render.optimize import MAX_MEAN_DIFF_LEVELS, MAX_P99_DIFF_LEVELS, optimize_generator

    torch.manual_seed(0)
    g = build_model("generator", 96).eval().cuda()
    fast = optimize_generator(g, batch_size=32, cache_dir=tmp_path)
    p = fast.precision
    assert set(p["candidates"]) >= {"torch-fp32", "torch-fp16"} and p["chosen"] in p["candidates"]
    assert p["mean_diff_levels"] <= MAX_MEAN_DIFF_LEVELS and p["p99_diff_levels"] <= MAX_P99_DIFF_LEVELS


def test_the_apps_render_calls_are_registered_with_spaces_gpu_on_a_space(tmp_path):
    """On a ZeroGPU Space a GPU is attached only inside ``spaces.GPU`` functions, registered at import: the
    services' two render calls (whole video, streamed answer) are. A fake ``spaces`` package on the path of a
    child process records what it decorates."""
    import subprocess
    from pathlib import Path

    fake = tmp_path / "spaces"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "seen = []\n"
        "def GPU(fn=None, duration=None):\n"
        "    if fn is None:\n"
        "        return lambda f: (seen.append((f.__name__, duration)), f)[1]\n"
        "    seen.append((fn.__name__, None))\n"
        "    return fn\n")
    code = "import spaces, services.rendering; print(sorted(spaces.seen))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{root}", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[('lipsync', 120), ('lipsync_stream', 120)]"
