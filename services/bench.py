"""App-level benchmark: time from "Ask" to the answer text and to the first video chunk (server side), and
optionally click -> first visible frame in headless Chromium.

    python -m services bench --model wav2lip96 --repeats 3 [--browser]
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common.cli import user_errors_exit_2
from common.settings import Settings
from services.core import DEFAULT_AVATAR, AppServices
from services.served import app_page, served_app, with_random_generators
from services.status import embedder_row, tts_row
from wav2lip384.models import registry
from wav2lip384.weights.provenance import weights_provenance


def bench(settings: Settings, questions: list[str], avatar: Path, model: str = registry.DEFAULT_MODEL, repeats: int = 1,
          full: bool = False) -> dict:
    """Time from Ask to the answer text and to the first playable video chunk, per question.

    Models are loaded and one request is run first (a served app loads them once, in the background after
    start-up), so the figures are for warm runs. Unless ``full``, each run stops after the first chunk.
    """
    svc = AppServices(settings)
    try:
        t = time.perf_counter()
        svc.assistant(), svc.tts(), svc.pipeline(model)
        load_s = time.perf_counter() - t
        # warm-up: first request pays one-off costs (avatar preparation cache, lazy imports, JIT)
        for up in svc.ask_stream(questions[0], avatar, model):
            if up.chunk is not None and not full:
                break
        runs = []
        for q in questions:
            for _ in range(repeats):
                t_total = time.perf_counter()
                n_chunks, first, ans_s, answer, speech_s = 0, None, None, None, None
                stream = svc.ask_stream(q, avatar, model)
                for up in stream:
                    ans_s, first, answer = up.seconds_to_answer, up.seconds_to_first_chunk, up.answer
                    speech_s = up.seconds_to_first_speech
                    n_chunks += up.chunk is not None
                    if first is not None and not full:
                        break
                stream.close()
                runs.append({"question": q, "answered": bool(getattr(answer, "answered", False)),
                             "seconds_to_answer_text": round(ans_s, 3),
                             "seconds_to_first_sentence_spoken": None if speech_s is None else round(speech_s, 3),
                             "seconds_to_first_chunk": None if first is None else round(first, 3),
                             "seconds_total": round(time.perf_counter() - t_total, 3), "chunks": n_chunks})
        firsts = [r["seconds_to_first_chunk"] for r in runs if r["seconds_to_first_chunk"] is not None]
        ok, weights_msg = svc.weights(model)
        pipe = svc.pipeline(model)
        return {
            "what": "time from Ask to answer text and to the first playable video chunk (server side, warm)",
            "model": model, "checkpoint": svc.models.checkpoint(model), "weights": weights_msg,
            "detector": str(getattr(getattr(pipe, "detector", None), "description", "")),
            "tts": tts_row(svc).active, "embedder": embedder_row(svc).details,
            "avatar": str(avatar), "load_seconds": round(load_s, 3), "runs": runs,
            "median_seconds_to_first_chunk": float(np.median(firsts)) if firsts else None,
            "max_seconds_to_first_chunk": max(firsts) if firsts else None,
        }
    finally:
        svc.close()


def bench_browser(settings: Settings, questions: list[str], repeats: int = 1, timeout_s: float = 180.0) -> dict:
    """Start ``python app.py`` with ``settings`` and time, in headless Chromium, the click on *Ask* to the answer
    text on screen and to the first decoded frame of the streamed answer video (``readyState >= 2``).

    The app runs in a child process (see services/served.py for why), as a visitor's browser would find it.
    """
    runs = []
    with served_app(settings, log_dir=Path(tempfile.mkdtemp(prefix="bench-app-")), start_timeout_s=90) as app, \
            app_page(app.url) as page:
        page.get_by_role("tab", name="Ask the assistant").click()
        for k, q in enumerate([questions[0]] + [q for q in questions for _ in range(repeats)]):
            page.reload(wait_until="load")
            page.wait_for_selector("#question textarea", timeout=60_000)  # a fresh video element per question
            page.get_by_role("tab", name="Ask the assistant").click()
            page.get_by_label("Your question · 您的问题").fill(q)
            t0 = time.perf_counter()
            page.get_by_role("button", name="Ask", exact=True).click()
            page.wait_for_function("() => !document.querySelector('#answer').innerText.includes('appears here')",
                                   timeout=timeout_s * 1000)
            t_text = time.perf_counter() - t0
            page.wait_for_function("() => { const v = document.querySelector('#ask_video video');"
                                   " return v && v.readyState >= 2; }", timeout=timeout_s * 1000)
            t_frame = time.perf_counter() - t0
            page.wait_for_function("() => document.querySelector('#ask_timing').innerText.includes('done')",
                                   timeout=timeout_s * 1000)
            if k:  # the first question warms the models up (the app loads them in the background)
                runs.append({"question": q, "seconds_click_to_answer_text": round(t_text, 3),
                             "seconds_click_to_first_visible_frame": round(t_frame, 3)})
    frames = [r["seconds_click_to_first_visible_frame"] for r in runs]
    return {"what": "click on Ask -> answer text shown / first decoded frame of the streamed video, headless Chromium",
            "runs": runs, "median_seconds_to_first_visible_frame": float(np.median(frames)) if frames else None,
            "max_seconds_to_first_visible_frame": max(frames) if frames else None, "app_log": str(app.log)}


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m services", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="time from Ask to the first video chunk; prints JSON")
    b.add_argument("--model", default=registry.DEFAULT_MODEL, help=f"one of {', '.join(registry.ids())} (or 96 / 384)")
    b.add_argument("--avatar", type=Path, default=DEFAULT_AVATAR)
    b.add_argument("--repeats", type=int, default=1)
    b.add_argument("--full", action="store_true", help="render whole answers (default: stop at the first chunk)")
    b.add_argument("--browser", action="store_true",
                   help="also start app.py and measure click -> first visible frame in headless Chromium")
    b.add_argument("--question", action="append", help="repeatable; default: one zh and one en example question")
    from services.talk_bench import add_parser as add_talk_bench
    from services.talk_bench import run as run_talk_bench

    add_talk_bench(sub)  # python -m services talk-bench: the Conversation tab, driven in Chromium
    args = p.parse_args(argv)
    if args.cmd == "talk-bench":
        return run_talk_bench(args)
    spec = registry.get(args.model)
    settings = Settings.from_env()
    questions = args.question or ["身份证丢了怎么补办？", "How do I apply for a residence permit?"]
    random_dir = None
    try:
        svc = AppServices(settings)
        ok, msg = svc.weights(spec.id)
        checkpoint = svc.models.checkpoint(spec.id)
        svc.close()
        # which file ran, by its sha256; "published weights" only for the registry's published file
        note = weights_provenance(spec.id, checkpoint, hash_now_bytes=1 << 40).describe() if ok else ""
        if not ok:
            # Timing does not depend on the weights' values: a random generator of the same architecture
            # costs the same per frame. Said loudly in the output so nobody mistakes the video for real.
            random_dir = Path(tempfile.mkdtemp(prefix="bench-random-weights-"))
            settings = with_random_generators(settings, [spec.id], random_dir)
            note = f"RANDOM weights of the real {spec.id} architecture (real weights unavailable: {msg})"
        result = bench(settings, questions, args.avatar, spec.id, args.repeats, args.full)
        result["weights_used"] = note
        if args.browser:
            result["browser_note"] = "the browser run uses the Ask tab's default model"
            result["browser"] = bench_browser(settings, questions, args.repeats)
        import os as _os

        import torch

        result["machine"] = {"cpus": _os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "load_average_1min": round(_os.getloadavg()[0], 2)}
        print(json.dumps(result, ensure_ascii=False, indent=2))
    finally:
        if random_dir is not None:
            shutil.rmtree(random_dir, ignore_errors=True)
    return 0
