"""LipSyncPipeline end to end with random weights: durations, sizes, audio, paste-back, caching, streaming.

Fast tests use a synthetic photo and a fixed-box detector; the ``slow`` ones run the real detectors on the
real clips in ../shared/data (audio trimmed to about a second to stay quick on a 2-core CPU).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from common.errors import UserFacingError
from wav2lip384 import faces as F
from wav2lip384.media.video import ffmpeg_exe, open_video, probe, read_image
from wav2lip384.render.pipeline import LipSyncPipeline


class BoxDetector(F.FaceDetector):
    """One face at a fixed relative position (for synthetic avatars)."""

    name = "fixed-box"

    def detect_batch(self, frames):
        h, w = frames[0].shape[:2]
        return [np.array([[w * 0.3, h * 0.25, w * 0.7, h * 0.7, 1.0]], np.float32) for _ in frames]


@pytest.fixture(scope="module")
def gen96():
    import torch

    from wav2lip384.models import build_model

    torch.manual_seed(0)
    return build_model("generator", 96).eval()


def smooth_image(h=120, w=100):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(yy * 2) % 256, (xx * 2) % 256, np.full_like(yy, 128)], axis=2).astype(np.uint8)
    return img


def tone(seconds, sr=16000, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def decoded_frames(path):
    return np.stack(list(open_video(path).frames))


def outside_box_error(src, out, box, margin=8):
    """Mean and 99th-percentile abs difference outside the face box grown by ``margin`` (codec bleed)."""
    x1, y1, x2, y2 = box
    keep = np.ones(src.shape[:2], bool)
    keep[max(0, y1 - margin): y2 + margin, max(0, x1 - margin): x2 + margin] = False
    d = np.abs(src.astype(np.int16) - out.astype(np.int16))[keep]
    return float(d.mean()), float(np.percentile(d, 99))


# ------------------------------------------------------------------------------------------------- fast
# The first mel spectrogram of a session pays librosa's numba JIT (~17 s), so model-running tests are `slow`.
@pytest.mark.slow
def test_photo_end_to_end_encoder_runs_once(tmp_path, gen96, monkeypatch):
    import cv2

    img = smooth_image()
    cv2.imwrite(str(tmp_path / "me.png"), img[..., ::-1])
    pipe = LipSyncPipeline(gen96, detector=BoxDetector(), cache_dir=tmp_path / "cache", show_progress=False,
                           batch_size=4)
    calls = []
    real = pipe.generator.encode_faces  # the pipeline's (optimised) copy of gen96
    monkeypatch.setattr(pipe.generator, "encode_faces", lambda x: calls.append(x.shape) or real(x))
    res = pipe(tmp_path / "me.png", (tone(0.4), 16000), tmp_path / "out.mp4")
    assert calls == [(1, 6, 96, 96)]  # face encoder once for the whole photo request (batch 1)
    assert res.n_frames == 10 and res.fps == 25.0 and (res.width, res.height) == (100, 120)
    assert res.avatar_kind == "image" and res.detector == "fixed-box"
    assert set(res.timings) >= {"audio", "mel", "avatar", "detect", "crops", "model", "paste", "encode", "total"}
    info = probe(res.output_path)
    assert info.audio and info.video[0]["codec"] == "h264"
    assert abs(info.duration_s - 0.4) <= 1 / 25 + 0.03
    frames = decoded_frames(res.output_path)
    assert frames.shape == (10, 120, 100, 3)
    box = tuple(int(v) for v in pipe.prepare(tmp_path / "me.png", 0.4).crops.boxes[0])
    mean, p99 = outside_box_error(img, frames[5], box)
    assert mean < 1.5 and p99 < 8
    # the lower face changed (random weights draw noise there), the top of the picture did not
    x1, y1, x2, y2 = box
    low = np.abs(frames[5][y1 + 3 * (y2 - y1) // 4, x1 + (x2 - x1) // 2].astype(int) - img[y1 + 3 * (y2 - y1) // 4, x1 + (x2 - x1) // 2])
    assert low.max() > 10
    # second request: detections from the cache, features reused
    res2 = pipe(tmp_path / "me.png", (tone(0.2), 16000), tmp_path / "out2.mp4")
    assert res2.avatar_cached and calls == [(1, 6, 96, 96)]


@pytest.mark.slow
def test_stream_chunks_follow_the_audio_and_continue_frame_indices(tmp_path, gen96):
    from wav2lip384.media.video import VideoWriter
    from wav2lip384.render.avatars import pingpong_index

    frames = [np.full((80, 64, 3), 30 + 10 * i, np.uint8) for i in range(6)]
    with VideoWriter(tmp_path / "loop.mp4", 64, 80, 25) as w:
        for f in frames:
            w.write(f)
    pipe = LipSyncPipeline(gen96, detector=BoxDetector(), show_progress=False)
    segments = [(tone(0.3), 16000), (tone(0.22, 22050), 22050), (tone(0.3, 48000, 2), 48000)]
    chunks = list(pipe.stream(tmp_path / "loop.mp4", segments, tmp_path / "chunks"))
    assert [c.name for c in chunks] == ["chunk_0000.mp4", "chunk_0001.mp4", "chunk_0002.mp4"]
    counts = [len(decoded_frames(c)) for c in chunks]
    total_s = 0.3 + 0.22 + 0.3
    assert sum(counts) == round(total_s * 25)  # no drift over the whole answer
    for c, (wave, sr) in zip(chunks, segments):
        # lossless audio: each chunk decodes to exactly its segment (AAC would add up to a frame of padding
        # per chunk with older ffmpeg, which made streamed answers play longer than their speech)
        assert probe(c).audio[0]["codec"] == "flac"
        pcm = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(c), "-vn", "-f", "s16le", "-"],
                             capture_output=True, check=True).stdout
        assert len(pcm) // (2 * (wave.shape[1] if wave.ndim == 2 else 1)) == len(wave)
    # continuous indices: chunk 2's first frame is source frame pingpong(n0 + n1) (top rows untouched)
    first = decoded_frames(chunks[2])[0]
    src = pingpong_index(counts[0] + counts[1], 6)
    assert abs(int(first[2, 2, 0]) - (30 + 10 * src)) <= 3

    # a long segment split into short chunks (sooner first video): same frames, same total length
    whole = decoded_frames(next(pipe.stream(tmp_path / "loop.mp4", [segments[0]], tmp_path / "one")))
    parts = list(pipe.stream(tmp_path / "loop.mp4", [segments[0]], tmp_path / "split", max_chunk_seconds=0.12))
    assert len(parts) == 3 and all(probe(p).audio for p in parts)
    split = np.concatenate([decoded_frames(p) for p in parts])
    assert split.shape == whole.shape
    assert np.abs(split.astype(int) - whole.astype(int)).mean() < 1.0  # only the codec differs


def test_limits_and_bad_inputs(tmp_path, gen96):
    import cv2

    cv2.imwrite(str(tmp_path / "me.png"), smooth_image()[..., ::-1])
    pipe = LipSyncPipeline(gen96, detector=BoxDetector(), show_progress=False, max_audio_seconds=1.0)
    with pytest.raises(UserFacingError, match="maximum is 1 s"):
        pipe(tmp_path / "me.png", (tone(1.5), 16000), tmp_path / "o.mp4")
    sf.write(str(tmp_path / "long.wav"), tone(1.5), 16000)
    with pytest.raises(UserFacingError, match="longer than the maximum"):
        pipe(tmp_path / "me.png", tmp_path / "long.wav", tmp_path / "o.mp4")
    (tmp_path / "speech.wav").write_bytes(b"ID3" + b"\x00" * 200)  # an mp3 named .wav
    with pytest.raises(UserFacingError, match="not a valid WAV"):
        pipe(tmp_path / "me.png", tmp_path / "speech.wav", tmp_path / "o.mp4")
    with pytest.raises(UserFacingError, match="does not exist"):
        pipe(tmp_path / "nobody.png", (tone(0.2), 16000), tmp_path / "o.mp4")
    with pytest.raises(UserFacingError, match="empty"):
        pipe(tmp_path / "me.png", (np.zeros(0, np.float32), 16000), tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


def test_no_face_image_names_the_frame(tmp_path, gen96):
    import cv2

    cv2.imwrite(str(tmp_path / "wall.png"), np.full((90, 90, 3), 128, np.uint8))
    pipe = LipSyncPipeline(gen96, detector=F.HaarDetector(), show_progress=False)
    with pytest.raises(UserFacingError, match=r"No face was found in the image wall.png \(frame 0\)"):
        pipe(tmp_path / "wall.png", (tone(0.2), 16000), tmp_path / "o.mp4")


@pytest.mark.slow
def test_frames_without_a_face_can_pass_through(tmp_path, gen96):
    import cv2

    cv2.imwrite(str(tmp_path / "wall.png"), np.full((90, 90, 3), 128, np.uint8))
    pipe = LipSyncPipeline(gen96, detector=F.HaarDetector(), show_progress=False)
    res = pipe(tmp_path / "wall.png", (tone(0.2), 16000), tmp_path / "o.mp4", on_no_face="passthrough")
    assert res.n_frames == 5 and any("No face" in w for w in res.warnings)
    assert np.abs(decoded_frames(res.output_path).astype(int) - 128).max() <= 2  # left unchanged


@pytest.mark.slow
def test_two_faces_the_largest_is_used_and_reported(tmp_path, gen96):
    import cv2

    class TwoFaces(F.FaceDetector):
        name = "two-faces"

        def detect_batch(self, frames):
            return [np.array([[5, 5, 45, 55, 0.9], [50, 20, 110, 90, 0.8]], np.float32) for _ in frames]

    cv2.imwrite(str(tmp_path / "pair.png"), smooth_image(120, 120)[..., ::-1])
    pipe = LipSyncPipeline(gen96, detector=TwoFaces(), show_progress=False)
    res = pipe(tmp_path / "pair.png", (tone(0.2), 16000), tmp_path / "o.mp4")
    assert any("More than one face" in w and "largest" in w for w in res.warnings)
    box = pipe.prepare(tmp_path / "pair.png", 0.2).crops.boxes[0]
    assert box[0] >= 50  # the larger (right) face was lip-synced


# ------------------------------------------------------------------------------------------------- slow
def _trim_copy(src, dst, seconds):
    """A short copy of a real audio file in its own format (stream copy / same sample rate and channels)."""
    if dst.suffix == ".wav":
        data, sr = sf.read(str(src), dtype="float32", always_2d=True)
        sf.write(str(dst), data[: int(seconds * sr)], sr, subtype="PCM_16")
    else:
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-t", str(seconds), "-c", "copy",
                        str(dst)], check=True)
    return dst


def _check_output(res, face_path, audio_seconds, pipe, size):
    info = probe(res.output_path)
    assert info.audio, "no audio stream in the output"
    assert info.video[0]["codec"] == "h264"
    assert abs(res.n_frames / res.fps - audio_seconds) <= 1 / res.fps + 1e-6
    assert abs(info.duration_s - audio_seconds) <= 1 / res.fps + 0.05  # + AAC frame padding
    out = decoded_frames(res.output_path)
    av = pipe.avatars.get(face_path)
    h, w = av.height, av.width
    assert out.shape[1:3] == (h + h % 2, w + w % 2)  # the input's size (yuv420p rounds odd sizes up by 1)
    boxes = av.crops(pipe.detector.name, size, pads=pipe.pads, policy=pipe.crop_policy).boxes
    for t in (0, len(out) // 2):
        s = av.source_index(t)
        mean, p99 = outside_box_error(av.frames[s], out[t][:h, :w], tuple(int(v) for v in boxes[s]))
        assert mean < 2.5 and p99 < 16, (t, mean, p99)


@pytest.fixture(scope="module")
def pipe96(gen96, tmp_path_factory):
    return LipSyncPipeline(gen96, cache_dir=tmp_path_factory.mktemp("cache96"), detector_checkpoint=None,
                           show_progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("face,audio,seconds", [
    ("video/latentsync_demo1_woman_1080x1920.mp4", "audio/sadtalker_chinese_news.wav", 1.0),  # HEVC + 48k stereo
    ("video/retalking_face4.mp4", "audio/dreamtalk_acknowledgement_english.m4a", 1.0),  # 30 fps + AAC .m4a
    ("image/sadtalker_happy.png", "audio/wenet_aishell-BAC009S0724W0121_zh.wav", 1.2),  # 256x256 crop
])
def test_real_inputs_96(shared_data, tmp_path, pipe96, face, audio, seconds):
    src = shared_data / audio
    clip = _trim_copy(src, tmp_path / f"speech{src.suffix}", seconds)
    real_seconds = sf.info(str(clip)).duration if clip.suffix == ".wav" else probe(clip).duration_s
    res = pipe96(shared_data / face, clip, tmp_path / "out.mp4")
    assert res.detector.startswith("opencv-haar") and "S3FD" in res.detector  # offline: fallback, said so
    _check_output(res, shared_data / face, real_seconds, pipe96, 96)


@pytest.mark.slow
def test_real_inputs_384_from_saved_random_weights(shared_data, tmp_path):
    import torch

    from wav2lip384.models import build_model
    from wav2lip384.weights import save_pretrained

    torch.manual_seed(1)
    save_pretrained(build_model("generator", 384), tmp_path / "w384")
    pipe = LipSyncPipeline.from_pretrained(size=384, checkpoint=str(tmp_path / "w384"), cache_dir=tmp_path / "c",
                                           show_progress=False)
    assert pipe.size == 384 and pipe.model == "paper384" and pipe.crop_policy == "square"  # size= still works
    # 910x1137 portrait (odd height) + 48 kHz stereo given in memory
    data, sr = sf.read(str(shared_data / "audio" / "sadtalker_chinese_news.wav"), dtype="float32")
    face = shared_data / "image" / "face_recognition_obama.jpg"
    res = pipe(face, (data[: int(0.8 * sr)], sr), tmp_path / "photo.mp4")
    assert (res.width, res.height) == (910, 1138)
    _check_output(res, face, 0.8, pipe, 384)
    # 25 fps H.264 video avatar
    face = shared_data / "video" / "retalking_face2.mp4"
    res = pipe(face, _trim_copy(shared_data / "audio" / "wenet_aishell-BAC009S0724W0121_zh.wav", tmp_path / "a.wav", 0.6),
               tmp_path / "video.mp4")
    _check_output(res, face, 0.6, pipe, 384)
    assert read_image(shared_data / "image" / "sadtalker_happy.png").shape == (256, 256, 3)


# ------------------------------------------------------------------------------------- models by registry id
def test_each_model_gets_its_registry_crop(tmp_path, gen96):
    """The public checkpoints' crop (the detector box with pads (0, 10, 0, 0), stretched) for wav2lip96; the
    paper's bottom-edge square only for paper384."""
    import cv2
    import torch

    from wav2lip384.models import build_model

    cv2.imwrite(str(tmp_path / "me.png"), smooth_image(120, 100)[..., ::-1])
    pipe = LipSyncPipeline(gen96, detector=BoxDetector(), show_progress=False, optimize=False)
    assert (pipe.model, pipe.crop_policy, pipe.pads, pipe.batch_size) == ("wav2lip96", "stretch", (0, 10, 0, 0), 32)
    box = pipe.prepare(tmp_path / "me.png", 0.2).crops.boxes[0]
    assert tuple(int(v) for v in box) == (30, 30, 70, 94)  # x 0.3..0.7 of 100, y 0.25..0.7 of 120 + 10 px below
    torch.manual_seed(0)
    paper = LipSyncPipeline(build_model("generator", 384).eval(), detector=BoxDetector(), show_progress=False,
                            optimize=False, avatar_cache=pipe.avatars)
    assert (paper.model, paper.crop_policy, paper.batch_size) == ("paper384", "square", 8)
    x1, y1, x2, y2 = (int(v) for v in paper.prepare(tmp_path / "me.png", 0.2).crops.boxes[0])
    assert x2 - x1 == y2 - y1 and y2 == 94  # square, bottom edge = the padded box's
    # an explicit policy / pads override the registry's
    other = LipSyncPipeline(gen96, model="wav2lip96", crop_policy="square", pads=(0, 0, 0, 0),
                            detector=BoxDetector(), show_progress=False, optimize=False, avatar_cache=pipe.avatars)
    x1, y1, x2, y2 = (int(v) for v in other.prepare(tmp_path / "me.png", 0.2).crops.boxes[0])
    assert x2 - x1 == y2 - y1 and y2 == 84


def test_from_pretrained_by_model_id_and_alias(tmp_path, gen96, one_torch_thread):
    import torch

    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in gen96.state_dict().items()}, "global_step": 3,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    pipe = LipSyncPipeline.from_pretrained("96", path, cache_dir=tmp_path / "c", show_progress=False,
                                           optimize=False)
    assert pipe.model == "wav2lip96" and pipe.crop_policy == "stretch" and pipe.weights == str(path)
    assert list((tmp_path / "c" / "weights").glob("*.safetensors"))  # the weights-only copy
    again = LipSyncPipeline.from_pretrained(model=96, checkpoint=path, cache_dir=tmp_path / "c",
                                            show_progress=False, optimize=False)
    assert pipe.load_info.wrote_cache and again.load_info.from_cache
    with pytest.raises(UserFacingError, match="Unknown lip-sync model"):
        LipSyncPipeline.from_pretrained("wav2lip512", path)
    with pytest.raises(UserFacingError, match="DH_WAV2LIP384_CHECKPOINT"):
        LipSyncPipeline.from_pretrained("paper384")


def test_inference_uses_the_training_alignment_of_mel_windows():
    from wav2lip384.media.audio import GENERATOR_WINDOW_OFFSET_S, mel_windows, melspectrogram
    from wav2lip384.render.pipeline import LipSyncPipeline

    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    ours = LipSyncPipeline._mel_windows(None, wav, 25.0)
    expected = mel_windows(melspectrogram(wav), 25.0, n_frames=25, offset_s=GENERATOR_WINDOW_OFFSET_S)
    assert np.array_equal(ours, expected)
    assert np.array_equal(ours[5], mel_windows(melspectrogram(wav), 25.0, n_frames=25)[4])  # 40 ms earlier
