"""Gradio front end of the talking digital human. UI wiring only: the logic lives in services/ (the application
layer), on top of qa/, tts/ and wav2lip384/.

Start with ``python app.py``; it binds to 127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say
otherwise (a Hugging Face Space sets GRADIO_SERVER_NAME=0.0.0.0 itself).

Every event has an ``api_name`` (``/text_to_avatar``, ``/audio_to_avatar``, ``/ask``, ``/compare``, ``/status``)
so the app can be scripted with ``gradio_client`` (see README.md). Building the UI does no I/O beyond asking the
services which models are available (no download, no model load).
"""
# size-reason: the Gradio UI of six tabs: the Blocks layout, the event wiring and each tab's handlers (how results
#   read is in presenters.py, what they are in services/).

from __future__ import annotations

import asyncio
import atexit
import functools
import inspect
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr

from common.errors import UserFacingError
from common.settings import Settings
from presenters import details_markdown, scores_markdown, status_markdown, video_summary
from services import (
    CLOSEUP_AVATAR,
    DEFAULT_AVATAR,
    EXAMPLE_VIDEO_AVATAR,
    EXAMPLES,
    AppServices,
    AskUpdate,
    VideoResult,
)
from services.answering import with_last_chunk
from services.checks import visitor_message
from services.speech import ASR_UNAVAILABLE, SpeechRecognitionUnavailable
from services.status import missing_parts
from services.uploads import FileDataGuard, FilePolicy, RefusedFile, gradio_upload_folder
from wav2lip384.models import registry

log = logging.getLogger("app")

TITLE = "Digital human for public services · 政务数字人"
# Gradio's progress overlays (a spinner and timer on each of the Ask tab's nine outputs, for the whole answer)
# cost the browser ~0.75 of a CPU core in headless Chromium - measured 22 of the 59 CPU-seconds of a 2-core
# machine before the first frame; hidden, 3. The Ask tab's timing line says how far along the answer is instead.
ASK_PROGRESS = "hidden"
QUESTIONS = [
    "身份证丢了怎么补办？",
    "How do I apply for a residence permit?",
    "怎么办理社保卡？",
    "What documents do I need to transfer my household registration?",
    "驾驶证到期了怎么换证？",
    "What is the weather like on Mars?",
]
SAY_ZH = "您好，我是政务服务数字人，很高兴为您服务。"
SAY_EN = "Hello, I am the public service assistant. How can I help you today?"
# The example rows of the Text and Audio tabs (files shipped in examples/, so building the UI stats nothing).
TEXT_EXAMPLES = [(SAY_ZH, "zh", str(DEFAULT_AVATAR)), (SAY_EN, "en", str(DEFAULT_AVATAR))]
SPEECH_EXAMPLE_FILES = ("speech_en.ogg", "speech_zh.ogg")
# the model each picker prefers (Ask, Text, Audio): answers stream, so speed first on the Ask tab
PICKER_PREFERENCE = (registry.preferred("answer")[0], registry.preferred("render")[0], registry.preferred("render")[0])
NO_FACE_CHOICES = [("stop with a message", "error"), ("leave those frames unchanged", "passthrough")]
CSS = """
.gradio-container {max-width: 1280px !important; margin: auto;}
#title h1 {margin-bottom: 0; word-break: keep-all;}  /* keep-all: no line break inside 数字人 on a phone */
#answer {min-height: 6em;}
.figure {font-size: 0.95em;}
.notice {font-size: 1em; color: var(--body-text-color); background: var(--background-fill-secondary);
         border-left: 4px solid var(--color-accent); padding: 0.4em 0.8em; border-radius: 4px;}
.notice:empty, .block.notice:has(span.md:empty) {display: none;}
.model-picker .info-text {color: var(--body-text-color); font-size: 0.95em;}
body.dh-shared #ask_video:not(:has(video)) {display: none;}
body.dh-waiting #ask_video video {visibility: hidden;}
#status_table table {table-layout: auto; width: 100%;}
#status_table td, #status_table th {word-break: normal; overflow-wrap: anywhere; hyphens: none;}
#status_table td:nth-child(1), #status_table td:nth-child(2) {min-width: 12em;}
footer {display: none !important;}
"""


# Measured in the visitor's browser: from the click on Ask (or Enter in the question) to the first frame of the
# answer video actually playing. Media events do not bubble, so the listener captures at the document.
CLIENT_JS = """
() => {
  // The end of a streamed answer. Gradio's audio encoder holds the stream's last ~0.2 s of sound back until the
  // stream ends, and the player (hls.js) asks for the playlist only when a chunk arrives, so it learnt of that
  // audio and of the end mark only once it had run dry (a 0.3-2 s wait before the last word, traced in Chromium).
  // The last chunk comes with the finished answer (services.answering.with_last_chunk); the player's playlist
  // request for it waits here until the playlist has its end mark (~0.2 s: the stream ends right after that step),
  // so the last chunk, the held-back audio and the end arrive together.
  // Each streamed player and how the page tells that its answer is finished (the Ask tab's timing line says
  // "done"; the Talk tab's hidden phase box ends in "done").
  const finished = {
    ask_video: () => { const el = document.querySelector('#ask_timing'); return !!el && el.innerText.includes('· done'); },
    talk_video: () => { const el = document.querySelector('#talk_phase textarea, #talk_phase input'); return !!el && el.value.endsWith(' done'); },
  };
  const streamIds = () => {
    const ids = {};
    ((window.gradio_config || {}).components || []).forEach((c) => {
      if (c.props && finished[c.props.elem_id]) ids[c.id] = finished[c.props.elem_id];
    });
    return ids;
  };
  const xhrOpen = XMLHttpRequest.prototype.open, xhrSend = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) { this.__dhUrl = String(url); return xhrOpen.apply(this, arguments); };
  XMLHttpRequest.prototype.send = function (body) {
    const url = this.__dhUrl || '', at = url.indexOf('/playlist.m3u8');
    const done = at > 0 && streamIds()[url.slice(0, at).split('/').pop()];
    if (!done) return xhrSend.call(this, body);
    const xhr = this, t0 = performance.now(), go = () => xhrSend.call(xhr, body);
    setTimeout(() => {  // the rest of the same update (timing line, phase) is on the page by now
      if (!done()) return go();
      const poll = () => fetch(url, {cache: 'no-store'}).then((r) => r.text()).then((text) => {
        if (text.includes('#EXT-X-ENDLIST') || performance.now() - t0 > 3000) go(); else setTimeout(poll, 40);
      }, go);
      poll();
    }, 30);
  };
  const out = () => document.querySelector('#ask_first_frame');
  const mark = () => {
    document.body.classList.remove('dh-shared');
    // the previous answer's video goes away at once (a streamed player is only replaced by the next chunk)
    document.body.classList.add('dh-waiting');
    document.querySelectorAll('#ask_video video').forEach((v) => v.pause());
    window.__dhAskT0 = performance.now();
    window.__dhFirstFrameS = null;
    const el = out(); if (el) el.textContent = '';
  };
  document.addEventListener('click', (e) => {
    if (e.target.closest && e.target.closest('#ask_btn, #ask_voice_btn, #suggestions')) mark();
  }, true);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && e.target.closest && e.target.closest('#question')) mark();
  }, true);
  // a new answer's video has data (streamed chunk or the whole video): show the player again
  document.addEventListener('loadeddata', (e) => {
    if (e.target instanceof HTMLMediaElement && e.target.closest('#ask_video')) document.body.classList.remove('dh-waiting');
  }, true);
  document.addEventListener('playing', (e) => {
    const v = e.target;
    if (!(v instanceof HTMLMediaElement) || !v.closest('#ask_video, #ask_audio')) return;
    if (window.__dhAskT0 == null || window.__dhFirstFrameS != null) return;
    window.__dhFirstFrameS = (performance.now() - window.__dhAskT0) / 1000;
    const what = v instanceof HTMLVideoElement ? 'First frame on your screen' : 'Answer audible';
    const el = out(); if (el) el.textContent = what + ' after ' + window.__dhFirstFrameS.toFixed(2) + ' s (measured in this browser)';
  }, true);
  // No video to watch (lip-sync is not available here, or it failed): the speech plays by itself once loaded.
  document.addEventListener('loadeddata', (e) => {
    const a = e.target;
    const box = a instanceof HTMLAudioElement && a.closest('#ask_audio, #text_audio, #audio_audio');
    if (!box) return;
    const tab = box.id.split('_')[0];
    const v = document.querySelector('#' + tab + '_video video');
    // an Ask answer says on its timing line when its video is coming (the last chunk, and with it this audio,
    // may reach the page before the player has loaded anything)
    const timing = document.querySelector('#ask_timing');
    const noVideo = tab === 'ask' ? !(timing && timing.innerText.includes('first video ready'))
                                  : !v || !v.currentSrc;
    if (noVideo && a.paused) a.play().catch(() => {});
  }, true);
  // Opened from a shared link: the streamed player starts empty (chunks are not shared), so it is hidden until
  // the next question and the panel with the whole answer is opened instead.
  if (new URLSearchParams(window.location.search).has('deep_link')) {
    document.body.classList.add('dh-shared');
    let tries = 0;
    const openReplay = () => {
      const btn = document.querySelector('#ask_replay_box > button.label-wrap, #ask_replay_box button.label-wrap');
      const content = document.querySelector('#ask_replay_box [data-testid="accordion-content"]');
      if (btn && content && content.style.display === 'none') { btn.click(); return; }
      if (!btn && ++tries < 100) setTimeout(openReplay, 100);
    };
    openReplay();
  }
}
"""


# The browser's own <audio> player instead of the waveform view: it is in the page (so the first-sound timing and
# the tests can see it play) and it is what every visitor knows.
PLAIN_PLAYER = gr.WaveformOptions(show_recording_waveform=False)


def streaming_available() -> bool:
    """Gradio's streaming video output muxes chunks into HLS with the system ffmpeg + ffprobe."""
    return bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))


class SegmentPlayer:
    """Gradio's streaming video player, handed the answer's own HLS segments (services/segments.py) instead of
    muxing each chunk itself (three ffmpeg/ffprobe runs a chunk, 0.26 s on an idle bf16 2-core EPYC, against
    0.03 s for our remux). A handler yields the chunk's mp4 as usual (API clients get that) after
    :meth:`prepare`; a chunk without a prepared segment goes Gradio's own way. (A gr.Video subclass would do
    too, but Gradio writes a .pyi stub beside the module of every component class at import.)"""

    _prepared: dict[str, Any] = {}  # chunk path -> its Segment, until the player takes it
    _lock = threading.Lock()

    @classmethod
    def prepare(cls, part) -> str:
        """The value to yield for ``part`` (an update carrying ``chunk`` and maybe ``segment``)."""
        chunk = str(part.chunk)
        if part.segment is not None:
            with cls._lock:
                while len(cls._prepared) > 256:  # chunks of streams that ended before playing them
                    cls._prepared.pop(next(iter(cls._prepared)))
                cls._prepared[chunk] = part.segment
        return chunk

    @classmethod
    def make(cls, **kwargs) -> gr.Video:
        """A ``gr.Video(**kwargs)`` whose stream takes prepared segments as they are."""
        player = gr.Video(**kwargs)
        gradios_own = player.stream_output

        async def stream_output(value, output_id: str, first_chunk: bool):
            with cls._lock:
                segment = cls._prepared.pop(str(value), None) if value is not None else None
            if segment is None:
                return await gradios_own(value, output_id, first_chunk)
            data = await asyncio.to_thread(Path(segment.path).read_bytes)
            return ({"data": data, "duration": segment.seconds, "extension": ".ts"},
                    {"path": output_id, "is_stream": True, "orig_name": "video-stream.mp4",
                     "meta": {"_type": "gradio.FileData"}})

        player.stream_output = stream_output
        return player




def speech_examples() -> list[tuple[str, str]]:
    return [(str(EXAMPLES / n), str(DEFAULT_AVATAR)) for n in SPEECH_EXAMPLE_FILES]


# Handler arguments that name a file the handler will open: each is checked against the app's file policy
# (services/uploads.py) before the handler runs. The guard at the door (FileDataGuard) already refused such
# requests; this is the second line, for anything that reaches a handler another way.
FILE_ARGS = frozenset({"photo", "video", "audio", "path", "questions", "video_1", "video_2", "video_3"})
_FILES: list[FilePolicy] = []  # the policy of the app being served (set by build_demo)


def file_policy(services: AppServices | None = None) -> FilePolicy:
    """Where files a request names may lie: Gradio's upload folder (uploads and its copies of our results), the
    app's examples, Gradio's cached examples and the services' own output folder."""
    roots = [gradio_upload_folder(), EXAMPLES, Path(os.environ.get("GRADIO_EXAMPLES_CACHE") or ".gradio").resolve()]
    if services is not None:
        roots.append(services.dirs.root)
    return FilePolicy(roots)


def _check_files(fn, args, kwargs) -> None:
    if not _FILES:
        return
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    except TypeError:
        return
    for name, value in bound.arguments.items():
        if name in FILE_ARGS and value is not None and str(value).strip():
            try:
                _FILES[-1].check(value)
            except RefusedFile as err:
                log.warning("refused file argument %s of %s: %s", name, fn.__name__, err.reason)
                raise


def gradio_errors(fn):
    """Show UserFacingError messages verbatim in the UI (gr.Error); anything else as a short apology.

    The app keeps serving either way. Works for plain functions and generators (streaming handlers). File
    arguments (FILE_ARGS) are checked against the file policy first.
    """

    def translate(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if isinstance(err, UserFacingError):
            return gr.Error(visitor_message(str(err)), print_exception=False)
        log.exception("handler %s failed", fn.__name__)  # the error's type and message: log only
        return gr.Error("Something went wrong on our side. The app is still running: please try again, or see the "
                        "Status tab.", print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                _check_files(fn, args, kwargs)
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise translate(err) from err

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            _check_files(fn, args, kwargs)
            return fn(*args, **kwargs)
        except Exception as err:
            raise translate(err) from err

    return wrapper


def _progress_cb(progress):
    """Adapt gr.Progress to the pipeline's ``progress(done, total)`` callback (frames rendered)."""
    if progress is None:
        return None

    def cb(done, total=None, *_, **__):
        try:
            progress((int(done), int(total) if total else None), desc="Lip-syncing", unit="frames")
        except Exception:  # progress is cosmetic; never fail a request on it
            pass

    return cb


class ResultValues(NamedTuple):
    """The outputs of the Text and Audio tabs (and their examples), in the order of their components."""

    video: str | None
    audio: str | None
    figures: str
    notice: str
    details: dict


class AskValues(NamedTuple):
    """The nine Ask outputs, in the order of ``ask_outputs`` in :func:`build_demo` (a tuple, as Gradio takes it)."""

    answer: Any  # markdown
    suggestions: Any  # a gr.update of the clickable questions (a list of strings for API clients)
    video: Any  # the player: a chunk, the whole answer, None or gr.skip()
    timing: str
    details: dict
    download: str | None
    audio: str | None
    notice: str
    replay: str | None


def _result_values(res: VideoResult) -> ResultValues:
    """(video, audio, figures, notice, details) of one rendered result."""
    notice = res.notice if res.path is None else ""
    return ResultValues(None if res.path is None else str(res.path),
                        None if res.audio_path is None else str(res.audio_path),
                        "" if res.path is None else video_summary(res), notice, res.details())


# ------------------------------------------------------------------------------------------------ handlers
class Handlers:
    """The functions Gradio calls. Thin: arguments in, services call, component values out."""

    def __init__(self, services: AppServices, streaming: bool | None = None):
        self.svc = services
        # the Ask tab's player: streamed chunks (needs system ffmpeg + ffprobe) or audio first, then the video
        self.streaming = streaming_available() if streaming is None else bool(streaming)

    @staticmethod
    def _avatar(photo, video):
        return video or photo

    def text_to_avatar(self, text, lang, engine, photo, video, model, on_no_face="error",
                       progress=gr.Progress()):  # noqa: B008 (Gradio injects progress via this default)
        res = self.svc.text_to_avatar(text, self._avatar(photo, video), model or registry.DEFAULT_MODEL, lang=lang,
                                      engine=engine, progress=_progress_cb(progress), on_no_face=on_no_face or "error")
        return _result_values(res)

    def audio_to_avatar(self, audio, photo, video, model, on_no_face="error", progress=gr.Progress()):  # noqa: B008 (Gradio injects progress via this default)
        res = self.svc.audio_to_avatar(audio, self._avatar(photo, video), model or registry.DEFAULT_MODEL,
                                       progress=_progress_cb(progress), on_no_face=on_no_face or "error")
        return _result_values(res)

    # An example row is rendered once per model (services keep it) and runs with the tab's chosen model. Gradio's
    # own example cache cannot hold a result without a video (6.31 writes None as '' and fails to read it back:
    # JSONDecodeError and error badges on every click), and would keep a speech-only result after weights arrive.
    def example_text(self, row, model):
        index = row[0] if isinstance(row, (tuple, list)) else int(row)
        text, lang, photo = TEXT_EXAMPLES[index]
        model = model or self.svc.default_model()
        return _result_values(self.svc.example(("text", index, model), lambda: self.svc.text_to_avatar(
            text, photo, model, lang=lang)))

    def example_audio(self, row, model):
        index = row[0] if isinstance(row, (tuple, list)) else int(row)
        audio, photo = speech_examples()[index]
        model = model or self.svc.default_model()
        return _result_values(self.svc.example(("audio", index, model), lambda: self.svc.audio_to_avatar(
            audio, photo, model)))

    def pickers(self) -> tuple:
        """At each page load: the model pickers (Ask, Text, Audio, Conversation) and the comparison's ticks, as this server is now (weights
        found or gone since start-up, the Hub reachable again). Every model stays a valid choice."""
        available = self.svc.available_models()
        pickers = tuple(_picker_update(available, prefer) for prefer in PICKER_PREFERENCE + PICKER_PREFERENCE[:1])
        ticks = gr.update(choices=_compare_choices(available), value=self.svc.compare_default() if available else [])
        return pickers + (ticks,)

    def compare(self, text, audio, photo, video, engine, models, progress=gr.Progress()):  # noqa: B008 (Gradio injects progress via this default)
        chosen = list(models or self.svc.compare_default())[:3]
        out = self.svc.compare(self._avatar(photo, video), text=text, audio=audio, models=chosen, engine=engine,
                               progress=_progress_cb(progress))
        values: list = []  # plain values (not updates), so API clients get paths and text
        for k in range(3):
            if k >= len(chosen):
                values += [None, ""]
                continue
            spec = registry.get(chosen[k])
            r = out[spec.id]
            licence = (spec.license or "—").split(" (")[0]  # where the terms come from: Status -> Details
            head = f"**{spec.title}** · {spec.img_size}×{spec.img_size} · licence: {licence}\n\n"
            if isinstance(r, str):
                values += [None, f"{head}⚠️ {r}"]
            else:
                values += [str(r.path), head + video_summary(r) + f"\n\n*{spec.quality}*"]
        return tuple(values)

    def compare_scores(self, models, video_1=None, video_2=None, video_3=None):
        """The Compare tab's second step, chained after the videos are shown: each model's lip-sync and mouth
        figures, measured on the videos just returned (the same order as :meth:`compare`)."""
        chosen = list(models or self.svc.compare_default())[:3]
        videos = [video_1, video_2, video_3][:len(chosen)]  # our own results sent back: checked as FILE_ARGS
        if not any(videos):
            return ""
        return scores_markdown(self.svc.scores.score(list(zip(chosen, videos, strict=True))))

    @staticmethod
    def _answer_md(ans) -> str:
        outcome = getattr(ans, "outcome", "answer" if getattr(ans, "answered", False) else "reject")
        if outcome == "answer":
            head = f"**Matched question · 匹配问题:** {ans.matched_question}"
        elif outcome == "clarify":
            head = "**Did you mean… · 您是想问…**"
        else:
            head = "**No confident match · 未找到可靠答案**"
        return f"{head}\n\n{ans.text}"

    @staticmethod
    def _candidates(ans) -> list[tuple[str, str]]:
        """Clickable questions as (label, value): 'did you mean' candidates (value ``#lang:entry-id``: a click
        answers that entry directly, it is not asked again) for a clarify outcome, else related questions."""
        cands = getattr(ans, "candidates", None)
        if cands:
            return [(c.question, f"#{getattr(ans, 'lang', 'zh')}:{c.id}") for c in cands]
        return [(q, q) for q in getattr(ans, "suggestions", []) or []]

    @staticmethod
    def _details(up: AskUpdate) -> dict:
        a = up.answer
        return {
            "outcome": getattr(a, "outcome", "answer" if getattr(a, "answered", False) else "reject"),
            "answered": bool(getattr(a, "answered", False)), "text": a.text, "lang": getattr(a, "lang", ""),
            "score": round(float(getattr(a, "score", 0.0)), 4), "matched_id": getattr(a, "matched_id", None),
            "matched_question": getattr(a, "matched_question", None),
            "suggestions": list(getattr(a, "suggestions", []) or []), "source": getattr(a, "source", ""),
            "model": up.model, "tts_engine": up.engine, "chunks": max(up.index, 0) + (up.chunk is not None),
            "seconds_to_answer_text": round(up.seconds_to_answer, 3),
            "seconds_to_first_sentence_spoken": None if up.seconds_to_first_speech is None
            else round(up.seconds_to_first_speech, 3),
            "seconds_to_first_chunk": None if up.seconds_to_first_chunk is None else round(up.seconds_to_first_chunk, 3),
            "notice": up.notice, "lipsync_problem": up.problem, "warnings": list(up.warnings),
            "seconds_of_speech": None if up.speech_seconds is None else round(up.speech_seconds, 3),
        }

    @staticmethod
    def _timing_md(up: AskUpdate) -> str:
        s = f"Answer found in {up.seconds_to_answer:.2f} s"
        if up.seconds_to_first_chunk is not None:
            s += f" · first video ready after {up.seconds_to_first_chunk:.2f} s"
        elif not up.done and up.rendered_seconds is not None:
            s += (f" · rendering the video: {up.rendered_seconds:.1f} of {up.total_seconds:.1f} s ready (it starts "
                  "playing as soon as it can run to the end without pausing)")
        elif not up.done:
            s += " · preparing the spoken answer…"
        if up.done:
            s += " · done" if up.final_video is not None else " · spoken answer ready"
            if up.speech_seconds:
                s += f" ({up.speech_seconds:.2f} s of speech)"
        if up.render_note:
            s += f" · {up.render_note}"
        return s

    # Gradio (6.x) records a session's component values for shared links (deep links), but once a component has
    # received a gr.update / gr.skip, later plain values of it are filed under a copy's id and the link loses
    # them. So every output the link must reopen gets a plain value on every step (the current one is repeated);
    # only the streaming player is skipped between chunks (its chunks are not for sharing: the whole answer is
    # the replay video).
    @staticmethod
    def _nothing_shown() -> dict:
        """The shareable Ask outputs before an answer has any: no video, file, audio, notice or replay."""
        return {"video": None, "download": None, "audio": None, "notice": "", "replay": None}

    @staticmethod
    def _ask_values(answer_md, sugg, video, timing: str, details: dict, shown: dict) -> AskValues:
        """The nine Ask outputs, in the order of ``ask_outputs`` in :func:`build_demo`."""
        return AskValues(answer_md, sugg, video, timing, details, shown["download"], shown["audio"], shown["notice"],
                         shown["replay"])

    def _ask_cleared(self, message: str = "*Finding the answer…*") -> AskValues:
        """The Ask outputs while a new question is being answered (or, with another ``message``, back at rest
        with nothing being answered): the previous answer is gone."""
        return self._ask_values(message, gr.update(choices=[], value=None, visible=False),
                                gr.skip() if self.streaming else None, "", {}, self._nothing_shown())

    def ask(self, question, photo, model, engine, faq=None, entry=None, lang="zh", segments=True):
        """Generator: the answer at once, then the spoken answer.

        With streaming (system ffmpeg + ffprobe): video chunks queue in the player sentence by sentence; the
        whole answer is then offered for download and replay. Without it: the spoken answer as audio first, then
        the whole video — chunks never replace each other mid-word. ``segments``: each chunk also as the HLS
        segment the page's player serves (:class:`SegmentPlayer`); False for the API, which has no player.
        """
        streaming = self.streaming
        shown = self._nothing_shown()
        updates = self.svc.ask_stream(question, photo or DEFAULT_AVATAR, model or registry.DEFAULT_MODEL,
                                      engine=engine, chunks=streaming, assistant=faq, entry=entry, lang=lang,
                                      segments=streaming and segments)
        # the last chunk goes out with the joined answer (one step): the stream then ends at once, and the page
        # (CLIENT_JS) lets the player's playlist request for it wait for the stream's end
        for up, part in with_last_chunk(updates):
            cands = self._candidates(up.answer)
            # a streaming player is cleared by its first chunk (None would open an empty HLS playlist the
            # player polls with back-off) and is otherwise left alone between chunks
            video = gr.skip() if streaming else shown["video"]
            if part is not None:
                video = SegmentPlayer.prepare(part)
            if up.chunk is None or up.done:
                if up.audio is not None:
                    shown["audio"] = str(up.audio)
                if up.done:
                    shown["notice"] = up.notice or ("\n".join(f"⚠️ {w}" for w in up.warnings) if up.warnings else "")
                    if up.final_video is not None:
                        shown["download"] = str(up.final_video)
                        if streaming:  # the chunks are playing; the whole answer for replay and shared links
                            shown["replay"] = str(up.final_video)
                        else:
                            video = shown["video"] = str(up.final_video)
            label = ("Did you mean… · 您是想问… (click one)" if getattr(up.answer, "outcome", "") == "clarify"
                     else "Related questions · 相关问题 (click to ask)")
            yield self._ask_values(self._answer_md(up.answer),
                                   gr.update(choices=cands, value=None, visible=bool(cands), label=label),
                                   video, self._timing_md(up), self._details(up), shown)

    def ask_voice(self, audio, photo, model, engine, faq=None, segments=True):
        """Generator: the recognised question first (shown, editable), then the same outputs as :meth:`ask`.

        Without a speech recogniser, or when nothing usable was recorded, it says so at once where the answer
        would be and the page is back at rest (no error badge, no waiting for an answer that cannot come)."""
        if not self.svc.speech_recognition().available:
            yield ("",) + self._ask_cleared(f"*{ASR_UNAVAILABLE}*")
            return
        yield ("",) + self._ask_cleared("*Listening to your question…*")
        try:
            text = self.svc.transcribe(audio).text
        except UserFacingError as err:  # bad recording, or the recogniser went away since the check above
            message = ASR_UNAVAILABLE if isinstance(err, SpeechRecognitionUnavailable) else visitor_message(str(err))
            yield ("",) + self._ask_cleared(f"*{message}*")
            return
        for values in self.ask(text, photo, model, engine, faq, segments=segments):
            yield (text,) + values

    def voice_check(self):
        """At the click, outside the queue (which may be busy rendering): without a speech recogniser the answer
        area says so at once; otherwise nothing changes here."""
        return gr.skip() if self.svc.speech_recognition().available else f"*{ASR_UNAVAILABLE}*"

    # The public /ask and /ask_voice: the same steps as the page's, as plain values (an API client gets no
    # {"__type__": "update"}): the clickable questions as a list of strings, and in the place of the streamed
    # player the newest video (each chunk while streaming, then the whole answer; no segments: no player).
    def ask_api(self, question, photo, model, engine, faq=None):
        yield from _plain_ask_steps(self.ask(question, photo, model, engine, faq, segments=False), first=0)

    def ask_voice_api(self, audio, photo, model, engine, faq=None):
        yield from _plain_ask_steps(self.ask_voice(audio, photo, model, engine, faq, segments=False), first=1)

    def load_faq(self, path, current=None, progress=gr.Progress()):  # noqa: B008 (Gradio injects progress via this default)
        """A problem with the file is said in the FAQ's status line (the FAQ in use stays): no error badge."""
        def cb(fraction, message=""):
            try:
                progress(float(fraction), desc=message or "Indexing your FAQ")
            except Exception:  # progress is cosmetic
                pass

        try:
            faq = self.svc.load_faq(path, progress=cb)
        except UserFacingError as err:
            still = "your previous FAQ" if current is not None else "the built-in public-service FAQ"
            return current, f"⚠️ {visitor_message(str(err))} Still using {still}.", gr.update()
        n = len(faq.kb)
        how = ("Its answer / ask-back / don't-know thresholds are the documented defaults for an uncalibrated FAQ; "
               "calibrate them below with your own test questions." if not faq.calibration.calibrated
               else faq.calibration.source)
        status = f"✓ Your FAQ **{Path(path).name}** is in use for this browser tab only: {n} questions. {how}"
        return faq, status, gr.update(visible=True)

    @staticmethod
    def built_in_faq():
        return None, "Using the built-in public-service FAQ.", gr.update(visible=False)

    def calibrate_faq(self, faq, questions):
        try:
            new, report = self.svc.calibrate_faq(faq, questions)
        except UserFacingError as err:  # said in the status line, the FAQ in use stays
            return faq, f"⚠️ {visitor_message(str(err))}"
        before, after = report["before"], report["after"]
        return new, (f"✓ Calibrated on {report['n_questions']} of your questions ({report['n_answerable']} "
                     f"answerable): right answers {before.get('accepted_correct', 0):.0%} → "
                     f"{after.get('accepted_correct', 0):.0%}, wrong answers {before.get('accepted_wrong', 0):.0%} → "
                     f"{after.get('accepted_wrong', 0):.0%} (measured on these same questions).")

    def ask_choice(self, choice, photo, model, engine, faq=None):
        """A click on a 'did you mean' candidate (answer that entry) or a related question (ask it). The question
        box shows the question being answered (a plain value on every step, see :meth:`ask`)."""
        if not choice:
            return
        if choice.startswith("#") and ":" in choice:
            lang, entry = choice[1:].split(":", 1)
            question = ""
            for values in self.ask(None, photo, model, engine, faq, entry=entry, lang=lang):
                question = values.details.get("matched_question") or question
                yield (question,) + values
            return
        yield (choice,) + self._ask_cleared()
        for values in self.ask(choice, photo, model, engine, faq):
            yield (choice,) + values

    def status(self):
        items = self.svc.status()
        return status_markdown(items), details_markdown(items)


# ---------------------------------------------------------------------------------------------------- UI
PICKER_INFO = "Bigger = sharper mouth, slower on a CPU."
NOT_HERE = "not available here"


def _model_choices(available: list[str] | None, size: str = "{0}×{0}") -> list[tuple[str, str]]:
    """Every registry model, always (any id is a valid API value); its label says when it cannot run here
    (``available`` None: not known yet, while the UI is built without looking at any file or the Hub)."""
    out = []
    for m in registry.ids():
        spec = registry.get(m)
        label = f"{spec.title} · {size.format(spec.img_size)}"
        out.append((label if available is None or m in available else f"{label} ({NOT_HERE})", m))
    return out


def _compare_choices(available: list[str] | None) -> list[tuple[str, str]]:
    return _model_choices(available, size="{0}")


def _picker_info(available: list[str]) -> str:
    if not available:
        return "No lip-sync model can run on this server yet: you get the spoken answer."
    if len(available) < len(registry.ids()):
        return f"{PICKER_INFO} A model marked '{NOT_HERE}' gives the spoken answer only (the Status tab says more)."
    return PICKER_INFO


def _picker_update(available: list[str], prefer: str) -> dict:
    value = prefer if prefer in available else (available[0] if available else prefer)
    return gr.update(choices=_model_choices(available), value=value, info=_picker_info(available))


def _model_picker(prefer: str, label="Lip-sync model") -> gr.Radio:
    """Every registered model; which can run here is filled in when a page loads (``Handlers.pickers``)."""
    return gr.Radio(choices=_model_choices(None), value=prefer, label=label, info=PICKER_INFO,
                    elem_classes="model-picker")


def _plain_ask_steps(steps, first: int):
    """The Ask steps with plain values where the page gets updates: ``first`` is the index of the answer."""
    video = None
    for values in steps:
        values = list(values)
        sugg, shown = values[first + 1], values[first + 2]
        values[first + 1] = [c[0] if isinstance(c, (tuple, list)) else c for c in (sugg.get("choices") or [])] \
            if isinstance(sugg, dict) else list(sugg or [])
        if not (isinstance(shown, dict) and shown.get("__type__") == "update"):
            video = shown
        if values[first + 5]:  # the whole answer is ready (its download): that is the newest video now
            video = values[first + 5]
        values[first + 2] = video
        yield tuple(values)


def _avatar_inputs(default=DEFAULT_AVATAR):
    photo = gr.Image(value=str(default), type="filepath",
                     label="Avatar photo (one face)", sources=["upload", "webcam", "clipboard"], height=260)
    with gr.Accordion("…or a short video of one face (used instead of the photo)", open=False):
        video = gr.Video(label="Avatar video", sources=["upload"], height=220)
        gr.Examples([[str(EXAMPLE_VIDEO_AVATAR)]], inputs=[video], label="Example video avatar (made by this project)")
        no_face = gr.Radio(NO_FACE_CHOICES, value="error", label="Frames where no face is found")
    return photo, video, no_face


def _share_button(what: str, hours: float) -> gr.DeepLinkButton:
    """Copies a link that reopens this session's results on their tab (Gradio deep link)."""
    return gr.DeepLinkButton(f"Share a link to this {what} (kept {hours:g} h)", copied_value="Link copied!")


def _avatar_result(tab: str, share_hours: float):
    """The result column of the Text/Audio tabs: video, speech, figures, notice, details, share button
    (elem_ids ``<tab>_video``, ``<tab>_audio``, ``<tab>_info``, ``<tab>_notice``)."""
    out = gr.Video(label="Talking avatar", autoplay=True, format="mp4", interactive=False, elem_id=f"{tab}_video")
    notice = gr.Markdown(elem_classes="notice", elem_id=f"{tab}_notice")
    audio = gr.Audio(label="Speech", type="filepath", interactive=False, waveform_options=PLAIN_PLAYER,
                     elem_id=f"{tab}_audio")
    info = gr.Markdown(elem_classes="figure", elem_id=f"{tab}_info")
    with gr.Accordion("Details", open=False):
        details = gr.JSON(label="how it was made")
    _share_button("result", share_hours)
    return out, audio, info, notice, details


def _on_render(trigger, tabs: gr.Tabs, tab_id: str, fn, inputs, outputs, **kwargs):
    """A rendering event (they share the "render" concurrency limit) that also notes its tab in the session, so a
    shared link (Gradio deep link: the session's component state) reopens on the tab the result was made in. The
    note runs at the click, while the visitor is on that tab (no visible change); a note after the result would
    pull a visitor who has moved on back to this tab."""
    trigger(lambda: gr.Tabs(selected=tab_id), None, tabs, api_visibility="private", queue=False)
    return trigger(fn, inputs, outputs, concurrency_id="render", **kwargs)


def _config_markdown(settings: Settings) -> str:
    config = {**registry.weights_settings(settings), **settings.describe()}  # model weights: the registry's
    rows = "\n".join(f"| `{k}` | `{v or '(not set)'}` |" for k, v in config.items())
    return f"| variable | value |\n|---|---|\n{rows}"


# ------------------------------------------------------------------------------ Conversation tab (issue 24)
# Talk to it hands-free: Gradio's own microphone stream in (each piece a POST to /stream/<event>, the answers back
# as server-sent events: plain HTTPS, so it works on a Space without TURN), the Ask tab's streamed lip-synced answer
# out (HLS over the same connection). The logic lives in services/conversation.py.
TALK_STREAM_EVERY = 0.2  # seconds of microphone per piece sent to the server (the pause detector's resolution)
TALK_TIME_LIMIT = 900  # one listening session holds a queue slot at most this long; press Record again after
TALK_IDLE, TALK_HEARING, TALK_THINKING, TALK_SPEAKING = (
    "🎙️ Listening… just speak, and pause when you are done.", "👂 Hearing you…",
    "💭 Thinking…", "🗣️ Answering… speak at any time to interrupt.")
TALK_STATES = {"listening": TALK_IDLE, "hearing": TALK_HEARING, "thinking": TALK_THINKING, "speaking": TALK_SPEAKING}
# the answer's player lies over the avatar's photo and shows only while it plays (hidden, not removed: a player
# laid out at zero size stays that size when shown). Gradio also files each rule under a more specific
# '.gradio-container … .contain' copy, so the visibility is decided by body rules alone (their copies never match).
TALK_CSS = """
#talk_stage {position: relative;}
#talk_stage #talk_video {position: absolute; top: 0; left: 0; right: 0; z-index: 2;}
body:not(.dh-talk-speaking) #talk_stage #talk_video {visibility: hidden;}
#talk_state {font-size: 1.1em;}
"""
# In the visitor's browser, from the same rule as the server (qa.vad.VADConfig, passed in below): the moment the
# visitor starts speaking while the avatar answers, its player stops at once (barge-in; the server cancels the
# answer when its own detector hears the same speech); and the time from the end of the visitor's speech to the
# first frame of the answer on screen.
TALK_JS = """
() => {
  const cfg = __VAD__;
  const T = window.__dhTalk = {turns: [], bargeIns: [], lastVoiced: null, turnEnd: null, stopped: false,
                               listening: false, level: -100, voiced: false};
  const video = () => document.querySelector('#talk_video video');
  const speaking = (on) => document.body.classList.toggle('dh-talk-speaking', on);
  const show = (sel, text) => { const el = document.querySelector(sel); if (el) el.textContent = text; };
  const minRun = Math.max(1, Math.round(cfg.min_speech_s / cfg.frame_s));
  let an = null, buf = null, floor = null, recent = [], quiet = 0, lastTurn = '';
  const onSpeech = (onset) => {
    const v = video();
    if (v && !v.paused && !v.ended) {
      v.pause();
      T.stopped = true;
      speaking(false);
      const b = {onset_ms: onset, paused_ms: performance.now()};
      b.stop_s = (b.paused_ms - b.onset_ms) / 1000;
      T.bargeIns.push(b);
      show('#talk_barge', 'Stopped ' + b.stop_s.toFixed(2) + ' s after you started speaking (measured in this browser)');
      const told = document.querySelector('#talk_stopped textarea, #talk_stopped input');
      if (told) {  // tell the server: it stops the answer too, or marks it interrupted if it was rendered already
        told.value = JSON.stringify({n: T.bargeIns.length, stop_s: b.stop_s});
        told.dispatchEvent(new Event('input', {bubbles: true}));
      }
    }
  };
  const tick = () => {
    const box = document.querySelector('#talk_turn textarea, #talk_turn input');
    const turn = box ? box.value : '';
    if (turn && turn !== lastTurn) {  // the server ended a turn: time the answer from the end of that speech
      lastTurn = turn;
      T.turnEnd = T.lastVoiced;
      T.stopped = false;
      T.turns.push({turn: turn, end_ms: T.turnEnd, first_frame_s: null});
      show('#talk_first_frame', '');
    }
    if (!an) return;
    an.getFloatTimeDomainData(buf);
    let s = 0;
    for (let i = 0; i < buf.length; i++) s += buf[i] * buf[i];
    const rms = Math.sqrt(s / buf.length), lvl = rms > 1e-5 ? 20 * Math.log10(rms) : -100, now = performance.now();
    const f = floor === null ? -100 : floor;
    const startThr = Math.max(f + cfg.start_db, cfg.min_level_db);
    const stopThr = Math.max(f + cfg.stop_db, cfg.min_level_db - (cfg.start_db - cfg.stop_db));
    T.level = lvl;
    if (!T.voiced) {
      if (floor === null || lvl < floor) floor = lvl;
      else if (lvl < startThr) floor = Math.min(lvl, floor + cfg.floor_rise_db_per_s * cfg.frame_s);
      recent.push(lvl >= startThr ? 1 : 0);
      if (recent.length > 2 * minRun) recent.shift();
      if (recent.reduce((a, b) => a + b, 0) >= minRun) {
        T.voiced = true; quiet = 0; T.lastVoiced = now;
        onSpeech(now - (recent.length - recent.indexOf(1)) * cfg.frame_s * 1000);
        recent = [];
      }
    } else if (lvl >= stopThr) { quiet = 0; T.lastVoiced = now; }
    else if (++quiet * cfg.frame_s >= cfg.end_silence_s) { T.voiced = false; recent = []; }
  };
  setInterval(tick, cfg.frame_s * 1000);
  const listen = async () => {
    if (T.listening) return;
    T.listening = true;
    try {
      const stream = T.stream = await navigator.mediaDevices.getUserMedia({audio: {echoCancellation: true, noiseSuppression: true}});
      const ctx = T.ctx = new AudioContext();
      an = ctx.createAnalyser();
      an.fftSize = 1024;
      buf = new Float32Array(an.fftSize);
      ctx.createMediaStreamSource(stream).connect(an);
    } catch (e) { T.listening = false; }
  };
  const deafen = () => {  // the visitor stopped the microphone: this detector lets it go too
    if (T.stream) T.stream.getTracks().forEach((t) => t.stop());
    if (T.ctx) T.ctx.close();
    T.stream = T.ctx = an = null; T.listening = false; T.voiced = false; floor = null; recent = [];
  };
  const asked = () => {  // a typed question or a clicked 'did you mean': timed from here, and it may play
    T.stopped = false;
    T.turns.push({turn: 'asked', asked: true, end_ms: performance.now(), first_frame_s: null});
    show('#talk_first_frame', '');
  };
  document.addEventListener('click', (e) => {
    if (!e.target.closest) return;
    if (e.target.closest('#talk_mic .stop-button')) deafen();
    else if (e.target.closest('#talk_mic .record-button')) listen();
    else if (e.target.closest('#talk_chat button.option')) asked();
  }, true);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && e.target.closest && e.target.closest('#talk_text')) asked();
  }, true);
  document.addEventListener('playing', (e) => {
    const v = e.target;
    if (!(v instanceof HTMLMediaElement) || !v.closest('#talk_video, #talk_audio')) return;
    if (T.stopped) { v.pause(); return; }  // a piece of the interrupted answer still arriving
    speaking(v instanceof HTMLVideoElement);
    const t = T.turns[T.turns.length - 1];
    if (!t || t.first_frame_s !== null || t.end_ms === null) return;
    t.first_frame_s = (performance.now() - t.end_ms) / 1000;
    const what = v instanceof HTMLVideoElement ? 'First frame on your screen ' : 'Answer audible ';
    show('#talk_first_frame', what + t.first_frame_s.toFixed(2) + (t.asked ? ' s after you asked' : ' s after you stopped speaking') + ' (measured in this browser)');
  }, true);
  document.addEventListener('ended', (e) => {  // the answer is over: the avatar listens again
    if (!(e.target instanceof HTMLMediaElement) || !e.target.closest('#talk_video, #talk_audio')) return;
    speaking(false);
    if (T.listening) show('#talk_state .md', __LISTENING__);
  }, true);
}
"""


class TalkHandlers:
    """The Conversation tab's functions: microphone pieces in, the conversation's state and answers out."""

    def __init__(self, services: AppServices, streaming: bool):
        from services.conversation import Conversations

        self.svc = services
        self.streaming = streaming
        self.convs = Conversations()

    def _conv(self, request: gr.Request | None):
        return self.convs.get(getattr(request, "session_hash", None) or "api")

    def start(self, request: gr.Request = None):
        """Recording started: say at once whether spoken turns can be recognised here."""
        from services.conversation import recognition_ready

        conv = self._conv(request)
        conv.reset_stream()
        ok, why = recognition_ready(self.svc)
        conv.can_hear = ok
        if ok:
            return TALK_IDLE, ""
        return ("⌨️ Type your question below instead.",
                f"{why} Type your question in the box below and press Enter: the avatar answers it the same way.")

    def stop(self, request: gr.Request = None):
        self._conv(request).reset_stream()

    def stopped_in_page(self, told, request: gr.Request = None):
        """The page stopped the answer's player (barge-in heard there first): ``told`` is its JSON note."""
        import json

        try:
            stop_s = float(json.loads(told or "{}").get("stop_s", 0.0))
        except (ValueError, TypeError, AttributeError):
            return
        self._conv(request).stopped_in_page(stop_s)

    def hear(self, piece, request: gr.Request = None):
        """One microphone piece -> (turn to answer or skip, state line or skip)."""
        if piece is None:
            return gr.skip(), gr.skip()
        conv = self._conv(request)
        if not conv.can_hear:  # said once when recording started; typing is offered
            return gr.skip(), gr.skip()
        sr, samples = piece
        heard = conv.hear(sr, samples)
        turn = f"{heard.turn.id}" if heard.turn is not None else gr.skip()
        state = TALK_STATES.get(heard.state, TALK_IDLE) if heard.changed or heard.barge_in else gr.skip()
        return turn, state

    def _history(self, conv) -> list[dict]:
        """The chat; the latest "did you mean" answer carries its candidates as buttons (Gradio shows a last
        assistant message's ``options`` under the chat; a click is :meth:`answer_choice`)."""
        msgs: list[dict] = []
        for ex in conv.history:
            if ex.question:
                mark = "🎙️ " if ex.spoken else "👆 " if ex.picked else ""
                msgs.append({"role": "user", "content": mark + ex.question})
            if ex.answer is not None:
                text = Handlers._answer_md(ex.answer)
                if ex.stopped:
                    text += "\n\n*(interrupted)*"
                msgs.append({"role": "assistant", "content": text})
            elif ex.note:
                msgs.append({"role": "assistant", "content": f"*{ex.note}*"})
        offered = conv.offered()
        if offered and msgs and msgs[-1]["role"] == "assistant":
            lang = getattr(conv.history[-1].answer, "lang", "zh")
            msgs[-1]["options"] = [{"label": f"{k}. {c.question}", "value": f"#{lang}:{c.id}"}
                                   for k, c in enumerate(offered, 1)]
        return msgs

    @staticmethod
    def _latency_md(t: dict, spoken: bool = True) -> str:
        """The server's half of the latency line (the page adds the first frame on screen, measured there)."""
        names = (("turn_ended", "your turn ended"), ("recognised", "text recognised"), ("answered", "answer found"),
                 ("first_chunk", "first lip-synced video sent"), ("first_sound", "spoken answer sent"))
        parts = [f"{label} {t[k]:.2f} s" for k, label in names if k in t]
        if "server_stop_after_barge_in" in t:
            parts.append(f"interrupted: stopped {t['server_stop_after_barge_in']:.2f} s after you started speaking")
        if not parts:
            return ""
        return ("After you stopped speaking: " if spoken else "After you asked: ") + " · ".join(parts)

    def _answer(self, conv, turn, model):
        shown = {"audio": None, "notice": ""}
        for up in conv.answer(self.svc, turn, DEFAULT_AVATAR, model or registry.DEFAULT_MODEL,
                              chunks=self.streaming, segments=self.streaming):
            video = gr.skip()
            if up.chunk is not None:
                video = SegmentPlayer.prepare(up)
            elif up.phase == "done" and not self.streaming and up.final_video is not None:
                video = str(up.final_video)
            if up.audio is not None and (up.final_video is None or not self.streaming):
                shown["audio"] = str(up.audio)
            if up.notice:
                shown["notice"] = up.notice
            state = {"recognised": TALK_THINKING, "answer": TALK_THINKING, "waiting": TALK_THINKING,
                     "chunk": TALK_SPEAKING, "done": TALK_SPEAKING, "stopped": TALK_HEARING,
                     "unheard": TALK_IDLE}.get(up.phase, TALK_IDLE)
            details = {**up.details, "phase": up.phase, "question": up.question,
                       "seconds_after_end_of_speech": up.timings}
            latency = self._latency_md(up.timings, up.details.get("spoken", True))
            yield (self._history(conv), video, shown["audio"], state, latency, details, shown["notice"],
                   f"{up.turn_id} {up.phase}")

    def answer_turn(self, turn_id, model, request: gr.Request = None):
        """Generator: the spoken turn ``turn_id`` (ended by a pause) recognised, answered and spoken."""
        conv = self._conv(request)
        turn = conv.take(int(turn_id)) if str(turn_id or "").isdigit() else None
        if turn is None:
            return
        yield from self._answer(conv, turn, model)

    def answer_typed(self, text, model, request: gr.Request = None):
        """Generator: a typed question, answered like a spoken one (the box is cleared)."""
        conv = self._conv(request)
        turn = conv.typed(text)
        for values in self._answer(conv, turn, model):
            yield ("",) + values

    def answer_choice(self, model, evt: gr.SelectData, request: gr.Request = None):
        """Generator: a "did you mean" candidate clicked in the chat (value ``#lang:entry-id``): that entry's
        answer, spoken and lip-synced like a typed turn."""
        value = str(getattr(evt, "value", "") or "")
        if not (value.startswith("#") and ":" in value):
            return
        lang, entry = value[1:].split(":", 1)
        conv = self._conv(request)
        yield from self._answer(conv, conv.choose(entry, lang), model)


def _conversation_tab(svc: AppServices, settings: Settings, tabs: gr.Tabs, streaming: bool) -> gr.Radio:
    """The Conversation tab: one click on Record starts it; the avatar listens, answers and can be interrupted.
    Returns its model picker (refreshed with the others when a page loads)."""
    th = TalkHandlers(svc, streaming)
    with gr.Tab("Talk to it · 对话", id="talk"):
        gr.Markdown("Press **Record** once and ask your question out loud; pause when you are done. The avatar "
                    "answers, then listens again. Speak while it answers to interrupt it.")
        with gr.Row():
            with gr.Column(scale=5, elem_id="talk_stage"):
                gr.Image(value=str(DEFAULT_AVATAR) if DEFAULT_AVATAR.exists() else None, interactive=False,
                         show_label=False, elem_id="talk_idle", height=420, buttons=[])
                t_video = SegmentPlayer.make(streaming=streaming, autoplay=True, elem_id="talk_video",
                                             interactive=False, show_label=False, height=420)
                t_mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", elem_id="talk_mic",
                                 label="Your microphone", waveform_options=PLAIN_PLAYER)
                t_state = gr.Markdown("Press **Record** to start.", elem_id="talk_state")
            with gr.Column(scale=5):
                t_chat = gr.Chatbot(label="Conversation · 对话记录", elem_id="talk_chat", height=380)
                t_text = gr.Textbox(label="…or type your question and press Enter", elem_id="talk_text",
                                    max_length=500)
                t_notice = gr.Markdown(elem_classes="notice", elem_id="talk_notice")
                t_audio = gr.Audio(label="Spoken answer (audio)", type="filepath", interactive=False,
                                   autoplay=True, elem_id="talk_audio", waveform_options=PLAIN_PLAYER,
                                   visible=not streaming)
                t_latency = gr.Markdown(elem_classes="figure", elem_id="talk_latency")
                gr.HTML('<span id="talk_first_frame" class="figure"></span><br>'
                        '<span id="talk_barge" class="figure"></span>')
                with gr.Accordion("Settings", open=False):
                    t_model = _model_picker(PICKER_PREFERENCE[0])
                with gr.Accordion("Details", open=False):
                    t_details = gr.JSON(label="this turn")
                _share_button("conversation", settings.share_link_hours)
        t_turn = gr.Textbox(visible="hidden", elem_id="talk_turn")
        t_stopped = gr.Textbox(visible="hidden", elem_id="talk_stopped")  # the page: "I stopped the player"
        # "<turn> <phase>" of the answer's step: the page holds the player's last playlist request at "done"
        t_phase = gr.Textbox(visible="hidden", elem_id="talk_phase")
        outputs = [t_chat, t_video, t_audio, t_state, t_latency, t_details, t_notice, t_phase]
        t_mic.start_recording(th.start, None, [t_state, t_notice], api_visibility="private", queue=False)
        t_mic.stop_recording(th.stop, None, None, api_visibility="private", queue=False)
        t_stopped.change(th.stopped_in_page, [t_stopped], None, api_visibility="private", queue=False,
                         show_progress="hidden")
        t_mic.stream(th.hear, [t_mic], [t_turn, t_state], stream_every=TALK_STREAM_EVERY,
                     time_limit=TALK_TIME_LIMIT, concurrency_limit=16, concurrency_id="talk_listen",
                     show_progress="hidden", api_visibility="private")
        _on_render(t_turn.change, tabs, "talk", gradio_errors(th.answer_turn), [t_turn, t_model], outputs,
                   api_visibility="private", show_progress="hidden", trigger_mode="multiple")
        _on_render(t_text.submit, tabs, "talk", gradio_errors(th.answer_typed), [t_text, t_model],
                   [t_text] + outputs, api_name="talk", show_progress="hidden")
        _on_render(t_chat.option_select, tabs, "talk", gradio_errors(th.answer_choice), [t_model], outputs,
                   api_visibility="private", show_progress="hidden")
    return t_model


def _talk_js() -> str:
    import json

    from services.conversation import VADConfig

    return TALK_JS.replace("__VAD__", json.dumps(VADConfig().as_dict())).replace("__LISTENING__", json.dumps(TALK_IDLE))


CSS = CSS + TALK_CSS
CLIENT_JS = "() => { (" + CLIENT_JS.strip() + ")(); (" + _talk_js().strip() + ")(); }"


def build_demo(settings: Settings, services: AppServices | None = None, streaming: bool | None = None) -> gr.Blocks:
    # size-reason: the Blocks layout is one nested `with` tree (tabs, rows, columns) that Gradio builds in order;
    #   cutting it hides the page's structure.
    """The whole UI. ``streaming`` None = stream the Ask tab's video when the system ffmpeg + ffprobe exist."""
    svc = services or AppServices(settings)
    h = Handlers(svc, streaming)
    streaming = h.streaming
    engines = ["auto"]  # engines are listed without loading the voice; the Status tab shows which one runs
    keep_s = int(settings.share_link_hours * 3600)  # a shared link's media live as long as the link is promised
    # analytics off: a public-service app sends nothing about its visitors' use to third parties
    with gr.Blocks(title=TITLE, delete_cache=(min(3600, keep_s), keep_s), analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nAsk about ID cards, household registration, social insurance or vehicles — in "
                    "Chinese or English. The assistant finds the answer, speaks it and a lip-synced avatar says it.",
                    elem_id="title")
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Ask the assistant", id="ask"):
                with gr.Row():
                    with gr.Column(scale=5):
                        q_text = gr.Textbox(label="Your question · 您的问题", lines=2, max_length=500, elem_id="question",
                                            placeholder="e.g. 身份证丢了怎么补办？ / How do I apply for a residence permit?")
                        with gr.Row(equal_height=True):
                            q_model = _model_picker(PICKER_PREFERENCE[0])
                            q_photo = gr.Image(value=str(DEFAULT_AVATAR),
                                               type="filepath", label="Avatar", height=140, scale=0)
                        q_btn = gr.Button("Ask", variant="primary", elem_id="ask_btn")
                        with gr.Accordion("…or ask by voice · 语音提问", open=False):
                            q_voice = gr.Audio(sources=["microphone", "upload"], type="filepath",
                                               label="Your spoken question (Chinese or English)")
                            q_voice_btn = gr.Button("Ask what I said", elem_id="ask_voice_btn")
                        q_answer = gr.Markdown("*The answer appears here as soon as it is found.*", elem_id="answer")
                        q_sugg = gr.Radio([], label="Related questions · 相关问题 (click to ask)", visible=False,
                                          elem_id="suggestions")
                        gr.Examples([[q] for q in QUESTIONS], inputs=[q_text], label="Sample questions · 示例问题")
                        q_faq = gr.State(None)  # this browser session's own FAQ assistant (None: built-in)
                        with gr.Accordion("Try your own FAQ · 使用您自己的问答库", open=False):
                            gr.Markdown("Upload a CSV, JSONL or JSON file with the columns `question` and `answer` "
                                        "(optional `phrasings`: other ways people ask, separated by `|`). It is "
                                        f"used for this browser tab only; limits {settings.faq_max_mb:g} MB and "
                                        f"{settings.faq_max_entries} entries.")
                            f_file = gr.File(label="Your FAQ", file_types=[".csv", ".jsonl", ".json"],
                                             type="filepath", elem_id="faq_file")
                            with gr.Row():
                                f_load = gr.Button("Use my FAQ")
                                f_reset = gr.Button("Back to the built-in FAQ")
                            f_status = gr.Markdown("Using the built-in public-service FAQ.", elem_id="faq_status")
                            with gr.Group(visible=False) as f_cal_box:
                                f_questions = gr.File(label="Optional: your test questions, to calibrate when to "
                                                            "answer, ask back or say 'I don't know'",
                                                      file_types=[".csv", ".jsonl", ".json"], type="filepath")
                                f_cal = gr.Button("Calibrate with my test questions")
                        q_engine = gr.Dropdown(engines, value="auto", label="Voice", visible=False)
                    with gr.Column(scale=5):
                        q_video = SegmentPlayer.make(label="Spoken answer", streaming=streaming,
                                                     autoplay=streaming, elem_id="ask_video", interactive=False)
                        q_notice = gr.Markdown(elem_classes="notice", elem_id="ask_notice")
                        # without streaming the audio comes first and plays at once; the video follows, paused
                        q_audio = gr.Audio(label="Spoken answer (audio)", type="filepath", interactive=False,
                                           elem_id="ask_audio", autoplay=not streaming, waveform_options=PLAIN_PLAYER)
                        q_timing = gr.Markdown(elem_classes="figure", elem_id="ask_timing")
                        # filled by CLIENT_JS in the browser: what the visitor saw, not what the server sent
                        gr.HTML('<span id="ask_first_frame" class="figure"></span>')
                        q_file = gr.File(label="The whole spoken answer (mp4)", interactive=False)
                        # with streaming the chunks play in the player above; the whole answer is kept here (and is
                        # what a shared link reopens); without streaming the player above holds the whole answer
                        with gr.Accordion("Watch the whole answer again", open=False, elem_id="ask_replay_box",
                                          visible=streaming):
                            q_replay = gr.Video(label="The whole answer", interactive=False, elem_id="ask_replay",
                                                format="mp4", height=320)
                        with gr.Accordion("Details", open=False):
                            q_details = gr.JSON(label="answer")
                        _share_button("answer", settings.share_link_hours)
                ask_outputs = [q_answer, q_sugg, q_video, q_timing, q_details, q_file, q_audio, q_notice, q_replay]
                ask_inputs = [q_text, q_photo, q_model, q_engine, q_faq]
                ask_fn = gradio_errors(h.ask)
                # the page's own events (private; named so that the public names below stay /ask and /ask_voice)
                _on_render(q_btn.click, tabs, "ask", ask_fn, ask_inputs, ask_outputs, api_visibility="private",
                           api_name="ask_in_page", show_progress=ASK_PROGRESS)
                _on_render(q_text.submit, tabs, "ask", ask_fn, ask_inputs, ask_outputs, api_visibility="private",
                           api_name="ask_in_page_enter", show_progress=ASK_PROGRESS)
                f_load.click(gradio_errors(h.load_faq), [f_file, q_faq], [q_faq, f_status, f_cal_box],
                             api_visibility="private")
                f_reset.click(h.built_in_faq, None, [q_faq, f_status, f_cal_box], api_visibility="private")
                f_cal.click(gradio_errors(h.calibrate_faq), [q_faq, f_questions], [q_faq, f_status],
                            api_visibility="private")
                q_voice_btn.click(h.voice_check, None, q_answer, queue=False, api_visibility="private",
                                  show_progress="hidden")
                _on_render(q_voice_btn.click, tabs, "ask", gradio_errors(h.ask_voice),
                           [q_voice, q_photo, q_model, q_engine, q_faq], [q_text] + ask_outputs,
                           api_visibility="private", api_name="ask_voice_in_page", show_progress=ASK_PROGRESS)
                # the public /ask and /ask_voice (API clients only; plain values, see Handlers.ask_api): the same
                # inputs and outputs, but the clickable questions as a list and the newest video in a plain player
                api_sugg = gr.JSON(visible=False, label="clickable questions")
                api_video = gr.Video(visible=False, label="newest video", format="mp4")
                api_outputs = [q_answer, api_sugg, api_video] + ask_outputs[3:]
                api_ask, api_voice = gr.Button(visible=False), gr.Button(visible=False)
                api_ask.click(gradio_errors(h.ask_api), ask_inputs, api_outputs, api_name="ask",
                              concurrency_id="render", show_progress="hidden")
                api_voice.click(gradio_errors(h.ask_voice_api), [q_voice, q_photo, q_model, q_engine, q_faq],
                                [q_text] + api_outputs, api_name="ask_voice", concurrency_id="render",
                                show_progress="hidden")
                _on_render(q_sugg.input, tabs, "ask", gradio_errors(h.ask_choice),
                           [q_sugg, q_photo, q_model, q_engine, q_faq], [q_text] + ask_outputs,
                           api_visibility="private", show_progress=ASK_PROGRESS)

            talk_model = _conversation_tab(svc, settings, tabs, streaming)

            with gr.Tab("Text → Avatar", id="text"):
                with gr.Row():
                    with gr.Column():
                        t_text = gr.Textbox(label="What should the avatar say? (中文 / English)", lines=4,
                                            value=SAY_EN, max_length=1000)
                        with gr.Row():
                            t_lang = gr.Radio(["auto", "zh", "en"], value="auto", label="Language")
                            t_engine = gr.Dropdown(engines, value="auto", label="Voice", visible=False)
                        t_model = _model_picker(PICKER_PREFERENCE[1])
                        t_photo, t_video, t_noface = _avatar_inputs()
                        t_btn = gr.Button("Make the avatar speak", variant="primary")
                    with gr.Column():
                        t_out, t_audio, t_info, t_notice, t_details = _avatar_result("text", settings.share_link_hours)
                t_outputs = [t_out, t_audio, t_info, t_notice, t_details]
                t_examples = gr.Examples([list(row) for row in TEXT_EXAMPLES], inputs=[t_text, t_lang, t_photo],
                                         label="Examples (each rendered once per model, then shown at once)")
                _on_render(t_examples.dataset.click, tabs, "text", gradio_errors(h.example_text),
                           [t_examples.dataset, t_model], t_outputs, api_visibility="private")
                _on_render(t_btn.click, tabs, "text", gradio_errors(h.text_to_avatar),
                           [t_text, t_lang, t_engine, t_photo, t_video, t_model, t_noface], t_outputs,
                           api_name="text_to_avatar")

            with gr.Tab("Audio → Avatar", id="audio"):
                with gr.Row():
                    with gr.Column():
                        a_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                           label="Speech (upload or record, up to "
                                                 f"{settings.max_audio_seconds:g} s)")
                        a_model = _model_picker(PICKER_PREFERENCE[2])
                        a_photo, a_video, a_noface = _avatar_inputs()
                        a_btn = gr.Button("Lip-sync", variant="primary")
                    with gr.Column():
                        a_out, a_saudio, a_info, a_notice, a_details = _avatar_result("audio", settings.share_link_hours)
                a_outputs = [a_out, a_saudio, a_info, a_notice, a_details]
                a_examples = gr.Examples([list(row) for row in speech_examples()], inputs=[a_audio, a_photo],
                                         label="Examples (speech made by this project's voice; each rendered once "
                                               "per model)")
                _on_render(a_examples.dataset.click, tabs, "audio", gradio_errors(h.example_audio),
                           [a_examples.dataset, a_model], a_outputs, api_visibility="private")
                _on_render(a_btn.click, tabs, "audio", gradio_errors(h.audio_to_avatar),
                           [a_audio, a_photo, a_video, a_model, a_noface], a_outputs, api_name="audio_to_avatar")

            with gr.Tab("Compare models", id="compare"):
                gr.Markdown("The same speech and avatar through two or three lip-sync models, side by side: how long "
                            "each takes, how many frames per second it renders, and how sharp the mouth is "
                            "(*mouth sharpness*: higher means more detail around the lips). Under the videos, once "
                            "they play: how well the lips follow the speech and how still the mouth stays in pauses.")
                with gr.Row():
                    with gr.Column():
                        # ticked when a page loads: the models that can run here (Handlers.pickers)
                        c_models = gr.CheckboxGroup(_compare_choices(None), value=[], label="Models (two or three)",
                                                    elem_id="compare_models")
                        c_text = gr.Textbox(label="Text to speak", value=SAY_ZH, lines=2, max_length=1000)
                        c_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                           label="…or speech (used instead of the text)")
                        c_engine = gr.Dropdown(engines, value="auto", label="Voice", visible=False)
                    with gr.Column():
                        # a face ~400 px wide: a 384 model's mouth is shown at its own resolution
                        c_photo, c_video, _ = _avatar_inputs(CLOSEUP_AVATAR)
                c_btn = gr.Button("Compare", variant="primary")
                c_outputs = []
                with gr.Row():
                    for k in range(3):
                        with gr.Column():
                            c_outputs.append(gr.Video(label=f"Model {k + 1}", autoplay=True, format="mp4",
                                                      interactive=False))
                            c_outputs.append(gr.Markdown(elem_classes="figure"))
                c_scores = gr.Markdown(elem_id="compare_scores", elem_classes="figure")
                _share_button("comparison", settings.share_link_hours)
                # the scores come second, chained after the videos are on screen (measuring never delays them),
                # only when the comparison succeeded (else they would measure the previous videos); cleared at
                # each click so old figures never sit under new videos
                c_btn.click(lambda: "", None, c_scores, api_visibility="private", queue=False)
                _on_render(c_btn.click, tabs, "compare", gradio_errors(h.compare),
                           [c_text, c_audio, c_photo, c_video, c_engine, c_models], c_outputs, api_name="compare"
                           ).success(gradio_errors(h.compare_scores), [c_models, *c_outputs[0::2]], c_scores,
                                     concurrency_id="render", api_name="compare_scores")

            with gr.Tab("Status", id="status") as s_tab:
                s_md = gr.Markdown(elem_id="status_table")
                s_btn = gr.Button("Refresh")
                with gr.Accordion("Details", open=False):  # technical details (repos, files, settings) live here
                    s_details = gr.Markdown()
                    gr.Markdown("**Configuration** (DH_* environment variables)\n\n" + _config_markdown(settings))
                s_btn.click(h.status, None, [s_md, s_details], api_name="status")
                # filled when the tab is opened (a plain request, not the queue: nothing stays open at page load)
                s_tab.select(h.status, None, [s_md, s_details], api_visibility="private", queue=False)
        # what can run is looked at when a page loads, never while the UI is built (no file or Hub look-up then)
        demo.load(h.pickers, None, [q_model, t_model, a_model, talk_model, c_models], api_visibility="private",
                  queue=False)
    return demo


# Never served or copied, whatever asks for them: system folders, the checkout's git data, the user's caches
# (Hub token and weights) and keys. Our results live in the temp folder and examples/, never in these.
BLOCKED_PATHS = ["/etc", "/proc", "/sys", "/dev", "/boot", str(Path(__file__).resolve().parent / ".git"),
                 str(Path.home() / ".cache"), str(Path.home() / ".ssh"), str(Path.home() / ".config")]


def launch_kwargs(settings: Settings, files: FilePolicy | None = None) -> dict:
    """Styling and server options for ``launch()`` (Gradio 6: theme/css belong to launch). ``files``: the file
    policy the guard at the door applies to every request body (services/uploads.py says why it is needed)."""
    from starlette.middleware import Middleware

    files = files or file_policy()
    return {"theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="blue"), "css": CSS, "js": CLIENT_JS,
            "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
            "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
            # refused while uploading, before anything is stored
            "max_file_size": f"{settings.max_upload_mb:g}mb",
            "blocked_paths": BLOCKED_PATHS + [str(Path(settings.cache_dir).expanduser())],
            "app_kwargs": {"middleware": [Middleware(FileDataGuard, policy=files, log=log)]}}


def queue(demo: gr.Blocks) -> gr.Blocks:
    # 2 vCPUs: two renders at once keep both cores busy; more only queue inside torch. Requests beyond
    # max_size are refused with Gradio's "queue is full" message instead of waiting for minutes.
    return demo.queue(default_concurrency_limit=2, max_size=24)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("app", "common", "services", "qa", "tts", "wav2lip384"):  # our own notes; libraries stay quiet
        logging.getLogger(name).setLevel(logging.INFO)
    settings = Settings.from_env()
    for name, value in settings.process_environment().items():  # before librosa/numba load (lazily, later)
        os.environ.setdefault(name, value)
    services = AppServices(settings)
    atexit.register(services.close)
    demo = build_demo(settings, services)
    _FILES[:] = [file_policy(services)]

    def start_up() -> None:
        # once, right after start-up: every part that fell back or is missing, with the variable to set; then
        # load the models in the background, so the page is up at once and the first request is fast
        for line in missing_parts(services):
            log.warning("start-up: %s", line)
        services.warm_up()

    threading.Thread(target=start_up, name="warm-up", daemon=True).start()
    queue(demo).launch(**launch_kwargs(settings, _FILES[-1]))


if __name__ == "__main__":
    main()
