"""A streamed answer plays as long as its speech: per chunk, after Gradio's own HLS conversion, and joined.

What used to go wrong (issue 15): each chunk's AAC audio decodes, with Debian 12's ffmpeg 5.1 (the one Gradio's
streaming output runs), up to one AAC frame (64 ms at 16 kHz) longer than the speech it holds; Gradio feeds
the decoded samples of every chunk into one continuous encoder, so the audio ran ahead of the video, and once
it led by more than 0.128 s Gradio moved the video clock up to it. An 8-chunk answer played ~0.26 s too long.
Now chunks carry lossless (FLAC) audio that decodes to exactly the speech, and pieces are cut on video frame
boundaries, so every chunk's audio and video are equally long.

Gradio's conversion is run as Gradio runs it (``gr.Video(streaming=True).stream_output`` per chunk, then
``flush_stream_output``), so these tests need the system ffmpeg and ffprobe, as streaming itself does. The page's
player now gets segments the app makes itself (services/segments.py: one AAC encoding of the whole answer, each
chunk remuxed with its span of it); the same properties are checked on those.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from services.media import concat_videos, split_speech
from wav2lip384 import faces as F
from wav2lip384.render.pipeline import LipSyncPipeline

FPS = 25
SR = 16000
# three "sentences" whose lengths are no whole number of frames (as synthesised speech never is)
SENTENCES_S = (1.213, 1.637, 0.917)

needs_system_ffmpeg = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                         reason="no system ffmpeg/ffprobe (what Gradio streams with)")


class BoxDetector(F.FaceDetector):
    """One face at a fixed relative position (a synthetic photo has no real face)."""

    name = "fixed-box"

    def detect_batch(self, frames):
        h, w = frames[0].shape[:2]
        return [np.array([[w * 0.3, h * 0.25, w * 0.7, h * 0.7, 1.0]], np.float32) for _ in frames]


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """(n,) float32 at 16 kHz: voiced bursts with pauses every ~0.35 s, a random phase per sentence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    gate = np.sin(2 * np.pi * t / 0.35 + rng.uniform(0, 6.28)) > -0.5
    return (0.3 * np.sin(2 * np.pi * 170 * t) * gate + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    streams = {s["codec_type"]: s for s in data["streams"]}
    return {kind: (float(s.get("start_time", 0.0)), float(s["duration"]), s["codec_name"]) for kind, s in streams.items()}


def system_decoded_samples(path: Path) -> int:
    """Samples of the file's audio as the system ffmpeg decodes it (what Gradio feeds its encoder)."""
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-vn", "-f", "s16le", "-ac", "1",
                          "-ar", str(SR), "-"], capture_output=True, check=True).stdout
    return len(pcm) // 2


def assert_in_place(audio: np.ndarray, speech: np.ndarray, pieces: list[np.ndarray]) -> None:
    """``audio`` (decoded, lossy) is ``speech`` sample for sample in time: best aligned at lag 0 within +-5 ms, and
    still matching around every boundary between the ``pieces`` (no gap or shift where one chunk meets the next)."""
    n = min(len(audio), len(speech))
    lags = range(-80, 81)  # +-5 ms
    corr = [float(np.dot(audio[max(0, k):n + min(0, k)], speech[max(0, -k):n - max(0, k)])) for k in lags]
    assert lags[int(np.argmax(corr))] == 0
    for b in np.cumsum([len(p) for p in pieces[:-1]]):
        a, s = audio[b - 800:b + 800], speech[b - 800:b + 800]
        assert np.corrcoef(a, s)[0, 1] > 0.95


def gradio_segments(chunks: list[Path], out_dir: Path) -> list[tuple[Path, float]]:
    """The .ts segments (and their playlist durations) Gradio 6 makes of streamed chunks, in order."""
    import gradio as gr

    video = gr.Video(streaming=True)
    stream_id = str(uuid.uuid4())

    async def run():
        segments = []
        for i, chunk in enumerate(chunks):
            seg, _ = await video.stream_output(str(chunk), stream_id, i == 0)
            if seg:
                segments.append(seg)
        last = await video.flush_stream_output(stream_id)
        return segments + ([last] if last else [])

    paths = []
    for i, seg in enumerate(asyncio.run(run())):
        p = out_dir / f"segment_{i:03d}.ts"
        p.write_bytes(seg["data"])
        paths.append((p, float(seg["duration"])))
    return paths


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """Chunks of a 3-sentence answer (split as the app splits it) from a random 96 generator on a photo."""
    import cv2
    import torch

    from wav2lip384.models import build_model

    root = tmp_path_factory.mktemp("stream")
    yy, xx = np.mgrid[0:120, 0:100]
    photo = np.stack([(yy * 2) % 256, (xx * 2) % 256, np.full_like(yy, 128)], axis=2).astype(np.uint8)
    cv2.imwrite(str(root / "me.png"), photo)
    torch.manual_seed(0)
    pipe = LipSyncPipeline(build_model("generator", 96).eval(), detector=BoxDetector(), show_progress=False)
    sentences = [speechlike(s, k) for k, s in enumerate(SENTENCES_S)]
    pieces, last_of_sentence = [], []
    for k, wave in enumerate(sentences):  # as AppServices.ask_stream splits (shorter pieces: a quick test)
        parts = split_speech(wave, SR, first_s=0.6, max_s=0.6)
        pieces += parts
        last_of_sentence += [False] * (len(parts) - 1) + [True]
    chunks = list(pipe.stream(root / "me.png", ((p, SR) for p in pieces), root / "chunks"))
    return {"root": root, "pieces": pieces, "chunks": chunks, "last_of_sentence": last_of_sentence,
            "speech_s": sum(len(p) for p in pieces) / SR}


def test_speech_is_cut_on_video_frame_boundaries_in_its_pauses():
    wave = speechlike(7.3, 0)
    for fps in (25, 30):
        pieces = split_speech(wave, SR, first_s=0.6, max_s=2.0, fps=fps)
        assert np.array_equal(np.concatenate(pieces), wave)  # nothing lost, nothing repeated
        assert len(pieces) >= 4 and 0.36 <= len(pieces[0]) / SR <= 0.6
        ends = np.cumsum([len(p) for p in pieces[:-1]])
        frames = ends * fps / SR
        assert np.allclose(frames, np.round(frames), atol=0.5 * fps / SR)  # within a sample of a frame boundary
        for e in ends:  # in a pause: quieter than the speech around it
            assert np.mean(np.square(wave[e - 160:e + 160])) < 0.1 * np.mean(np.square(wave))
    assert len(split_speech(wave[:SR], SR)) == 1  # short speech stays whole
    with pytest.raises(ValueError):
        split_speech(wave, SR, fps=0)


@needs_system_ffmpeg
def test_every_chunk_holds_exactly_its_speech_and_as_many_frames(streamed):
    pieces, chunks = streamed["pieces"], streamed["chunks"]
    assert len(chunks) == len(pieces) >= 6
    frames_before = 0
    speech_before = 0
    for piece, chunk, last in zip(pieces, chunks, streamed["last_of_sentence"]):
        info = ffprobe(chunk)
        assert info["audio"][2] == "flac"  # sample-exact: no AAC priming or padding
        assert system_decoded_samples(chunk) == len(piece)  # what Gradio decodes is the speech, no more
        speech_before += len(piece)
        frames = int(round(info["video"][1] * FPS))
        assert info["video"][1] == pytest.approx(frames / FPS, abs=1e-3)
        frames_before += frames
        # frames follow the cumulative speech: the video never drifts from the audio by half a frame
        assert abs(frames_before / FPS - speech_before / SR) <= 0.5 / FPS + 1e-6
        if not last:  # cut on a frame boundary: audio and video equally long
            assert info["audio"][1] == pytest.approx(info["video"][1], abs=1e-3)


@needs_system_ffmpeg
def test_gradio_stream_of_the_chunks_plays_as_long_as_the_speech(streamed, tmp_path):
    chunks, pieces, speech_s = streamed["chunks"], streamed["pieces"], streamed["speech_s"]
    segments = gradio_segments(chunks, tmp_path)
    with_video = [(p, d) for p, d in segments if "video" in ffprobe(p)]
    assert len(with_video) == len(chunks)
    # per chunk: its segment lasts as long as the chunk's speech (within a frame: only a sentence's last piece is
    # no whole number of frames), its video starts where the previous one ended (Gradio never had to move the
    # video clock up to audio running ahead), and where it ends is where the speech so far ends (half a frame)
    video_end = None
    spoken = 0.0
    for (seg, extinf), piece in zip(with_video, pieces):
        start, dur, _ = ffprobe(seg)["video"]
        spoken += len(piece) / SR
        assert abs(extinf - len(piece) / SR) < 1 / FPS, (seg.name, extinf, len(piece) / SR)
        assert dur == pytest.approx(extinf, abs=1e-3)
        if video_end is not None:
            assert start == pytest.approx(video_end, abs=2e-3), seg.name
        else:
            first = start
        video_end = start + dur
        assert abs((video_end - first) - spoken) <= 0.5 / FPS + 1e-3, (seg.name, video_end - first, spoken)
    # the whole stream as hls.js buffers it: every segment back to back, played from its first to its last sample
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p, _ in segments))
    info = ffprobe(joined)
    v0, vd, _ = info["video"]
    a0, ad, _ = info["audio"]
    assert vd == pytest.approx(round(speech_s * FPS) / FPS, abs=1e-3)  # no frame added, none lost
    span = max(v0 + vd, a0 + ad) - min(v0, a0)
    # What is left is Gradio's, once per stream, never per chunk: its one encoder's priming frame (placed 64 ms
    # before the video), the padding of its last frame (< 64 ms at 16 kHz) and the silence it puts in where the
    # video ran ahead of the speech at a chunk boundary (< half a frame in all: the frames follow the cumulative
    # speech). Before the fix (AAC chunks) this span grew by up to 64 ms per chunk: +0.27 s for 6 chunks.
    assert -0.02 <= span - speech_s <= 0.064 + 0.064 + 0.5 / FPS, (span, speech_s)
    assert -0.5 / FPS <= (a0 + ad) - (v0 + vd) <= 0.064 + 1 / FPS  # the audio ends with the video


def test_joined_answer_has_the_speech_exactly_and_every_frame(streamed, tmp_path):
    from services.media import _read_chunk
    from wav2lip384.media.video import open_video, probe

    chunks, pieces, speech_s = streamed["chunks"], streamed["pieces"], streamed["speech_s"]
    out = concat_videos(chunks, tmp_path / "answer.mp4")
    info = probe(out)
    assert info.audio[0]["codec"] == "aac" and info.video[0]["codec"] == "h264"  # plays in every browser
    frames = sum(int(round(_read_chunk(c, None, 1, tmp_path)[0] * FPS)) for c in chunks)
    assert frames == round(speech_s * FPS)
    video_s, audio = _read_chunk(out, SR, 1, tmp_path)
    assert video_s == pytest.approx(frames / FPS, abs=1e-3)
    assert len(list(open_video(out).frames)) == frames
    # the audio is the speech, sample for sample in time (lossy in value): no gap or shift at any chunk boundary
    audio, speech = audio[:, 0], np.concatenate(pieces)
    assert abs(len(audio) - len(speech)) <= 1
    assert_in_place(audio, speech, pieces)


@needs_system_ffmpeg
@pytest.mark.parametrize("step", [2, 3])
def test_an_answer_that_drops_to_a_lower_frame_rate_still_plays_as_long_as_its_speech(tmp_path, step):
    """Issue 20: a renderer slower than the voice renders later chunks at 12.5 or 8.3 fps (the app cuts pieces on
    whole frames of the rate they render at: services.answering.piece_fps); through Gradio's HLS conversion the
    stream still lasts as long as its speech."""
    import cv2
    import torch

    from wav2lip384.models import build_model
    from wav2lip384.render.pacing import FramePace

    class FirstFullThenLower(FramePace):  # what a slow machine's measurement decides, without its timing noise
        def choose(self):
            self.step = 1 if not self.history else step
            return self.step

    yy, xx = np.mgrid[0:120, 0:100]
    photo = np.stack([(yy * 2) % 256, (xx * 2) % 256, np.full_like(yy, 128)], axis=2).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "me.png"), photo)
    torch.manual_seed(0)
    pipe = LipSyncPipeline(build_model("generator", 96).eval(), detector=BoxDetector(), show_progress=False)
    wave = np.concatenate([speechlike(s, k) for k, s in enumerate(SENTENCES_S)])
    first = split_speech(wave, SR, first_s=0.6, max_s=0.6, fps=12.5)[0]
    pieces = [first, *split_speech(wave[len(first):], SR, first_s=0.8, max_s=0.8, fps=25 / step)]
    chunks = list(pipe.stream(tmp_path / "me.png", ((p, SR) for p in pieces), tmp_path / "chunks",
                              pace=FirstFullThenLower()))
    speech_s = len(wave) / SR
    rates = [round(1 / (ffprobe(c)["video"][1] / round(ffprobe(c)["video"][1] * 25))) for c in chunks[:1]]
    assert rates == [25]
    video = sum(ffprobe(c)["video"][1] for c in chunks)
    assert video == pytest.approx(speech_s, abs=0.5 * step / 25 + 1e-3)  # no drift: only the last chunk may round
    segments = gradio_segments(chunks, tmp_path)
    with_video = [(p, d) for p, d in segments if "video" in ffprobe(p)]
    assert len(with_video) == len(chunks)
    for (_, extinf), piece in zip(with_video[:-1], pieces[:-1], strict=True):
        assert extinf == pytest.approx(len(piece) / SR, abs=2e-3)  # cut on whole frames of the chunk's rate
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p, _ in segments))
    info = ffprobe(joined)
    v0, vd, _ = info["video"]
    a0, ad, _ = info["audio"]
    span = max(v0 + vd, a0 + ad) - min(v0, a0)
    assert abs(span - speech_s) <= 0.2, (span, speech_s)  # the render contract: played length = speech +- 0.2 s
    # the same through the segments the app makes itself: back to back, as long as the speech
    ours = our_segments(chunks, pieces, tmp_path / "ours")
    starts, ends = [], []
    for seg, extinf in ours:
        start, dur, _ = ffprobe(seg)["video"]
        assert not ends or start == pytest.approx(ends[-1], abs=2e-3), seg.name
        assert dur == pytest.approx(extinf, abs=1e-3)
        starts.append(start)
        ends.append(start + dur)
    assert ends[-1] - starts[0] == pytest.approx(speech_s, abs=0.5 * step / 25 + 1e-3)
    joined.write_bytes(b"".join(p.read_bytes() for p, _ in ours))
    a0, ad, _ = ffprobe(joined)["audio"]
    assert 0 <= (a0 + ad) - ends[-1] <= 0.064 + 0.5 * step / 25 + 1e-3  # the audio ends with the video


def our_segments(chunks: list[Path], pieces: list[np.ndarray], out_dir: Path) -> list[tuple[Path, float]]:
    """The segments the app hands its player (services/segments.py), and their playlist durations, in order."""
    from services.segments import AnswerSegments

    made = AnswerSegments(np.concatenate(pieces), SR, out_dir)
    segs = [made.add(c, ffprobe(c)["video"][1], last=i == len(chunks) - 1) for i, c in enumerate(chunks)]
    return [(s.path, s.seconds) for s in segs]


def continuity_jumps(data: bytes) -> int:
    """How often a PID's MPEG-TS continuity counter does not follow its last one (packets with a payload)."""
    last: dict[int, int] = {}
    jumps = 0
    for at in range(0, len(data), 188):
        pid = ((data[at + 1] & 0x1F) << 8) | data[at + 2]
        if pid == 0x1FFF or not data[at + 3] & 0x10:
            continue
        cc = data[at + 3] & 0x0F
        jumps += pid in last and cc != (last[pid] + 1) % 16
        last[pid] = cc
    return jumps


@needs_system_ffmpeg
def test_our_segments_follow_each_other_and_carry_the_speech_sample_for_sample(streamed, tmp_path):
    """Issue 20: the app makes each chunk's HLS segment itself (one remux instead of Gradio's three processes).
    Every segment's video starts where the last one's ended, the stream is the speech's frames, and its one AAC
    stream decodes to the speech in place: no gap or shift at any chunk boundary."""
    chunks, pieces, speech_s = streamed["chunks"], streamed["pieces"], streamed["speech_s"]
    segments = our_segments(chunks, pieces, tmp_path / "segments")
    assert len(segments) == len(chunks)
    video_end = None
    for seg, extinf in segments:
        info = ffprobe(seg)
        assert set(info) >= {"video", "audio"} and info["audio"][2] == "aac", seg.name
        start, dur, _ = info["video"]
        assert dur == pytest.approx(extinf, abs=1e-3)
        if video_end is not None:
            assert start == pytest.approx(video_end, abs=2e-3), seg.name
        video_end = start + dur
        a0 = info["audio"][0]
        assert start - 0.064 - 1e-3 <= a0 <= start + 1e-3, (seg.name, a0, start)  # its audio starts with it
    joined = tmp_path / "joined.ts"
    data = b"".join(p.read_bytes() for p, _ in segments)
    joined.write_bytes(data)
    assert continuity_jumps(data) == 0
    info = ffprobe(joined)
    v0, vd, _ = info["video"]
    a0, ad, _ = info["audio"]
    assert vd == pytest.approx(round(speech_s * FPS) / FPS, abs=1e-3)  # no frame added, none lost
    assert 0 <= (a0 + ad) - (v0 + vd) <= 0.064 + 0.5 / FPS  # the audio ends with the video (its last frame padded)
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(joined), "-vn", "-f", "f32le", "-ac", "1",
                          "-ar", str(SR), "-"], capture_output=True, check=True).stdout
    audio = np.frombuffer(pcm, np.float32)[int(round((v0 - a0) * SR)):]  # from the first frame's time on
    speech = np.concatenate(pieces)
    assert min(len(audio), len(speech)) >= len(speech) - 1
    assert_in_place(audio, speech, pieces)


def test_segment_helpers_refuse_what_they_cannot_read():
    from services.segments import adts_frames, continue_counters

    assert adts_frames(b"") == []
    with pytest.raises(ValueError):
        adts_frames(b"\x00" * 20)
    with pytest.raises(ValueError):
        continue_counters(b"\x47" * 100, {})
    packet = bytes([0x47, 0x01, 0x00, 0x10]) + bytes(184)  # PID 256, payload, counter 0
    counters = {256: 5}
    out = continue_counters(packet * 2, counters)
    assert [out[3] & 0x0F, out[188 + 3] & 0x0F] == [5, 6] and counters == {256: 7}


def test_the_page_player_serves_a_prepared_segment_as_it_is(tmp_path):
    """app.SegmentPlayer: Gradio's video player on the page, handed our segment for a chunk (taken once)."""
    from types import SimpleNamespace

    import app
    from services.segments import Segment

    seg = tmp_path / "segment_0000.ts"
    seg.write_bytes(bytes([0x47]) + bytes(187))
    part = SimpleNamespace(chunk=tmp_path / "chunk_0000.mp4", segment=Segment(seg, 1.28))
    value = app.SegmentPlayer.prepare(part)
    assert value == str(part.chunk)  # what a handler yields (an API client gets the mp4)
    player = app.SegmentPlayer.make(streaming=True)
    data, file = asyncio.run(player.stream_output(value, "session/run/1/playlist.m3u8", True))
    assert data == {"data": seg.read_bytes(), "duration": 1.28, "extension": ".ts"}
    assert file["is_stream"] and file["path"] == "session/run/1/playlist.m3u8"
    assert str(part.chunk) not in app.SegmentPlayer._prepared
    assert asyncio.run(player.stream_output(None, "session/run/1/playlist.m3u8", True))[0] is None
