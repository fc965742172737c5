"""``python -m wav2lip384.infer``: JSON on stdout, user errors on stderr with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from wav2lip384.infer import main

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_384_without_weights_says_how_to_get_them(tmp_path, capsys, monkeypatch):
    import cv2

    monkeypatch.delenv("DH_WAV2LIP384_CHECKPOINT", raising=False)
    monkeypatch.setenv("DH_CACHE_DIR", str(tmp_path / "cache"))
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    sf.write(str(tmp_path / "y.wav"), np.zeros(1600, np.float32), 16000)
    code = main(["--face", str(tmp_path / "x.png"), "--audio", str(tmp_path / "y.wav"), "--out", str(tmp_path / "o.mp4"),
                 "--model", "384"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "384" in err


def test_missing_files_exit_2_before_loading_a_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DH_CACHE_DIR", str(tmp_path / "cache"))
    code = main(["--face", str(tmp_path / "nobody.png"), "--audio", "y.wav", "--out", str(tmp_path / "o.mp4"),
                 "--checkpoint", str(tmp_path / "no-weights-needed")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "face.png").write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)  # a JPEG named .png
    code = main(["--face", str(tmp_path / "face.png"), "--audio", "y.wav", "--out", str(tmp_path / "o.mp4")])
    assert code == 2 and "not a valid PNG" in capsys.readouterr().err


def test_python_m_entry_point_exits_2_on_user_errors(tmp_path):
    env = {**__import__("os").environ, "DH_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "wav2lip384.infer", "--face", str(tmp_path / "none.mp4"),
                           "--audio", "a.wav", "--out", str(tmp_path / "o.mp4")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and proc.stdout == ""


@pytest.mark.slow
def test_cli_end_to_end_prints_json(shared_data, tmp_path, capsys, monkeypatch):
    import torch

    from wav2lip384.models import build_model
    from wav2lip384.weights import save_pretrained

    torch.manual_seed(0)
    save_pretrained(build_model("generator", 96), tmp_path / "w96")
    data, sr = sf.read(str(shared_data / "audio" / "wenet_aishell-BAC009S0724W0121_zh.wav"), dtype="float32")
    sf.write(str(tmp_path / "a.wav"), data[: int(0.6 * sr)], sr)
    monkeypatch.setenv("DH_CACHE_DIR", str(tmp_path / "cache"))
    code = main(["--face", str(shared_data / "image" / "sadtalker_happy.png"), "--audio", str(tmp_path / "a.wav"),
                 "--out", str(tmp_path / "o.mp4"), "--model", "96", "--checkpoint", str(tmp_path / "w96"),
                 "--batch-size", "8", "--no-smooth", "--pads", "0", "12", "0", "0"])
    out = capsys.readouterr()
    assert code == 0, out.err
    res = json.loads(out.out)
    assert res["output_path"] == str(tmp_path / "o.mp4") and (tmp_path / "o.mp4").stat().st_size > 0
    assert res["n_frames"] == 15 and res["fps"] == 25.0 and (res["width"], res["height"]) == (256, 256)
    assert res["detector"].startswith("opencv-haar") and "model" in res and res["timings"]["total"] > 0
    assert np.isclose(res["duration_s"], 0.6)
    assert list((tmp_path / "cache" / "avatars").iterdir())  # DH_CACHE_DIR was used for the avatar cache


def _public_pth(model_id: str, path, seed: int = 0):
    """Random weights of ``model_id``'s architecture saved as its public file is: {"state_dict" (``module.``
    prefixes), "optimizer", "global_step"}."""
    import torch

    from wav2lip384.models import build_model
    from wav2lip384.weights import generator_config

    torch.manual_seed(seed)
    gen = build_model("generator", generator_config(model_id)).eval()
    sd = {"module." + k: v for k, v in gen.state_dict().items()}
    torch.save({"state_dict": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": []}]},
                "global_step": 250000}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("model_id,face,seconds", [
    ("wav2lip256", "video/retalking_face2.mp4", 0.8),
    ("livetalking384", "image/sadtalker_happy.png", 0.6),
])
def test_cli_public_families_write_the_right_mp4(shared_data, tmp_path, capsys, monkeypatch, model_id, face, seconds):
    from wav2lip384.media.video import open_video, probe

    ckpt = _public_pth(model_id, tmp_path / f"{model_id}.pth")
    data, sr = sf.read(str(shared_data / "audio" / "wenet_aishell-BAC009S0724W0121_zh.wav"), dtype="float32")
    sf.write(str(tmp_path / "a.wav"), data[: int(seconds * sr)], sr)
    monkeypatch.setenv("DH_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "o.mp4"
    code = main(["--face", str(shared_data / face), "--audio", str(tmp_path / "a.wav"), "--out", str(out),
                 "--model", model_id, "--checkpoint", str(ckpt)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    res = json.loads(printed.out)
    assert res["model"] == model_id and res["crop_policy"] == "stretch"
    src = open_video(shared_data / face, max_frames=1)
    src_size = (src.width, src.height)
    src.close()
    info = probe(out)
    assert info.audio, "no audio track"
    assert (info.video[0]["width"], info.video[0]["height"]) == (src_size[0] + src_size[0] % 2,
                                                               src_size[1] + src_size[1] % 2)
    assert abs(info.duration_s - seconds) <= 1 / res["fps"] + 0.05
    assert abs(res["duration_s"] - seconds) <= 1 / res["fps"] + 1e-6
    load = res["weights_load"]
    assert load["model"] == model_id and load["wrote_cache"] and load["source_bytes"] > load["cache_bytes"] > 0
    assert list((tmp_path / "cache" / "weights").glob(f"{model_id}--*.safetensors"))  # the weights-only copy


def test_unknown_model_id_is_a_user_error(tmp_path, capsys, monkeypatch):
    import cv2

    monkeypatch.setenv("DH_CACHE_DIR", str(tmp_path / "cache"))
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    sf.write(str(tmp_path / "y.wav"), np.zeros(1600, np.float32), 16000)
    code = main(["--face", str(tmp_path / "x.png"), "--audio", str(tmp_path / "y.wav"), "--out", str(tmp_path / "o.mp4"),
                 "--model", "wav2lip512"])
    err = capsys.readouterr().err
    assert code == 2 and "wav2lip512" in err and "livetalking384" in err
