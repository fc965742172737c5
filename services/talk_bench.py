"""Drive the Conversation tab like a visitor: Chromium's fake microphone plays a spoken question, the page hears
it and answers it lip-synced; once the answer is on screen the same question is spoken again and interrupts it.

Chromium's fake microphone plays its file from the start whenever the microphone is opened, so the driver
presses the microphone's Stop and Record once the answer plays: the question is heard again at a known moment,
whatever the machine's speed (a looping file would come round at a fixed time, before or after the answer). The
interruption itself is the visitor's speech: Stop/Record never stop an answer.

    python -m services talk-bench --turns 10 [--model wav2lip96] [--json out.json]

Reports, measured in the browser: end of the visitor's question -> first lip-synced frame on screen (median, p95)
and barge-in -> player stopped (max); and from the app's log the server's own timings per turn, with how long after
the barge-in the server stopped rendering (answers already rendered to their end are counted apart). The app runs as
``python app.py`` in a child process (services/served.py says why). Without real weights it uses a random
generator of the real architecture (same cost per frame); without the SenseVoice model a tiny recogniser with
SenseVoice's interface and random weights (qa/asr_tiny.py), which costs ~nothing: the real model adds its
recognition time (RTF ~0.06: ~0.15 s for a 2.5 s question). Both are said in the output.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common.settings import Settings
from services.served import CHROMIUM_ARGS, served_app, with_random_generators
from wav2lip384.models import registry

FAKE_MIC_ARGS = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")
MIC_RATE = 48000  # what a browser records at; the fake device reads 16-bit PCM wav
TALK_LOG = re.compile(r"conversation turn (\d+) (\{.*\})")

# What the page knows about the conversation (window.__dhTalk is kept by the Conversation tab's script).
STATE_JS = """() => {
  const v = document.querySelector('#talk_video video');
  const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  const T = window.__dhTalk || {turns: [], bargeIns: []};
  return {chat: (document.querySelector('#talk_chat') || {innerText: ''}).innerText,
          state: (document.querySelector('#talk_state') || {innerText: ''}).innerText,
          latency: (document.querySelector('#talk_latency') || {innerText: ''}).innerText,
          first_frame: (document.querySelector('#talk_first_frame') || {innerText: ''}).innerText,
          notice: (document.querySelector('#talk_notice') || {innerText: ''}).innerText,
          video: v ? {paused: v.paused, time: v.currentTime, ready: v.readyState,
                      shown: getComputedStyle(v).visibility === 'visible' && v.getBoundingClientRect().height > 100,
                      frames: q ? q.totalVideoFrames : null, audio_bytes: v.webkitAudioDecodedByteCount} : null,
          turns: T.turns, barge_ins: T.bargeIns};
}"""


def question_wav(path: Path, wave16k: np.ndarray, lead_s: float = 0.5, silence_s: float = 180.0) -> Path:
    """The fake microphone's file: ``lead_s`` of silence, the question, ``silence_s`` of silence (48 kHz mono
    16-bit; long, so that it does not come round again by itself)."""
    import soundfile as sf

    n = int(len(wave16k) * MIC_RATE / 16000)
    speech = np.interp(np.arange(n) / MIC_RATE, np.arange(len(wave16k)) / 16000.0, wave16k).astype(np.float32)
    whole = np.concatenate([np.zeros(int(lead_s * MIC_RATE), np.float32), speech,
                            np.zeros(int(silence_s * MIC_RATE), np.float32)])
    sf.write(str(path), whole, MIC_RATE, subtype="PCM_16")
    return path


def spoken_question(settings: Settings, text: str, lang: str | None = None) -> np.ndarray:
    """``text`` said by the app's own voice, 16 kHz mono."""
    from services.core import AppServices

    svc = AppServices(settings)
    try:
        wave = svc.synthesize(text, lang or "auto", "auto").wave
        return np.asarray(wave, np.float32)
    finally:
        svc.close()


def stand_ins(settings: Settings, model: str, folder: Path) -> tuple[Settings, list[str]]:
    """``settings`` with random lip-sync weights and/or the tiny recogniser where the real ones are missing, and
    what was replaced (said in every result)."""
    from services.core import AppServices

    notes: list[str] = []
    svc = AppServices(settings)
    try:
        ok, msg = svc.weights(model)
        asr_ok = bool(svc.recognizer().status().get("available"))
    finally:
        svc.close()
    if not ok:
        settings = with_random_generators(settings, [model], folder / "weights")
        notes.append(f"RANDOM weights of the real {model} architecture (real weights unavailable: {msg})")
    if not asr_ok:
        from qa.asr_tiny import build_tiny_sense_voice

        settings = dataclasses.replace(settings, asr_model=str(build_tiny_sense_voice(folder / "asr")))
        notes.append("a tiny recogniser with SenseVoice's interface and RANDOM weights (SenseVoice unavailable): "
                     "transcripts are meaningless and recognition costs ~nothing")
    return settings, notes


def wait_warm(log: Path, timeout_s: float = 300.0) -> None:
    """Until the app's background warm-up is over (its first answer would otherwise pay it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "warm-up done" in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the app did not finish warming up within {timeout_s:g} s (see {log})")


def open_talk(pw, url: str, mic_file: Path):
    """Headless Chromium with the fake microphone on ``mic_file``, on the Conversation tab; (browser, page)."""
    browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", headless=True,
                                 args=[*CHROMIUM_ARGS, *FAKE_MIC_ARGS, f"--use-file-for-fake-audio-capture={mic_file}"])
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.goto(url, wait_until="load")
    page.wait_for_selector("#question textarea", timeout=60_000)
    page.get_by_role("tab", name="Talk to it · 对话").click()
    page.wait_for_selector("#talk_mic", timeout=30_000)
    return browser, page


def start_talking(page, timeout_s: float = 20.0) -> None:
    """The visitor's one click on Record, once the microphone is recording (its Stop button shows)."""
    page.locator("#talk_mic .record-button").first.click()
    page.wait_for_selector("#talk_mic .stop-button", timeout=timeout_s * 1000)


# Stop, then Record, in the page itself: one round trip. Playwright's own clicks (each with its checks and a wait)
# took ~3 s on a busy 2-core CI machine, and a 3 s answer had played to its end before the question came again.
# Record is pressed a moment after it shows, as a person would: pressed within 25 ms of Stop, Gradio's recorder
# once sent a broken wav, and the microphone stream failed on it from then on (1 of 7 runs).
SPEAK_AGAIN_JS = """async () => {
  const q = (s) => document.querySelector('#talk_mic ' + s);
  const until = async (s) => {
    for (let i = 0; i < 800 && !q(s); i++) await new Promise((r) => setTimeout(r, 25));
    return q(s);
  };
  q('.stop-button').click();
  const rec = await until('.record-button');
  if (!rec) return 'no Record button 20 s after Stop';
  await new Promise((r) => setTimeout(r, 250));
  rec.click();
  return (await until('.stop-button')) ? '' : 'the microphone did not start recording within 20 s';
}"""


def speak_again(page) -> None:
    """The fake microphone says the question again from its start (Stop, then Record: see the module doc)."""
    problem = page.evaluate(SPEAK_AGAIN_JS)
    if problem:
        raise NotSeen(f"speaking again: {problem}", 20.0, state(page))


def state(page) -> dict:
    return page.evaluate(STATE_JS)


def playing(st: dict) -> bool:
    """The answer is on screen and audible: frames and sound decoded, the player running."""
    v = st["video"]
    return bool(v and not v["paused"] and v["ready"] >= 2 and v["time"] > 0.3 and (v["frames"] or 0) > 0
                and (v["audio_bytes"] or 0) > 0)


class NotSeen(AssertionError):
    """What the driver waited for did not happen in time; ``state`` is what the page showed last."""

    def __init__(self, what: str, timeout_s: float, st: dict):
        super().__init__(f"{what}: not within {timeout_s:g} s; the page shows {json.dumps(st, ensure_ascii=False)}")
        self.state = st


def wait_for(page, what: str, check, timeout_s: float, every_s: float = 0.1) -> dict:
    """Poll the page's conversation state until ``check(state)``; that state (NotSeen with the last one)."""
    deadline = time.monotonic() + timeout_s
    st = state(page)
    while not check(st):
        if time.monotonic() > deadline:
            raise NotSeen(what, timeout_s, st)
        time.sleep(every_s)
        st = state(page)
    return st


def converse(page, turns: int, timeout_s: float = 120.0, on_playing=None) -> dict:
    """``turns`` spoken questions, each answered until its first frame is on screen and then interrupted by the
    next; then the last interruption's own turn is heard. The page's final state."""
    start_talking(page)
    for k in range(turns):
        wait_for(page, f"turn {k + 1}: transcript", lambda s, k=k: s["chat"].count("🎙️") >= k + 1, timeout_s)
        st = wait_for(page, f"turn {k + 1}: the answer playing with picture and sound",
                      lambda s, k=k: len(s["turns"]) > k and s["turns"][k]["first_frame_s"] is not None
                      and playing(s), timeout_s)
        if on_playing is not None:
            on_playing(k, st)
        speak_again(page)
        st = wait_for(page, f"turn {k + 1}: interrupted by the next question",
                      lambda s, k=k: len(s["barge_ins"]) > k or s["chat"].count("🎙️") > k + 1, 30.0)
        if len(st["barge_ins"]) <= k:  # the answer had played to its end: the driver came too late
            raise NotSeen(f"turn {k + 1}: interrupted by the next question (the answer had ended when it came)",
                          30.0, st)
    return wait_for(page, "the interrupting question heard", lambda s: s["chat"].count("🎙️") > turns, timeout_s)


def server_turns(log: Path) -> dict[int, dict]:
    """The server's timings per turn, from the app's log (one line per finished turn)."""
    out = {}
    for m in TALK_LOG.finditer(log.read_text(errors="replace")):
        out[int(m.group(1))] = json.loads(m.group(2))
    return out


def _p95(xs: list[float]) -> float | None:
    return round(float(np.percentile(xs, 95)), 3) if xs else None


def bench_talk(settings: Settings, turns: int = 10, model: str = registry.DEFAULT_MODEL, question: str = "",
               timeout_s: float = 120.0) -> dict:
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="talk-bench-"))
    error = ""
    try:
        settings, notes = stand_ins(settings, model, folder)
        text = question or "How do I apply for a residence permit?"
        mic = question_wav(folder / "question.wav", spoken_question(settings, text))
        with served_app(settings, log_dir=folder / "app", start_timeout_s=120) as app:
            wait_warm(app.log)
            with sync_playwright() as pw:
                browser, page = open_talk(pw, app.url, mic)
                try:
                    st = converse(page, turns, timeout_s)
                except NotSeen as err:  # report what was measured up to there
                    st, error = err.state, str(err).split(";")[0]
                finally:
                    browser.close()
            server = server_turns(app.log)
        firsts = [t["first_frame_s"] for t in st["turns"][:turns] if t.get("first_frame_s") is not None]
        stops = [b["stop_s"] for b in st["barge_ins"]]
        # an answer already rendered to its end when interrupted had nothing left to stop: counted apart
        server_stops = [s["server_stop_after_barge_in"] for s in server.values()
                        if "server_stop_after_barge_in" in s and not s.get("rendered_before_barge_in")]
        played_out = sum(1 for s in server.values() if s.get("rendered_before_barge_in"))
        return {
            "what": "Conversation tab in headless Chromium with a fake microphone: end of the spoken question -> "
                    "first lip-synced frame on screen, and the next question's start -> player stopped (both "
                    "measured in the page)",
            "model": model, "stand_ins": notes, "question": text, "turns": turns, "error": error,
            "first_frame_s": firsts, "first_frame_median_s": round(float(np.median(firsts)), 3) if firsts else None,
            "first_frame_p95_s": _p95(firsts),
            "barge_in_stop_s": stops, "barge_in_stop_max_s": max(stops) if stops else None,
            "server_stop_after_barge_in_s": server_stops, "server_stop_max_s": max(server_stops, default=None),
            "interrupted_after_rendering_ended": played_out, "server_turns": server,
            "page": {k: st[k] for k in ("chat", "state", "latency", "first_frame", "notice")} if error else {},
            "app_log": str(folder / "app" / "app.log") if error else "",
        }
    finally:
        if not error:  # kept when something was not seen: the app's log says why
            shutil.rmtree(folder, ignore_errors=True)


def add_parser(sub) -> None:
    b = sub.add_parser("talk-bench", help="drive the Conversation tab with a fake microphone; prints JSON")
    b.add_argument("--model", default=registry.DEFAULT_MODEL)
    b.add_argument("--turns", type=int, default=10)
    b.add_argument("--question", default="", help="what the fake microphone says (the app's own voice)")
    b.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each step")
    b.add_argument("--json", type=Path, help="also write the result here")


def run(args) -> int:
    import os

    result = bench_talk(Settings.from_env(), args.turns, registry.get(args.model).id, args.question, args.timeout)
    result["machine"] = {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}
    text = json.dumps(result, ensure_ascii=False, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0
