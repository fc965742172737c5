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
    assert not out["fid"]["available"] and "--source" in out["fid"]["reason"]
    assert not out["project_syncnet"]["available"] and "--project-syncnet" in out["project_syncnet"]["reason"]
    assert out["sharpness"]["available"]


@pytest.mark.slow
def test_too_short_for_a_window_is_explained(shared_data, s_weights):
    from wav2lip384.faces import HaarDetector

    out = ev.evaluate(shared_data / "video" / "retalking_face2.mp4", lse_syncnet=str(s_weights),
                      detector=HaarDetector(), max_seconds=0.16)
    assert out["lse"]["video"]["available"] is False and "too short" in out["lse"]["video"]["reason"]


# ------------------------------------------------------------------------------------ the mouth in pauses
def test_pause_motion_measures_the_mouth_only_while_the_speech_pauses():
    rng = np.random.default_rng(0)
    n = 30  # frames at 25 fps; speech in 0..9 and 20..29, a pause (digital silence) in 10..19
    t = np.arange(n * 640) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    wav[10 * 640:20 * 640] = 0
    still = np.full((n, 64, 64, 3), 128, np.uint8)
    still[:10] = rng.integers(0, 255, (10, 64, 64, 3), dtype=np.uint8)  # the mouth moves while speaking only
    res = ev.pause_motion(still, wav)
    assert res["pause_motion"] == 0.0 and res["pause_seconds"] == pytest.approx(0.4) and res["pauses"] == 1
    moving = still.copy()
    moving[10:20, 32:] = rng.integers(0, 255, (10, 32, 64, 3), dtype=np.uint8)  # the lower half moves in the pause
    assert ev.pause_motion(moving, wav)["pause_motion"] > 50
    moving_top = still.copy()
    moving_top[10:20, :32] = rng.integers(0, 255, (10, 32, 64, 3), dtype=np.uint8)  # eyes, not mouth
    assert ev.pause_motion(moving_top, wav)["pause_motion"] == 0.0
    # a gap shorter than a pause (3 frames = 120 ms) is not one
    wav2 = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    wav2[10 * 640:13 * 640] = 0
    assert ev.pause_motion(still, wav2) == {"pause_seconds": 0.0, "pauses": 0, "pause_motion": None}


def test_compare_scores_table_hides_lip_sync_with_one_calm_line_without_weights():
    from presenters import scores_markdown
    from services.scores import NO_SYNCNET, ModelScores, ScoresReport

    rows = [ModelScores("wav2lip96", "Wav2Lip 96", sharpness=12.3, pause_motion=0.5),
            ModelScores("wav2lip256", "Wav2Lip 256", note="no video to measure.")]
    off = scores_markdown(ScoresReport(rows=rows, notice=NO_SYNCNET))
    assert "Lip-sync distance" not in off and off.count(NO_SYNCNET) == 1
    assert "Mouth sharpness (higher is sharper)" in off and "(lower is stiller)" in off and "0.50" in off
    rows[0].lse_d, rows[0].lse_c, rows[0].av_offset = 7.1, 1.234, 0
    on = scores_markdown(ScoresReport(rows=rows, syncnet_ok=True))
    assert "Lip-sync distance (lower is better)" in on and "Lip-sync confidence (higher is better)" in on
    assert "| 7.10 | 1.23 | 0 frames (in step) |" in on and NO_SYNCNET not in on


# ------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def published_syncnet(tmp_path_factory):
    """Random weights in the published syncnet_v2.model layout: one state dict of S's tensors by name, saved in
    PyTorch's pre-1.6 (non-zip) format; read through the same weights-only, key-for-key path as the real file."""
    import collections

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("published") / "syncnet_v2.model"
    torch.save(collections.OrderedDict(ev.build_syncnet_s().state_dict()), path, _use_new_zipfile_serialization=False)
    return path


@pytest.mark.slow
def test_cli_and_compare_scores_end_to_end(shared_data, published_syncnet, tmp_path, capsys):
    """A random 96 generator renders a clip with a pause; the Compare scores (services) and the CLI (with the real
    source video beside it) measure it with the published-layout SyncNet; without the weights, one calm line."""
    import dataclasses

    import soundfile as sf

    from common.audio import load_audio
    from common.settings import Settings
    from presenters import scores_markdown
    from services import CLOSEUP_AVATAR, EXAMPLES, AppServices
    from services.scores import NO_SYNCNET
    from wav2lip384.models import Wav2LipGenerator, registry
    from wav2lip384.weights import save_pretrained

    torch.manual_seed(0)
    save_pretrained(Wav2LipGenerator(registry.get("wav2lip96").config()), tmp_path / "w96")
    speech = load_audio(EXAMPLES / "speech_en.ogg")
    wave = np.concatenate([speech[:16000], np.zeros(6400, np.float32), speech[16000:25600]])  # 2 s, a 0.4 s pause
    sf.write(tmp_path / "speech.wav", wave, 16000)
    settings = Settings(syncnet_checkpoint=str(published_syncnet), cache_dir=str(tmp_path / "cache")).with_weights(
        {"DH_WAV2LIP96_CHECKPOINT": str(tmp_path / "w96")})
    svc = AppServices(settings, tmp_parent=tmp_path / "out")
    try:
        res = svc.compare(CLOSEUP_AVATAR, audio=str(tmp_path / "speech.wav"), models=["wav2lip96"])["wav2lip96"]
        report = svc.scores.score([("wav2lip96", res.path), ("wav2lip256", None)])
        row = report.rows[0]
        assert report.syncnet_ok and "sha256" in report.weights and not report.notice
        assert row.lse_d > 0 and row.lse_c >= 0 and -15 <= row.av_offset <= 15 and row.short_clip
        assert row.sharpness == pytest.approx(res.clarity)  # the one sharpness figure, as under the video
        assert row.pause_motion is not None and row.pause_seconds >= 0.3
        assert len(report.rows) == 1 and "lower is better" in scores_markdown(report)  # no video, no row
        off = type(svc.scores)(dataclasses.replace(settings, syncnet_checkpoint=""), svc.face_detector)
        calm = off.score([("wav2lip96", res.path)])
        assert not calm.syncnet_ok and calm.notice == NO_SYNCNET and calm.rows[0].sharpness == pytest.approx(res.clarity)

        # the CLI, with the source video beside it
        source = shared_data / "video" / "retalking_face2.mp4"
        assert ev.main(["--video", str(res.path), "--source", str(source), "--lse-syncnet", str(published_syncnet),
                        "--max-seconds", "2"]) == 0
        text = capsys.readouterr().out
        assert "video" in text and "source" in text and text.count("LSE-D") == 2 and "AV offset" in text
        assert ev.main(["--video", str(res.path), "--lse-syncnet", str(published_syncnet), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["lse"]["video"]["lse_d"] == pytest.approx(row.lse_d, abs=1e-3)
        assert len(out["lse"]["video"]["framewise_conf"]) == out["lse"]["video"]["windows"]

        # the function the precision gate calls
        lse = ev.lse_of(res.path, syncnet=str(published_syncnet))
        assert set(lse) >= {"lse_d", "lse_c", "av_offset_frames", "weights"}
    finally:
        svc.close()


def test_default_weights_are_latentsyncs_hub_copy_with_a_plain_offline_message():
    from common.settings import Settings

    assert ev.DEFAULT_SYNCNET == Settings().syncnet_checkpoint == "ByteDance/LatentSync-1.5:auxiliary/syncnet_v2.model"
    prov = ev.syncnet_provenance()
    assert prov.origin == "hub" and prov.published and "not downloaded yet" in prov.describe()
    with pytest.raises(UserFacingError, match="not reachable") as err:  # HF_HUB_OFFLINE=1 in tests
        ev.load_syncnet_s()
    assert "DH_SYNCNET_CHECKPOINT" in str(err.value) and "syncnet_v2.model" in str(err.value)
    assert ev.syncnet_provenance("").origin == "none"
