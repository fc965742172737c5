"""Gradio front end of the talking digital human. UI wiring only: the logic lives in common/services.py,
qa/, tts/ and wav2lip384/.

Start with ``python app.py``; it binds to 127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say
otherwise (a Hugging Face Space sets GRADIO_SERVER_NAME=0.0.0.0 itself).

Every event has an ``api_name`` (``/text_to_avatar``, ``/audio_to_avatar``, ``/ask``, ``/compare``) so the
app can be scripted with ``gradio_client`` (see README.md).
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import os
import shutil
import threading

import gradio as gr

from common.errors import UserFacingError
from common.services import DEFAULT_AVATAR, EXAMPLES, AppServices, AskUpdate
from common.settings import Settings

log = logging.getLogger("app")

TITLE = "Digital human for public services · 政务数字人"
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
# Gradio's streaming video output muxes chunks into HLS with the system ffmpeg + ffprobe. Without them
# the assistant still shows each sentence's chunk as soon as it is ready, then the joined answer.
STREAMING = bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))
CSS = """
.gradio-container {max-width: 1200px !important; margin: auto;}
#title h1 {margin-bottom: 0;}
#answer {min-height: 7em;}
.figure {font-size: 0.95em;}
footer {display: none !important;}
"""


def gradio_errors(fn):
    """Show UserFacingError messages verbatim in the UI (gr.Error); anything else as a short apology.

    The app keeps serving either way. Works for plain functions and generators (streaming handlers).
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
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise translate(err) from err

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
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


def _model_value(model) -> int:
    return int(str(model).split("×")[0].split("x")[0]) if model not in (None, "") else 96


# ------------------------------------------------------------------------------------------------ handlers
class Handlers:
    """The functions Gradio calls. Thin: arguments in, services call, component values out."""

    def __init__(self, services: AppServices):
        self.svc = services

    @staticmethod
    def _avatar(photo, video):
        return video or photo

    def text_to_avatar(self, text, lang, engine, photo, video, model, progress=gr.Progress(track_tqdm=True)):
        res = self.svc.text_to_avatar(text, self._avatar(photo, video), _model_value(model), lang=lang, engine=engine,
                                      progress=_progress_cb(progress))
        return str(res.path), res.summary()

    def audio_to_avatar(self, audio, photo, video, model, progress=gr.Progress(track_tqdm=True)):
        res = self.svc.audio_to_avatar(audio, self._avatar(photo, video), _model_value(model),
                                       progress=_progress_cb(progress))
        return str(res.path), res.summary()

    def example_text(self, text, lang, photo):
        res = self.svc.text_to_avatar(text, photo, 96, lang=lang)
        return str(res.path), res.summary()

    def example_audio(self, audio, photo):
        res = self.svc.audio_to_avatar(audio, photo, 96)
        return str(res.path), res.summary()

    def compare(self, text, audio, photo, video, engine, progress=gr.Progress(track_tqdm=True)):
        out = self.svc.compare(self._avatar(photo, video), text=text, audio=audio, engine=engine,
                               progress=_progress_cb(progress))
        values = []
        for size in (96, 384):
            r = out[size]
            if isinstance(r, str):
                values += [None, f"⚠️ {r}"]
            else:
                values += [str(r.path), r.summary()]
        return tuple(values)

    @staticmethod
    def _answer_md(ans) -> str:
        if getattr(ans, "answered", False):
            head = f"**Matched question · 匹配问题:** {ans.matched_question}  \n**Similarity · 相似度:** {ans.score:.2f}"
        else:
            head = f"**No confident match · 未找到可靠答案** (best similarity {ans.score:.2f})"
        return f"{head}\n\n{ans.text}"

    @staticmethod
    def _details(up: AskUpdate) -> dict:
        a = up.answer
        return {
            "answered": bool(getattr(a, "answered", False)), "text": a.text, "lang": getattr(a, "lang", ""),
            "score": round(float(getattr(a, "score", 0.0)), 4), "matched_id": getattr(a, "matched_id", None),
            "matched_question": getattr(a, "matched_question", None),
            "suggestions": list(getattr(a, "suggestions", []) or []), "source": getattr(a, "source", ""),
            "model": up.model, "tts_engine": up.engine, "chunks": max(up.index, 0) + (up.chunk is not None),
            "seconds_to_answer_text": round(up.seconds_to_answer, 3),
            "seconds_to_first_sentence_spoken": None if up.seconds_to_first_speech is None
            else round(up.seconds_to_first_speech, 3),
            "seconds_to_first_chunk": None if up.seconds_to_first_chunk is None else round(up.seconds_to_first_chunk, 3),
            "error": up.error,
        }

    @staticmethod
    def _timing_md(up: AskUpdate) -> str:
        s = f"Answer text in {up.seconds_to_answer:.2f} s"
        if up.seconds_to_first_chunk is not None:
            s += f" · first video chunk in {up.seconds_to_first_chunk:.2f} s ({up.model}×{up.model}"
            s += f", voice: {up.engine})" if up.engine else ")"
        elif up.index < 0:
            s += " · rendering the spoken answer…"
        if up.final_video is not None:
            s += f" · done: {up.index} chunks"
        return s

    def ask(self, question, photo, model, engine):
        """Generator: the answer at once, then the video chunk by chunk (streamed), sentence by sentence."""
        for up in self.svc.ask_stream(question, photo or DEFAULT_AVATAR, _model_value(model), engine=engine):
            suggestions = list(getattr(up.answer, "suggestions", []) or [])
            download = gr.skip()
            if up.final_video is not None:
                # streaming: a None chunk ends nothing and adds nothing; otherwise the whole answer replaces
                # the last chunk. Either way the joined mp4 is offered for download (and to API clients).
                video = None if STREAMING else str(up.final_video)
                download = str(up.final_video)
            elif up.chunk is not None:
                video = str(up.chunk)
            else:
                # no video yet. Not None: for a streaming output that would open an empty HLS playlist, which
                # the player polls with back-off and so shows the first chunk seconds late.
                video = gr.skip()
                download = None
            yield (self._answer_md(up.answer), gr.update(choices=suggestions, value=None, visible=bool(suggestions)),
                   video, self._timing_md(up), self._details(up), download)

    def ask_suggestion(self, suggestion):
        return suggestion or gr.skip()

    def status(self):
        return self.svc.status_markdown()


# ---------------------------------------------------------------------------------------------------- UI
def _model_radio(svc: AppServices, prefer: str = "384", label="Lip-sync model") -> gr.Radio:
    """96/384 choice. Without 384 weights the 384 choice stays visible but the radio is disabled, saying why."""
    ok384, msg384 = svc.weights(384)
    info = "96 is fastest on a CPU; 384 renders a sharper mouth." if ok384 else f"384 is disabled: {msg384}"
    return gr.Radio(choices=[("96×96 (Wav2Lip)", "96"), ("384×384 (Wav2Lip-384)", "384")],
                    value=prefer if ok384 else "96", label=label, interactive=ok384, info=info)


def _avatar_inputs():
    photo = gr.Image(value=str(DEFAULT_AVATAR) if DEFAULT_AVATAR.exists() else None, type="filepath",
                     label="Avatar photo (one face)", sources=["upload", "webcam", "clipboard"], height=260)
    with gr.Accordion("…or a short video of one face (used instead of the photo)", open=False):
        video = gr.Video(label="Avatar video", sources=["upload"], height=220)
    return photo, video


def _avatar_result():
    """The result column of the Text/Audio → Avatar tabs: the video, its figures and a share button."""
    out = gr.Video(label="Talking avatar", autoplay=True, format="mp4", interactive=False)
    info = gr.Markdown(elem_classes="figure")
    gr.DeepLinkButton("Share a link to this result")
    return out, info


def _config_markdown(settings: Settings) -> str:
    rows = "\n".join(f"| `{k}` | `{v or '(not set)'}` |" for k, v in settings.describe().items())
    return f"| variable | value |\n|---|---|\n{rows}"


def build_demo(settings: Settings, services: AppServices | None = None) -> gr.Blocks:
    svc = services or AppServices(settings)
    h = Handlers(svc)
    engines = svc.tts_engine_names()
    speech_examples = [[str(EXAMPLES / n), str(DEFAULT_AVATAR)] for n in ("speech_en.ogg", "speech_zh.ogg")
                       if (EXAMPLES / n).exists()]
    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\nAsk about ID cards, household registration, social insurance or vehicles — in "
                    "Chinese or English. The assistant finds the answer, speaks it and a lip-synced avatar says it.",
                    elem_id="title")
        with gr.Tabs():
            with gr.Tab("Text → Avatar", id="text"):
                with gr.Row():
                    with gr.Column():
                        t_text = gr.Textbox(label="What should the avatar say? (中文 / English)", lines=4,
                                            value=SAY_EN, max_length=1000)
                        with gr.Row():
                            t_lang = gr.Radio(["auto", "zh", "en"], value="auto", label="Language")
                            t_engine = gr.Dropdown(engines, value="auto", label="Voice engine")
                        t_model = _model_radio(svc)
                        t_photo, t_video = _avatar_inputs()
                        t_btn = gr.Button("Make the avatar speak", variant="primary")
                    with gr.Column():
                        t_out, t_info = _avatar_result()
                gr.Examples([[SAY_ZH, "zh", str(DEFAULT_AVATAR)], [SAY_EN, "en", str(DEFAULT_AVATAR)]],
                            inputs=[t_text, t_lang, t_photo], outputs=[t_out, t_info],
                            fn=gradio_errors(h.example_text), cache_examples=True, cache_mode="lazy",
                            label="Examples (rendered once with the 96 model, then served from the cache)")
                t_btn.click(gradio_errors(h.text_to_avatar), [t_text, t_lang, t_engine, t_photo, t_video, t_model],
                            [t_out, t_info], api_name="text_to_avatar", concurrency_id="render")

            with gr.Tab("Audio → Avatar", id="audio"):
                with gr.Row():
                    with gr.Column():
                        a_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                           label="Speech (upload or record, up to "
                                                 f"{settings.max_audio_seconds:g} s)")
                        a_model = _model_radio(svc)
                        a_photo, a_video = _avatar_inputs()
                        a_btn = gr.Button("Lip-sync", variant="primary")
                    with gr.Column():
                        a_out, a_info = _avatar_result()
                if speech_examples:
                    gr.Examples(speech_examples, inputs=[a_audio, a_photo], outputs=[a_out, a_info],
                                fn=gradio_errors(h.example_audio), cache_examples=True, cache_mode="lazy",
                                label="Examples (speech made by this project's TTS)")
                a_btn.click(gradio_errors(h.audio_to_avatar), [a_audio, a_photo, a_video, a_model], [a_out, a_info],
                            api_name="audio_to_avatar", concurrency_id="render")

            with gr.Tab("Ask the assistant", id="ask"):
                with gr.Row():
                    with gr.Column(scale=5):
                        q_text = gr.Textbox(label="Your question · 您的问题", lines=2, max_length=500,
                                            placeholder="e.g. 身份证丢了怎么补办？ / How do I apply for a residence permit?")
                        q_btn = gr.Button("Ask", variant="primary")
                        gr.Examples([[q] for q in QUESTIONS], inputs=[q_text], label="Sample questions · 示例问题")
                        q_answer = gr.Markdown("*The answer appears here as soon as it is found.*", elem_id="answer")
                        q_sugg = gr.Radio([], label="Related questions · 相关问题 (click to ask)", visible=False)
                        with gr.Accordion("Avatar and voice", open=False):
                            q_model = _model_radio(svc, prefer="96")  # answers stream: speed first
                            q_engine = gr.Dropdown(engines, value="auto", label="Voice engine")
                            q_photo = gr.Image(value=str(DEFAULT_AVATAR) if DEFAULT_AVATAR.exists() else None,
                                               type="filepath", label="Avatar photo (one face)", height=200)
                    with gr.Column(scale=5):
                        q_video = gr.Video(label="Spoken answer", streaming=STREAMING, autoplay=True, elem_id="ask_video",
                                           interactive=False)
                        q_timing = gr.Markdown(elem_classes="figure", elem_id="ask_timing")
                        with gr.Accordion("Download the whole spoken answer (mp4)", open=False):
                            q_file = gr.File(label="ready when the last sentence is rendered", interactive=False)
                        with gr.Accordion("Details (JSON)", open=False):
                            q_details = gr.JSON(label="answer")
                        gr.DeepLinkButton("Share a link to this answer")
                ask_outputs = [q_answer, q_sugg, q_video, q_timing, q_details, q_file]
                ask_fn = gradio_errors(h.ask)
                q_btn.click(ask_fn, [q_text, q_photo, q_model, q_engine], ask_outputs, api_name="ask",
                            concurrency_id="render")
                q_text.submit(ask_fn, [q_text, q_photo, q_model, q_engine], ask_outputs, api_visibility="private",
                              concurrency_id="render")
                q_sugg.select(h.ask_suggestion, [q_sugg], [q_text], api_visibility="private").then(
                    ask_fn, [q_text, q_photo, q_model, q_engine], ask_outputs, api_visibility="private",
                    concurrency_id="render")

            with gr.Tab("96 vs 384", id="compare"):
                gr.Markdown("The same speech and avatar through both models. *Clarity* is the variance of the "
                            "Laplacian over the mouth region (higher is sharper).")
                with gr.Row():
                    with gr.Column():
                        c_text = gr.Textbox(label="Text to speak", value=SAY_ZH, lines=2, max_length=1000)
                        c_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                           label="…or speech (used instead of the text)")
                        c_engine = gr.Dropdown(engines, value="auto", label="Voice engine")
                    with gr.Column():
                        c_photo, c_video = _avatar_inputs()
                ok384, msg384 = svc.weights(384)
                c_btn = gr.Button("Compare 96 and 384" if ok384 else "Render (384 unavailable, see right)",
                                  variant="primary")
                with gr.Row():
                    with gr.Column():
                        c_out96 = gr.Video(label="96×96 (Wav2Lip)", autoplay=True, format="mp4", interactive=False)
                        c_info96 = gr.Markdown(elem_classes="figure")
                    with gr.Column():
                        c_out384 = gr.Video(label="384×384 (Wav2Lip-384)", autoplay=True, format="mp4",
                                            interactive=False)
                        c_info384 = gr.Markdown("" if ok384 else f"⚠️ 384 is disabled: {msg384}",
                                                elem_classes="figure")
                gr.DeepLinkButton("Share a link to this comparison")
                c_btn.click(gradio_errors(h.compare), [c_text, c_audio, c_photo, c_video, c_engine],
                            [c_out96, c_info96, c_out384, c_info384], api_name="compare", concurrency_id="render")

            with gr.Tab("Status", id="status"):
                s_md = gr.Markdown(h.status())
                s_btn = gr.Button("Refresh")
                with gr.Accordion("Configuration (DH_* environment variables)", open=False):
                    gr.Markdown(_config_markdown(settings))
                s_btn.click(h.status, None, s_md, api_name="status")
    return demo


def launch_kwargs() -> dict:
    """Styling and server options for ``launch()`` (Gradio 6: theme/css belong to launch)."""
    return {"theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="blue"), "css": CSS,
            "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
            "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860"))}


def queue(demo: gr.Blocks) -> gr.Blocks:
    # 2 vCPUs: two renders at once keep both cores busy; more only queue inside torch. Requests beyond
    # max_size are refused with Gradio's "queue is full" message instead of waiting for minutes.
    return demo.queue(default_concurrency_limit=2, max_size=24)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("app", "common", "qa", "tts", "wav2lip384"):  # our own progress notes; libraries stay quiet
        logging.getLogger(name).setLevel(logging.INFO)
    settings = Settings.from_env()
    services = AppServices(settings)
    atexit.register(services.close)
    demo = build_demo(settings, services)
    # Load the models in the background after start-up, so the page is up at once and the first request is fast.
    threading.Thread(target=services.warm_up, name="warm-up", daemon=True).start()
    queue(demo).launch(**launch_kwargs())


if __name__ == "__main__":
    main()
