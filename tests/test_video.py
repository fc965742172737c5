"""Video I/O through the bundled ffmpeg: write/read round trip, audio muxing, format checks."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from common.errors import UserFacingError
from wav2lip384.media import video as V


def _frames(n, h=64, w=80):
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, :, 0] = 40 + 4 * i
        f[h // 4: h // 2, w // 4: w // 2] = (200, 180, 30)
        out.append(f)
    return out


def _tone(path, seconds, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32), sr)
    return path


def test_write_read_round_trip_with_audio(tmp_path):
    wav = _tone(tmp_path / "a.wav", 1.0)
    out = tmp_path / "v.mp4"
    with V.VideoWriter(out, 80, 64, 25, audio_path=wav) as w:
        for f in _frames(25):
            w.write(f)
    info = V.probe(out)
    assert info.video[0]["codec"] == "h264" and (info.video[0]["width"], info.video[0]["height"]) == (80, 64)
    assert info.audio and info.audio[0]["codec"] == "aac"  # audio stream muxed in the same ffmpeg process
    assert info.duration_s == pytest.approx(1.0, abs=0.04 + 0.03)
    stream = V.open_video(out)
    assert (stream.fps, stream.width, stream.height) == (25.0, 80, 64)
    frames = list(stream.frames)
    assert len(frames) == 25
    assert np.abs(frames[3].astype(int) - _frames(25)[3].astype(int)).mean() < 3  # lossy but close


def test_flac_audio_decodes_to_exactly_the_samples_given(tmp_path):
    # 0.55 s: no whole number of AAC frames (1024 samples); AAC would pad the end, FLAC does not
    wav = _tone(tmp_path / "a.wav", 0.55)
    out = tmp_path / "v.mp4"
    with V.VideoWriter(out, 80, 64, 25, audio_path=wav, audio_codec="flac") as w:
        for f in _frames(14):
            w.write(f)
    assert V.sniff_format(out) == "isobmff" and V.probe(out).audio[0]["codec"] == "flac"
    pcm = subprocess.run([V.ffmpeg_exe(), "-v", "error", "-i", str(out), "-vn", "-f", "s16le", "-ac", "1", "-"],
                         capture_output=True, check=True).stdout
    assert len(pcm) // 2 == int(0.55 * 16000)
    with pytest.raises(ValueError, match="flac"):
        V.VideoWriter(tmp_path / "x.ts", 80, 64, 25, fmt="ts", audio_path=wav, audio_codec="flac")


def test_odd_sizes_are_padded_to_even_for_yuv420p(tmp_path):
    out = tmp_path / "odd.mp4"
    with V.VideoWriter(out, 81, 63, 30) as w:
        for f in _frames(3, 63, 81):
            w.write(f)
    info = V.probe(out)
    assert (info.video[0]["width"], info.video[0]["height"]) == (82, 64)
    assert not info.audio


def test_ts_segments_and_max_frames(tmp_path):
    out = tmp_path / "seg.ts"
    with V.VideoWriter(out, 80, 64, 25, fmt="ts", audio_path=_tone(tmp_path / "b.wav", 0.4), start_time=2.0) as w:
        for f in _frames(10):
            w.write(f)
    assert V.sniff_format(out) == "mpegts"
    stream = V.open_video(out, max_frames=4)
    assert len(list(stream.frames)) == 4


def test_ts_segments_continue_each_others_timestamps(tmp_path):
    starts = []
    for k, t0 in enumerate((0.0, 0.4)):
        out = tmp_path / f"s{k}.ts"
        with V.VideoWriter(out, 80, 64, 25, fmt="ts", audio_path=_tone(tmp_path / f"s{k}.wav", 0.4), start_time=t0) as w:
            for f in _frames(10):
                w.write(f)
        info = V.probe(out)
        starts.append((info.video[0]["start"], info.audio[0]["start"]))
    assert starts[1][0] - starts[0][0] == pytest.approx(0.4, abs=1e-3)  # video
    assert starts[1][1] - starts[0][1] == pytest.approx(0.4, abs=1e-3)  # audio


def test_writer_rejects_wrong_frames(tmp_path):
    w = V.VideoWriter(tmp_path / "x.mp4", 80, 64, 25)
    with pytest.raises(ValueError):
        w.write(np.zeros((10, 10, 3), np.uint8))
    w.abort()
    assert not (tmp_path / "x.mp4").exists()


def test_files_that_are_not_what_their_extension_says(tmp_path):
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(b"this is just text, not a video" * 10)
    with pytest.raises(UserFacingError, match="not a valid MP4"):
        V.check_media(fake)
    png_as_jpg = tmp_path / "photo.jpg"
    png_as_jpg.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(UserFacingError, match="looks like PNG"):
        V.check_media(png_as_jpg)
    with pytest.raises(UserFacingError, match="unsupported type"):
        V.check_media(_touch(tmp_path / "a.xyz"))
    with pytest.raises(UserFacingError, match="does not exist"):
        V.check_media(tmp_path / "nope.mp4")
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(UserFacingError, match="empty"):
        V.check_media(empty)


def _touch(p):
    p.write_bytes(b"data")
    return p


def test_broken_image_and_video_are_user_errors(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x01" * 64)
    with pytest.raises(UserFacingError, match="could not be decoded"):
        V.read_image(bad)
    badv = tmp_path / "bad.mp4"
    badv.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    with pytest.raises(UserFacingError):
        stream = V.open_video(badv)
        list(stream.frames)


@pytest.mark.slow
def test_reads_real_inputs(shared_data):
    s = V.open_video(shared_data / "video" / "latentsync_demo1_woman_1080x1920.mp4", max_frames=2)
    assert (s.width, s.height, s.fps) == (1080, 1920, 25.0)  # HEVC portrait
    frames = list(s.frames)
    assert len(frames) == 2 and frames[0].shape == (1920, 1080, 3)
    s = V.open_video(shared_data / "video" / "retalking_face4.mp4", max_frames=1)
    assert s.fps == 30.0
    s.close()
    assert V.check_media(shared_data / "audio" / "dreamtalk_acknowledgement_english.m4a", kinds=("audio",)) == "audio"
    assert V.read_image(shared_data / "image" / "face_recognition_obama.jpg").shape == (1137, 910, 3)


def _video_packet_times(path) -> list[tuple[int, int]]:
    """(dts, pts) of each video packet, in the stream's time base (ffmpeg's framecrc: the bundled ffmpeg has no
    ffprobe)."""
    out = subprocess.run([V.ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f",
                          "framecrc", "-"], capture_output=True, text=True, check=True).stdout
    rows = [line.split(",") for line in out.splitlines() if not line.startswith("#")]
    return [(int(f[1]), int(f[2])) for f in rows if len(f) > 3]


@pytest.mark.parametrize("fps", [25, 12.5])
def test_stream_chunks_decode_in_display_order_from_zero(tmp_path, fps):
    """Chunks of a streamed answer have no B-frames: their decoding clock starts at 0 whatever the frame rate (with
    B-frames it starts two frames early, and a change of frame rate mid-answer then left a hole in the player's
    buffer that it waited on; see VideoWriter)."""
    rng = np.random.default_rng(0)
    frames = [np.clip(f.astype(int) + rng.integers(-40, 40, f.shape), 0, 255).astype(np.uint8)
              for f in _frames(20)]
    times = {}
    for b_frames in (True, False):
        out = tmp_path / f"chunk_{b_frames}.mp4"
        with V.VideoWriter(out, 80, 64, fps, b_frames=b_frames) as w:
            for f in frames:
                w.write(f)
        times[b_frames] = _video_packet_times(out)
    assert len(times[False]) == 20 and times[False][0] == (0, 0)
    assert all(dts == pts for dts, pts in times[False])
    assert any(dts < pts for dts, pts in times[True])  # the default does reorder: what the option removes
