"""Preprocessing: real videos -> square face crops at the requested size, 25 fps frames matching 16 kHz audio."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import missing_shared

from wav2lip384.train import preprocess as pp

SIZE = 96


@pytest.fixture(scope="module")
def processed(shared_data, tmp_path_factory):
    """Two real videos (30 fps and 25 fps sources) preprocessed at 96 px."""
    from wav2lip384 import faces

    videos = [shared_data / "video" / "retalking_face4.mp4", shared_data / "video" / "retalking_face2.mp4"]
    for v in videos:
        if not v.is_file():
            missing_shared(v)
    out = tmp_path_factory.mktemp("pp")
    # detection on frames downscaled to 320 px keeps this quick; the faces here are 300+ px wide
    report = pp.preprocess(videos, out, pp.PreprocessConfig(size=SIZE, detect_max_side=320), faces.build_detector())
    return out, report


@pytest.mark.slow
def test_crops_are_square_at_the_requested_size(processed):
    import cv2

    out, report = processed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["size"] == SIZE and manifest["fps"] == 25 and manifest["clips"]
    for clip in manifest["clips"]:
        frames = sorted((out / clip["dir"]).glob("*.jpg"))
        assert len(frames) == clip["n_frames"]
        for f in frames[:: max(1, len(frames) // 5)]:
            assert cv2.imread(str(f)).shape == (SIZE, SIZE, 3)


@pytest.mark.slow
def test_frame_count_matches_duration_and_audio(processed):
    import soundfile as sf

    from wav2lip384.media.audio import load_audio
    from wav2lip384.media.video import open_video

    out, report = processed
    manifest = json.loads((out / "manifest.json").read_text())
    for video in report["per_video"]:
        stream = open_video(video["path"])
        n_src = sum(1 for _ in stream.frames)  # count the decoded source frames independently
        audio_s = len(load_audio(video["path"], max_seconds=None)) / 16000
        duration = min(n_src / stream.fps, audio_s)  # the part of the recording with both picture and sound
        # the 25 fps sequence covers the recording: duration x 25 within one frame
        assert abs(video["frames_25fps"] - duration * 25) <= 1.0, (video, duration)
        clips = [c for c in manifest["clips"] if c["source"] == video["source"]]
        kept = sum(c["n_frames"] for c in clips) + sum(d["frames"][1] - d["frames"][0] for d in video["dropped"])
        assert kept == video["frames_25fps"]  # every frame is in a kept or a reported dropped clip
    for clip in manifest["clips"]:
        data, rate = sf.read(out / clip["dir"] / "audio.wav")
        assert rate == 16000 and data.ndim == 1
        assert len(data) == clip["n_frames"] * 640  # exactly 1/25 s of audio per frame
        assert abs(len(data) / 16000 * 25 - clip["n_frames"]) < 1


@pytest.mark.slow
def test_clip_audio_is_the_recordings_audio_at_the_clip_position(processed):
    import soundfile as sf

    from wav2lip384.media.audio import load_audio

    out, report = processed
    manifest = json.loads((out / "manifest.json").read_text())
    by_source = {v["source"]: v["path"] for v in report["per_video"]}
    clip = max(manifest["clips"], key=lambda c: c["start_s"])  # a clip that does not start at 0
    full = load_audio(by_source[clip["source"]], max_seconds=None)
    start = int(round(clip["start_s"] * 16000))
    mine, _ = sf.read(out / clip["dir"] / "audio.wav", dtype="float32")
    assert np.abs(mine - full[start:start + len(mine)]).max() < 2e-4  # PCM16 rounding only


@pytest.mark.slow
def test_split_is_by_source_video(processed):
    out, report = processed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"]["by"] == "speaker" and report["split"]["by"] == "speaker"  # two videos, two people
    splits = {}
    for c in manifest["clips"]:
        splits.setdefault(c["source"], set()).add(c["split"])
    assert all(len(s) == 1 for s in splits.values())  # no video on both sides
    assert {next(iter(s)) for s in splits.values()} == {"train", "val"}
    assert report["detector"]  # the report says which detector ran


def test_clips_without_a_face_are_dropped_and_counted(tmp_path):
    """A synthetic video with no face: every clip is dropped with reason 'face_lost', nothing silently."""
    from wav2lip384.faces import HaarDetector
    from wav2lip384.media.video import VideoWriter

    rng = np.random.default_rng(0)
    wav_path = tmp_path / "tone.wav"
    import soundfile as sf

    t = np.arange(int(2.0 * 16000)) / 16000
    sf.write(wav_path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    video = tmp_path / "noface.mp4"
    with VideoWriter(video, 64, 64, 25, audio_path=wav_path) as w:
        for _ in range(50):
            w.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    report = pp.preprocess([video], tmp_path / "out", pp.PreprocessConfig(size=32), HaarDetector())
    assert report["clips_kept"] == 0 and report["clips_dropped"] >= 1
    assert set(report["dropped_by_reason"]) == {"face_lost"}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["clips"] == []


def test_split_at_pauses_cuts_in_the_silence():
    sr = 16000
    tone = lambda s: 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(s * sr)) / sr)  # noqa: E731
    wav = np.concatenate([tone(1.6), np.zeros(int(0.6 * sr)), tone(2.0)]).astype(np.float32)
    n = len(wav) // 640
    segs = pp.split_at_pauses(wav, n, pp.PreprocessConfig())
    assert segs[0][0] == 0 and segs[-1][1] == n and len(segs) == 2
    cut = segs[0][1] / 25
    assert 1.6 < cut < 2.2  # inside the pause


def test_long_speech_is_cut_below_the_maximum():
    sr = 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * np.arange(25 * sr) / sr)).astype(np.float32)
    segs = pp.split_at_pauses(wav, 25 * 25, pp.PreprocessConfig(max_clip_s=10))
    assert all(b - a <= 250 for a, b in segs) and segs[-1][1] == 625


def test_split_by_source_is_deterministic_and_never_empty():
    cfg = pp.PreprocessConfig()
    s = pp.assign_splits(["a", "b", "c", "d"], cfg)
    assert sorted(s.values()).count("val") == 1 and s == pp.assign_splits(["d", "c", "b", "a"], cfg)
    assert pp.assign_splits(["only"], cfg) == {"only": "train"}
    assert pp.assign_splits(["a", "b"], pp.PreprocessConfig(val_sources=("b",))) == {"a": "train", "b": "val"}


def _clips(spec):
    """[(source, speaker, n_clips)] -> clip entries as preprocess writes them."""
    return [{"source": src, "speaker": spk, "start_s": 3.0 * i, "id": f"{src}/clip{i:03d}", "n_frames": 75}
            for src, spk, n in spec for i in range(n)]


def test_one_video_is_split_by_clip_with_the_last_clips_held_out():
    clips = _clips([("talk", "talk", 8)])
    how = pp.split_clips(clips, pp.PreprocessConfig(val_fraction=0.25))
    assert how["by"] == "clip"
    assert [c["split"] for c in clips] == ["train"] * 6 + ["val"] * 2  # the last two in time


def test_several_speakers_are_split_by_speaker_and_one_speaker_by_video():
    clips = _clips([("a1", "ann", 3), ("a2", "ann", 3), ("b1", "bob", 3), ("c1", "cy", 2), ("d1", "dee", 2)])
    how = pp.split_clips(clips, pp.PreprocessConfig())
    assert how["by"] == "speaker"
    per_speaker = {}
    for c in clips:
        per_speaker.setdefault(c["speaker"], set()).add(c["split"])
    assert all(len(s) == 1 for s in per_speaker.values())  # no speaker on both sides
    assert sum(s == {"val"} for s in per_speaker.values()) == 1 and "train" in {c["split"] for c in clips}
    one = _clips([("v1", "ann", 2), ("v2", "ann", 2)])
    assert pp.split_clips(one, pp.PreprocessConfig())["by"] == "video"
    assert {c["split"] for c in one if c["source"] == "v1"} != {c["split"] for c in one if c["source"] == "v2"}


def test_a_single_clip_cannot_be_split_and_says_why():
    clips = _clips([("talk", "talk", 1)])
    how = pp.split_clips(clips, pp.PreprocessConfig())
    assert how["by"] == "none" and "--max-clip" in how["reason"] and clips[0]["split"] == "train"


def test_speaker_is_the_first_sub_folder(tmp_path):
    assert pp.speaker_of(tmp_path / "ann" / "day1" / "a.mp4", tmp_path) == "ann"
    assert pp.speaker_of(tmp_path / "a.mp4", tmp_path) is None


def test_cli_rejects_a_missing_folder(tmp_path, capsys):
    assert pp.main(["--videos", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err


def test_frame_map_resamples_30_to_25_fps():
    m = pp._frame_map(30.0, 60, 50)  # 2 s
    assert m[0] == 0 and m[-1] <= 59 and len(m) == 50
    assert np.all(np.diff(m) >= 1) and np.all(np.diff(m) <= 2)
