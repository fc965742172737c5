"""What the app does, without the UI: text / speech / a question in, a talking avatar (or at least speech) out.

``app.py`` only wires Gradio components to :class:`AppServices`; everything here is plain Python so it is tested
without gradio. Models load lazily on first use and are kept for the life of the process (one instance per app).
Every request gets its own temporary directory under one root: intermediates (speech, chunks) live there; the
finished video stays until Gradio has copied it into its own cache, and directories older than ``keep_outputs_s``
are swept at the next request and all of them at exit.

Degrade, never break: when lip-sync cannot run (no weights, the Hub unreachable, a model failing), the visitor
still gets the answer text and the spoken answer as audio, with one calm notice of what is missing.
"""
# size-reason: AppServices, the application's use cases; being split by use case (helper U, issue 22).

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ModelUnavailableError, UserFacingError
from common.settings import Settings
from services.checks import check_question, check_speech, check_upload_size, count_faces
from services.media import RequestDirs, concat_videos, mouth_clarity, split_speech, write_wav
from services.models import ModelCatalog
from services.results import AskUpdate, StatusItem, VideoResult
from services.scores import CompareScores
from wav2lip384.models import registry
from wav2lip384.render.pacing import FramePace

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEFAULT_AVATAR = EXAMPLES / "astronaut_512.jpg"
EXAMPLE_VIDEO_AVATAR = EXAMPLES / "astronaut_motion.mp4"
CLOSEUP_AVATAR = EXAMPLES / "astronaut_closeup.jpg"  # face ~414 px: what the model comparison defaults to
LANG_CHOICES = ("auto", "zh", "en")
COMPARE_DEFAULT = registry.compare_default()  # the registry owns the UI defaults
# What a visitor reads when there is no video: what happened and what still works. Which weights are missing and
# what to set is for the operator: Status -> Details, the result's details and the log.
LIPSYNC_UNAVAILABLE = "Lip-sync is not available on this server yet — here is {what}."
LIPSYNC_FAILED = "The video could not be finished — here is {what}."
MODEL_UNAVAILABLE = "Not available on this server yet (the Status tab lists what can run)."
ASR_UNAVAILABLE = ("Questions by voice are not available on this server yet — please type your question instead. "
                   "语音提问暂不可用，请输入文字提问。")


class SpeechRecognitionUnavailable(UserFacingError):
    """Spoken questions cannot be understood here (no recogniser); typing still works."""


class AppServices:
    """Everything the app does. Thread-safe: Gradio calls it from worker threads.

    ``settings`` is read once (``Settings.from_env()`` in app.py); nothing here reads the environment.
    """

    def __init__(self, settings: Settings, *, tmp_parent: str | Path | None = None, keep_outputs_s: float = 900.0):
        self.settings = settings
        self.cache_dir = Path(settings.cache_dir).expanduser()
        self.dirs = RequestDirs(tmp_parent, keep_s=keep_outputs_s)
        self.models = ModelCatalog(settings, self.cache_dir)
        # one lock per part: a first-time index build (minutes on a Space) must not hold up the voice or video
        self._assistant_lock, self._tts_lock, self._asr_lock = threading.Lock(), threading.Lock(), threading.Lock()
        self._speak_lock = threading.Lock()
        self._examples_lock = threading.Lock()
        self._example_locks: dict[tuple, threading.Lock] = {}
        self._examples: dict[tuple, VideoResult] = {}
        self._assistant = None
        self._tts = None
        self._asr = None
        self._assistant_error = ""
        self.first_chunk_s = 0.6  # seconds of speech in the first streamed chunk (time to first frame)
        self.chunk_s = 3.0  # at most this much speech per later chunk
        self.playback_margin_s = 0.5  # streamed playback starts this far behind rendering, at least
        self.scores = CompareScores(settings, self.face_detector)  # the Compare tab's lip-sync and mouth figures
        # once playing, each next chunk must be rendered before what is ready has played: it holds at most (ready
        # seconds not yet played - this) x the measured render rate (see _next_piece_s). This covers the way to the
        # player: Gradio converts each chunk to an HLS segment, and the player reloads its playlist about once a
        # segment (measured in Chromium on a loaded 2-core machine: a chunk ready on the server played up to 2 s
        # later, so a 0.3 s allowance left the video waiting)
        self.chunk_safety_s = 0.8
        # ... but never less than this: every chunk costs a fixed ~0.1-0.3 s (its encoder), so tiny chunks fall
        # further behind (measured: 0.4 s pieces under load rendered at half the rate of 2 s ones)
        self.min_chunk_s = 1.0

    def close(self) -> None:
        self.dirs.close()

    # ---- lazily loaded parts ----------------------------------------------------------------------
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

    def tts(self):
        with self._tts_lock:
            if self._tts is None:
                from tts import TTS

                self._tts = TTS.from_settings(self.settings, cache_dir=self.cache_dir / "tts")
            return self._tts

    def _say(self, text: str, lang: str | None, engine: str | None):
        """One synthesis at a time: ten concurrent espeak-ng calls returned empty speech or crashed the process in
        the soak test; speech is ~100x faster than lip-sync, so serialising it costs the renders nothing."""
        with self._speak_lock:
            return self.tts().synthesize(text, lang=lang, engine=_chosen(engine))

    def _say_sentences(self, text: str, lang: str | None, engine: str | None) -> list:
        """The speech of each sentence, synthesised one request at a time (see :meth:`_say`)."""
        with self._speak_lock:
            return list(self.tts().stream(text, lang=lang, engine=_chosen(engine)))

    def recognizer(self):
        """The speech recogniser for spoken questions (loads its weights at the first transcription)."""
        with self._asr_lock:
            if self._asr is None:
                from qa.asr import SpeechRecognizer

                self._asr = SpeechRecognizer(self.settings.asr_model)
            return self._asr

    def speech_recognition(self) -> tuple[bool, str]:
        """(available, technical detail) of the speech recogniser, without loading or downloading it."""
        try:
            st = self.recognizer().status()
        except Exception as err:  # an incomplete install: spoken questions are off, typing works
            return False, f"{type(err).__name__}: {err}"
        return bool(st.get("available")), str(st.get("detail", ""))

    def transcribe(self, audio: str | Path | None) -> tuple[str, str]:
        """A spoken question -> (text, language). Clear messages for no file, silence, or a missing model."""
        if audio is None or str(audio).strip() == "":
            raise UserFacingError("Record or upload your question first. 请先录制或上传您的问题。")
        ok, detail = self.speech_recognition()
        if not ok:  # said at once, before the recording is even read
            log.info("spoken question refused: %s", detail)
            raise SpeechRecognitionUnavailable(ASR_UNAVAILABLE)
        from qa.asr import transcribe_file
        from wav2lip384.media.video import check_media

        check_media(audio, kinds=("audio", "video"), what="spoken question")
        check_upload_size(audio, self.settings.max_upload_mb, "spoken question")
        text, lang, _, _ = transcribe_file(audio, self.recognizer())
        return text, lang

    # ---- models (delegated; kept here so the UI talks to one object) ------------------------------
    def weights(self, model: str | int) -> tuple[bool, str]:
        return self.models.weights(model)

    def available_models(self) -> list[str]:
        return self.models.available()

    def pipeline(self, model: str | int, progress=None):
        return self.models.pipeline(model, progress)

    def default_model(self, prefer: tuple[str, ...] = registry.preferred("render")) -> str:
        """The model examples render with: the first available of ``prefer``, else the registry default."""
        available = self.available_models()
        return next((m for m in prefer if m in available), available[0] if available else registry.DEFAULT_MODEL)

    def compare_default(self) -> list[str]:
        """The models the comparison ticks: those that can run here (up to three), else the usual three."""
        return self.available_models()[:3] or list(COMPARE_DEFAULT)

    def face_detector(self):
        return self.models.detector()

    def example(self, key: tuple, make: Callable[[], VideoResult]) -> VideoResult:
        """An example row's result, made once per ``key`` (row, model) and kept while its files live (request
        directories are swept after ``keep_outputs_s``; then it is made again). Two first clicks make it once."""
        with self._examples_lock:
            lock = self._example_locks.setdefault(key, threading.Lock())
        with lock:
            res = self._examples.get(key)
            files = [p for p in (res.path, res.audio_path) if p is not None] if res is not None else []
            if res is None or not all(Path(p).is_file() for p in files):
                res = self._examples[key] = make()
            else:  # served again: its directory counts as fresh for the sweep
                for d in {Path(p).parent for p in files}:
                    d.touch(exist_ok=True)
            return res

    def warm_up(self, models: tuple[str, ...] | None = None) -> dict[str, float]:
        """Pay every one-off cost now (app start-up runs this in a thread): the audio path (librosa/numba), the
        voice, the assistant's index and the default lip-sync model (its weights download here, with progress in
        Status). Returns seconds per part; a part that fails is logged and reported again at its first use."""
        from tts.warmup import warm_up as warm_tts
        from wav2lip384.media.audio import warm_up as warm_audio

        models = models if models is not None else (self.default_model(prefer=registry.preferred("answer")),)
        parts: list[tuple[str, Callable[[], Any]]] = [
            ("audio path", warm_audio), ("voice", lambda: warm_tts(self.tts())), ("assistant", self.assistant)]
        for m in (m for m in models if self.weights(m)[0]):
            # the model, then one short render of the default avatar: face detection, crops, encoder features, the
            # first run of each layer and the video writer are then paid (measured: the first chunk of the first
            # answer took 10 s for 0.6 s of speech without this, 1.5 s with it)
            parts += [(m, lambda m=m: self.pipeline(m)),
                      (f"{m} on the default avatar", lambda m=m: self._warm_render(m))]
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        for name, load in parts:
            t = time.perf_counter()
            try:
                load()
            except Exception as err:  # reported in the status panel and again at the first request
                log.warning("warm-up: %s not ready: %s", name, err)
            seconds[name] = round(time.perf_counter() - t, 2)
        log.info("warm-up done in %.1f s (%s)", time.perf_counter() - t0,
                 ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
        return seconds

    def _warm_render(self, model: str) -> None:
        """Lip-sync one second of a voiced tone on the default avatar, then stream it the way an answer streams
        (chunks with lossless audio, at both frame rates an answer may be rendered at): every one-off cost of
        the Ask path is paid, and the pipeline has measured its speed before the first answer (its pace starts
        from that). The output is thrown away."""
        t = np.arange(16000, dtype=np.float32) / 16000.0
        tone = (0.3 * np.sin(2 * np.pi * 180.0 * t) * (1.0 + np.sin(2 * np.pi * 3.0 * t))).astype(np.float32)
        out_dir = self.dirs.new("warm-")
        try:
            pipe = self.pipeline(model)
            pipe(DEFAULT_AVATAR, (tone, 16000), out_dir / "warm.mp4")  # first runs of every layer
            for step in (2, 1):  # the last measurement (every frame) is what the first answer starts from
                pace = FramePace(steps=(step,))
                list(pipe.stream(DEFAULT_AVATAR, [(tone[:8000], 16000), (tone[8000:], 16000)],
                                 out_dir / f"stream{step}", pace=pace))
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)

    # ---- status -------------------------------------------------------------------------------------
    def status(self) -> list[StatusItem]:
        from services.status import status_items

        return status_items(self)

    def status_markdown(self) -> str:
        from services.status import status_markdown

        return status_markdown(self.status())

    def tts_engine_names(self) -> list[str]:
        try:
            return ["auto"] + [e.name for e in self.tts().engines()]
        except Exception:  # the dropdown still offers "auto"
            return ["auto"]

    # ---- input ----------------------------------------------------------------------------------------
    def check_avatar(self, avatar: str | Path | None) -> tuple[Path, str]:
        """Check an uploaded photo/video: type, size, readable, exactly one face in (the first frame of) it."""
        if avatar is None or str(avatar).strip() == "":
            raise UserFacingError("Choose an avatar: pick an example or upload a photo or video of one face.")
        from wav2lip384.media.video import check_media, open_video, read_image

        path = Path(avatar)
        kind = check_media(path, kinds=("image", "video"), what="avatar")
        check_upload_size(path, self.settings.max_upload_mb, "avatar")
        if kind == "image":
            frame = read_image(path)
        else:
            stream = open_video(path, max_frames=1)
            try:
                frame = next(iter(stream.frames), None)
            finally:
                stream.close()
            if frame is None:
                raise UserFacingError(f"The video {path.name} has no readable frames.")
        n = count_faces(frame, self.face_detector())
        if n == 0:
            raise UserFacingError(f"No face found in the avatar {path.name}. Use a well-lit, front-facing photo or "
                                  "video of one person. 未检测到人脸，请上传正面、光线良好的单人照片或视频。")
        if n > 1:
            raise UserFacingError(f"{n} faces found in the avatar {path.name}; the avatar must show exactly one "
                                  "person. Crop the photo to one face. 检测到多张人脸，请只保留一个人。")
        return path, kind

    def synthesize(self, text: str, lang: str | None, engine: str | None) -> tuple[np.ndarray, Any]:
        """Text -> (16 kHz mono speech for lip-sync, the tts Speech)."""
        from tts import to_lipsync_audio

        if not (text or "").strip():
            raise UserFacingError("Please type the text the avatar should say. 请输入要朗读的文字。")
        sp = self._say(text, _chosen(lang), engine)
        wave = to_lipsync_audio(sp.wave, sp.sample_rate)
        check_speech(wave, 16000, self.settings.max_audio_seconds, "synthesised speech")
        return wave, sp

    def load_speech(self, audio: str | Path | None) -> np.ndarray:
        if audio is None or str(audio).strip() == "":
            raise UserFacingError("Upload or record some speech first. 请先上传或录制语音。")
        from wav2lip384.media.audio import load_audio
        from wav2lip384.media.video import check_media

        check_media(audio, kinds=("audio", "video"), what="audio")
        check_upload_size(audio, self.settings.max_upload_mb, "audio")
        wave = load_audio(audio, sample_rate=16000, max_seconds=self.settings.max_audio_seconds)
        check_speech(wave, 16000, self.settings.max_audio_seconds, f"audio {Path(audio).name}")
        return wave

    # ---- rendering ------------------------------------------------------------------------------------
    def _speech_only(self, model: str, wave: np.ndarray, out_dir: Path, t0: float, problem: str,
                     engine: str = "", notice: str = LIPSYNC_UNAVAILABLE) -> VideoResult:
        """The speech alone, with a plain notice for the visitor; ``problem`` (technical) goes to details/log."""
        spec = registry.get(model)
        log.info("speech only (%s): %s", spec.id, problem)
        audio = write_wav(wave, 16000, out_dir / "speech.wav")
        return VideoResult(path=None, model=spec.id, model_title=spec.title, img_size=spec.img_size,
                           seconds=time.perf_counter() - t0, fps=0.0, n_frames=0, duration_s=len(wave) / 16000.0,
                           render_fps=0.0, engine=engine, audio_path=audio,
                           notice=notice.format(what="the speech"), problem=problem,
                           source=self.models.checkpoint(spec.id), license=spec.license)

    def render(self, model: str | int, avatar: Path, wave: np.ndarray, out_dir: Path, t0: float,
               progress: Callable | None = None, engine: str = "", clarity: bool = False,
               on_no_face: str = "error") -> VideoResult:
        """Lip-sync ``wave`` (16 kHz) onto ``avatar`` with ``model``; the figures include loading only if
        the model was not loaded yet (callers that compare models load first)."""
        spec = registry.get(model)
        pipe = self.pipeline(spec.id)
        out = out_dir / f"avatar_{spec.id}.mp4"
        res = pipe(face=avatar, audio=(wave, 16000), out_path=out, progress=progress, on_no_face=on_no_face)
        seconds = time.perf_counter() - t0
        lipsync_s = float((getattr(res, "timings", None) or {}).get("total") or seconds)
        warnings = list(getattr(res, "warnings", []) or [])
        return VideoResult(
            path=Path(res.output_path), model=spec.id, model_title=spec.title, img_size=spec.img_size,
            seconds=seconds, fps=float(res.fps), n_frames=int(res.n_frames), duration_s=float(res.duration_s),
            render_fps=float(res.n_frames) / max(lipsync_s, 1e-6),
            clarity=mouth_clarity(res.output_path, detector=self.face_detector()) if clarity else None,
            detector=str(getattr(res, "detector", "")), engine=engine, precision=str(getattr(res, "precision", "")),
            timings={k: float(v) for k, v in (getattr(res, "timings", None) or {}).items()
                     if isinstance(v, (int, float))},
            warnings=[w for w in warnings if not _for_the_operator(w)],
            notes=[w for w in warnings if _for_the_operator(w)], source=self.models.checkpoint(spec.id),
            license=spec.license)

    def _render_or_speech(self, model: str, avatar: Path, wave: np.ndarray, out_dir: Path, t0: float,
                          progress, engine: str, on_no_face: str) -> VideoResult:
        ok, msg = self.weights(model)
        if not ok:
            return self._speech_only(model, wave, out_dir, t0, msg, engine)
        try:
            res = self.render(model, avatar, wave, out_dir, t0, progress, engine=engine, on_no_face=on_no_face)
        except UserFacingError as err:
            if not _is_model_problem(err):
                raise  # bad input (no face, ...): the visitor can fix it, say so
            return self._speech_only(model, wave, out_dir, t0, str(err), engine)
        # the speech alone as well, for text and audio input alike (a download, and what API clients get)
        res.audio_path = write_wav(wave, 16000, out_dir / "speech.wav")
        return res

    def text_to_avatar(self, text: str, avatar: str | Path | None, model: str | int = registry.DEFAULT_MODEL,
                       lang: str | None = "auto", engine: str | None = "auto", progress: Callable | None = None,
                       on_no_face: str = "error") -> VideoResult:
        t0 = time.perf_counter()
        model = registry.canonical_id(model)
        avatar_path, _ = self.check_avatar(avatar)  # cheap checks first: avatar, text; then synthesis and models
        wave, sp = self.synthesize(text, lang, engine)
        return self._render_or_speech(model, avatar_path, wave, self.dirs.new(), t0, progress, sp.engine, on_no_face)

    def audio_to_avatar(self, audio: str | Path | None, avatar: str | Path | None, model: str | int = registry.DEFAULT_MODEL,
                        progress: Callable | None = None, on_no_face: str = "error") -> VideoResult:
        t0 = time.perf_counter()
        model = registry.canonical_id(model)
        avatar_path, _ = self.check_avatar(avatar)
        wave = self.load_speech(audio)
        return self._render_or_speech(model, avatar_path, wave, self.dirs.new(), t0, progress, "", on_no_face)

    def compare(self, avatar: str | Path | None, text: str = "", audio: str | Path | None = None,
                models: tuple[str, ...] | list[str] | None = None, lang: str | None = "auto",
                engine: str | None = "auto", progress: Callable | None = None) -> dict[str, VideoResult | str]:
        """The same speech and avatar through each chosen model (2-3), side by side.

        Each model is loaded before its clock starts, so the figures compare rendering, not loading. A model
        that cannot run gets an explanation string instead of a result.
        """
        chosen = [registry.canonical_id(m) for m in (models or self.compare_default()) if m not in (None, "")]
        chosen = list(dict.fromkeys(chosen))
        if not 1 <= len(chosen) <= 3:
            raise UserFacingError("Choose one to three models to compare.")
        avatar_path, _ = self.check_avatar(avatar)
        engine_used = ""
        if audio:
            wave = self.load_speech(audio)
        else:
            wave, sp = self.synthesize(text, lang, engine)
            engine_used = sp.engine
        out_dir = self.dirs.new("compare-")
        results: dict[str, VideoResult | str] = {}
        for m in chosen:
            ok, msg = self.weights(m)
            if not ok:
                log.info("compare: %s not available: %s", m, msg)
                results[m] = MODEL_UNAVAILABLE
                continue
            try:
                self.pipeline(m)
                results[m] = self.render(m, avatar_path, wave, out_dir, time.perf_counter(), progress,
                                         engine=engine_used, clarity=True)
            except UserFacingError as err:
                if not _is_model_problem(err):
                    raise
                log.warning("compare: %s could not run: %s", m, err)
                results[m] = MODEL_UNAVAILABLE
        return results

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
                   assistant=None, entry: str | None = None, lang: str = "zh") -> Iterator[AskUpdate]:
        # size-reason: one generator that yields the answer, then each spoken chunk, then the joined video; its states
        #   (speech, chunks, fallback to speech only) share locals across yields.
        """Answer at once, then the spoken answer as video chunks, sentence by sentence.

        The first update carries the answer only (shown immediately); each next one a playable chunk; the last
        one (``done``) the joined full video. When lip-sync cannot run, the last update carries the spoken
        answer as audio and a notice instead. ``chunks=False`` (a player that cannot queue chunks): the spoken
        answer as audio first, then the whole video — never chunks that would replace each other mid-word.
        Timings are from the call, i.e. from clicking Ask.
        """
        t0 = time.perf_counter()
        answer = self.ask(question, assistant, entry, lang)
        t_answer = time.perf_counter() - t0
        model = registry.canonical_id(model)
        yield AskUpdate(answer=answer, seconds_to_answer=t_answer, model=model)
        if not speak:
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
            yield AskUpdate(answer=answer, seconds_to_answer=t_answer, audio=audio, engine=used, model=model,
                            notice=LIPSYNC_UNAVAILABLE.format(what="the spoken answer"), problem=problem, done=True,
                            seconds_to_first_speech=time.perf_counter() - t0, speech_seconds=self._seconds(audio))
            return
        if not chunks:
            yield from self._ask_audio_first(answer, avatar_path, model, engine, out_dir, t0, t_answer)
            return

        from tts import to_lipsync_audio

        # The whole answer is synthesised first (the voice runs ~100x faster than lip-sync), so its length is
        # known and playback can start only when rendering is safely ahead of it (see release_at below).
        engines: list[str] = []
        waves: list[np.ndarray] = []
        for sp in self._say_sentences(_spoken(answer), lang, engine):
            engines.append(sp.engine)
            waves.append(to_lipsync_audio(sp.wave, sp.sample_rate))
        # The answer is cut into pieces as it renders (at pauses, on boundaries of both frame rates an answer may
        # render at: every chunk but the last then holds as much audio as video). Each next piece is only as long
        # as can be rendered before what is ready has played (see _next_piece_s).
        whole = np.concatenate(waves) if waves else np.zeros(0, np.float32)
        t_speech = time.perf_counter() - t0
        engine_used = "+".join(sorted(set(engines)))
        total_s = len(whole) / 16000.0
        # the speed this pipeline last measured on this kind of avatar (the start-up warm-up measures it first)
        pace = FramePace(frame_s=pipe.frame_seconds.get(avatar_kind),
                         fixed_s=pipe.render_fixed_seconds.get(avatar_kind, 0.0))
        pieces: list[np.ndarray] = []
        chunks: list[Path] = []
        held: list[Path] = []
        t_first = None
        t_play = None  # when the first chunk was handed to the player
        rendered_s = 0.0
        t_render = time.perf_counter()

        def next_pieces():
            done = 0
            while done < len(whole):
                target = self._next_piece_s(len(pieces), pace, rendered_s, t_play)
                piece = split_speech(whole[done:], 16000, first_s=target, max_s=target, fps=PIECE_FPS)[0]
                pieces.append(piece)
                done += len(piece)
                yield piece, 16000

        note, said = "", (1, True)
        try:
            for i, chunk in enumerate(pipe.stream(avatar_path, next_pieces(), out_dir, pace=pace)):
                chunks.append(Path(chunk))
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
                if t_first is not None or rendered_s >= release_at(total_s, rate, self.playback_margin_s):
                    if t_first is None:
                        t_first = time.perf_counter() - t0
                        t_play = time.perf_counter()
                    for c in held:  # the player queues chunks; none replaces another
                        yield AskUpdate(answer=answer, chunk=c, index=len(chunks) - len(held),
                                        seconds_to_answer=t_answer, seconds_to_first_chunk=t_first,
                                        seconds_to_first_speech=t_speech, engine=engine_used, model=model,
                                        render_note=note)
                    held = []
                else:  # held back: say how far along rendering is (the page shows it instead of a spinner)
                    yield AskUpdate(answer=answer, seconds_to_answer=t_answer,
                                    seconds_to_first_speech=t_speech, engine=engine_used, model=model,
                                    rendered_seconds=rendered_s, total_seconds=total_s, render_note=note)
            log.info("answer rendered in %d chunks: %s", len(chunks), pace.history)
        except Exception as err:  # the answer stays useful: speak it, say what failed
            if isinstance(err, UserFacingError) and not _is_model_problem(err):
                raise
            log.exception("lip-sync of the answer failed")
            audio = write_wav(whole, 16000, out_dir / "answer.wav")
            yield AskUpdate(answer=answer, seconds_to_answer=t_answer, audio=audio, engine=engine_used, model=model,
                            notice=LIPSYNC_FAILED.format(what="the spoken answer"), problem=str(err), done=True,
                            seconds_to_first_chunk=t_first)
            return
        full = concat_videos(chunks, out_dir / "answer.mp4") if chunks else None
        audio = write_wav(whole, 16000, out_dir / "answer.wav") if waves else None
        yield AskUpdate(answer=answer, chunk=None, index=len(chunks), seconds_to_answer=t_answer,
                        seconds_to_first_chunk=t_first, seconds_to_first_speech=t_speech, final_video=full,
                        audio=audio, engine=engine_used, model=model, done=True, speech_seconds=total_s,
                        render_note=note)

    def _next_piece_s(self, index: int, pace, rendered_s: float, t_play: float | None) -> float:
        """Seconds of speech in the next streamed piece: ``first_chunk_s`` for the first (``chunk_s`` when the
        measured speed is slower than the voice even at the lower frame rate: playback waits anyway); while
        playback waits (rendering slower than the voice buffers first), ``chunk_s``; once playing, as much as
        renders before the seconds ready but not yet played run out (less ``chunk_safety_s``), at the measured
        speed (with a 10 % margin), between ``min_chunk_s`` and ``chunk_s``. A chunk is playable only once all of
        it is rendered, so a 3 s chunk after a 0.6 s one needs a renderer 5x faster than the voice; pieces sized
        to what is ready never make playback wait."""
        if index == 0:  # short, for a quick first frame; unless the measured speed says playback must wait anyway
            pace.choose()
            return self.first_chunk_s if pace.keeps_up else self.chunk_s
        if t_play is None or not pace.keeps_up:
            # playback waits for it anyway, or (the machine slowed down after playback began) it cannot be kept
            # from waiting: long pieces then make fewer, not longer, waits (each chunk also costs a fixed time)
            return self.chunk_s
        ahead = rendered_s - (time.perf_counter() - t_play)
        fits = 0.9 * pace.seconds_within(ahead - self.chunk_safety_s, pace.choose()) if pace.frame_s else 1.0
        return float(min(self.chunk_s, max(self.min_chunk_s, fits)))

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
                         t_answer: float) -> Iterator[AskUpdate]:
        """The whole spoken answer as audio at once (speech is ~100x faster than lip-sync), then the video."""
        from tts import to_lipsync_audio

        sp = self._say(_spoken(answer), getattr(answer, "lang", None), engine)
        t_speech = time.perf_counter() - t0
        audio = write_wav(sp.wave, sp.sample_rate, out_dir / "answer.wav")
        yield AskUpdate(answer=answer, seconds_to_answer=t_answer, seconds_to_first_speech=t_speech, audio=audio,
                        engine=sp.engine, model=model)
        wave = to_lipsync_audio(sp.wave, sp.sample_rate)
        try:
            res = self.render(model, avatar, wave, out_dir, t0, engine=sp.engine)
        except UserFacingError as err:
            if not _is_model_problem(err):
                raise
            log.warning("lip-sync of the answer failed: %s", err)
            yield AskUpdate(answer=answer, seconds_to_answer=t_answer, audio=audio, engine=sp.engine, model=model,
                            notice=LIPSYNC_FAILED.format(what="the spoken answer"), problem=str(err), done=True)
            return
        yield AskUpdate(answer=answer, index=1, seconds_to_answer=t_answer, seconds_to_first_speech=t_speech,
                        seconds_to_first_chunk=time.perf_counter() - t0, final_video=res.path, audio=audio,
                        engine=sp.engine, model=model, warnings=res.warnings, done=True,
                        speech_seconds=len(wave) / 16000.0)


def _spoken(answer) -> str:
    """What the avatar says: the answer, or the assistant's short spoken form of a "did you mean" / "don't know"."""
    return getattr(answer, "speech", "") or answer.text


def _chosen(option: str | None) -> str | None:
    """A voice or language picked in the UI, None for "auto" (or nothing): the TTS then decides."""
    return None if option in (None, "", "auto") else option


PIECE_FPS = 12.5  # streamed pieces are cut on boundaries of this rate: whole frames at 25 and at 12.5 fps


def release_at(total_s: float, rate: float, margin_s: float) -> float:
    """Seconds of video that must be rendered before streamed playback may start, so that it never catches up
    with rendering: with a render rate ``rate`` (video seconds per wall second) playback started at ``R0``
    rendered seconds stays ``margin_s`` behind until the end iff ``R0 >= total - rate * (total - margin)``
    (and at least ``margin_s``). A renderer faster than real time (rate >= 1) needs only the margin; a slow
    one buffers more of the answer first. Never more than the whole answer."""
    need = max(margin_s, total_s - rate * max(total_s - margin_s, 0.0))
    return min(need, total_s)


def _for_the_operator(warning: str) -> bool:
    """A pipeline note about how this server is set up (which face detector runs), not about the visitor's input:
    Status shows it (Face detector row); the result keeps it in its details."""
    return "detector" in warning.lower()


def _is_model_problem(err: UserFacingError) -> bool:
    """A lip-sync failure the visitor cannot fix (weights missing or unreachable), as opposed to bad input."""
    return isinstance(err, ModelUnavailableError)
