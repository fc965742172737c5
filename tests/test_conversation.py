"""The conversation mode without a browser: the pause detector (qa.vad), the turn state machine with barge-in
(services.conversation) and the Conversation tab's handlers offline (no recognition model: typing works).

The state-machine tests give :meth:`Conversation.answer` a stand-in for AppServices whose recogniser and
``ask_stream`` replay fixed steps: they check the plumbing (states, cancellation, timings), never model output.
The offline test runs the real services (a two-entry knowledge base, espeak, no lip-sync weights).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from common.settings import Settings
from qa.vad import EnergyVAD, VADConfig, level_db
from services.answering import with_last_chunk
from services.conversation import HEARING, LISTENING, SPEAKING, THINKING, Conversation, Conversations
from services.results import AskUpdate

SR = 48_000


def speechlike(seconds: float, sr: int = SR, level: float = 0.3, seed: int = 1) -> np.ndarray:
    """Voiced harmonics with a syllable-rate envelope, (n,) float32."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    rng = np.random.default_rng(seed)
    return (level * x / np.abs(x).max() + 1e-4 * rng.normal(size=t.size)).astype(np.float32)


def noise(seconds: float, db: float, sr: int = SR, seed: int = 2) -> np.ndarray:
    return (10 ** (db / 20) * np.random.default_rng(seed).normal(size=int(seconds * sr))).astype(np.float32)


def feed(vad_or_conv, signal: np.ndarray, piece_s: float = 0.2, sr: int = SR):
    """Feed ``signal`` in microphone-sized pieces; all events (EnergyVAD) or Heard results (Conversation)."""
    out = []
    n = int(piece_s * sr)
    for i in range(0, len(signal), n):
        piece = signal[i:i + n]
        if isinstance(vad_or_conv, EnergyVAD):
            out += vad_or_conv.feed(piece)
        else:
            out.append(vad_or_conv.hear(sr, (piece * 32767).astype(np.int16)))
    return out


# ------------------------------------------------------------------------------------------------ qa.vad
def test_a_question_then_a_pause_gives_one_start_and_one_end_at_the_speech_edges():
    sig = np.concatenate([noise(0.6, -70), speechlike(1.5), noise(1.0, -70)])
    events = feed(EnergyVAD(SR), sig)
    assert [e.kind for e in events] == ["start", "end"]
    assert events[0].t_start == pytest.approx(0.6, abs=0.05)
    assert events[1].t_end == pytest.approx(2.1, abs=0.05)  # the last voiced frame, not the end of the pause


def test_a_click_or_a_short_pause_inside_the_question_do_not_end_or_start_a_turn():
    click = np.concatenate([noise(0.5, -70), speechlike(0.06), noise(1.0, -70)])
    assert feed(EnergyVAD(SR), click) == []  # shorter than min_speech_s
    halting = np.concatenate([noise(0.5, -70), speechlike(0.8), noise(0.3, -70), speechlike(0.8), noise(1.0, -70)])
    events = feed(EnergyVAD(SR), halting)
    assert [e.kind for e in events] == ["start", "end"]  # a 0.3 s pause (< end_silence_s) is inside the turn
    assert events[1].t_end == pytest.approx(2.4, abs=0.05)


def test_the_floor_adapts_to_steady_noise_and_quiet_speech_over_it_is_still_heard():
    cfg = VADConfig()
    hum = noise(3.0, -40)  # a noisy room: never speech by itself
    assert feed(EnergyVAD(SR, cfg), hum) == []
    speech = speechlike(1.0, level=0.15) + noise(1.0, -40, seed=3)  # ~-22 dBFS speech over it
    assert level_db(speech) > -40 + cfg.start_db
    events = feed(EnergyVAD(SR, cfg), np.concatenate([hum, speech, noise(1.0, -40, seed=4)]))
    assert [e.kind for e in events] == ["start", "end"]


def test_a_monologue_is_cut_at_max_utterance():
    events = feed(EnergyVAD(SR, VADConfig(max_utterance_s=2.0)), np.concatenate([noise(0.3, -70), speechlike(5.0)]))
    assert events[1].kind == "end" and events[1].t_end - events[1].t_start == pytest.approx(2.0, abs=0.05)


# --------------------------------------------------------------------------------- the turn state machine
class StandIn:
    """AppServices' recognizer() and ask_stream() replaying fixed steps (plumbing only)."""

    def __init__(self, text="How do I apply?", chunks=4, chunk_s=0.05):
        self.text, self.chunks, self.chunk_s = text, chunks, chunk_s
        self.heard: list[np.ndarray] = []
        self.closed = threading.Event()

    def recognizer(self):
        def transcribe(audio):
            self.heard.append(audio[0])
            return SimpleNamespace(text=self.text, language="en", timings={"recognise_s": 0.01}, model="stand-in")

        return SimpleNamespace(transcribe=transcribe)

    def ask_stream(self, question, avatar, model, **kw):
        answer = SimpleNamespace(outcome="answer", text=f"answer to {question}", answered=True)
        try:
            yield AskUpdate(answer=answer)
            for i in range(self.chunks):
                time.sleep(self.chunk_s)
                yield AskUpdate(answer=answer, chunk=Path(f"chunk{i}.mp4"), index=i, last_chunk=i == self.chunks - 1)
            yield AskUpdate(answer=answer, done=True, final_video=Path("all.mp4"), audio=Path("all.wav"),
                            speech_seconds=1.0)
        finally:
            self.closed.set()


def _spoken_turn(conv: Conversation):
    heard = feed(conv, np.concatenate([noise(0.5, -70), speechlike(1.2), noise(0.8, -70)]))
    turns = [h.turn for h in heard if h.turn is not None]
    assert len(turns) == 1
    return heard, turns[0]


def test_a_pause_ends_the_turn_with_its_audio_and_the_answer_streams_with_timings():
    conv = Conversation()
    heard, turn = _spoken_turn(conv)
    assert [h.state for h in heard if h.changed] == [HEARING, THINKING]
    # the turn holds the speech (with a little audio before it) and when it ended, in wall-clock time
    assert 1.2 <= turn.speech_seconds <= 1.2 + conv.vad_config.pre_roll_s + 0.15
    assert turn.t_turn_end - turn.t_speech_end == pytest.approx(conv.vad_config.end_silence_s, abs=0.25)
    assert conv.take(turn.id) is turn and conv.take(turn.id) is None
    svc = StandIn()
    steps = list(conv.answer(svc, turn))
    # the last chunk comes with "done": the page's player gets it and the end of the stream together
    assert [s.phase for s in steps] == ["recognised", "answer", "chunk", "chunk", "chunk", "done"]
    assert [s.chunk for s in steps[2:]] == [Path(f"chunk{i}.mp4") for i in range(4)]
    assert steps[-1].final_video == Path("all.mp4")
    assert len(svc.heard[0]) == len(turn.audio)
    t = steps[-1].timings
    assert 0 < t["turn_ended"] <= t["recognised"] <= t["answered"] <= t["first_chunk"]
    assert conv.state == LISTENING and not conv.history[0].stopped
    assert conv.history[0].question == "How do I apply?" and conv.history[0].answer.text.startswith("answer to")


def test_the_last_chunk_moves_into_the_done_step_and_an_answer_stopped_after_it_still_plays_it():
    answer = SimpleNamespace(text="a")
    ups = [AskUpdate(answer=answer), AskUpdate(answer=answer, chunk=Path("0.mp4"), index=0),
           AskUpdate(answer=answer, chunk=Path("1.mp4"), index=1, last_chunk=True)]
    done = AskUpdate(answer=answer, index=2, done=True, final_video=Path("all.mp4"))
    def played(steps):
        return [(u.done, c and c.chunk) for u, c in steps]

    assert played(with_last_chunk(iter(ups + [done]))) == [
        (False, None), (False, Path("0.mp4")), (True, Path("1.mp4"))]
    assert [c for _, c in played(with_last_chunk(iter(ups)))] == [None, Path("0.mp4"), Path("1.mp4")]  # stopped
    spoken_only = AskUpdate(answer=answer, done=True, audio=Path("a.wav"))
    assert played(with_last_chunk(iter(ups[:1] + [spoken_only]))) == [(False, None), (True, None)]


def test_speech_during_the_answer_stops_it_and_the_server_stops_rendering():
    conv = Conversation()
    _, turn = _spoken_turn(conv)
    svc = StandIn(chunks=50, chunk_s=0.05)
    steps = conv.answer(svc, turn)
    phases = [next(steps).phase for _ in range(3)]  # recognised, answer, first chunk
    assert phases == ["recognised", "answer", "chunk"] and conv.state == SPEAKING
    heard = feed(conv, np.concatenate([speechlike(0.4), noise(0.2, -70)]))
    assert any(h.barge_in for h in heard) and conv.state == HEARING
    rest = list(steps)
    assert rest[-1].phase == "stopped" and len(rest) <= 2  # at most the chunk in flight, then stopped
    assert svc.closed.is_set()  # ask_stream was closed: no more rendering
    assert 0 <= rest[-1].timings["server_stop_after_barge_in"] < 1.0
    assert conv.history[0].stopped and conv.state == HEARING  # still hearing the new turn


def test_the_page_stopping_the_player_cancels_an_answer_in_progress_or_marks_a_rendered_one_interrupted():
    conv = Conversation()
    _, turn = _spoken_turn(conv)
    svc = StandIn(chunks=50, chunk_s=0.05)
    steps = conv.answer(svc, turn)
    assert [next(steps).phase for _ in range(3)] == ["recognised", "answer", "chunk"]
    assert conv.stopped_in_page(0.12)  # before the server's own detector hears it
    rest = list(steps)
    assert rest[-1].phase == "stopped" and svc.closed.is_set()
    assert 0.12 <= rest[-1].timings["server_stop_after_barge_in"] < 0.5
    assert not conv.stopped_in_page(0.12)  # said twice: nothing more to stop
    # an answer rendered to its end, still playing in the page: marked interrupted, nothing to stop on the server
    _, turn = _spoken_turn(conv)
    assert list(conv.answer(StandIn(chunks=2, chunk_s=0.0), turn))[-1].phase == "done"
    assert not conv.history[-1].stopped
    assert conv.stopped_in_page(0.12)
    ex = conv.history[-1]
    assert ex.stopped and ex.timings["server_stop_after_barge_in"] == 0.0
    assert ex.timings["page_stop_after_barge_in"] == 0.12


def test_a_typed_question_is_a_turn_too_and_an_empty_one_is_refused():
    from common.errors import UserFacingError

    conv = Conversation()
    steps = list(conv.answer(StandIn(), conv.typed("  Where do I renew my passport? ")))
    assert steps[0].question == "Where do I renew my passport?" and steps[-1].phase == "done"
    assert "turn_ended" not in steps[-1].timings and not conv.history[0].spoken
    with pytest.raises(UserFacingError, match="Type your question"):
        list(conv.answer(StandIn(), conv.typed("  ")))


def test_nothing_recognised_says_so_and_keeps_listening():
    conv = Conversation()
    _, turn = _spoken_turn(conv)
    steps = list(conv.answer(StandIn(text=""), turn))
    assert [s.phase for s in steps] == ["unheard"] and "say it again" in steps[0].notice
    assert conv.state == LISTENING


def test_sessions_are_apart_and_the_oldest_is_dropped():
    convs = Conversations(max_sessions=2)
    a, b = convs.get("a"), convs.get("b")
    assert convs.get("a") is a and a is not b
    convs.get("c")
    assert convs.get("b") is not b  # "b" was the least recently used when "c" came


def test_a_did_you_mean_candidate_can_be_clicked_typed_or_said_and_that_entry_is_answered():
    from common.errors import UserFacingError

    conv = Conversation()
    svc = Asking()
    list(conv.answer(svc, conv.typed("permit")))
    assert [c.id for c in conv.offered()] == ["apply", "renew"]
    # a click: the entry itself is answered (not asked again), recorded in the chat as the candidate's question
    steps = list(conv.answer(svc, conv.choose("renew", "en")))
    assert svc.asked[-1] == ("How do I renew a residence permit?", "renew", "en") and steps[-1].phase == "done"
    assert conv.history[-1].picked and steps[-1].details["picked_entry"] == "renew"
    assert conv.offered() == []  # answered: nothing left to pick
    with pytest.raises(UserFacingError, match="no longer offered"):
        conv.choose("apply", "en")
    list(conv.answer(svc, conv.typed("permit")))
    list(conv.answer(StandIn(text=""), _spoken_turn(conv)[1]))  # a newer question, not made out: withdrawn too
    assert conv.offered() == []
    # typed: the candidate's question (case and punctuation aside) or its number
    for typed, entry in (("how do i APPLY for a residence permit", "apply"), (" 2 ", "renew")):
        list(conv.answer(svc, conv.typed("permit")))
        list(conv.answer(svc, conv.typed(typed)))
        assert svc.asked[-1][1:] == (entry, "en") and not conv.history[-1].picked
    # said: the recognised words name a candidate
    list(conv.answer(svc, conv.typed("permit")))
    _, turn = _spoken_turn(conv)
    list(conv.answer(Asking(heard="How do I renew a residence permit?", asked=svc.asked), turn))
    assert svc.asked[-1][1:] == ("renew", "en") and conv.history[-1].spoken


class Asking(StandIn):
    """A stand-in whose "permit" is asked back with two candidates; records (question, entry, lang) asked."""

    def __init__(self, heard="permit", asked=None):
        super().__init__(text=heard, chunks=1, chunk_s=0.0)
        self.asked = [] if asked is None else asked

    def ask_stream(self, question, avatar, model, entry=None, lang="zh", **kw):
        self.asked.append((question, entry, lang))
        if entry is None and question == "permit":
            cands = [SimpleNamespace(id="apply", question="How do I apply for a residence permit?"),
                     SimpleNamespace(id="renew", question="How do I renew a residence permit?")]
            answer = SimpleNamespace(outcome="clarify", text="Did you mean ...", answered=False, lang="en",
                                     candidates=cands)
        else:
            answer = SimpleNamespace(outcome="answer", text=f"answer {entry}", answered=True, lang=lang, candidates=[])
        yield AskUpdate(answer=answer)
        yield AskUpdate(answer=answer, done=True, audio=Path("all.wav"), speech_seconds=1.0)


# ------------------------------------------------------------------ offline: no recognition model, typing
def _offline(root: Path, **env):
    from services import AppServices

    kb = root / "kb.jsonl"
    kb.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"id": "permit", "question": "居住证怎么办理？", "answer": "到社区服务站办理。",
         "question_en": "How do I apply for a residence permit?", "answer_en": "At the community service station."},
        {"id": "id", "question": "身份证丢了怎么补办？", "answer": "请到派出所补领。",
         "question_en": "How do I replace a lost ID card?", "answer_en": "Go to the police station."}]),
        encoding="utf-8")
    settings = Settings.from_env({"DH_QA_KB": str(kb), "DH_CACHE_DIR": str(root / "cache"), "DH_TTS_ENGINE": "espeak",
                                  "DH_ASR_MODEL": "", **{f"DH_{m}_CHECKPOINT": str(root / "none") for m in
                                                        ("WAV2LIP96", "WAV2LIP256", "LIVETALKING384")}, **env})
    return AppServices(settings, tmp_parent=root / "requests")


@pytest.fixture(scope="module")
def offline_services(tmp_path_factory):
    svc = _offline(tmp_path_factory.mktemp("talk-offline"))
    yield svc
    svc.close()


class _NoJoin:
    """ChunkJoiner's stand-in: SlowPipeline's chunks are empty files, nothing to join."""

    def __init__(self, out_dir):
        pass

    def add(self, chunk):
        pass

    def join(self, path):
        return None

    def close(self):
        pass


class SlowPipeline:
    """A lip-sync stand-in that takes ``chunk_s`` per chunk in ``batch_s`` model batches and, as LipSyncPipeline
    does, checks ``should_stop`` between batches (plumbing: its chunks are empty files, never played)."""

    frame_seconds: dict = {}
    render_fixed_seconds: dict = {}

    def __init__(self, chunk_s: float = 3.0, batch_s: float = 0.05):
        self.chunk_s, self.batch_s = chunk_s, batch_s
        self.rendering = threading.Event()  # a batch is being rendered
        self.closed = threading.Event()  # its stream generator ended (returned or closed)
        self.last_batch_end = 0.0  # wall clock

    def stream(self, face, segments, out_dir, *, pace=None, should_stop=None, **kw):
        try:
            for k, _segment in enumerate(segments):
                for _ in range(int(self.chunk_s / self.batch_s)):
                    if should_stop is not None and should_stop():
                        return
                    self.rendering.set()
                    time.sleep(self.batch_s)
                    self.last_batch_end = time.time()
                path = Path(out_dir) / f"chunk_{k:04d}.mp4"
                path.write_bytes(b"")
                yield path
        finally:
            self.closed.set()


def test_a_barge_in_stops_the_answer_being_rendered_within_half_a_second(offline_services, monkeypatch):
    """The real ask_stream (answer, espeak, pieces) over a renderer 3 s per chunk: speech in the middle of a chunk
    stops it within one batch, not at the chunk's end; nothing renders on and the answer's worker is done."""
    svc = offline_services
    pipe = SlowPipeline()
    monkeypatch.setattr(svc, "weights", lambda model: (True, ""))
    monkeypatch.setattr(svc, "pipeline", lambda model, progress=None: pipe)
    conv = Conversation()
    steps: list = []
    worker = threading.Thread(target=lambda: steps.extend(conv.answer(svc, conv.typed("How do I replace a lost ID "
                                                                                        "card?"))))
    worker.start()  # as Gradio runs it: in a worker thread, while the microphone's pieces arrive in another
    assert pipe.rendering.wait(120), "the answer never reached the lip-sync"
    threads_while_answering = set(threading.enumerate())  # the answer's worker, and whatever loading started
    feed(conv, noise(0.4, -70))  # the room, before the visitor speaks again
    time.sleep(0.3)  # well inside the first chunk
    heard = feed(conv, np.concatenate([speechlike(0.4), noise(0.2, -70)]))
    t_heard = time.time()
    assert any(h.barge_in for h in heard) and conv.state == HEARING
    worker.join(5)
    assert not worker.is_alive()
    assert steps[-1].phase == "stopped", [s.phase for s in steps]
    assert steps[-1].timings["server_stop_after_barge_in"] <= 0.5, steps[-1].timings
    assert pipe.closed.is_set() and pipe.last_batch_end - t_heard <= 2 * pipe.batch_s  # nothing renders on
    assert set(threading.enumerate()) <= threads_while_answering - {worker}, threading.enumerate()
    assert conv.history[0].stopped and "first_chunk" not in steps[-1].timings


def test_ask_stream_stopped_before_its_speech_renders_nothing(offline_services, monkeypatch):
    svc = offline_services
    pipe = SlowPipeline(chunk_s=0.1)
    monkeypatch.setattr(svc, "weights", lambda model: (True, ""))
    monkeypatch.setattr(svc, "pipeline", lambda model, progress=None: pipe)
    stop = threading.Event()
    ups = []
    for up in svc.ask_stream("How do I replace a lost ID card?", should_stop=stop.is_set):
        ups.append(up)
        stop.set()  # once the answer is shown
    assert len(ups) == 1 and ups[0].answer is not None and not pipe.rendering.is_set()
    assert list(svc.ask_stream("How do I replace a lost ID card?", should_stop=lambda: True)) == []


def test_without_the_recognition_model_the_tab_says_so_at_once_and_typing_is_answered(offline_services):
    app = pytest.importorskip("app")
    th = app.TalkHandlers(offline_services, streaming=True)
    t0 = time.perf_counter()
    state, notice = th.start(None)
    assert time.perf_counter() - t0 < 5
    assert "Type your question" in state and "not installed" in notice and "type" in notice.lower()
    # the microphone keeps streaming, but nothing is waited for: no turn, no error
    piece = (SR, (speechlike(0.2) * 32767).astype(np.int16))
    assert th.hear(piece, None) == ({"__type__": "update"},) * 2  # gr.skip() for both outputs
    steps = list(th.answer_typed("How do I apply for a residence permit?", "wav2lip96", None))
    text, chat, video, audio, state, latency, details, notice, phase = steps[-1]
    assert phase.endswith(" done")
    assert text == "" and chat[0] == {"role": "user", "content": "How do I apply for a residence permit?"}
    # answered as the Ask tab answers (which outcome depends on the embedder available offline)
    assert chat[1]["role"] == "assistant" and any(h in chat[1]["content"] for h in (
        "Matched question", "Did you mean", "No confident match"))
    assert audio and Path(audio).stat().st_size > 1000  # no lip-sync here: the answer is spoken as audio
    assert "not available" in notice.lower()  # plain words (the technical reason is in the details)
    assert details["seconds_after_end_of_speech"]["answered"] >= 0 and "answer found" in latency


def test_the_tab_shows_did_you_mean_candidates_as_buttons_and_a_click_answers_that_entry(tmp_path):
    """Thresholds that always ask back (a deployment's DH_QA_* settings): the chat's answer carries the candidates
    as options; picking one (Chatbot.option_select) answers that entry, spoken, and the chat records the pick."""
    app = pytest.importorskip("app")
    import gradio as gr

    svc = _offline(tmp_path, DH_QA_THRESHOLD="-1", DH_QA_ANSWER_THRESHOLD="2")
    try:
        th = app.TalkHandlers(svc, streaming=True)
        chat = list(th.answer_typed("residence permit", "wav2lip96", None))[-1][1]
        options = chat[-1]["options"]
        assert "Did you mean" in chat[-1]["content"] and len(options) == 2, chat
        assert options[1] == {"label": "2. How do I replace a lost ID card?", "value": "#en:id"}
        steps = list(th.answer_choice("wav2lip96", gr.SelectData(None, {"index": 1, "value": options[1]["value"]})))
        chat, video, audio, state, latency, details, notice, phase = steps[-1]
        assert chat[-2] == {"role": "user", "content": "👆 How do I replace a lost ID card?"}
        assert "Matched question" in chat[-1]["content"] and "police station" in chat[-1]["content"]
        assert "options" not in chat[-1]  # answered: nothing left to pick
        assert audio and Path(audio).stat().st_size > 1000 and details["picked_entry"] == "id"
        assert latency.startswith("After you asked: ") and "answer found" in latency
        assert details["seconds_after_end_of_speech"]["answered"] >= 0
        # the page stopped its player (the visitor spoke): the answer, rendered already, is marked interrupted
        th.stopped_in_page("not json")
        th.stopped_in_page(json.dumps({"n": 1, "stop_s": 0.12}))
        assert th._history(th._conv(None))[-1]["content"].endswith("*(interrupted)*")
    finally:
        svc.close()


def test_an_answer_is_released_once_all_of_it_is_rendered_whatever_its_margin_says(offline_services, monkeypatch):
    """A short answer under a long playback margin waits for all of it, then plays: the sum of its pieces' seconds
    in floating point may fall short of the whole (a Talk turn once never played: talk-bench, AVX2-only EPYC)."""
    import services.answering as answering

    svc = offline_services
    pipe = SlowPipeline(chunk_s=0.05)
    monkeypatch.setattr(svc, "weights", lambda model: (True, ""))
    monkeypatch.setattr(svc, "pipeline", lambda model, progress=None: pipe)
    monkeypatch.setattr(answering, "release_at", lambda total_s, rate, margin_s: float("inf"))  # never far enough

    monkeypatch.setattr(answering, "ChunkJoiner", _NoJoin)
    ups = list(svc.ask_stream("How do I replace a lost ID card?"))
    released = [u for u in ups if u.chunk is not None]
    assert released and released[-1].last_chunk and [u.index for u in released] == list(range(len(released)))


def test_a_short_answer_is_never_one_chunk(offline_services, monkeypatch):
    """A short answer whose first piece could hold all of it (the speed measured, the playback margin near its
    length) is still cut in two: its last chunk waits for the end of the stream and the join (with_last_chunk),
    and a first frame waiting for that came 0.4 s later (talk-bench, bf16 2-core CPU)."""
    import services.answering as answering

    svc = offline_services
    seen: list[float] = []

    class Measured(SlowPipeline):
        frame_seconds = {"image": 0.01, "video": 0.01}  # 4x real time at 25 fps, as the warm-up measures

        def stream(self, face, segments, out_dir, **kw):
            def record():
                for wave, sr in segments:
                    seen.append(len(wave) / sr)
                    yield wave, sr
            yield from super().stream(face, record(), out_dir, **kw)

    pipe = Measured(chunk_s=0.05)
    monkeypatch.setattr(svc, "weights", lambda model: (True, ""))
    monkeypatch.setattr(svc, "pipeline", lambda model, progress=None: pipe)
    wave = (0.1 * np.sin(np.arange(int(16000 * 1.4)) * 0.05)).astype(np.float32)  # 1.4 s of "speech"
    monkeypatch.setattr(svc, "_say_sentences", lambda text, lang, engine: iter(
        [SimpleNamespace(engine="test", wave=wave, sample_rate=16000)]))
    monkeypatch.setattr(answering, "ChunkJoiner", _NoJoin)
    ups = list(svc.ask_stream("How do I replace a lost ID card?"))
    assert len(seen) == 2 and sum(seen) == pytest.approx(1.4, abs=1e-3) and seen[1] >= answering.TAIL_S - 0.04, seen
    released = [u for u in ups if u.chunk is not None]
    assert [u.index for u in released] == [0, 1] and released[-1].last_chunk and ups[-1].done
