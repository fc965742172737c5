"""Golden outputs: our generators reproduce the public reference code's forward pass.

``../shared/reference/golden/generator_golden_outputs.npz`` holds, for three public Wav2Lip-family generators,
the output of their own published code under deterministic weights and inputs (recipe in that folder's
README.md). We build the same weights *by the public tensor names* (so the key mapping is checked too), feed the
same inputs and compare:
  (a) plain fp32 eager;
  (b) the default exact transforms forced to fp32 (BN folded, channels_last, lower-half decoding): every row the
      cut decoder computes, through ``forward`` (video avatars) and through encode-once + ``decode`` with trimmed
      features (what the pipeline's feature cache feeds).
Key-for-key shape checks cannot catch a wrong activation, skip order, attention or output non-linearity; these can.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import load_golden

from wav2lip384.models import build_model
from wav2lip384.render.optimize import EXACT_ATOL, OptimizeConfig, optimize_generator

pytestmark = pytest.mark.slow  # reads ../shared; the 172.7 M-parameter model takes a few seconds per pass

# registry id -> (architecture, golden array, GAIN of the recipe)
CASES = {
    "wav2lip96": ("wav2lip96", "wav2lip96", 2.0),
    "wav2lip256": ("wav2lip_v2_256", "wav2lip_v2_256", 2.0),
    "livetalking384": ("livetalking384_sam", "livetalking384_sam", 0.8),
}
GOLDEN_ATOL = 1e-4  # max abs difference on outputs in [0, 1] (the bound; ~0.03 of an 8-bit level)


def deterministic_tensor(name: str, shape: tuple[int, ...], gain: float, dtype: torch.dtype) -> torch.Tensor:
    """The README's recipe for one public tensor: s = sin(0.37 j + h) (float64), h = sum of code points mod 997."""
    n = math.prod(shape)
    if "num_batches_tracked" in name:
        return torch.zeros(shape, dtype=dtype)
    h = sum(ord(c) for c in name) % 997
    s = np.sin(0.37 * np.arange(n, dtype=np.float64) + h).reshape(shape)
    if name.endswith("running_var"):
        v = 1 + 0.1 * (1 + s)
    elif name.endswith(("running_mean", "bias")):
        v = 0.01 * s
    elif len(shape) == 1:  # BatchNorm weight
        v = 1 + 0.1 * s
    else:  # conv / transposed-conv kernel
        v = s * math.sqrt(gain / (n / shape[0]))
    return torch.from_numpy(np.ascontiguousarray(v)).to(dtype)


def deterministic_generator(arch: str, gain: float) -> torch.nn.Module:
    """Our generator for ``arch`` with every tensor set by the recipe (built on the meta device: no random init)."""
    with torch.device("meta"):
        model = build_model("generator", arch)
    state = {k: deterministic_tensor(k, tuple(v.shape), gain, v.dtype) for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)
    return model.eval()


def deterministic_inputs(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mel (1, 1, 80, 16) and face (1, 6, S, S) of the recipe (float32)."""
    i, t = np.meshgrid(np.arange(80), np.arange(16), indexing="ij")
    mel = 2 * np.sin(0.3 * i + 0.11 * t)  # (80, 16)
    c, y, x = np.meshgrid(np.arange(6), np.arange(size), np.arange(size), indexing="ij")
    face = 0.5 + 0.4 * np.sin(0.05 * x * 96 / size + 0.07 * y * 96 / size + c)  # (6, S, S)
    face[:3, size // 2:] = 0  # masked target
    return (torch.from_numpy(mel).float()[None, None], torch.from_numpy(face).float()[None])


@pytest.fixture(scope="module")
def golden(shared_dir):
    return load_golden(shared_dir, "generator_golden_outputs.npz")


@pytest.fixture(scope="module", params=list(CASES))
def case(request, golden, one_torch_thread):
    """(model id, deterministic plain model, mel, face, golden (3, S, S) tensor) — one model in memory at a time."""
    arch, key, gain = CASES[request.param]
    model = deterministic_generator(arch, gain)
    mel, face = deterministic_inputs(model.img_size)
    yield request.param, model, mel, face, torch.from_numpy(golden[key])
    del model


def test_plain_fp32_reproduces_the_reference_code(case):
    model_id, model, mel, face, ref = case
    with torch.inference_mode():
        out = model(mel, face)[0]  # (3, S, S)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= GOLDEN_ATOL, model_id


def test_default_exact_transforms_reproduce_the_reference_code_on_every_computed_row(case):
    model_id, model, mel, face, ref = case
    fast = optimize_generator(model, OptimizeConfig(dtype="fp32"))  # BN folded + channels_last + lower half
    r = fast.first_row
    assert 0 < r < model.img_size // 2 and fast.precision["dtype"] == "fp32"
    with torch.inference_mode():
        video = fast(mel, face)[0]  # full forward, lower half only
        feats = fast.trim_feats(fast.encode_faces(face))  # what a video avatar's feature cache keeps
        photo = fast.decode(fast.encode_audio(mel.expand(2, -1, -1, -1)), feats)  # batch-1 features broadcast
    assert (video[:, r:] - ref[:, r:]).abs().max().item() <= GOLDEN_ATOL, model_id
    assert torch.equal(video[:, :1], face[0, 3:6, :1])  # above the cut: the reference face (never pasted)
    for item in photo:
        assert (item[:, r:] - ref[:, r:]).abs().max().item() <= GOLDEN_ATOL, model_id
    assert sum(f.numel() for f in feats) < sum(f.numel() for f in fast.encode_faces(face))
    assert EXACT_ATOL <= GOLDEN_ATOL
