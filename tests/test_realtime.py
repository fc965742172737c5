"""Real time for streamed answers (issue 20): pauses rest the mouth without the model, and a renderer slower than
the voice drops to half the frame rate before playback starts, with every chunk as long as its speech.

Random ``wav2lip96`` weights on a synthetic photo with a fixed face box; a "slow machine" is the same generator
made to sleep per frame, so the tests do not depend on how busy this machine is.
"""

from __future__ import annotations

import functools
import time
from types import SimpleNamespace

import numpy as np
import pytest

from wav2lip384 import faces as F
from wav2lip384.render.pacing import STEPS, FramePace
from wav2lip384.render.silence import pause_frames, rest_weights

SR = 16000
FPS = 25


class BoxDetector(F.FaceDetector):
    name = "fixed-box"

    def detect_batch(self, frames):
        h, w = frames[0].shape[:2]
        return [np.array([[w * 0.3, h * 0.25, w * 0.7, h * 0.7, 1.0]], np.float32) for _ in frames]


def voiced(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-like sound (170 Hz, loudness varying at 4 Hz but never silent)."""
    t = np.arange(int(round(seconds * SR))) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 170 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
            + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def quiet(seconds: float, seed: int = 1) -> np.ndarray:
    """Room noise at about -60 dB below the speech."""
    return (0.0003 * np.random.default_rng(seed).standard_normal(int(round(seconds * SR)))).astype(np.float32)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    import cv2

    yy, xx = np.mgrid[0:120, 0:100]
    img = np.stack([(yy * 2) % 256, (xx * 2) % 256, np.full_like(yy, 128)], axis=2).astype(np.uint8)
    path = tmp_path_factory.mktemp("avatar") / "me.png"
    cv2.imwrite(str(path), img[..., ::-1])
    return path


@pytest.fixture(scope="module")
def gen96():
    import torch

    from wav2lip384.models import build_model

    torch.manual_seed(0)
    return build_model("generator", 96).eval()


def _pipe(gen96, **kw):
    from wav2lip384.render.pipeline import LipSyncPipeline

    return LipSyncPipeline(gen96, detector=BoxDetector(), show_progress=False, **kw)


def _counting(monkeypatch, pipe, sleep_per_frame: float = 0.0) -> list[int]:
    """Frames through the generator's decoder per call (a photo runs only audio encoder + decoder per frame)."""
    calls: list[int] = []
    real = pipe.generator.decode

    def decode(audio, feats):
        calls.append(int(audio.shape[0]))
        if sleep_per_frame:
            time.sleep(sleep_per_frame * int(audio.shape[0]))
        return real(audio, feats)

    monkeypatch.setattr(pipe.generator, "decode", decode)
    return calls


# ------------------------------------------------------------------------------------------------ pauses
def test_pauses_need_a_minimum_length_and_use_hysteresis():
    wave = np.concatenate([voiced(0.6), quiet(0.6), voiced(0.6), quiet(0.12), voiced(0.6)])
    n = int(round(len(wave) / SR * FPS))
    q = pause_frames(wave, FPS, n)
    assert q[16:30].all() and not q[:15].any()  # the 0.6 s pause (frames 15..29), not the speech before it
    assert not q[45:48].any()  # a 0.12 s gap inside speech is a closure within a word, not a pause
    # hysteresis: a murmur in the pause above the entry level but below the exit level keeps the pause
    murmur = wave.copy()
    murmur[int(0.9 * SR):int(0.94 * SR)] *= 0
    murmur[int(0.9 * SR):int(0.94 * SR)] += 0.3 * 10 ** (-32 / 20) * np.sin(np.arange(640) / 3)
    assert pause_frames(murmur, FPS, n)[16:30].all()
    w = rest_weights(wave, FPS, n)
    assert w[:15].max() == 0 and w[30:].max() == 0
    assert w[19:26].min() == 1.0  # the middle of the pause is all rest pose
    assert 0 < w[15] < w[16] < w[17] < 1 and 0 < w[29] < w[28] < 1  # blended in and out over three frames
    # a pause at either end of a chunk rests up to the cut (the chunk beside it continues it)
    w_end = rest_weights(np.concatenate([voiced(0.6), quiet(0.6)]), FPS, 30)
    assert w_end[-1] == 1.0 and w_end[-8:].min() == 1.0
    assert rest_weights(quiet(1.0), FPS, 25).min() == 1.0  # all silence: no model at all


@pytest.mark.slow
def test_silent_frames_keep_the_rest_pose_and_cost_no_model_calls(photo, gen96, tmp_path, monkeypatch):
    import wav2lip384.render.pipeline as P

    pipe = _pipe(gen96, batch_size=8)
    written: list[np.ndarray] = []
    real_write = P.VideoWriter.write
    monkeypatch.setattr(P.VideoWriter, "write", lambda self, f: written.append(np.array(f)) or real_write(self, f))
    calls = _counting(monkeypatch, pipe)
    wave = np.concatenate([voiced(0.6), quiet(1.0), voiced(0.6)])
    res = pipe(photo, (wave, SR), tmp_path / "out.mp4")
    n = res.n_frames
    w = rest_weights(wave, FPS, n)
    rest_pose = pipe.prepare(photo, 0.1).avatar.frames[0]
    assert len(written) == n == 55
    assert sum(calls) == int(np.sum(w < 1.0)) < n - 15  # only frames not wholly at rest ran the model
    for i in np.flatnonzero(w == 1.0):  # the middle of the pause: the rest pose, pixel for pixel
        assert np.array_equal(written[i], rest_pose), i
    speaking = [i for i in range(n) if w[i] == 0]
    assert all(not np.array_equal(written[i], rest_pose) for i in speaking)  # the model drew those mouths
    ramp = [i for i in range(n) if 0 < w[i] < 1]
    assert len(ramp) == 6
    for i in ramp:  # between the drawn mouth and the rest pose
        d_rest = np.abs(written[i].astype(int) - rest_pose).sum()
        assert 0 < d_rest
    # without rest in pauses every frame runs the model
    plain = _pipe(gen96, batch_size=8, rest_in_pauses=False)
    plain_calls = _counting(monkeypatch, plain)
    plain(photo, (wave, SR), tmp_path / "plain.mp4")
    assert sum(plain_calls) == n


# ------------------------------------------------------------------------------------------ frame rate
def test_pace_chooses_the_highest_frame_rate_that_keeps_up():
    pace = FramePace()
    assert pace.choose() == 1 and pace.keeps_up and pace.describe() == ""  # nothing measured: every frame
    pace.record(frames=15, model_frames=15, wall_s=15 * 0.05)  # 0.05 s a frame: 0.8x real time at 25 fps
    assert pace.choose() == 2 and pace.fps == 12.5 and pace.keeps_up
    assert pace.describe() == "rendering at 12.5 frames per second to keep up with the voice"
    pace.record(frames=8, model_frames=8, wall_s=8 * 0.09)  # slower: 12.5 fps keeps up, but without headroom
    assert pace.choose() == 3 and pace.keeps_up and pace.fps == pytest.approx(25 / 3)
    assert pace.describe() == "rendering at 8.3 frames per second to keep up with the voice"
    pace.record(frames=8, model_frames=8, wall_s=8 * 0.4)  # slower still: under 1x even at 8.3 fps
    assert pace.choose() == 3 and not pace.keeps_up
    fast = FramePace(frame_s=0.01)
    assert fast.choose() == 1 and fast.rate() == pytest.approx(4.0)
    # only just fast enough (1.8x at 25 fps): the answer's first chunk, part of the wait for the first frame, is
    # rendered at 12.5 fps; once a chunk has been measured that fast, 25 fps again (while not yet playing)
    marginal = FramePace(frame_s=1 / (25 * 1.8))
    assert marginal.choose() == 2
    marginal.record(frames=13, model_frames=13, wall_s=13 / (25 * 1.8))
    assert marginal.choose() == 1
    # a fixed cost per chunk (starting and finishing its encoder) slows short chunks most
    fixed = FramePace(frame_s=0.01, fixed_s=0.5)
    assert fixed.rate(seconds=2.0) == pytest.approx(2.0) and fixed.rate(seconds=0.5) == pytest.approx(0.5 / 0.625)
    assert fixed.seconds_within(1.0) == pytest.approx(2.0) and fixed.seconds_within(0.4) == 0.0
    fixed.record(frames=25, model_frames=25, wall_s=0.75, fixed_s=0.5)  # 0.25 s for 25 frames: 0.01 s each
    assert fixed.frame_s == pytest.approx(0.01) and fixed.fixed_s == pytest.approx(0.5)
    # a chunk that was mostly pause does not make the model look cheap
    mostly_pause = FramePace()
    mostly_pause.record(frames=20, model_frames=4, wall_s=0.4)
    assert mostly_pause.frame_s == pytest.approx(0.4 / (4 + 0.25 * 16))


@pytest.mark.slow
def test_a_renderer_slower_than_real_time_switches_frame_rate_before_the_first_chunk_is_released(
        photo, gen96, tmp_path, monkeypatch):
    from wav2lip384.media.video import open_video, probe

    pipe = _pipe(gen96, batch_size=8, rest_in_pauses=False)
    _counting(monkeypatch, pipe, sleep_per_frame=0.05)  # ~0.7x real time at 25 fps, ~1.4x at 12.5
    pace = FramePace(steps=(1, 2))  # the pieces below are cut on 12.5 fps boundaries
    pieces = [voiced(0.64, k) for k in range(3)]  # on 80 ms boundaries, as the app cuts them
    stream = pipe.stream(photo, ((p, SR) for p in pieces), tmp_path / "chunks", pace=pace)
    first = next(stream)
    # the first chunk is not released yet (the caller holds it): the measured speed already chose 12.5 fps
    assert pace.frame_s is not None and pace.choose() == 2 and pace.describe().startswith("rendering at 12.5")
    chunks = [first, *stream]
    fps = [probe(c).video[0]["fps"] for c in chunks]
    assert fps[0] == pytest.approx(25) and fps[1:] == [pytest.approx(12.5)] * 2
    for c, p in zip(chunks, pieces, strict=True):  # the audio untouched, each chunk as long as its speech
        info = probe(c)
        assert len(list(open_video(c).frames)) == round(len(p) / SR * float(info.video[0]["fps"]))
        assert info.duration_s == pytest.approx(len(p) / SR, abs=0.045)
    # the whole answer joined (the replay and download): every frame of both rates, as long as the speech
    from services.media import concat_videos

    joined = concat_videos(chunks, tmp_path / "answer.mp4")
    # decoded at its first rate (25 fps) the 12.5 fps part shows each frame twice: 16 + 2 x 16 frames, no gap
    assert len(list(open_video(joined).frames)) == 16 + 2 * (8 + 8)
    assert probe(joined).duration_s == pytest.approx(3 * 0.64, abs=0.07)


@pytest.mark.slow
@pytest.mark.parametrize("steps,frame_s,fps", [((1, 2), 0.05, 12.5), (STEPS, 0.07, 25 / 3)])
def test_ask_stream_on_a_slow_renderer_says_what_it_chose_and_plays_as_long_as_the_speech(
        photo, gen96, tmp_path, monkeypatch, steps, frame_s, fps):
    """At least 0.05 s a frame (the model's own time comes on top): under 0.8x real time at 25 fps, so 12.5 fps where
    that is the lowest rate; at least 0.07 s: under 1.2x at 12.5, below the headroom, so 8.3 fps (its pieces cut on
    that rate's frames: the chunks still play as long as the speech)."""
    import services.answering as answering

    monkeypatch.setattr(answering, "FramePace", functools.partial(FramePace, steps=steps))
    from common.settings import Settings
    from services import AppServices
    from services.media import _read_chunk
    from wav2lip384.media.video import probe

    svc = AppServices(Settings(cache_dir=str(tmp_path / "cache")), tmp_parent=tmp_path / "tmp")
    pipe = _pipe(gen96, batch_size=8)
    pipe.frame_seconds["image"] = frame_s  # what the warm-up measured on this "slow machine"
    _counting(monkeypatch, pipe, sleep_per_frame=frame_s)
    speech = np.concatenate([voiced(1.3, 0), quiet(0.5), voiced(1.7, 1)])
    answer = SimpleNamespace(text="An answer.", speech="", lang="en", answered=True, outcome="answer")
    svc._assistant = SimpleNamespace(ask=lambda q: answer)
    monkeypatch.setattr(svc, "weights", lambda m: (True, "test weights"))
    monkeypatch.setattr(svc, "pipeline", lambda m, progress=None: pipe)
    monkeypatch.setattr(svc, "check_avatar", lambda a: (photo, "image"))
    monkeypatch.setattr(svc, "_say_sentences", lambda t, lang, e: [SimpleNamespace(wave=speech, sample_rate=SR,
                                                                                   engine="test")])
    try:
        ups = []
        for up in svc.ask_stream("a question", photo, "wav2lip96"):
            ups.append(up)
            if up.chunk is not None:
                time.sleep(0.05)  # the caller's own time with each chunk (the app's Gradio converts it)
        assert 0.04 <= svc._delivery_s < 0.2  # measured: the next answer's pieces and margin allow for it
        released = [u for u in ups if u.chunk is not None]
        said = f"{round(fps, 1):g} frames per second"
        assert len(released) >= 2 and said in released[0].render_note
        rates = [float(probe(u.chunk).video[0]["fps"]) for u in released]
        assert rates == [pytest.approx(fps, abs=0.01)] * len(released)
        last = ups[-1]
        assert last.done and "frames per second" in last.render_note
        seconds = sum(_read_chunk(u.chunk, None, 1, tmp_path)[0] for u in released)
        assert seconds == pytest.approx(len(speech) / SR, abs=0.2)  # played length = speech
        assert probe(last.final_video).duration_s == pytest.approx(len(speech) / SR, abs=0.2)
    finally:
        svc.close()


def test_a_barge_in_stops_rendering_within_one_model_batch(photo, gen96, tmp_path, monkeypatch):
    """``should_stop`` (the visitor speaks or asks again) is asked between model batches and chunks: the stream
    ends after the batch that was running, yields nothing more and leaves no unfinished chunk; a whole-request
    render raises RenderStopped and leaves no file."""
    import threading

    from wav2lip384.render.pipeline import RenderStopped

    pipe = _pipe(gen96, batch_size=8, rest_in_pauses=False)
    calls = _counting(monkeypatch, pipe, sleep_per_frame=0.02)  # 0.16 s a batch of 8
    stop = threading.Event()
    asked: list[float] = []
    real = pipe.generator.decode

    def decode(audio, feats):
        if len(calls) == 2:  # the barge-in arrives while the second chunk's first batch runs
            stop.set()
            out = real(audio, feats)
            asked.append(time.perf_counter())  # that batch is done: nothing more may run
            return out
        return real(audio, feats)

    monkeypatch.setattr(pipe.generator, "decode", decode)
    pieces = [voiced(0.64, k) for k in range(3)]  # 16 frames = 2 batches each
    out = tmp_path / "chunks"
    got = []
    for chunk in pipe.stream(photo, ((p, SR) for p in pieces), out, should_stop=stop.is_set):
        got.append(chunk)
    ended = time.perf_counter()
    assert [c.name for c in got] == ["chunk_0000.mp4"] and len(calls) == 3  # no batch after the one running
    assert not (out / "chunk_0001.mp4").exists()
    assert ended - asked[0] <= 0.3  # after the running batch: only stopping the encoder and cleaning up
    stop.clear()
    calls.clear()
    with pytest.raises(RenderStopped):
        pipe(photo, (voiced(1.2), SR), tmp_path / "whole.mp4", should_stop=lambda: len(calls) >= 2)
    assert len(calls) == 2 and not (tmp_path / "whole.mp4").exists()


def test_max_batch_s_bounds_each_model_batch_by_the_measured_speed(photo, gen96, tmp_path, monkeypatch):
    pipe = _pipe(gen96, batch_size=32, rest_in_pauses=False)
    calls = _counting(monkeypatch, pipe)
    pace = FramePace(frame_s=0.05, steps=(1,))  # 0.05 s a frame: 0.4 s holds 8 frames
    list(pipe.stream(photo, [(voiced(1.0), SR)], tmp_path / "a", pace=pace,
                     max_batch_s=0.4))
    assert calls == [8, 8, 8, 1]
    calls.clear()
    list(pipe.stream(photo, [(voiced(1.0), SR)], tmp_path / "b", pace=FramePace(frame_s=1.0, steps=(1,)),
                     max_batch_s=0.4))
    assert max(calls) == 4  # never under MIN_BATCH frames
    calls.clear()
    list(pipe.stream(photo, [(voiced(1.0), SR)], tmp_path / "c", pace=pace))
    assert calls == [25]  # without it: the pipeline's batch


def test_streamed_pieces_are_sized_to_what_is_ready():
    from common.settings import Settings
    from services import AppServices
    from services.answering import MARGIN_SPAN, PLAYER_FETCH_S
    from services.media import split_speech

    svc = AppServices(Settings())
    try:
        pace = FramePace()
        pace.record(frames=25, model_frames=25, wall_s=0.5)  # a chunk measured at 2x real time at 25 fps
        # nothing measured yet: a short first piece measures the speed
        assert svc._next_piece_s(0, FramePace(), 0.0, None) == (svc.first_chunk_s, None)
        # not playing yet: one piece brings what is ready up to the playback margin (cut at a pause between all
        # that is missing and MARGIN_SPAN times that: no sliver left to render on its own), and never a sliver
        margin = svc.playback_margin_s
        assert svc._next_piece_s(0, pace, 0.0, None) == pytest.approx((MARGIN_SPAN * margin, margin))
        assert svc._next_piece_s(1, pace, 0.6, None) == pytest.approx((MARGIN_SPAN * (margin - 0.6), margin - 0.6))
        assert svc._next_piece_s(1, pace, margin - 0.1, None) == pytest.approx((MARGIN_SPAN * 0.3, 0.3))
        wave = np.random.default_rng(0).standard_normal(16000 * 5).astype(np.float32) * 0.1
        target, shortest = svc._next_piece_s(1, pace, 0.6, None)
        piece = split_speech(wave, 16000, first_s=target, max_s=target, first_from_s=shortest)[0]
        assert margin - 0.6 <= len(piece) / 16000 <= target
        # the margin is there but playback still waits (a renderer slower than the voice buffers more): whole
        # pieces, not slivers that each cost their way to the player
        assert svc._next_piece_s(3, pace, svc.playback_margin_s + 0.1, None)[0] == svc.chunk_s
        now = time.perf_counter()
        # 1.1 s ready, just started playing: the next piece must be rendered and on its way to the player before
        # what is ready has played (less the allowance for the way there), at 0.9 x 2x real time
        ready = svc.chunk_safety_s + 0.9
        assert svc._next_piece_s(1, pace, ready, now)[0] == pytest.approx(0.9 * 2 * 0.9, abs=0.03)
        assert svc._next_piece_s(3, pace, 10.0, now)[0] == svc.chunk_s
        # every chunk also costs a fixed time (its encoder): what fits is less
        slow_start = FramePace()
        slow_start.record(frames=25, model_frames=25, wall_s=0.75, fixed_s=0.25)  # 0.02 s a frame, 0.25 s a chunk
        assert svc._next_piece_s(1, slow_start, ready + 0.25, now)[0] == pytest.approx(0.9 * 2 * 0.9, abs=0.03)
        # never under min_chunk_s: tiny chunks pay that fixed time more often and fall further behind
        assert svc._next_piece_s(3, pace, 0.2, now)[0] == svc.min_chunk_s
        # where each chunk takes long on its way out (Gradio's conversion: 0.45 s on an AVX2-only EPYC), pieces
        # are long enough to keep up with it, and playback starts far enough behind to cover the first of them
        slow = FramePace(frame_s=0.07, fixed_s=0.05, delivery_s=0.45, step=3)
        longest = slow.shortest_piece_s(svc.min_chunk_s, svc.chunk_s)
        assert 2.0 < longest < svc.chunk_s and svc._next_piece_s(5, slow, 1.5, now)[0] == pytest.approx(longest)
        # before anything is measured, the first piece plays while the next goes out
        assert svc._next_piece_s(0, FramePace(delivery_s=0.45), 0.0, None)[0] == pytest.approx(0.9)
        assert svc._margin_s(slow) == pytest.approx(slow.seconds_to_render(longest) + 3 * 0.45 + PLAYER_FETCH_S)
        assert svc._margin_s(FramePace(frame_s=0.01, fixed_s=0.05, delivery_s=0.03)) == svc.playback_margin_s
        # slower than the voice even at 8.3 fps (as measured by the warm-up): no point in a short first piece
        assert svc._next_piece_s(0, FramePace(frame_s=0.2), 0.0, None)[0] == svc.chunk_s
        # ... or after playback began (the machine slowed down): fewer waits with long pieces
        assert svc._next_piece_s(4, FramePace(frame_s=0.2), 2.0, now)[0] == svc.chunk_s
    finally:
        svc.close()


@pytest.mark.slow
def test_the_start_up_warm_up_streams_at_both_frame_rates_and_measures_the_speed(gen96, tmp_path, monkeypatch):
    """The first answer after start-up meets the contract too: the warm-up pays the stream path at both rates
    an answer may use, and leaves the measured speed the first answer's pace starts from."""
    import wav2lip384.render.pipeline as P
    from common.settings import Settings
    from services import AppServices

    svc = AppServices(Settings(cache_dir=str(tmp_path / "cache")), tmp_parent=tmp_path / "tmp")
    pipe = _pipe(gen96)
    monkeypatch.setattr(svc, "pipeline", lambda m, progress=None: pipe)
    rates = []
    real_init = P.VideoWriter.__init__

    def init(self, path, width, height, fps, **kw):
        rates.append((fps, kw.get("audio_codec")))
        real_init(self, path, width, height, fps, **kw)

    monkeypatch.setattr(P.VideoWriter, "__init__", init)
    try:
        svc._warm_render("wav2lip96")
    finally:
        svc.close()
    assert (12.5, "flac") in rates and (25.0, "flac") in rates  # the stream path, at both frame rates
    assert rates[-1] == (25.0, "flac") and pipe.frame_seconds.get("image", 0) > 0


def test_pieces_are_cut_on_whole_frames_of_the_rate_they_render_at():
    from services.answering import PIECE_FPS, piece_fps

    assert piece_fps(FramePace()) == PIECE_FPS == piece_fps(FramePace(frame_s=0.05))  # 25 or 12.5 fps: 80 ms
    slow = FramePace(frame_s=0.07)  # 8.3 fps: 120 ms
    assert piece_fps(slow) == pytest.approx(25 / 3) and slow.step == 3


def test_pieces_are_long_enough_for_what_each_chunk_costs_besides_its_frames():
    # bf16 class: 0.45 s a second of speech at 25 fps, 0.2 s a chunk besides: any piece keeps up, the floor holds
    assert FramePace(frame_s=0.018, fixed_s=0.05, delivery_s=0.15).shortest_piece_s(1.0, 3.0) == 1.0
    # AVX2-only EPYC at 8.3 fps: 0.58 s a second of speech, 0.5 s a chunk besides: L / (0.58 L + 0.5) >= 1.25
    slow = FramePace(frame_s=0.07, fixed_s=0.05, delivery_s=0.45, step=3)
    assert slow.shortest_piece_s(1.0, 3.0) == pytest.approx(1.25 * 0.5 / (1 - 1.25 * 0.07 * 25 / 3))
    assert FramePace(frame_s=0.2, step=3).shortest_piece_s(1.0, 3.0) == 3.0  # no length keeps up: the longest
    assert FramePace().shortest_piece_s(1.0, 3.0) == 1.0  # nothing measured yet
    pace = FramePace()
    pace.record_delivery(0.4)
    pace.record_delivery(0.2)
    assert pace.delivery_s == pytest.approx(0.3)


def test_once_playing_the_frame_rate_may_drop_but_not_rise_again():
    pace = FramePace(frame_s=0.05)  # 0.8x real time at 25 fps, 1.6x at 12.5
    assert pace.choose() == 2
    pace.no_rise = True
    pace.frame_s = 0.01  # the model got faster: 25 fps would keep up now, but playback has begun
    assert pace.choose() == 2
    pace.no_rise, pace.step = True, 1
    pace.frame_s = 0.05  # ... while dropping to 12.5 fps to keep up is still allowed
    assert pace.choose() == 2
