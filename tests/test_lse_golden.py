"""Golden outputs: our lip-sync scores are the public protocol's, and our mel front end is Wav2Lip's.

``../shared/reference/golden/syncnet_golden_outputs.npz`` holds what joonson/syncnet_python's own code computes
(``SyncNetInstance.evaluate``: MFCCs, lip and audio embeddings, mean distance per offset, AV offset, LSE-D, LSE-C,
frame-wise confidence) under deterministic weights and inputs, and what Rudrabha/Wav2Lip's ``audio.melspectrogram``
gives for a deterministic waveform (recipes in that folder's README.md, second part). We build the same weights by
the public tensor names (so the key mapping is checked too), feed the same inputs through our code and compare
within the README's tolerances. ``syncnet_v2_state_dict_shapes.json`` lists every tensor of the published
``syncnet_v2.model``: our network must hold exactly those, and load a file in that layout through the same
weights-only path the real file takes.
"""

from __future__ import annotations

import collections
import json
import math

import numpy as np
import pytest
import torch
from conftest import load_golden, missing_shared

from wav2lip384 import evaluate as ev
from wav2lip384.media.audio import melspectrogram

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # reads ../shared

# the README's tolerances for a faithful float32 re-implementation (never loosened)
FEATURES_RTOL = 1e-3  # embeddings and mean distances, relative
SCORES_ATOL = 1e-2  # LSE-D, LSE-C
MFCC_RTOL = 1e-6
MEL_ATOL = 1e-4
T_FRAMES = 40


def golden_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The README's SyncNet recipe for one tensor: s = 2 frac(sin(12.9898 j + 78.233 h) 43758.5453) - 1."""
    n = math.prod(shape)
    if "num_batches_tracked" in name:
        return torch.zeros(shape, dtype=dtype)
    h = sum(ord(c) for c in name) % 997
    r = np.sin(12.9898 * np.arange(n, dtype=np.float64) + 78.233 * h) * 43758.5453
    s = (2 * (r - np.floor(r)) - 1).reshape(shape)
    if name.endswith("running_var"):
        v = 1 + 0.1 * (1 + s)
    elif name.endswith(("running_mean", "bias")):
        v = 0.01 * s
    elif len(shape) == 1:  # BatchNorm weight
        v = 1 + 0.1 * s
    else:  # conv and linear weights
        v = s * math.sqrt(3 * 2.0 / (n / shape[0]))
    return torch.from_numpy(np.ascontiguousarray(v)).to(dtype)


def golden_frames() -> np.ndarray:
    """(T, 224, 224, 3) uint8 in cv2.imread's channel order, with a dark 'mouth' whose height changes."""
    y, x = np.meshgrid(np.arange(224), np.arange(224), indexing="ij")
    frames = []
    for t in range(T_FRAMES):
        f = np.stack([np.clip(np.round(127.5 + 100 * np.sin(0.05 * x + 0.07 * y + 0.3 * c + 1.1 * t)), 0, 255)
                      for c in range(3)], axis=-1).astype(np.uint8)
        h = int(20 + 30 * abs(math.sin(0.9 * t)))
        f[150 - h // 2:150 + h // 2, 80:144] = 20
        frames.append(f)
    return np.stack(frames)


def golden_audio() -> np.ndarray:
    """The README's int16 speech stand-in (25600 samples = 40 frames at 16 kHz), as float samples in [-1, 1]."""
    n = np.arange(25600)
    f = n // 640
    pcm = np.round(8000 * (0.3 + 0.7 * np.abs(np.sin(1.3 * f))) * np.sin(2 * np.pi * (150 + 40 * (f % 7)) * n / 16000))
    return pcm.astype(np.int16).astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def golden(shared_dir):
    return load_golden(shared_dir, "syncnet_golden_outputs.npz")


@pytest.fixture(scope="module")
def published_shapes(shared_dir) -> dict[str, list[int]]:
    path = shared_dir / "reference" / "syncnet_v2_state_dict_shapes.json"
    if not path.is_file():
        missing_shared(path)
    return json.loads(path.read_text())["syncnet_v2"]


@pytest.fixture(scope="module")
def golden_model_file(tmp_path_factory, published_shapes) -> str:
    """The golden weights saved as the published file is: one state dict in the shapes file's key order, in
    PyTorch's pre-1.6 (non-zip) format, read back through :func:`load_syncnet_s` like the real file."""
    state = collections.OrderedDict((k, golden_tensor(k, tuple(s), torch.int64 if "num_batches" in k else torch.float32))
                                    for k, s in published_shapes.items())
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return str(path)


@pytest.fixture(scope="module")
def ours(golden_model_file):
    model = ev.load_syncnet_s(golden_model_file)
    feats = ev.syncnet_features(model, golden_frames(), golden_audio())
    mean_dist, per = ev.offset_distances(feats["lip"], feats["audio"])
    return feats | {"mdist": mean_dist, "scores": ev.lse_from_distances(mean_dist, per), "model": model}


def test_evaluation_network_holds_the_published_tensors_key_for_key(published_shapes):
    own = {k: list(v.shape) for k, v in ev.build_syncnet_s().state_dict().items()}
    assert list(own) == list(published_shapes)  # same names, same order
    assert own == published_shapes


def test_published_layout_loads_weights_only_with_provenance(ours, golden_model_file):
    prov = ours["model"].provenance
    assert prov.origin == "local" and prov.path == golden_model_file and len(prov.sha256) == 64
    assert not ours["model"].training


def test_mfcc_matches_syncnet_python(golden):
    ref = golden["syncnet_mfcc"]
    got = ev.mfcc_16k(golden_audio())
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=MFCC_RTOL, atol=0)


@pytest.mark.parametrize("ours_key, golden_key", [("lip", "syncnet_lip_features"), ("audio", "syncnet_audio_features")])
def test_embeddings_match_syncnet_python(ours, golden, ours_key, golden_key):
    got, ref = ours[ours_key].numpy(), golden[golden_key]
    assert got.shape == ref.shape == (35, 1024)  # lastframe = min(40, 25600 // 640) - 5 windows
    # relative to the features' scale: single elements near zero have no meaningful relative error
    np.testing.assert_allclose(got, ref, rtol=FEATURES_RTOL, atol=FEATURES_RTOL * np.abs(ref).max())


def test_offsets_and_scores_match_syncnet_python(ours, golden):
    np.testing.assert_allclose(ours["mdist"].numpy(), golden["syncnet_mdist"], rtol=FEATURES_RTOL)
    s = ours["scores"]
    assert s["av_offset_frames"] == int(golden["syncnet_offset"])  # exact
    assert s["lse_d"] == pytest.approx(float(golden["syncnet_min_dist"]), abs=SCORES_ATOL)
    assert s["lse_c"] == pytest.approx(float(golden["syncnet_conf"]), abs=SCORES_ATOL)
    ref = golden["syncnet_framewise_conf"]
    np.testing.assert_allclose(s["framewise_conf"], ref, rtol=FEATURES_RTOL, atol=SCORES_ATOL)


def test_lse_scores_is_the_same_computation(ours, golden):
    """The entry the CLI and Compare call gives the golden figures too (rounded for JSON)."""
    s = ev.lse_scores(ours["model"], golden_frames(), golden_audio())
    assert s["windows"] == 35 and s["av_offset_frames"] == int(golden["syncnet_offset"])
    assert s["lse_d"] == pytest.approx(float(golden["syncnet_min_dist"]), abs=SCORES_ATOL)
    assert s["lse_c"] == pytest.approx(float(golden["syncnet_conf"]), abs=SCORES_ATOL)
    np.testing.assert_allclose(s["framewise_conf"], golden["syncnet_framewise_conf"], atol=SCORES_ATOL)


def test_mel_front_end_matches_wav2lip(golden):
    n = np.arange(16000)
    wav = (0.5 * np.sin(2 * np.pi * 220 * n / 16000) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * n / 16000))).astype(np.float32)
    got, ref = melspectrogram(wav), golden["wav2lip_mel"]
    assert got.shape == ref.shape == (80, 81)
    assert float(np.abs(got - ref).max()) <= MEL_ATOL
