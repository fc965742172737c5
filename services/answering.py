"""Answering: a question -> the answer at once, then the spoken answer as lip-synced video chunks.

One use case of :class:`services.core.AppServices`: the assistant (built-in or a visitor's FAQ), ``ask`` and the
streamed answer (``ask_stream``) with its pacing. Falls back to the spoken answer as audio by the rendering's
degrade-to-speech rule (:mod:`services.rendering`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from common.errors import UserFacingError
from services.checks import check_question
from services.media import ChunkJoiner, split_speech, write_wav
from services.rendering import DEFAULT_AVATAR, LIPSYNC_FAILED, LIPSYNC_UNAVAILABLE, _is_model_problem, lipsync_stream
from services.results import AskUpdate
from services.segments import AnswerSegments
from wav2lip384.models import registry
from wav2lip384.render.pacing import FramePace

log = logging.getLogger(__name__)


class AnsweringServices:
    """The assistant and the streamed spoken answer. Needs ``settings``, ``cache_dir``, ``dirs``, the speech use
    case (``_say``, ``_say_sentences``) and the rendering one (``check_avatar``, ``render``, ``weights``,
    ``pipeline``, ``available_models``)."""

    def _init_answering(self) -> None:
        self._assistant_lock = threading.Lock()
        self._assistant = None
        self._assistant_error = ""
        self.first_chunk_s = 0.6  # the first streamed piece while the speed is not measured yet
        self.chunk_s = 3.0  # at most this much speech per later chunk
        # streamed playback starts this far behind rendering, at least: the next chunk (min_chunk_s) must be
        # rendered, made into a segment and fetched by the player before this has played (more where that takes
        # longer: _margin_s). While Gradio converted each chunk (0.26 s), a first chunk released alone ran dry at
        # 0.5 s in 6 of 18 answers (browser bench, quiet bf16 2-core CPU), at 1.0 s in 16 of 18, at 1.5 s in 1; with
        # the pieces before release reaching it in one piece and our own segments (0.03 s), 1.0 s: 0 of 18 on both
        # CPU classes (first frame p95 1.16 s on the bf16 class, 1.26 s at 1.5; AVX2 class 1.67 s, 1.62 s at 1.5)
        self.playback_margin_s = 1.0
        # once playing, each next chunk must be rendered before what is ready has played: it holds at most (ready
        # seconds not yet played - this) x the measured render rate (see _next_piece_s). This covers the way to the
        # player: Gradio converts each chunk to an HLS segment, and the player reloads its playlist about once a
        # segment (measured in Chromium on a loaded 2-core machine: a chunk ready on the server played up to 2 s
        # later, so a 0.3 s allowance left the video waiting)
        self.chunk_safety_s = 0.8
        # ... but never less than this: every chunk costs a fixed ~0.1-0.3 s (its encoder), so tiny chunks fall
        # further behind (measured: 0.4 s pieces under load rendered at half the rate of 2 s ones)
        self.min_chunk_s = 1.0
        # seconds each chunk spent on its way out in earlier answers (FramePace.delivery_s: the page's Gradio step,
        # while nothing renders), so the next answer sizes its pieces and its margin from the start
        self._delivery_s = 0.0

    def assistant_pending(self) -> bool:
        """The built-in assistant has neither loaded nor failed to load yet (it loads at the first question)."""
        return self._assistant is None and not self._assistant_error

    def assistant(self):
        with self._assistant_lock:
            if self._assistant is None:
                from qa import Assistant, AssistantConfig, LLMConfig
                from qa.assistant import deployment_thresholds

                s = self.settings
                try:
                    # a deployment's own thresholds (DH_QA_THRESHOLD ...): a bad value is a UserFacingError, kept below
                    config = AssistantConfig(llm=LLMConfig(base_url=s.llm_base_url, api_key=s.llm_api_key,
                                                           model=s.llm_model), **deployment_thresholds(s))
                    self._assistant = Assistant.load(kb=s.qa_kb or None, embedder=s.qa_embedder, backend=s.qa_backend,
                                                     cache_dir=self.cache_dir / "qa", config=config,
                                                     device=s.device)
                except UserFacingError as err:
                    self._assistant_error = str(err)
                    raise
            return self._assistant

    # ---- the assistant --------------------------------------------------------------------------------
    def ask(self, question: str | None, assistant=None, entry: str | None = None, lang: str = "zh"):
        """``assistant``: a visitor's own FAQ assistant (one per browser session), else the built-in one.
        ``entry``: the id of a "did you mean" candidate the visitor picked: that entry's answer, in ``lang``."""
        if entry:
            return (assistant or self.assistant()).answer_entry(entry, lang)
        q = check_question(question)  # before loading anything: an empty question costs nothing
        return (assistant or self.assistant()).ask(q)

    def load_faq(self, path: str | Path | None, progress: Callable[[float, str], None] | None = None):
        """A visitor's uploaded FAQ -> a new Assistant for their session only (the built-in one is untouched).

        Validated first (type, size, every record; line and field named), indexed with ``progress(fraction,
        message)``, persisted under the FAQ's content hash so the same file loads instantly next time.
        """
        if path is None or str(path).strip() == "":
            raise UserFacingError("Choose a FAQ file first (CSV, JSONL or JSON with 'question' and 'answer').")
        from qa.faq import build_faq_assistant, load_faq

        kb = load_faq(path, max_mb=self.settings.faq_max_mb, max_entries=self.settings.faq_max_entries)
        return build_faq_assistant(kb, self.assistant().embedder, cache_dir=self.cache_dir / "qa" / "uploaded",
                                   progress=progress)

    @staticmethod
    def calibrate_faq(assistant, questions: str | Path | None):
        """"Calibrate with my test questions" -> (a new calibrated Assistant, report)."""
        if assistant is None:
            raise UserFacingError("Load your FAQ first, then calibrate it with your test questions.")
        if questions is None or str(questions).strip() == "":
            raise UserFacingError("Choose a file of test questions first (JSONL/CSV: question, expected question "
                                  "or id; leave it empty for questions the FAQ should not answer).")
        from qa.faq import calibrate_with_questions

        return calibrate_with_questions(assistant, questions)

    def _speak_whole(self, text: str, lang: str | None, engine: str | None, out_dir: Path) -> tuple[Path, str]:
        sp = self._say(text, lang, engine)
        return write_wav(sp.wave, sp.sample_rate, out_dir / "answer.wav"), sp.engine

    @staticmethod
    def _seconds(path: Path) -> float:
        import soundfile as sf

        return float(sf.info(str(path)).duration)

    def ask_stream(self, question: str | None, avatar: str | Path | None = None, model: str | int = registry.DEFAULT_MODEL,
                   engine: str | None = "auto", speak: bool = True, chunks: bool = True,
                   assistant=None, entry: str | None = None, lang: str = "zh",
                   should_stop: Callable[[], bool] | None = None, segments: bool = False) -> Iterator[AskUpdate]:
        # size-reason: one generator that yields the answer, then each spoken chunk, then the joined video; its states
        #   (speech, chunks, fallback to speech only) share locals across yields.
        """Answer at once, then the spoken answer as video chunks, sentence by sentence.

        The first update carries the answer only (shown immediately); each next one a playable chunk; the last
        one (``done``) the joined full video. When lip-sync cannot run, the last update carries the spoken
        answer as audio and a notice instead. ``chunks=False`` (a player that cannot queue chunks): the spoken
        answer as audio first, then the whole video — never chunks that would replace each other mid-word.
        Timings are from the call, i.e. from clicking Ask.

        ``segments``: each chunk also comes as an HLS segment carrying the answer's own audio
        (``AskUpdate.segment``, see services/segments.py), for a player that serves segments as they are.

        ``should_stop`` (e.g. a conversation's cancel event's ``is_set``): once it returns True the answer ends
        quietly, without a last update: it is checked before the speech is made, between sentences, before each
        next piece is handed to the lip-sync (which checks it too, between model batches) and before every
        update, so rendering stops within one batch, not at the end of the chunk in progress.
        """
        stop = should_stop or _never
        t0 = time.perf_counter()
        answer = self.ask(question, assistant, entry, lang)
        t_answer = time.perf_counter() - t0
        model = registry.canonical_id(model)
        if stop():
            return
        yield AskUpdate(answer=answer, seconds_to_answer=t_answer, model=model)
        if not speak or stop():
            return
        lang = getattr(answer, "lang", None)
        out_dir = self.dirs.new("ask-")
        avatar_path, avatar_kind = self.check_avatar(avatar or DEFAULT_AVATAR)  # a bad upload is the visitor's to fix
        ok, problem = self.weights(model)
        pipe = None
        if ok:
            try:
                pipe = self.pipeline(model)
            except UserFacingError as err:
                problem = str(err)
        if pipe is None:
            log.info("spoken answer only (%s): %s", model, problem)
            audio, used = self._speak_whole(_spoken(answer), lang, engine, out_dir)
            if stop():
                return
            yield AskUpdate(answer=answer, seconds_to_answer=t_answer, audio=audio, engine=used, model=model,
                            notice=LIPSYNC_UNAVAILABLE.format(what="the spoken answer"), problem=problem, done=True,
                            seconds_to_first_speech=time.perf_counter() - t0, speech_seconds=self._seconds(audio))
            return
        if not chunks:
            yield from self._ask_audio_first(answer, avatar_path, model, engine, out_dir, t0, t_answer, stop)
            return

        from tts import to_lipsync_audio

        # The whole answer is synthesised first (the voice runs ~100x faster than lip-sync), so its length is
        # known and playback can start only when rendering is safely ahead of it (see release_at below).
        engines: list[str] = []
        waves: list[np.ndarray] = []
        for sp in self._say_sentences(_spoken(answer), lang, engine):
            if stop():
                return
            engines.append(sp.engine)
            waves.append(to_lipsync_audio(sp.wave, sp.sample_rate))
        # The answer is cut into pieces as it renders (at pauses, on boundaries of both frame rates an answer may
        # render at: every chunk but the last then holds as much audio as video). Each next piece is only as long
        # as can be rendered before what is ready has played (see _next_piece_s).
        whole = np.concatenate(waves) if waves else np.zeros(0, np.float32)
        t_speech = time.perf_counter() - t0
        engine_used = "+".join(sorted(set(engines)))
        total_s = len(whole) / 16000.0
        # the answer's audio is encoded for the segments while the first chunk renders
        segmenter = AnswerSegments(whole, 16000, out_dir / "segments") if segments and len(whole) else None
        # the speed this pipeline last measured on this kind of avatar (the start-up warm-up measures it first)
        pace = FramePace(frame_s=pipe.frame_seconds.get(avatar_kind),
                         fixed_s=pipe.render_fixed_seconds.get(avatar_kind, 0.0), delivery_s=self._delivery_s)
        pieces: list[np.ndarray] = []
        chunks: list[Path] = []
        held: list[Path] = []
        t_first = None
        t_play = None  # when the first chunk was handed to the player
        rendered_s = 0.0
        t_render = time.perf_counter()

        def next_pieces():
            done = 0
            while done < len(whole) and not stop():  # stopped: no more pieces, the stream ends
                target, shortest = self._next_piece_s(len(pieces), pace, rendered_s, t_play)
                rest_s = (len(whole) - done) / 16000.0
                if not pieces and rest_s >= TAIL_S + 2 * MIN_PIECE_S:  # never the whole answer in one chunk
                    target = min(target, rest_s - TAIL_S)
                    shortest = None if shortest is None else min(shortest, target)
                piece = split_speech(whole[done:], 16000, first_s=target, max_s=target, fps=piece_fps(pace),
                                     first_from_s=shortest)[0]
                pieces.append(piece)
                done += len(piece)
                yield piece, 16000

        note, said = "", (1, True)
        rendering = lipsync_stream(pipe, avatar_path, next_pieces(), out_dir, pace=pace, should_stop=should_stop)
        joiner = ChunkJoiner(out_dir)  # reads each chunk as it comes: at the end only the join itself is left
        try:
            for i, chunk in enumerate(rendering):
                if stop():
                    return
                chunks.append(Path(chunk))
                joiner.add(Path(chunk))
                held.append(Path(chunk))
                rendered_s += len(pieces[i]) / 16000.0
                now = time.perf_counter()
                # the frame rate of the chunks still to come is chosen now, from the speed measured so far (before
                # any chunk is released), and so is the rate playback must not outrun
                pace.choose()
                measured = pace.rate()
                rate = 0.9 * measured if measured else 0.9 * rendered_s / max(now - t_render, 1e-6)
                if (pace.step, pace.keeps_up) != said:  # what was chosen stays said
                    said = (pace.step, pace.keeps_up)
                    note = self._pace_note(pace, model) or note
                rendered_all = sum(len(p) for p in pieces[:len(chunks)]) == len(whole)  # rendered, not just cut
                # (all of it rendered: released whatever the sum of the pieces' float seconds says)
                if t_first is not None or rendered_all or rendered_s + ONE_SAMPLE_S >= release_at(
                        total_s, rate, self._margin_s(pace)):
                    if t_first is None:
                        t_first = time.perf_counter() - t0
                        t_play = time.perf_counter()
                        pace.no_rise = True
                    for k, c in enumerate(held):  # the player queues chunks; none replaces another
                        if stop():
                            return
                        last = rendered_all and k == len(held) - 1
                        index = len(chunks) - len(held) + k
                        t_out = time.perf_counter()  # the segment is part of the chunk's way out
                        segment = None
                        if segmenter is not None:  # the chunk's video: its frames at its rate
                            made = pace.history[index]
                            segment = segmenter.add(c, made["frames"] / made["fps"], last=last)
                        yield AskUpdate(answer=answer, chunk=c, index=index, segment=segment,
                                        seconds_to_answer=t_answer, seconds_to_first_chunk=t_first,
                                        seconds_to_first_speech=t_speech, engine=engine_used, model=model,
                                        render_note=note, last_chunk=last)
                        if not last:  # the time the caller took with it, while nothing rendered
                            pace.record_delivery(time.perf_counter() - t_out)
                            self._delivery_s = pace.delivery_s
                    held = []
                else:  # held back: say how far along rendering is (the page shows it instead of a spinner)
                    if stop():
                        return
                    yield AskUpdate(answer=answer, seconds_to_answer=t_answer,
                                    seconds_to_first_speech=t_speech, engine=engine_used, model=model,
                                    rendered_seconds=rendered_s, total_seconds=total_s, render_note=note)
            if stop():  # the stream ended early because it was stopped: no joined video
                log.info("answer stopped after %d chunks", len(chunks))
                return
            log.info("answer rendered in %d chunks: %s", len(chunks), pace.history)
            full = joiner.join(out_dir / "answer.mp4") if chunks else None
        except Exception as err:  # the answer stays useful: speak it, say what failed
            if stop():  # however the lip-sync ended, nobody waits for this answer any more
                log.info("answer stopped after %d chunks (%s)", len(chunks), type(err).__name__)
                return
            if isinstance(err, UserFacingError) and not _is_model_problem(err):
                raise
            log.exception("lip-sync of the answer failed")
            audio = write_wav(whole, 16000, out_dir / "answer.wav")
            yield AskUpdate(answer=answer, seconds_to_answer=t_answer, audio=audio, engine=engine_used, model=model,
                            notice=LIPSYNC_FAILED.format(what="the spoken answer"), problem=str(err), done=True,
                            seconds_to_first_chunk=t_first)
            return
        finally:
            rendering.close()  # stopped or closed by the caller: the pipeline's stream ends here, nothing renders on
            joiner.close()
        audio = write_wav(whole, 16000, out_dir / "answer.wav") if waves else None
        yield AskUpdate(answer=answer, chunk=None, index=len(chunks), seconds_to_answer=t_answer,
                        seconds_to_first_chunk=t_first, seconds_to_first_speech=t_speech, final_video=full,
                        audio=audio, engine=engine_used, model=model, done=True, speech_seconds=total_s,
                        render_note=note)

    def _next_piece_s(self, index: int, pace, rendered_s: float,
                      t_play: float | None) -> tuple[float, float | None]:
        """The next streamed piece: ``(target, shortest)`` seconds of speech, cut at a pause in between
        (``shortest`` None: split_speech's usual window).

        Before playback starts (the pieces are held until ``release_at``): one piece to the playback margin
        (``_margin_s``), at least all of what is still missing and up to ``MARGIN_SPAN`` times that. A piece
        that must be cut short of the margin leaves a sliver to render on its own: before, the first piece was a
        0.6 s one and the next cut 40 % short of it in 3 of 5 answers, each sliver paying a chunk's fixed cost and
        one more chunk to send before the first plays; a 0.5 s first chunk then ran dry while the next went out
        (a 0.2 s wait in 3 of 3 short answers, browser bench, bf16 2-core CPU). Before anything is measured, a
        short first piece (``first_chunk_s``, at least twice a chunk's way out ``delivery_s``) measures the speed
        soon; while the measured speed is slower than the voice even at the lowest frame rate, or once the margin
        is reached but playback still waits for more (see ``release_at``), ``chunk_s``: playback waits anyway,
        and long pieces make fewer, not longer, waits.

        Once playing: as much as renders before the seconds ready but not yet played run out (less
        ``chunk_safety_s``), at the measured speed (with a 10 % margin), between the shortest piece that keeps up
        with its fixed cost and its way out (``FramePace.shortest_piece_s``, at least ``min_chunk_s``) and
        ``chunk_s``. A chunk is playable only once all of it is rendered, so a 3 s chunk after a 0.6 s one needs a
        renderer 5x faster than the voice; pieces sized to what is ready never make playback wait."""
        if index == 0:
            pace.choose()
        if not pace.keeps_up:
            return _cut(self.chunk_s)
        if index == 0 and not pace.frame_s:  # nothing measured yet: a short piece measures the speed soon
            return _cut(max(self.first_chunk_s, 2 * pace.delivery_s))
        margin = self._margin_s(pace)
        if t_play is None and rendered_s + ONE_SAMPLE_S < margin:
            missing = max(MIN_PIECE_S, margin - rendered_s)
            if missing >= self.chunk_s:  # more than one piece holds: as long as they come
                return _cut(self.chunk_s)
            return min(self.chunk_s, MARGIN_SPAN * missing), missing
        if t_play is None:
            return _cut(self.chunk_s)
        ahead = rendered_s - (time.perf_counter() - t_play)
        fits = 0.9 * pace.seconds_within(ahead - self.chunk_safety_s, pace.choose()) if pace.frame_s else 1.0
        return _cut(float(min(self.chunk_s, max(pace.shortest_piece_s(self.min_chunk_s, self.chunk_s), fits))))

    def _margin_s(self, pace: FramePace) -> float:
        """How far behind rendering streamed playback starts: ``playback_margin_s``, or more where the first piece
        after the start must be long (see ``FramePace.shortest_piece_s``: each chunk costs a fixed time and its way
        out): the chunks released at the start go out first (two, each taking ``delivery_s``), then that piece
        renders, goes out and is fetched by the player (``PLAYER_FETCH_S``) before the margin has played."""
        piece = pace.shortest_piece_s(self.min_chunk_s, self.chunk_s)
        need = (pace.seconds_to_render(piece) or 0.0) + 3 * pace.delivery_s + PLAYER_FETCH_S
        return max(self.playback_margin_s, need)

    def _pace_note(self, pace, model: str) -> str:
        """The frame rate chosen for the answer, in plain words, and a quicker model when even that is too slow."""
        note = pace.describe()
        if pace.keeps_up:
            return note
        spec = registry.get(model)
        quicker = [registry.get(m) for m in self.available_models() if registry.get(m).img_size < spec.img_size]
        slow = (f"this computer makes the {spec.title} video more slowly than the voice speaks, so the video waits "
                "until enough of it is ready")
        if quicker:
            best = min(quicker, key=lambda e: e.img_size)
            slow += f"; choose {best.title} for answers that keep up with the voice"
        return f"{note}; {slow}" if note else slow

    def _ask_audio_first(self, answer, avatar: Path, model: str, engine: str | None, out_dir: Path, t0: float,
                         t_answer: float, stop: Callable[[], bool] = lambda: False) -> Iterator[AskUpdate]:
        """The whole spoken answer as audio at once (speech is ~100x faster than lip-sync), then the video."""
        from tts import to_lipsync_audio

        sp = self._say(_spoken(answer), getattr(answer, "lang", None), engine)
        t_speech = time.perf_counter() - t0
        audio = write_wav(sp.wave, sp.sample_rate, out_dir / "answer.wav")
        if stop():
            return
        yield AskUpdate(answer=answer, seconds_to_answer=t_answer, seconds_to_first_speech=t_speech, audio=audio,
                        engine=sp.engine, model=model)
        wave = to_lipsync_audio(sp.wave, sp.sample_rate)
        try:
            if stop():
                return
            res = self.render(model, avatar, wave, out_dir, t0, engine=sp.engine)
        except UserFacingError as err:
            if not _is_model_problem(err):
                raise
            log.warning("lip-sync of the answer failed: %s", err)
            yield AskUpdate(answer=answer, seconds_to_answer=t_answer, audio=audio, engine=sp.engine, model=model,
                            notice=LIPSYNC_FAILED.format(what="the spoken answer"), problem=str(err), done=True)
            return
        if stop():
            return
        yield AskUpdate(answer=answer, index=1, seconds_to_answer=t_answer, seconds_to_first_speech=t_speech,
                        seconds_to_first_chunk=time.perf_counter() - t0, final_video=res.path, audio=audio,
                        engine=sp.engine, model=model, warnings=res.warnings, done=True,
                        speech_seconds=len(wave) / 16000.0)


def with_last_chunk(updates: Iterator[AskUpdate]) -> Iterator[tuple[AskUpdate, AskUpdate | None]]:
    """The steps of :meth:`AnsweringServices.ask_stream` as ``(update, the update whose chunk to play)``, the
    answer's last chunk moved into its ``done`` step. A streaming player (Gradio's HLS) then gets that chunk and
    the end of the stream together: a player that got the last chunk alone ran dry before it learnt of the end
    (0.3-4 s waits before the last word, when Gradio's own audio encoder also held the stream's last ~0.2 s of
    sound back until the end). The join of the whole answer (the ``done`` step) costs little: its chunks were read
    while rendering. An answer stopped after its last chunk still yields that chunk alone."""
    held = None
    for up in updates:
        if held is not None and up.done:
            yield up, held
            held = None
            continue
        if held is not None:
            yield held, held
            held = None
        if up.chunk is not None and up.last_chunk:
            held = up
        else:
            yield up, up if up.chunk is not None else None
    if held is not None:
        yield held, held


def _never() -> bool:
    return False


def _spoken(answer) -> str:
    """What the avatar says: the answer, or the assistant's short spoken form of a "did you mean" / "don't know"."""
    return getattr(answer, "speech", "") or answer.text



MIN_PIECE_S = 0.3  # the shortest piece cut to reach the playback margin (a chunk costs a fixed time too)
# The first piece leaves at least this much for a second: the last chunk goes out with the end of the stream
# (with_last_chunk), after the whole answer is joined (0.2-0.5 s), so an answer in one chunk showed its first
# frame that much later, and a chunk sent alone, without the end, did not start playing (hls.js waited for more)
TAIL_S = 0.6
ONE_SAMPLE_S = 1 / 16000  # sums of pieces' seconds are compared within this (a float sum falls just short)
MARGIN_SPAN = 1.25  # a piece that reaches the playback margin is cut up to this many times what is missing
PLAYER_FETCH_S = 0.5  # a chunk out of Gradio -> playing: the player reloads its playlist and fetches the segment
PIECE_FPS = 12.5  # streamed pieces are cut on boundaries of this rate: whole frames at 25 and at 12.5 fps


def _cut(target: float) -> tuple[float, None]:
    """A piece of about ``target`` seconds, cut at a pause in split_speech's usual window below it."""
    return float(target), None


def piece_fps(pace: FramePace) -> float:
    """The rate whose frame boundaries the next piece is cut on: whole frames of the rate it will render at (the
    stream chooses the same step right after), so its chunk's video is as long as its speech. ``PIECE_FPS`` at 25
    and 12.5 fps; at a third of the avatar's rate, that rate."""
    step = pace.choose()
    return PIECE_FPS if step <= 2 else pace.base_fps / step


def release_at(total_s: float, rate: float, margin_s: float) -> float:
    """Seconds of video that must be rendered before streamed playback may start, so that it never catches up
    with rendering: with a render rate ``rate`` (video seconds per wall second) playback started at ``R0``
    rendered seconds stays ``margin_s`` behind until the end iff ``R0 >= total - rate * (total - margin)``
    (and at least ``margin_s``). A renderer faster than real time (rate >= 1) needs only the margin; a slow
    one buffers more of the answer first. Never more than the whole answer."""
    need = max(margin_s, total_s - rate * max(total_s - margin_s, 0.0))
    return min(need, total_s)


