"""A whole spoken conversation in headless Chromium, on loopback, with Chromium's fake microphone.

The microphone plays question.wav (the app's own voice saying a question, then silence): the pause ends the
visitor's turn by itself, the question is recognised (a tiny recogniser with SenseVoice's interface and random
weights, qa/asr_tiny.py: its transcript is meaningless but real model output), answered and spoken back
lip-synced (random wav2lip96 weights). Once the answer plays, the question is spoken again (the driver reopens the
microphone, which replays the file from its start: services/talk_bench.py says why); that second spoken turn
interrupts the answer (barge-in), which must stop within 0.5 s in the page, and is answered in its turn.
A second app asks back ("did you mean") every question (a deployment's DH_QA_THRESHOLD / DH_QA_ANSWER_THRESHOLD),
so that a typed question's candidates can be clicked in the chat: the pick is answered, spoken and lip-synced.
The app runs as ``python app.py`` in a child process, as the bench drives it (services/talk_bench.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from common.settings import Settings
from services import talk_bench

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
# whatever the meaningless transcript gets (an answer, "did you mean" or "I don't know" naming these questions),
# the spoken answer lasts a few seconds: long enough to be interrupted, short enough to render on a busy machine
KB = [
    {"id": "permit", "question": "居住证怎么办理？", "answer": "到社区服务站办理居住证。",
     "question_en": "How do I apply for a residence permit?", "answer_en": "Apply at the community service station."},
    {"id": "id-lost", "question": "身份证丢了怎么补办？", "answer": "请到派出所补领身份证。",
     "question_en": "How do I replace a lost ID card?", "answer_en": "Go to the police station."},
]


def _chromium() -> None:
    import shutil

    if not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
        pytest.skip("Debian chromium is not installed (apt-get install chromium; .ci/run does it)")


def _talk_app(root: Path, **env):
    """The served app (random wav2lip96, the KB above, the tiny recogniser, espeak; ``env``: more DH_*
    settings) and the fake microphone's file; yields (ServedApp, question.wav)."""
    pytest.importorskip("playwright")
    pytest.importorskip("onnx")
    pytest.importorskip("sherpa_onnx")
    _chromium()
    from qa.asr_tiny import build_tiny_sense_voice
    from services.served import served_app, with_random_generators

    kb = root / "kb.jsonl"
    kb.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in KB), encoding="utf-8")
    settings = Settings.from_env({"DH_QA_KB": str(kb), "DH_CACHE_DIR": str(root / "cache"), "DH_TTS_ENGINE": "espeak",
                                  "DH_WAV2LIP256_CHECKPOINT": str(root / "none"),
                                  "DH_LIVETALKING384_CHECKPOINT": str(root / "none"),
                                  "DH_ASR_MODEL": str(build_tiny_sense_voice(root / "asr")), **env})
    settings = with_random_generators(settings, ["wav2lip96"], root / "weights")
    wave = talk_bench.spoken_question(settings, "How do I apply for a residence permit?", "en")
    mic = talk_bench.question_wav(root / "question.wav", wave)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        with served_app(settings, log_dir=root / "app", start_timeout_s=120) as app:
            talk_bench.wait_warm(app.log)
            yield app, mic


@pytest.fixture(scope="module")
def talk_app(tmp_path_factory):
    yield from _talk_app(tmp_path_factory.mktemp("talk"))


@pytest.fixture()
def asking_back_app(tmp_path):
    """The same app, asking back every question ("did you mean")."""
    yield from _talk_app(tmp_path, DH_QA_THRESHOLD="-1", DH_QA_ANSWER_THRESHOLD="2")


ANSWER_HEADS = ("No confident match · ", "Matched question · ", "Did you mean… · ")  # one per answer in the chat


# The session's shared link (Gradio deep link), as the share button copies it.
SHARE_LINK_JS = """async () => {
    const r = await fetch('gradio_api/deep_link?session_hash=' + window.__gradio_session_hash__);
    const u = new URL(window.location.href);
    u.searchParams.set('deep_link', (await r.text()).replace(/^"|"$/g, ''));
    return u.toString(); }"""


def test_a_spoken_conversation_ends_turns_by_itself_answers_and_can_be_interrupted(talk_app):
    from playwright.sync_api import expect, sync_playwright

    app, mic = talk_app
    ARTIFACTS.mkdir(exist_ok=True)
    seen: dict = {}

    def on_playing(k: int, st: dict) -> None:  # the first answer on screen, before it is interrupted
        seen.update(st)
        page.screenshot(path=str(ARTIFACTS / "app_talk.png"), full_page=True)

    with sync_playwright() as pw:
        browser, page = talk_bench.open_talk(pw, app.url, mic)
        try:
            try:
                st = talk_bench.converse(page, turns=1, timeout_s=300, on_playing=on_playing)
                # the interrupting turn is answered too, and the interrupted answer is marked in the history
                st = talk_bench.wait_for(page, "the second answer", lambda s: "(interrupted)" in s["chat"] and sum(
                    s["chat"].count(w) for w in ANSWER_HEADS) >= 2, 300)
            except talk_bench.NotSeen as err:
                pytest.fail(str(err))
            page.screenshot(path=str(ARTIFACTS / "app_talk_barge_in.png"), full_page=True)
            # the conversation is shareable like the other results: the link reopens the tab with its history
            link = page.evaluate(SHARE_LINK_JS)
            other = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            other.goto(link, wait_until="load")
            expect(other.get_by_role("tab", name="Talk to it · 对话", selected=True)).to_be_visible(timeout=60_000)
            expect(other.locator("#talk_chat")).to_contain_text("(interrupted)", timeout=30_000)
            shared_chat = other.locator("#talk_chat").inner_text()
        finally:
            browser.close()
    assert shared_chat.count("🎙️") >= 2, shared_chat
    # the first answer played with picture and sound, its latency shown to the visitor
    assert talk_bench.playing(seen) and seen["video"]["shown"] and not seen["barge_ins"], seen
    assert "First frame on your screen" in seen["first_frame"], seen
    assert "After you stopped speaking" in seen["latency"] and "answer found" in seen["latency"], seen
    # the second spoken turn stopped it at once in the page
    stop_s = st["barge_ins"][0]["stop_s"]
    assert 0 <= stop_s <= 0.5, st["barge_ins"]
    # and the server stopped producing it
    server = talk_bench.server_turns(app.log)
    assert server.get(1, {}).get("stopped") is True, server
    assert "server_stop_after_barge_in" in server[1] and "recognised" in server[1], server
    (ARTIFACTS / "talk_timing.json").write_text(json.dumps(
        {"first_frame_after_end_of_speech_s": st["turns"][0]["first_frame_s"], "barge_in_stop_s": stop_s,
         "server_turns": server, "model": "wav2lip96", "weights": "random (tests)",
         "recogniser": "tiny random (tests)"}, indent=1))


def test_a_did_you_mean_candidate_clicked_in_the_chat_is_answered_spoken_and_lip_synced(asking_back_app):
    from playwright.sync_api import expect, sync_playwright

    app, mic = asking_back_app
    log_start = len(app.log.read_text(errors="replace"))
    with sync_playwright() as pw:
        browser, page = talk_bench.open_talk(pw, app.url, mic)  # the microphone stays off: typed, then clicked
        try:
            box = page.locator("#talk_text textarea")
            box.fill("residence permit")
            box.press("Enter")
            pick = page.locator("#talk_chat button.option", has_text="How do I replace a lost ID card?")
            pick.wait_for(timeout=120_000)  # shown with the answer's text, before its speech renders
            page.screenshot(path=str(ARTIFACTS / "app_talk_choices.png"), full_page=True)
            pick.click()
            chat = page.locator("#talk_chat")
            expect(chat).to_contain_text("👆 How do I replace a lost ID card?", timeout=60_000)
            expect(chat).to_contain_text("Matched question · 匹配问题: How do I replace a lost ID card?",
                                         timeout=60_000)
            expect(page.locator("#talk_chat button.option")).to_have_count(0)  # answered: nothing left to pick
            try:
                st = talk_bench.wait_for(page, "the picked answer playing with picture and sound", talk_bench.playing,
                                         300)
            except talk_bench.NotSeen as err:
                pytest.fail(str(err))
            page.screenshot(path=str(ARTIFACTS / "app_talk_pick.png"), full_page=True)
        finally:
            browser.close()
    assert "After you asked" in st["latency"] and "answer found" in st["latency"], st
    assert "First frame on your screen" in st["first_frame"] and "after you asked" in st["first_frame"], st
    # the server answered the pick as a turn of its own, lip-synced (the question it interrupted was stopped). A turn
    # is logged when its answer has ended, which on a loaded machine can be after the page has closed: wait for it
    deadline = time.monotonic() + 180
    while True:
        turns = [json.loads(m.group(2)) for m in talk_bench.TALK_LOG.finditer(app.log.read_text(errors="replace")[
            log_start:])]
        picked = [t for t in turns if t.get("picked") and not t["stopped"] and "first_chunk" in t]
        if picked or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert picked, turns
