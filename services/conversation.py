"""Talk to it: a hands-free, interruptible spoken conversation with the digital human, without the UI.

One :class:`Conversation` per browser session (:class:`Conversations` keeps them). The microphone arrives in small
pieces (:meth:`Conversation.hear`); an energy detector (:mod:`qa.vad`) says when the visitor starts and stops
speaking. A pause ends the visitor's turn: :meth:`Conversation.answer` recognises it (``AppServices.recognizer``),
answers it and speaks it lip-synced as a stream (``AppServices.ask_stream``: the Ask tab's answer, chunks and
all). Speaking while it answers (barge-in) cancels that answer: ``ask_stream`` is given the cancel event
(``should_stop``) and stops rendering within one model batch, and the conversation listens to the new turn. The
page runs the same detector and stops the player at once; it says so (:meth:`Conversation.stopped_in_page`), which
also marks an answer already rendered to its end, still playing there, as interrupted.
A "did you mean" answer's candidates can be picked (:meth:`Conversation.choose`: a click in the chat), typed or
said: that entry is answered.

Turn states: ``listening`` -> (speech starts) ``hearing`` -> (pause) ``thinking`` (recognising, answering,
rendering the first chunk) -> ``speaking`` (chunks going out) -> ``listening``; speech during ``thinking`` or
``speaking`` goes straight to ``hearing`` and stops the answer.

Timings are wall-clock seconds after the end of the visitor's speech (the end of the last voiced frame, placed in
time from the arrival of the microphone piece that held it): the turn ended (the pause was long enough), the
text recognised, the answer found, the first lip-synced chunk sent. The browser adds the first frame on screen.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserFacingError
from qa.vad import EnergyVAD, VADConfig, to_float_mono
from services.answering import with_last_chunk
from wav2lip384.models import registry

log = logging.getLogger(__name__)

LISTENING, HEARING, THINKING, SPEAKING = "listening", "hearing", "thinking", "speaking"


@dataclass(frozen=True)
class Turn:
    """One finished turn of the visitor: spoken (``audio`` at ``sample_rate``) or typed (``text``)."""

    id: int
    audio: np.ndarray | None = None  # (n,) float32 in [-1, 1]
    sample_rate: int = 16000
    text: str = ""
    t_speech_end: float = 0.0  # wall clock (time.time()) of the end of speech (typed: of the submission)
    t_turn_end: float = 0.0  # wall clock when the pause ended the turn
    entry: str = ""  # a "did you mean" candidate picked: the id of the entry to answer (``text`` is its question)
    lang: str = "zh"  # the language of that entry's answer

    @property
    def spoken(self) -> bool:
        return self.audio is not None

    @property
    def speech_seconds(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / float(self.sample_rate)


@dataclass(frozen=True)
class Heard:
    """What one microphone piece changed."""

    state: str
    turn: Turn | None = None  # a finished turn to answer now
    barge_in: bool = False  # speech started while an answer was being prepared or spoken: it is stopped
    changed: bool = False  # the state differs from before this piece
    level_db: float = -100.0


@dataclass
class TalkUpdate:
    """One step of :meth:`Conversation.answer`."""

    turn_id: int
    phase: str  # "recognised" | "answer" | "waiting" | "chunk" | "done" | "stopped" | "unheard"
    question: str = ""
    answer: Any = None  # qa.Answer once found
    chunk: Path | None = None  # a lip-synced piece to queue in the player (the last one comes with "done")
    segment: Any = None  # that piece as an HLS segment (services.segments.Segment), when asked for
    final_video: Path | None = None
    audio: Path | None = None  # the spoken answer as audio (the last step; or alone when lip-sync cannot run)
    notice: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds after the end of speech
    details: dict[str, Any] = field(default_factory=dict)  # engineering details for the API / Details panel


@dataclass
class Exchange:
    """One question and its answer in the history (``answer`` None until found; ``note`` when none came)."""

    turn_id: int
    question: str
    spoken: bool
    answer: Any = None
    picked: bool = False  # a "did you mean" candidate the visitor clicked
    note: str = ""
    stopped: bool = False
    timings: dict[str, float] = field(default_factory=dict)


class Conversation:
    """The state of one visitor's conversation. Thread-safe: the microphone and the answer run in different
    worker threads."""

    def __init__(self, vad: VADConfig | None = None, clock: Callable[[], float] = time.time, max_history: int = 50):
        self.vad_config = vad or VADConfig()
        self.clock = clock
        self.max_history = max_history
        self.state = LISTENING
        self.can_hear = True  # False where spoken turns cannot be recognised: the microphone is then ignored
        self.history: list[Exchange] = []
        self._lock = threading.Lock()
        self._vad: EnergyVAD | None = None
        self._buf: collections.deque[np.ndarray] = collections.deque()  # audio since _buf_start (samples)
        self._buf_start = 0
        self._next_id = 1
        self._answering: int | None = None
        self._cancel: dict[int, threading.Event] = {}
        self._barge: dict[int, float] = {}  # turn id -> wall clock of the speech that stopped it
        self._pending: dict[int, Turn] = {}  # turns ended by a pause, waiting for their answer to start

    # ---- listening ------------------------------------------------------------------------------------
    def hear(self, sample_rate: int, samples: np.ndarray, now: float | None = None) -> Heard:
        """The next microphone piece (``samples`` at ``sample_rate``, as the browser recorded it)."""
        now = self.clock() if now is None else now
        x = to_float_mono(samples)
        sr = int(sample_rate)
        with self._lock:
            before = self.state
            if self._vad is None or self._vad.sr != sr:
                self._vad = EnergyVAD(sr, self.vad_config)
                self._buf.clear()
                self._buf_start = 0
            vad = self._vad
            self._buf.append(x)
            events = vad.feed(x)
            t_piece_end = vad.received_seconds
            turn, barge = None, False
            for ev in events:
                if ev.kind == "start":
                    if self.state in (THINKING, SPEAKING) and self._answering is not None:
                        barge = True
                        self._cancel[self._answering].set()
                        self._barge[self._answering] = now - (t_piece_end - ev.t_start)
                        self._answering = None
                    self.state = HEARING
                else:
                    pre = self.vad_config.pre_roll_s
                    audio = self._cut(int(max(0.0, ev.t_start - pre) * sr), int(ev.t_end * sr) + int(0.1 * sr))
                    turn = Turn(id=self._next_id, audio=audio, sample_rate=sr,
                                t_speech_end=now - (t_piece_end - ev.t_end), t_turn_end=now)
                    self._next_id += 1
                    self._pending[turn.id] = turn
                    while len(self._pending) > 4:  # never answered (the page went away): forget them
                        self._pending.pop(next(iter(self._pending)))
                    self.state = THINKING
            if not vad.speaking:  # keep only the pre-roll while nobody speaks
                self._trim(int(max(0.0, t_piece_end - self.vad_config.pre_roll_s - 0.1) * sr))
            return Heard(self.state, turn, barge, self.state != before, vad.last_level_db)

    def stopped_in_page(self, stop_s: float = 0.0) -> bool:
        """The page stopped the answer's player: its own detector heard the visitor start speaking ``stop_s``
        seconds before. An answer still being prepared is cancelled as the server's detector would (whichever hears
        it first); one rendered to its end and still playing there is marked interrupted (the server had nothing
        left to stop). True if an answer was stopped or marked."""
        now = self.clock()
        stop_s = min(max(float(stop_s or 0.0), 0.0), 5.0)
        with self._lock:
            if self._answering is not None:
                self._barge[self._answering] = now - stop_s
                return self._stop_locked()
            last = next((ex for ex in reversed(self.history) if ex.answer is not None), None)
            if last is None or last.stopped or last.turn_id in self._cancel:  # (still ending: it says itself)
                return False
            last.stopped = True
            last.timings.update(server_stop_after_barge_in=0.0, page_stop_after_barge_in=round(stop_s, 3))
            log.info("conversation turn %d %s", last.turn_id, json.dumps(
                {**last.timings, "stopped": True, "spoken": last.spoken, "picked": last.picked,
                 "rendered_before_barge_in": True}))
            return True

    def _cut(self, a: int, b: int) -> np.ndarray:
        whole = np.concatenate(list(self._buf)) if self._buf else np.zeros(0, np.float32)
        return whole[max(0, a - self._buf_start):max(0, b - self._buf_start)].copy()

    def _trim(self, keep_from: int) -> None:
        while self._buf and self._buf_start + len(self._buf[0]) <= keep_from:
            self._buf_start += len(self._buf.popleft())

    def take(self, turn_id: int) -> Turn | None:
        """The spoken turn ``turn_id`` ended by :meth:`hear`, once (None if unknown or already taken)."""
        with self._lock:
            return self._pending.pop(int(turn_id), None)

    def typed(self, text: str) -> Turn:
        """A typed question: a turn like a spoken one (stops an answer in progress too)."""
        with self._lock:
            self._stop_locked()
            turn = Turn(id=self._next_id, text=(text or "").strip(), t_speech_end=self.clock(),
                        t_turn_end=self.clock())
            self._next_id += 1
            self.state = THINKING
            return turn

    def choose(self, entry: str, lang: str = "zh") -> Turn:
        """A "did you mean" candidate clicked: a turn that answers that entry (stops an answer in progress too).
        Only a candidate the conversation offered (its latest "did you mean") can be picked."""
        with self._lock:
            offered = {c.id: c.question for c in self._offered_locked()}
            if entry not in offered:
                raise UserFacingError("That choice is no longer offered; please ask your question again.")
            self._stop_locked()
            turn = Turn(id=self._next_id, text=offered[entry], t_speech_end=self.clock(), t_turn_end=self.clock(),
                        entry=entry, lang=lang if lang in ("zh", "en") else "zh")
            self._next_id += 1
            self.state = THINKING
            return turn

    def offered(self) -> list:
        """The candidates of the latest exchange's "did you mean" answer (else []: a newer question withdraws them)."""
        with self._lock:
            return self._offered_locked()

    def _offered_locked(self) -> list:
        last = self.history[-1] if self.history else None  # a newer question (even unanswered) withdraws them
        return list(getattr(last.answer, "candidates", None) or []) if last is not None else []

    def _picked(self, text: str) -> tuple[str, str] | None:
        """(entry, lang) when a typed or recognised question is one of the candidates offered: the candidate's
        question itself (case, spaces and punctuation aside) or its number (1, 2, 3)."""
        with self._lock:
            cands = self._offered_locked()
            lang = getattr(self.history[-1].answer, "lang", "zh") if cands else "zh"
        said = _plain(text)
        for k, c in enumerate(cands, 1):
            if said and (said == _plain(c.question) or said == str(k)):
                return c.id, lang
        return None

    def stop(self) -> bool:
        """Stop the answer in progress (the visitor pressed stop, or left); True if there was one."""
        with self._lock:
            return self._stop_locked()

    def _stop_locked(self) -> bool:
        if self._answering is None:
            return False
        self._cancel[self._answering].set()
        self._barge.setdefault(self._answering, self.clock())
        self._answering = None
        self.state = LISTENING
        return True

    def reset_stream(self) -> None:
        """The microphone stopped: the next piece starts a fresh detector (a half-heard turn is dropped)."""
        with self._lock:
            self._vad = None
            self._buf.clear()
            self._buf_start = 0
            if self.state == HEARING:
                self.state = LISTENING

    # ---- answering ------------------------------------------------------------------------------------
    def answer(self, svc, turn: Turn, avatar=None, model: str = registry.DEFAULT_MODEL, engine: str | None = "auto",
               chunks: bool = True, assistant=None, segments: bool = False) -> Iterator[TalkUpdate]:
        """Recognise (a spoken turn), answer and speak ``turn``; stops at the next step once cancelled.
        ``chunks``, ``segments``: as :meth:`~services.answering.AnsweringServices.ask_stream`'s.

        ``svc``: the app's :class:`~services.core.AppServices` (``recognizer()`` and ``ask_stream``). Raises
        UserFacingError only for problems the visitor can fix (an empty typed question, a bad avatar).
        """
        # size-reason: one generator over one turn's stages (recognise, answer, each spoken chunk, done), with a
        # cancellation check and a latency stamp between every two; split, the stamps would travel through helpers.
        picked = (turn.entry, turn.lang) if turn.entry else None
        if not picked and turn.text:
            picked = self._picked(turn.text)  # typed: one of the candidates offered
        cancel = self._begin(turn)
        ex = Exchange(turn.id, turn.text, turn.spoken, picked=bool(turn.entry))
        t_end = turn.t_speech_end
        timings: dict[str, float] = {"turn_ended": round(turn.t_turn_end - t_end, 3)} if turn.spoken else {}
        details: dict[str, Any] = {"turn": turn.id, "spoken": turn.spoken,
                                   "seconds_of_question_audio": round(turn.speech_seconds, 3)}

        def since_end() -> float:
            return round(self.clock() - t_end, 3)

        def update(phase: str, **kw) -> TalkUpdate:
            return TalkUpdate(turn.id, phase, ex.question, ex.answer, timings=dict(timings), details=dict(details),
                              **kw)

        stream = None
        try:
            if turn.spoken:
                t = svc.recognizer().transcribe((turn.audio, turn.sample_rate))
                timings["recognised"] = since_end()
                details.update(recognition=dict(t.timings), language=t.language, recogniser=t.model)
                ex.question = t.text
                if not t.text.strip():
                    ex.note = "I could not make out any words. Please say it again."
                    self._remember(ex)
                    yield update("unheard", notice=ex.note)
                    return
                picked = self._picked(t.text)  # said: one of the candidates offered
            if picked:
                details["picked_entry"] = picked[0]
            self._remember(ex)
            yield update("recognised")
            if cancel.is_set():
                yield self._stopped(turn.id, update)
                return
            entry, lang = picked or (None, "zh")
            # the cancel event goes down to the lip-sync: a barge-in stops rendering within one model batch
            stream = svc.ask_stream(ex.question, avatar, model, engine=engine, chunks=chunks, assistant=assistant,
                                    entry=entry, lang=lang, should_stop=cancel.is_set,
                                    segments=segments)
            first = True
            # the last chunk comes with the finished answer (the ``done`` step): a streaming player gets it and
            # the end of the stream together
            for up, part in with_last_chunk(stream):
                chunk = None if part is None else part.chunk
                if cancel.is_set():
                    stream.close()
                    yield self._stopped(turn.id, update)
                    return
                if first:
                    ex.answer = up.answer
                    timings["answered"] = since_end()
                    details.update(outcome=getattr(up.answer, "outcome", ""), model=up.model)
                    first = False
                    yield update("answer")
                    continue
                details.update(tts_engine=up.engine or details.get("tts_engine", ""))
                if chunk is not None and "first_chunk" not in timings:
                    timings["first_chunk"] = since_end()
                    with self._lock:
                        if self._answering == turn.id:
                            self.state = SPEAKING
                if up.done:
                    if up.audio is not None and "first_chunk" not in timings:
                        timings["first_sound"] = since_end()
                    details.update(seconds_of_speech=up.speech_seconds, warnings=list(up.warnings))
                    yield update("done", chunk=None if chunk is None else Path(chunk), final_video=up.final_video,
                                 audio=up.audio, notice=up.notice, segment=part and part.segment)
                elif chunk is not None:
                    yield update("chunk", chunk=Path(chunk), segment=part.segment)
                elif up.audio is not None:  # the spoken answer before its video (a player that cannot queue)
                    timings.setdefault("first_sound", since_end())
                    yield update("waiting", audio=up.audio)
                else:
                    yield update("waiting")
            if cancel.is_set():  # the answer ended early because it was stopped
                yield self._stopped(turn.id, update)
        finally:
            if stream is not None:
                stream.close()  # stops rendering at once (the generator's pending chunk is dropped)
            with self._lock:
                self._barge.pop(turn.id, None)
                self._cancel.pop(turn.id, None)
                if self._answering == turn.id:
                    self._answering = None
                    self.state = LISTENING if self.state in (THINKING, SPEAKING) else self.state
            ex.stopped = ex.stopped or cancel.is_set()
            ex.timings = {**timings, **ex.timings}
            # one line per turn: seconds after the end of speech (python -m services talk-bench reads it back)
            log.info("conversation turn %d %s", turn.id, json.dumps({**ex.timings, "stopped": ex.stopped,
                                                                     "spoken": turn.spoken, "picked": ex.picked}))

    def _stopped(self, turn_id: int, update: Callable[..., TalkUpdate]) -> TalkUpdate:
        """The answer was stopped (barge-in, a newer turn, or stop): how long after the visitor's speech started
        the server stopped producing it."""
        with self._lock:
            t_barge = self._barge.get(turn_id)
        up = update("stopped")
        if t_barge is not None:
            up.timings["server_stop_after_barge_in"] = round(max(0.0, self.clock() - t_barge), 3)
        for ex in self.history:
            if ex.turn_id == turn_id:
                ex.stopped = True
                ex.timings = dict(up.timings)
        return up

    def _begin(self, turn: Turn) -> threading.Event:
        if not turn.spoken and not turn.text:
            raise UserFacingError("Type your question first. 请输入您的问题。")
        with self._lock:
            if self._answering is not None and self._answering != turn.id:
                self._cancel[self._answering].set()  # one answer at a time: the newer turn wins
            ev = threading.Event()
            self._cancel[turn.id] = ev
            self._answering = turn.id
            self.state = THINKING
            return ev

    def _remember(self, ex: Exchange) -> None:
        with self._lock:
            if ex not in self.history:
                self.history.append(ex)
            del self.history[:-self.max_history]


def _plain(text: str) -> str:
    """Text compared without case, spaces or punctuation (a typed or recognised candidate)."""
    return "".join(ch for ch in (text or "").casefold() if ch.isalnum())


class Conversations:
    """One :class:`Conversation` per browser session, the oldest dropped beyond ``max_sessions``."""

    def __init__(self, max_sessions: int = 200, vad: VADConfig | None = None):
        self.max_sessions = max_sessions
        self.vad = vad or VADConfig()
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[str, Conversation] = collections.OrderedDict()

    def get(self, session: str) -> Conversation:
        with self._lock:
            conv = self._items.get(session)
            if conv is None:
                conv = self._items[session] = Conversation(self.vad)
                while len(self._items) > self.max_sessions:
                    _, old = self._items.popitem(last=False)
                    old.stop()
            self._items.move_to_end(session)
            return conv

    def drop(self, session: str) -> None:
        with self._lock:
            conv = self._items.pop(session, None)
        if conv is not None:
            conv.stop()


def recognition_ready(svc) -> tuple[bool, str]:
    """Whether spoken turns can be recognised here, without loading or downloading anything; and if not, why
    (plain words for the visitor; the technical reason is in the Status tab)."""
    try:
        st = svc.recognizer().status()
    except Exception as err:  # a broken setting: say so, offer typing
        return False, f"Voice recognition cannot start here ({err})."
    if st.get("available"):
        return True, ""
    return False, "Voice recognition is not installed on this server, so I cannot hear you."


__all__ = ["HEARING", "LISTENING", "SPEAKING", "THINKING", "Conversation", "Conversations", "Exchange", "Heard",
           "TalkUpdate", "Turn", "VADConfig", "recognition_ready"]
