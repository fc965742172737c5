"""Evaluation: syncnet_python's S model and LSE maths, FID maths, sharpness, and the CLI on a real video.

No published weights are reachable here, so the S model runs with random weights saved to a file (the
loading path is the one real weights take) and FID with a tiny TorchScript stand-in for Inception; the
numbers those give are meaningless, the tests check the plumbing and that every measure says when and why
it is unavailable.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.errors import UserFacingError
from wav2lip384 import evaluate as ev

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def s_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("s") / "syncnet_v2.model"
    torch.save(ev.build_syncnet_s().state_dict(), path)
    return path


def test_syncnet_s_has_syncnet_python_layout_and_shapes():
    m = ev.build_syncnet_s().eval()
    sd = m.state_dict()
    # a few tensors of syncnet_v2.model, by name and shape
    expected = {"netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.18.weight": (512, 256, 5, 4),
                "netcnnlip.0.weight": (96, 3, 5, 7, 7), "netcnnlip.4.weight": (256, 96, 1, 5, 5),
                "netcnnlip.18.weight": (512, 256, 1, 6, 6), "netfcaud.0.weight": (512, 512),
                "netfcaud.3.weight": (1024, 512), "netfclip.3.bias": (1024,), "netcnnlip.19.running_var": (512,)}
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    with torch.no_grad():
        assert m.forward_lip(torch.zeros(2, 3, 5, 224, 224)).shape == (2, 1024)
        assert m.forward_aud(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)


def test_load_syncnet_s_accepts_state_dicts_and_explains_wrong_files(s_weights, tmp_path):
    assert type(ev.load_syncnet_s(s_weights)).__name__ == "SyncNetS"
    prefixed = tmp_path / "prefixed.model"
    torch.save({"state_dict": {"module." + k: v for k, v in torch.load(s_weights).items()}}, prefixed)
    ev.load_syncnet_s(prefixed)
    from wav2lip384.models import build_model

    wav2lip_expert = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": build_model("syncnet", 96).state_dict()}, wav2lip_expert)
    with pytest.raises(UserFacingError, match="Wav2Lip SyncNet"):
        ev.load_syncnet_s(wav2lip_expert)
    with pytest.raises(UserFacingError, match="syncnet_v2.model"):
        ev.load_syncnet_s(tmp_path / "absent.model")


def test_lse_finds_a_known_offset():
    """Audio embedding of window i+3 equals video embedding i -> best offset -3, LSE-D ~0, LSE-C > 0."""
    g = torch.Generator().manual_seed(0)
    n, d = 60, 16
    video = torch.randn(n, d, generator=g)
    audio = torch.randn(n, d, generator=g)
    audio[3:] = video[:-3]
    mean_dist, per = ev.offset_distances(video, audio)
    assert per.shape == (n, 31)
    res = ev.lse_from_distances(mean_dist)
    assert res["av_offset_frames"] == -3
    assert res["lse_c"] > 1.0 and res["lse_d"] < float(mean_dist.median())


def test_mfcc_is_100_hz_13_coefficients():
    wav = np.sin(2 * np.pi * 300 * np.arange(16000) / 16000).astype(np.float32)
    m = ev.mfcc_16k(wav)
    assert m.shape[0] == 13 and abs(m.shape[1] - 100) <= 1 and np.isfinite(m).all()


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert ev.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = a + np.array([1.0, 2.0, 0.0])  # same covariance, mean shifted: FID = |shift|^2 = 5
    assert ev.frechet_distance(a, b) == pytest.approx(5.0, rel=1e-3)


def test_sharpness_drops_when_the_mouth_is_blurred():
    import cv2

    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (4, 128, 128, 3), dtype=np.uint8)
    blurred = np.stack([cv2.GaussianBlur(x, (9, 9), 3) for x in sharp])
    s, b = ev.sharpness(sharp), ev.sharpness(blurred)
    assert b["laplacian_var"] < 0.2 * s["laplacian_var"] and b["hf_energy"] < 0.5 * s["hf_energy"]


def _fake_inception(path):
    import torch.nn.functional as F

    class FakeInception(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return F.adaptive_avg_pool2d(x, 2).flatten(1)  # (N, 12) "features"

    torch.jit.script(FakeInception()).save(str(path))
    return path


@pytest.mark.slow
def test_evaluate_real_video_all_measures(shared_data, s_weights, tmp_path):
    from wav2lip384.faces import HaarDetector
    from wav2lip384.train import tiny
    from wav2lip384.train.loop import TrainConfig, Trainer
    from wav2lip384.train.syncnet import SyncNetTask, SyncNetTrainConfig

    clips = tiny.write_synthetic_clips(tmp_path / "clips", n_frames=20)
    run = Trainer(SyncNetTask(SyncNetTrainConfig(data=str(clips), size=32, model=tiny.tiny_syncnet_config().to_dict())),
                  TrainConfig(out_dir=str(tmp_path / "run"), max_steps=1, batch_size=2, val_samples=0),
                  log=lambda m: None).fit()
    video = shared_data / "video" / "retalking_face2.mp4"
    ref = shared_data / "video" / "sadtalker_WDA_KatieHill_000.mp4"
    out = ev.evaluate(video, ref, lse_syncnet=str(s_weights), inception=str(_fake_inception(tmp_path / "inc.pt")),
                      project_syncnet=str(run.exported), detector=HaarDetector(), max_seconds=1.2)
    json.dumps(out)  # JSON-serialisable
    assert out["frames"] == 30 and out["short_clip"] is True and "4 s" in out["notes"][0]  # scored and flagged
    for who in ("video", "reference"):
        lse = out["lse"][who]
        assert lse["available"] and lse["windows"] == 25 and len(lse["mean_dist_by_offset"]) == 31
        assert lse["lse_c"] >= 0 and -15 <= lse["av_offset_frames"] <= 15
        ps = out["project_syncnet"][who]
        assert ps["available"] and 0 <= ps["sync_prob_at_offset_0"] <= 1
    assert "NOT comparable" in out["project_syncnet"]["label"]
    assert out["fid"]["available"] and out["fid"]["fid"] >= 0
    assert out["sharpness"]["relative"]["laplacian_var"] > 0


@pytest.mark.slow
def test_cli_says_why_measures_are_missing(shared_data, capsys, monkeypatch):
    video = shared_data / "video" / "retalking_face2.mp4"
    monkeypatch.delenv("DH_SYNCNET_CHECKPOINT", raising=False)
    assert ev.main(["--video", str(video), "--max-seconds", "0.16", "--json"]) == 0  # 4 frames
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == 4
    assert not out["lse"]["available"] and "syncnet_v2.model" in out["lse"]["reason"]
    assert not out["fid"]["available"] and "--reference" in out["fid"]["reason"]
    assert not out["project_syncnet"]["available"] and "--project-syncnet" in out["project_syncnet"]["reason"]
    assert out["sharpness"]["available"]


@pytest.mark.slow
def test_too_short_for_a_window_is_explained(shared_data, s_weights):
    from wav2lip384.faces import HaarDetector

    out = ev.evaluate(shared_data / "video" / "retalking_face2.mp4", lse_syncnet=str(s_weights),
                      detector=HaarDetector(), max_seconds=0.16)
    assert out["lse"]["video"]["available"] is False and "too short" in out["lse"]["video"]["reason"]
