"""Gradio front end of the talking digital human. UI wiring only: the logic lives in services/ (the application
layer), on top of qa/, tts/ and wav2lip384/.

Start with ``python app.py``; it binds to 127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say
otherwise (a Hugging Face Space sets GRADIO_SERVER_NAME=0.0.0.0 itself).

Every event has an ``api_name`` (``/text_to_avatar``, ``/audio_to_avatar``, ``/ask``, ``/compare``, ``/status``)
so the app can be scripted with ``gradio_client`` (see README.md). Building the UI does no I/O beyond asking the
services which models are available (no download, no model load).
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import os
import shutil
import threading
from pathlib import Path

import gradio as gr

from common.errors import UserFacingError
from common.settings import Settings
from services import (
    CLOSEUP_AVATAR,
    COMPARE_DEFAULT,
    DEFAULT_AVATAR,
    EXAMPLE_VIDEO_AVATAR,
    EXAMPLES,
    AppServices,
    AskUpdate,
    VideoResult,
)
from services.status import details_markdown, missing_parts
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
NO_FACE_CHOICES = [("stop with a message", "error"), ("leave those frames unchanged", "passthrough")]
CSS = """
.gradio-container {max-width: 1280px !important; margin: auto;}
#title h1 {margin-bottom: 0;}
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




# Handler arguments that name a file the handler will open: each is checked against the app's file policy
# (services/uploads.py) before the handler runs. The guard at the door (FileDataGuard) already refused such
# requests; this is the second line, for anything that reaches a handler another way.
FILE_ARGS = frozenset({"photo", "video", "audio", "path", "questions"})
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
            return gr.Error(str(err), print_exception=False)
        log.exception("handler %s failed", fn.__name__)
        return gr.Error(f"Something went wrong ({type(err).__name__}: {err}). The app is still running: "
                        "try again, or see the Status tab.")

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


def _result_values(res: VideoResult) -> tuple:
    """(video, audio, figures, notice, details) of one rendered result."""
    notice = res.notice if res.path is None else ""
    return (None if res.path is None else str(res.path), None if res.audio_path is None else str(res.audio_path),
            "" if res.path is None else res.summary(), notice, res.details() if res.path is not None else {})


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

    def example_text(self, text, lang, photo):
        return _result_values(self.svc.text_to_avatar(text, photo, self.svc.default_model(), lang=lang))

    def example_audio(self, audio, photo):
        return _result_values(self.svc.audio_to_avatar(audio, photo, self.svc.default_model()))

    def compare(self, text, audio, photo, video, engine, models, progress=gr.Progress()):  # noqa: B008 (Gradio injects progress via this default)
        chosen = list(models or COMPARE_DEFAULT)[:3]
        out = self.svc.compare(self._avatar(photo, video), text=text, audio=audio, models=chosen, engine=engine,
                               progress=_progress_cb(progress))
        values: list = []  # plain values (not updates), so API clients get paths and text
        for k in range(3):
            if k >= len(chosen):
                values += [None, ""]
                continue
            spec = registry.get(chosen[k])
            r = out[spec.id]
            head = f"**{spec.title}** · {spec.img_size}×{spec.img_size} · licence: {spec.license or '—'}\n\n"
            if isinstance(r, str):
                values += [None, f"{head}⚠️ {r}"]
            else:
                values += [str(r.path), head + r.summary() + f"\n\n*{spec.quality}*"]
        return tuple(values)

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
            "notice": up.notice, "warnings": list(up.warnings),
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
    def _ask_values(answer_md, sugg, video, timing: str, details: dict, shown: dict) -> tuple:
        """The nine Ask outputs, in the order of ``ask_outputs`` in :func:`build_demo`."""
        return (answer_md, sugg, video, timing, details, shown["download"], shown["audio"], shown["notice"],
                shown["replay"])

    def _ask_cleared(self) -> tuple:
        """The Ask outputs while a new question is being answered: the previous answer is gone."""
        return self._ask_values("*Finding the answer…*", gr.update(choices=[], value=None, visible=False),
                                gr.skip() if self.streaming else None, "", {}, self._nothing_shown())

    def ask(self, question, photo, model, engine, faq=None, entry=None, lang="zh"):
        """Generator: the answer at once, then the spoken answer.

        With streaming (system ffmpeg + ffprobe): video chunks queue in the player sentence by sentence; the
        whole answer is then offered for download and replay. Without it: the spoken answer as audio first, then
        the whole video — chunks never replace each other mid-word.
        """
        streaming = self.streaming
        shown = self._nothing_shown()
        for up in self.svc.ask_stream(question, photo or DEFAULT_AVATAR, model or registry.DEFAULT_MODEL,
                                      engine=engine, chunks=streaming, assistant=faq, entry=entry, lang=lang):
            cands = self._candidates(up.answer)
            # a streaming player is cleared by its first chunk (None would open an empty HLS playlist the
            # player polls with back-off) and is otherwise left alone between chunks
            video = gr.skip() if streaming else shown["video"]
            if up.chunk is not None:
                video = str(up.chunk)
            else:
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

    def ask_voice(self, audio, photo, model, engine, faq=None):
        """Generator: the recognised question first (shown, editable), then the same outputs as :meth:`ask`."""
        yield ("",) + self._ask_cleared()
        text, _ = self.svc.transcribe(audio)
        for values in self.ask(text, photo, model, engine, faq):
            yield (text,) + values

    def load_faq(self, path, progress=gr.Progress()):  # noqa: B008 (Gradio injects progress via this default)
        def cb(fraction, message=""):
            try:
                progress(float(fraction), desc=message or "Indexing your FAQ")
            except Exception:  # progress is cosmetic
                pass

        faq = self.svc.load_faq(path, progress=cb)
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
        new, report = self.svc.calibrate_faq(faq, questions)
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
                question = values[4].get("matched_question") or question
                yield (question,) + values
            return
        yield (choice,) + self._ask_cleared()
        for values in self.ask(choice, photo, model, engine, faq):
            yield (choice,) + values

    def status(self):
        items = self.svc.status()
        from services.status import status_markdown

        return status_markdown(items), details_markdown(items)


# ---------------------------------------------------------------------------------------------------- UI
def _model_picker(svc: AppServices, prefer: str | None = None, label="Lip-sync model") -> gr.Radio:
    """Every model whose weights resolve; the others are named with what to do (paper384: train your own)."""
    available = svc.available_models()
    missing = [registry.get(m) for m in registry.ids() if m not in available]
    choices = [(f"{registry.get(m).title} · {registry.get(m).img_size}×{registry.get(m).img_size}", m)
               for m in available]
    value = prefer if prefer in available else (available[0] if available else None)
    info = ("Bigger = sharper mouth, slower on a CPU." if available else "No lip-sync model can run here yet: "
            "the answer is still spoken.")
    if missing:  # names only: the Status tab says what to set for each
        info += " Not available here: " + ", ".join(s.title for s in missing) + " (the Status tab says how to add them)."
    return gr.Radio(choices=choices, value=value, label=label, info=info, interactive=bool(available),
                    elem_classes="model-picker")


def _avatar_inputs(default=DEFAULT_AVATAR):
    photo = gr.Image(value=str(default) if default.exists() else None, type="filepath",
                     label="Avatar photo (one face)", sources=["upload", "webcam", "clipboard"], height=260)
    with gr.Accordion("…or a short video of one face (used instead of the photo)", open=False):
        video = gr.Video(label="Avatar video", sources=["upload"], height=220)
        if EXAMPLE_VIDEO_AVATAR.exists():
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
    rows = "\n".join(f"| `{k}` | `{v or '(not set)'}` |" for k, v in settings.describe().items())
    return f"| variable | value |\n|---|---|\n{rows}"


def build_demo(settings: Settings, services: AppServices | None = None, streaming: bool | None = None) -> gr.Blocks:
    """The whole UI. ``streaming`` None = stream the Ask tab's video when the system ffmpeg + ffprobe exist."""
    svc = services or AppServices(settings)
    h = Handlers(svc, streaming)
    streaming = h.streaming
    engines = ["auto"]  # engines are listed without loading the voice; the Status tab shows which one runs
    speech_examples = [[str(EXAMPLES / n), str(DEFAULT_AVATAR)] for n in ("speech_en.ogg", "speech_zh.ogg")
                       if (EXAMPLES / n).exists()]
    compare_choices = [(f"{registry.get(m).title} · {registry.get(m).img_size}", m) for m in registry.ids()]
    keep_s = int(settings.share_link_hours * 3600)  # a shared link's media live as long as the link is promised
    with gr.Blocks(title=TITLE, delete_cache=(min(3600, keep_s), keep_s)) as demo:
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
                            q_model = _model_picker(svc, prefer=registry.DEFAULT_MODEL)  # answers stream: speed first
                            q_photo = gr.Image(value=str(DEFAULT_AVATAR) if DEFAULT_AVATAR.exists() else None,
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
                                             type="filepath")
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
                        q_video = gr.Video(label="Spoken answer", streaming=streaming, autoplay=streaming,
                                           elem_id="ask_video", interactive=False)
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
                _on_render(q_btn.click, tabs, "ask", ask_fn, ask_inputs, ask_outputs, api_name="ask",
                           show_progress=ASK_PROGRESS)
                _on_render(q_text.submit, tabs, "ask", ask_fn, ask_inputs, ask_outputs, api_visibility="private",
                           show_progress=ASK_PROGRESS)
                f_load.click(gradio_errors(h.load_faq), [f_file], [q_faq, f_status, f_cal_box], api_visibility="private")
                f_reset.click(h.built_in_faq, None, [q_faq, f_status, f_cal_box], api_visibility="private")
                f_cal.click(gradio_errors(h.calibrate_faq), [q_faq, f_questions], [q_faq, f_status],
                            api_visibility="private")
                _on_render(q_voice_btn.click, tabs, "ask", gradio_errors(h.ask_voice),
                           [q_voice, q_photo, q_model, q_engine, q_faq], [q_text] + ask_outputs,
                           api_name="ask_voice", show_progress=ASK_PROGRESS)
                _on_render(q_sugg.input, tabs, "ask", gradio_errors(h.ask_choice),
                           [q_sugg, q_photo, q_model, q_engine, q_faq], [q_text] + ask_outputs,
                           api_visibility="private", show_progress=ASK_PROGRESS)

            with gr.Tab("Text → Avatar", id="text"):
                with gr.Row():
                    with gr.Column():
                        t_text = gr.Textbox(label="What should the avatar say? (中文 / English)", lines=4,
                                            value=SAY_EN, max_length=1000)
                        with gr.Row():
                            t_lang = gr.Radio(["auto", "zh", "en"], value="auto", label="Language")
                            t_engine = gr.Dropdown(engines, value="auto", label="Voice", visible=False)
                        t_model = _model_picker(svc, prefer="wav2lip256")
                        t_photo, t_video, t_noface = _avatar_inputs()
                        t_btn = gr.Button("Make the avatar speak", variant="primary")
                    with gr.Column():
                        t_out, t_audio, t_info, t_notice, t_details = _avatar_result("text", settings.share_link_hours)
                t_outputs = [t_out, t_audio, t_info, t_notice, t_details]
                gr.Examples([[SAY_ZH, "zh", str(DEFAULT_AVATAR)], [SAY_EN, "en", str(DEFAULT_AVATAR)]],
                            inputs=[t_text, t_lang, t_photo], outputs=t_outputs,
                            fn=gradio_errors(h.example_text), cache_examples=True, cache_mode="lazy",
                            label="Examples (rendered once, then served from the cache)")
                _on_render(t_btn.click, tabs, "text", gradio_errors(h.text_to_avatar),
                           [t_text, t_lang, t_engine, t_photo, t_video, t_model, t_noface], t_outputs,
                           api_name="text_to_avatar")

            with gr.Tab("Audio → Avatar", id="audio"):
                with gr.Row():
                    with gr.Column():
                        a_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                           label="Speech (upload or record, up to "
                                                 f"{settings.max_audio_seconds:g} s)")
                        a_model = _model_picker(svc, prefer="wav2lip256")
                        a_photo, a_video, a_noface = _avatar_inputs()
                        a_btn = gr.Button("Lip-sync", variant="primary")
                    with gr.Column():
                        a_out, a_saudio, a_info, a_notice, a_details = _avatar_result("audio", settings.share_link_hours)
                a_outputs = [a_out, a_saudio, a_info, a_notice, a_details]
                if speech_examples:
                    gr.Examples(speech_examples, inputs=[a_audio, a_photo], outputs=a_outputs,
                                fn=gradio_errors(h.example_audio), cache_examples=True, cache_mode="lazy",
                                label="Examples (speech made by this project's TTS)")
                _on_render(a_btn.click, tabs, "audio", gradio_errors(h.audio_to_avatar),
                           [a_audio, a_photo, a_video, a_model, a_noface], a_outputs, api_name="audio_to_avatar")

            with gr.Tab("Compare models", id="compare"):
                gr.Markdown("The same speech and avatar through two or three lip-sync models, side by side: how long "
                            "each takes, how many frames per second it renders, and how sharp the mouth is "
                            "(*mouth sharpness*: higher means more detail around the lips).")
                with gr.Row():
                    with gr.Column():
                        c_models = gr.CheckboxGroup(compare_choices, value=list(COMPARE_DEFAULT),
                                                    label="Models (two or three)")
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
                _share_button("comparison", settings.share_link_hours)
                _on_render(c_btn.click, tabs, "compare", gradio_errors(h.compare),
                           [c_text, c_audio, c_photo, c_video, c_engine, c_models], c_outputs, api_name="compare")

            with gr.Tab("Status", id="status") as s_tab:
                s_md = gr.Markdown(elem_id="status_table")
                s_btn = gr.Button("Refresh")
                with gr.Accordion("Details", open=False):
                    s_details = gr.Markdown()
                with gr.Accordion("Configuration (DH_* environment variables)", open=False):
                    gr.Markdown(_config_markdown(settings))
                s_btn.click(h.status, None, [s_md, s_details], api_name="status")
                # filled when the tab is opened (a plain request, not the queue: nothing stays open at page load)
                s_tab.select(h.status, None, [s_md, s_details], api_visibility="private", queue=False)
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
