"""App-level benchmark: time from "Ask" to the answer text and to the first video chunk (server side), and
optionally click -> first visible frame in headless Chromium.

    python -m services bench --model wav2lip96 --repeats 3 [--browser]
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
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


# Six questions for the browser run (both languages, long and short answers, one the KB cannot answer).
BROWSER_QUESTIONS = ["身份证丢了怎么补办？", "How do I apply for a residence permit?", "怎么办理社保卡？",
                     "What documents do I need to transfer my household registration?", "驾驶证到期了怎么换证？",
                     "What is the weather like on Mars?"]

# Installed in the page before a question: every time the answer video waits for data after it began playing
# (media events "waiting" / "stalled", captured at the document: they do not bubble), with how long it waited.
WATCH_STALLS_JS = """() => {
  const w = window.__dhStallWatch = {playing: false, stalls: [], since: null};
  if (window.__dhStallListeners) return;
  window.__dhStallListeners = true;
  const on = (e) => {
    const v = e.target, w = window.__dhStallWatch;
    if (!(v instanceof HTMLMediaElement) || !v.closest('#ask_video')) return;
    if (e.type === 'playing') {
      if (w.since !== null) { w.stalls[w.stalls.length - 1].seconds = (performance.now() - w.since) / 1000; }
      w.playing = true; w.since = null; return;
    }
    if (!w.playing || v.ended || w.since !== null) return;
    w.since = performance.now();
    w.stalls.push({type: e.type, at: v.currentTime, seconds: null});
  };
  ['playing', 'waiting', 'stalled'].forEach((t) => document.addEventListener(t, on, true));
}"""
STALLS_JS = "() => window.__dhStallWatch ? window.__dhStallWatch.stalls : null"
# A wait shorter than this is not seen (hls.js fires "waiting" for a few ms at some segment joins: 7 and 28 ms
# measured); a longer one, or one that never ends, is a stall.
STALL_MIN_S = 0.1


def stalls_seen(events: list[dict]) -> list[dict]:
    """The waits of ``events`` (from STALLS_JS) a visitor sees: at least STALL_MIN_S, or never over."""
    return [e for e in events or [] if e.get("seconds") is None or e["seconds"] >= STALL_MIN_S]


def wait_for_warm_up(log_path: Path, timeout_s: float = 600.0) -> float:
    """Seconds until the served app's log says its start-up warm-up is done (services.core.AppServices.warm_up)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if "warm-up done" in Path(log_path).read_text(errors="replace"):
            return time.perf_counter() - t0
        time.sleep(0.5)
    raise RuntimeError(f"the app's warm-up did not finish within {timeout_s:g} s (see {log_path})")


def bench_browser(settings: Settings, questions: list[str], repeats: int = 1, timeout_s: float = 180.0) -> dict:
    """Start ``python app.py`` with ``settings``; once its start-up warm-up is done, ask each question in headless
    Chromium and time the click on *Ask* to the answer text on screen and to the first frame of the streamed
    answer playing (the page's own measure, app.py CLIENT_JS), then let the answer play to its end and count
    the times its video waited for data (stalls). The first question is the first answer after start-up and
    counts like the others.

    The app runs in a child process (see services/served.py for why), as a visitor's browser would find it.
    """
    import re

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    runs = []
    with served_app(settings, log_dir=Path(tempfile.mkdtemp(prefix="bench-app-")), start_timeout_s=90) as app, \
            app_page(app.url) as page:
        warm_s = wait_for_warm_up(app.log)
        for k, q in enumerate([q for q in questions for _ in range(repeats)]):
            page.reload(wait_until="load")
            page.wait_for_selector("#question textarea", timeout=60_000)  # a fresh video element per question
            page.get_by_role("tab", name="Ask the assistant").click()
            page.get_by_label("Your question · 您的问题").fill(q)
            page.evaluate(WATCH_STALLS_JS)
            t0 = time.perf_counter()
            page.get_by_role("button", name="Ask", exact=True).click()
            page.wait_for_function("() => !document.querySelector('#answer').innerText.includes('appears here')",
                                   timeout=timeout_s * 1000)
            t_text = time.perf_counter() - t0
            page.wait_for_function("() => document.querySelector('#ask_first_frame').innerText.includes(' after ')",
                                   timeout=timeout_s * 1000)
            shown = page.locator("#ask_first_frame").inner_text()
            page.wait_for_function("() => document.querySelector('#ask_timing').innerText.includes('done')",
                                   timeout=timeout_s * 1000)
            timing = page.locator("#ask_timing").inner_text()
            speech = re.search(r"\(([0-9.]+) s of speech\)", timing)
            try:  # a video that never plays to its end is a stall that never ended: recorded, not fatal
                page.wait_for_function("() => { const v = document.querySelector('#ask_video video');"
                                       " return v && v.ended; }",
                                       timeout=(60 + (float(speech[1]) if speech else timeout_s)) * 1000)
                ended = True
            except PlaywrightTimeout:
                ended = False
            events = page.evaluate(STALLS_JS) or []
            stalls = stalls_seen(events)
            where = page.evaluate("() => { const v = document.querySelector('#ask_video video');"
                                  " return v ? [v.currentTime, v.readyState, v.networkState] : null; }")
            played = page.evaluate("() => { const m = document.querySelector('#ask_video video'); let t = 0;"
                                   " for (let i = 0; i < m.played.length; i++) t += m.played.end(i) - m.played.start(i);"
                                   " return t; }")
            runs.append({"question": q, "first_after_start_up": k == 0,
                         "seconds_click_to_answer_text": round(t_text, 3),
                         "seconds_click_to_first_frame_playing": float(re.search(r"after ([0-9.]+) s", shown)[1]),
                         "played_to_the_end": ended, "video_at_the_end": where,
                         "stalls": len(stalls) + (not ended and not any(s["seconds"] is None for s in stalls)),
                         "waiting_events": events,
                         "stalled_seconds": round(sum(s["seconds"] or 0 for s in stalls), 3),
                         "seconds_played": round(played, 3),
                         "seconds_of_speech": float(speech[1]) if speech else None,
                         "render_note": timing.split(" · ")[-1] if "frames per second" in timing else ""})
    frames = [r["seconds_click_to_first_frame_playing"] for r in runs]
    return {"what": "click on Ask -> answer text shown / first frame of the streamed video playing (measured by the "
                    "page), then stalls while it plays to the end; headless Chromium on the same machine; the first "
                    "question is asked as soon as the app's start-up warm-up is done",
            "seconds_start_to_warm_up_done": round(warm_s, 1), "questions": len(runs), "runs": runs,
            "p95_seconds_to_first_frame": round(float(np.percentile(frames, 95)), 3) if frames else None,
            "median_seconds_to_first_frame": round(float(np.median(frames)), 3) if frames else None,
            "stalls": sum(r["stalls"] for r in runs),
            "stalled_seconds": round(sum(r["stalled_seconds"] for r in runs), 3), "app_log": str(app.log)}


@user_errors_exit_2
@contextlib.contextmanager
def random_weights_where_missing(settings: Settings, models: list[str]):
    """``(settings, missing)``: ``settings`` with a random generator of the real architecture for each of ``models``
    whose weights are not available here (timing and memory do not depend on the weights' values), and
    ``missing`` = {model id: why its real weights are unavailable}; the random weights are removed afterwards."""
    svc = AppServices(settings)
    missing = {m: why for m in models for ok, why in [svc.weights(m)] if not ok}
    svc.close()
    folder = Path(tempfile.mkdtemp(prefix="bench-random-weights-")) if missing else None
    try:
        yield (with_random_generators(settings, list(missing), folder) if missing else settings), missing
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _rss_mb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))


def bench_memory(settings: Settings, models: list[str], text: str = "Please bring your ID card and the form.") -> dict:
    """The app's resident memory with ``models`` loaded, as the app loads them: after its start-up warm-up (the
    default answer model, int8-calibrated when that wins), then after one request per model on the video and the
    photo avatar (the others load at their first request; encoder features cached), and the peak."""
    import resource

    from services.core import EXAMPLE_VIDEO_AVATAR

    svc = AppServices(settings)
    try:
        out = {"models": models, "rss_mb_at_start": _rss_mb(), "warm_up_s": svc.warm_up()}
        out["rss_mb_after_warm_up"] = _rss_mb()
        for m in models:
            for avatar in (EXAMPLE_VIDEO_AVATAR, DEFAULT_AVATAR):
                svc.text_to_avatar(text, avatar, model=m)
            out[f"rss_mb_after_{m}_requests"] = _rss_mb()
        # the kernel's high-water mark can miss a peak that glibc later returns (it is updated lazily): the
        # largest of it, ru_maxrss and the samples above
        samples = [v for k, v in out.items() if k.startswith("rss_mb_")]
        out["rss_mb_peak"] = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, *samples])  # KiB
        out["precision"] = {m: svc.pipeline(m).precision for m in models}
        return out
    finally:
        svc.close()


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
    mem = sub.add_parser("memory", help="the app's RSS with models loaded and used; prints JSON")
    mem.add_argument("--models", nargs="+", default=[m for m in registry.ids() if registry.get(m).default_weights],
                     help="registry ids (default: every model with published weights)")
    from services.talk_bench import add_parser as add_talk_bench
    from services.talk_bench import run as run_talk_bench

    add_talk_bench(sub)  # python -m services talk-bench: the Conversation tab, driven in Chromium
    args = p.parse_args(argv)
    if args.cmd == "talk-bench":
        return run_talk_bench(args)
    if args.cmd == "memory":
        return _memory_main(args)
    spec = registry.get(args.model)
    settings = Settings.from_env()
    questions = args.question or ["身份证丢了怎么补办？", "How do I apply for a residence permit?"]
    browser_questions = args.question or BROWSER_QUESTIONS
    svc = AppServices(settings)
    checkpoint = svc.models.checkpoint(spec.id)
    svc.close()
    with random_weights_where_missing(settings, [spec.id]) as (settings, missing):
        # which file ran, by its sha256; "published weights" only for the registry's published file. Without it,
        # timing does not depend on the weights' values: said loudly so nobody mistakes the video for real
        note = (f"RANDOM weights of the real {spec.id} architecture (real weights unavailable: {missing[spec.id]})"
                if missing else weights_provenance(spec.id, checkpoint, hash_now_bytes=1 << 40).describe())
        result = bench(settings, questions, args.avatar, spec.id, args.repeats, args.full)
        result["weights_used"] = note
        if args.browser:
            result["browser_note"] = "the browser run uses the Ask tab's default model"
            result["browser"] = bench_browser(settings, browser_questions, args.repeats)
        import os as _os

        import torch

        result["machine"] = {"cpus": _os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "load_average_1min": round(_os.getloadavg()[0], 2)}
        print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


def _memory_main(args) -> int:
    """``python -m services memory``: models without weights here run random generators of their architecture
    (same size, same memory; said in ``weights_used``)."""
    models = [registry.get(m).id for m in args.models]
    with random_weights_where_missing(Settings.from_env(), models) as (settings, missing):
        with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars (int8 calibration) print to stdout
            result = bench_memory(settings, models)
    result["weights_used"] = {m: "RANDOM weights of the real architecture" if m in missing else "configured"
                              for m in models}
    result["goal_mb"] = 4096
    print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    return 0
