"""Gradio front end of the talking digital human. UI wiring only: the logic lives in qa/, tts/, wav2lip384/.

Start with ``python app.py``; it binds to 127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say
otherwise (a Hugging Face Space sets GRADIO_SERVER_NAME=0.0.0.0 itself).
"""

from __future__ import annotations

import os

import gradio as gr

from common.settings import Settings

TITLE = "Digital human for public services · 政务数字人"


def status_markdown(settings: Settings) -> str:
    rows = "\n".join(f"| `{k}` | `{v or '(not set)'}` |" for k, v in settings.describe().items())
    return f"### Configuration\n| variable | value |\n|---|---|\n{rows}"


def build_demo(settings: Settings) -> gr.Blocks:
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nAsk about ID cards, household registration, social insurance or vehicles; "
                    "a 384×384 lip-synced avatar answers.")
        with gr.Tabs():
            for name in ("Text → Avatar", "Audio → Avatar", "Ask the assistant", "96 vs 384"):
                with gr.Tab(name):
                    gr.Markdown("Coming soon.")
            with gr.Tab("Status"):
                gr.Markdown(status_markdown(settings))
    return demo


def main() -> None:
    settings = Settings.from_env()
    demo = build_demo(settings)
    demo.queue(default_concurrency_limit=1, max_size=16).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )


if __name__ == "__main__":
    main()
