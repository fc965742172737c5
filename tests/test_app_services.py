"""The app's services layer and UI wiring, without loading any model (fast).

What a user sees here: clear messages for bad input, the status panel saying what is missing and what to do,
the spoken answer delivered even when no lip-sync model can run, temporary files cleaned up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserFacingError
from common.settings import Settings
from presenters import status_markdown, video_summary
from services import DEFAULT_AVATAR, AppServices
from services.checks import check_question, check_speech, count_faces
from services.media import RequestDirs, split_speech

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline_settings(tmp_path) -> Settings:
    """No lip-sync weights at all (the Hub is offline in tests), caches in tmp."""
    return Settings(cache_dir=str(tmp_path / "cache")).with_weights({
        "DH_WAV2LIP96_CHECKPOINT": str(tmp_path / "missing96"), "DH_WAV2LIP256_CHECKPOINT": str(tmp_path / "m256"),
        "DH_LIVETALKING384_CHECKPOINT": str(tmp_path / "m384"), "DH_WAV2LIP384_CHECKPOINT": ""})


@pytest.fixture
def svc(offline_settings, tmp_path):
    s = AppServices(offline_settings, tmp_parent=tmp_path / "tmp")
    yield s
    s.close()


def _write_png(path: Path, image: np.ndarray) -> Path:
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


# ------------------------------------------------------------------------------------------ input checks
def test_empty_and_overlong_questions_are_refused_in_both_languages():
    for q in ("", "   ", None):
        with pytest.raises(UserFacingError, match="type a question"):
            check_question(q)
    with pytest.raises(UserFacingError, match="too long"):
        check_question("x" * 501)
    assert check_question("  身份证丢了怎么办？ ") == "身份证丢了怎么办？"


def test_silent_short_and_long_speech_get_clear_messages():
    sr = 16000
    rng = np.random.default_rng(0)
    speech = (0.1 * rng.standard_normal(sr)).astype(np.float32)
    check_speech(speech, sr, max_seconds=10)
    with pytest.raises(UserFacingError, match="silent"):
        check_speech(np.zeros(sr, np.float32) + 1e-5, sr, max_seconds=10)
    with pytest.raises(UserFacingError, match="only 0.10 s"):
        check_speech(speech[: sr // 10], sr, max_seconds=10)
    with pytest.raises(UserFacingError, match="limit here is 0.5 s"):
        check_speech(speech, sr, max_seconds=0.5)


def test_first_streamed_piece_is_short_and_pieces_cover_the_speech():
    sr = 16000
    t = np.arange(13 * sr) / sr
    # speech-like bursts with pauses every 0.7 s: cuts should land in the pauses
    wave = (np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * t / 0.7) > -0.6)).astype(np.float32)
    pieces = split_speech(wave, sr, first_s=1.0, max_s=3.0)
    assert sum(len(p) for p in pieces) == len(wave)
    assert 0.6 <= len(pieces[0]) / sr <= 1.0
    assert all(len(p) / sr <= 3.4 for p in pieces)
    assert split_speech(wave[: sr], sr)[0].shape == (sr,)  # short speech stays whole


def test_request_dirs_are_swept_by_age_and_removed_at_close(tmp_path):
    dirs = RequestDirs(tmp_path, keep_s=60)
    old, new = dirs.new(), dirs.new()
    (old / "out.mp4").write_bytes(b"x")
    past = time.time() - 120
    os.utime(old, (past, past))
    assert dirs.sweep() == 1
    assert not old.exists() and new.exists()
    dirs.close()
    assert not dirs.root.exists()


class _FakeDetector:
    """Returns fixed (K, 5) boxes: lets the face-count rule be tested without a model."""

    def __init__(self, boxes):
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 5)

    def detect_batch(self, frames):
        return [self.boxes for _ in frames]


def test_face_count_ignores_tiny_background_faces():
    img = np.zeros((100, 100, 3), np.uint8)
    assert count_faces(img, _FakeDetector([])) == 0
    assert count_faces(img, _FakeDetector([[0, 0, 60, 60, 1], [70, 70, 80, 80, 1]])) == 1
    assert count_faces(img, _FakeDetector([[0, 0, 40, 40, 1], [50, 50, 90, 90, 1]])) == 2


def test_avatar_problems_are_explained(svc, tmp_path):
    import cv2

    astronaut = cv2.cvtColor(cv2.imread(str(DEFAULT_AVATAR)), cv2.COLOR_BGR2RGB)
    with pytest.raises(UserFacingError, match="Choose an avatar"):
        svc.check_avatar(None)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(UserFacingError, match="unsupported type"):
        svc.check_avatar(txt)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(UserFacingError, match="not a valid PNG"):
        svc.check_avatar(fake)
    with pytest.raises(UserFacingError, match="No face found"):
        svc.check_avatar(_write_png(tmp_path / "wall.png", np.full((200, 200, 3), 120, np.uint8)))
    with pytest.raises(UserFacingError, match="2 faces found"):
        svc.check_avatar(_write_png(tmp_path / "two.png", np.concatenate([astronaut, astronaut], axis=1)))
    assert svc.check_avatar(DEFAULT_AVATAR) == (DEFAULT_AVATAR, "image")


def test_audio_problems_are_explained(svc, tmp_path):
    import soundfile as sf

    with pytest.raises(UserFacingError, match="Upload or record"):
        svc.load_speech(None)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(UserFacingError, match="(?i)could not read|damaged|not a valid"):
        svc.load_speech(bad)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    with pytest.raises(UserFacingError, match="silent|no sound"):
        svc.load_speech(silent)
    image_as_audio = tmp_path / "photo.png"
    image_as_audio.write_bytes(DEFAULT_AVATAR.read_bytes())
    with pytest.raises(UserFacingError, match="unsupported type"):
        svc.load_speech(image_as_audio)
    wave = svc.load_speech(ROOT / "examples" / "speech_en.ogg")
    assert wave.dtype == np.float32 and 3 < len(wave) / 16000 < 8


def test_missing_weights_are_reported_with_what_to_do_and_speech_still_delivered(svc):
    status = {it.part: it for it in svc.status()}
    paper = status["Lip-sync: Paper 384 (your weights)"]
    assert not paper.ok and paper.active == "not configured"
    # the table says it in plain words; which variable to set is in the row's details (Status -> Details, log)
    assert "DH_WAV2LIP384_CHECKPOINT" in paper.details and "train" in paper.details and "trained" in paper.fix
    w96 = status["Lip-sync: Wav2Lip 96"]
    assert not w96.ok and "DH_WAV2LIP96_CHECKPOINT" in w96.details and "still spoken" in w96.fix
    assert "DH_WAV2LIP256_CHECKPOINT" in status["Lip-sync: Wav2Lip 256 (community)"].details
    assert {"Face detector", "Question answering", "Voice", "Speech recognition (questions by voice)"} <= set(status)
    assert status["Voice"].ok  # espeak-ng works offline
    assert "DH_S3FD_CHECKPOINT" in status["Face detector"].details or "S3FD" in status["Face detector"].active
    for it in status.values():  # the table a visitor reads: no settings, repos or files
        assert "DH_" not in it.fix and "/" not in it.fix, it
    md = status_markdown(svc.status())
    assert md.startswith("| part | state | what to do |") and "| Lip-sync: Wav2Lip 96 | ⚠ unavailable |" in md
    assert svc.available_models() == []
    # no lip-sync model can run: the speech is still delivered, with one calm notice in plain words; the variable
    # to set is in the result's details
    res = svc.text_to_avatar("hello", DEFAULT_AVATAR, "384")
    assert res.path is None and res.audio_path.is_file() and res.model == "paper384"
    assert res.notice == "Lip-sync is not available on this server yet — here is the speech."
    assert video_summary(res).startswith("🔈 Speech only") and "DH_WAV2LIP384_CHECKPOINT" in res.details()["lipsync_problem"]
    res = svc.audio_to_avatar(ROOT / "examples" / "speech_en.ogg", DEFAULT_AVATAR, 96)
    assert res.path is None and res.audio_path.is_file() and "DH_" not in res.notice
    assert "DH_WAV2LIP96_CHECKPOINT" in res.problem
    with pytest.raises(UserFacingError, match="Unknown lip-sync model"):
        svc.weights(128)
    with pytest.raises(UserFacingError, match="unsupported type"):  # bad input is still the visitor's to fix
        svc.text_to_avatar("hello", ROOT / "examples" / "speech_en.ogg", "96")


def test_ask_without_lipsync_weights_still_speaks_the_answer(svc, tmp_path):
    import json

    kb = tmp_path / "kb.jsonl"
    kb.write_text(json.dumps({"id": "a", "question": "身份证丢了怎么补办？", "answer": "请到派出所补领。"},
                             ensure_ascii=False) + "\n", encoding="utf-8")

    class _Answer:  # the assistant's contract, without loading an embedder
        text, lang, answered, outcome = "请到派出所补领。", "zh", True, "answer"

    svc._assistant = type("A", (), {"ask": lambda self, q: _Answer()})()
    ups = list(svc.ask_stream("身份证丢了怎么补办？", DEFAULT_AVATAR, "wav2lip96"))
    assert ups[0].index == -1 and not ups[0].done
    last = ups[-1]
    assert last.done and last.final_video is None and last.audio.is_file() and last.audio.stat().st_size > 10_000
    assert last.notice == "Lip-sync is not available on this server yet — here is the spoken answer."
    assert "DH_WAV2LIP96_CHECKPOINT" in last.problem


def test_a_spoken_question_without_a_reachable_recogniser_says_so_at_once(svc):
    from services.speech import ASR_UNAVAILABLE

    with pytest.raises(UserFacingError, match="Record or upload"):
        svc.transcribe(None)
    recogniser = svc.speech_recognition()
    assert not recogniser.available and "DH_ASR_MODEL" in recogniser.detail  # the operator's detail...
    t0 = time.perf_counter()
    with pytest.raises(UserFacingError) as err:
        svc.transcribe(ROOT / "examples" / "speech_en.ogg")
    assert str(err.value) == ASR_UNAVAILABLE and "type your question" in ASR_UNAVAILABLE  # ...the visitor's words
    assert time.perf_counter() - t0 < 2  # said at once: nothing loaded or read
    row = {it.part: it for it in svc.status()}["Speech recognition (questions by voice)"]
    assert not row.ok and "DH_ASR_MODEL" in row.details and "DH_" not in row.fix


def test_a_voice_question_offline_returns_the_page_to_rest_with_the_reason(svc):
    pytest.importorskip("gradio")
    import app

    steps = list(app.gradio_errors(app.Handlers(svc, streaming=True).ask_voice)(
        str(ROOT / "examples" / "speech_en.ogg"), str(DEFAULT_AVATAR), "wav2lip96", "auto"))
    assert len(steps) == 1  # one step: no "Finding the answer…" left behind
    question, *shown = steps[0]
    assert question == "" and "not available on this server yet" in app.AskValues(*shown).answer
    assert "not available on this server yet" in app.Handlers(svc).voice_check()  # at the click, outside the queue
    api = list(app.Handlers(svc, streaming=True).ask_voice_api(str(ROOT / "examples" / "speech_en.ogg"),
                                                               str(DEFAULT_AVATAR), "wav2lip96", "auto"))
    question, *shown = api[-1]
    last = app.AskValues(*shown)
    assert "__type__" not in repr(api) and last.suggestions == [] and last.video is None  # plain values for clients


def test_examples_are_small_and_documented():
    ex = ROOT / "examples"
    files = [p for p in ex.iterdir() if p.is_file() and p.suffix in (".png", ".ogg", ".wav", ".mp4", ".jpg")]
    assert {p.name for p in files} >= {"astronaut_512.jpg", "astronaut_closeup.jpg", "astronaut_motion.mp4",
                                       "speech_en.ogg", "speech_zh.ogg"}
    assert sum(p.stat().st_size for p in files) < 500_000
    readme = (ex / "README.md").read_text(encoding="utf-8")
    for p in files:
        assert p.name in readme
    assert "public domain" in readme and "skimage.data.astronaut" in readme


# ------------------------------------------------------------------------------------------ UI wiring
def test_ui_has_scriptable_tabs_and_names_unavailable_models(svc, offline_settings, monkeypatch):
    gr = pytest.importorskip("gradio")
    import app
    from wav2lip384.models import registry

    looked = []
    monkeypatch.setattr(type(svc.models), "weights", lambda self, m: looked.append(m) or (False, "x"))
    demo = app.build_demo(offline_settings, svc)
    assert looked == []  # building the UI looks at no weights file and asks no Hub
    api = {dep.get("api_name"): dep for dep in demo.config["dependencies"]}
    public = {n for n, dep in api.items() if dep.get("api_visibility", "public") == "public"}
    assert {"text_to_avatar", "audio_to_avatar", "ask", "ask_voice", "compare", "status"} <= public
    tabs = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs == ["Ask the assistant", "Talk to it · 对话", "Text → Avatar", "Audio → Avatar", "Compare models",
                    "Status"]
    radios = [b for b in demo.blocks.values() if isinstance(b, gr.Radio) and b.label == "Lip-sync model"]
    assert len(radios) == 4  # Ask, Conversation, Text, Audio
    for r in radios:  # every registry id is a valid value, whatever can run (API clients never get a validation error)
        assert [v for _, v in r.choices] == registry.ids() and r.interactive is not False
    compare = [b for b in demo.blocks.values() if isinstance(b, gr.CheckboxGroup)]
    assert compare and [v for _, v in compare[0].choices] == registry.ids() and compare[0].value == []
    assert any(isinstance(b, gr.DeepLinkButton) for b in demo.blocks.values())
    # at page load: nothing can run, so the pickers say so, each model is marked, and nothing is ticked
    *pickers, ticks = app.Handlers(svc).pickers()
    assert looked  # now it looks
    for p in pickers:
        assert "spoken answer" in p["info"] and all("not available here" in label for label, _ in p["choices"])
        assert p["value"] in registry.ids()
    assert ticks["value"] == []


def test_pickers_and_compare_tick_only_what_can_run(svc, monkeypatch):
    pytest.importorskip("gradio")
    import app

    monkeypatch.setattr(type(svc.models), "weights", lambda self, m: (m == "wav2lip96", ""))
    ask, text, audio, talk, ticks = app.Handlers(svc).pickers()
    assert ask["value"] == text["value"] == audio["value"] == talk["value"] == "wav2lip96"  # the preferred 256 cannot run
    assert ticks["value"] == ["wav2lip96"]
    labels = dict((v, label) for label, v in text["choices"])
    assert "not available" not in labels["wav2lip96"] and "not available here" in labels["wav2lip256"]


def test_user_errors_become_gradio_errors_and_generators_too():
    gr = pytest.importorskip("gradio")
    from app import gradio_errors

    def bad():
        raise UserFacingError("No face found in the avatar.")

    def gen():
        yield 1
        raise UserFacingError("The audio is silent.")

    def crash():
        raise ZeroDivisionError("boom")

    with pytest.raises(gr.Error, match="No face found"):
        gradio_errors(bad)()
    g = gradio_errors(gen)()
    assert next(g) == 1
    with pytest.raises(gr.Error, match="silent"):
        next(g)
    with pytest.raises(gr.Error, match="still running") as err:
        gradio_errors(crash)()
    assert "ZeroDivisionError" not in str(err.value) and "boom" not in str(err.value)  # that is for the log

    def codec():
        raise UserFacingError("Could not read 'a.ogg' as audio: it is damaged or not an audio file (wav, ...). "
                              "ffmpeg said: Invalid data found when processing input")

    with pytest.raises(gr.Error) as err:
        gradio_errors(codec)()
    assert "ffmpeg" not in str(err.value) and "damaged" in str(err.value)


def test_ask_handler_refuses_an_empty_question_before_loading_anything(svc):
    gr = pytest.importorskip("gradio")
    from app import Handlers, gradio_errors

    with pytest.raises(gr.Error, match="type a question"):
        next(gradio_errors(Handlers(svc).ask)("  ", str(DEFAULT_AVATAR), "96", "auto"))
    assert svc._assistant is None  # nothing heavy was loaded for a bad request


def test_streamed_playback_starts_only_when_rendering_stays_ahead():
    from services.answering import release_at

    assert release_at(10.0, 2.0, 0.5) == 0.5  # faster than real time: only the margin
    # half real time: start at R0 = 10 - 0.5 * 9.5 = 5.25 s; playback then ends exactly margin behind rendering
    r0 = release_at(10.0, 0.5, 0.5)
    assert r0 == pytest.approx(5.25)
    t_end = (10.0 - r0) / 0.5  # wall seconds until rendering finishes
    assert t_end + 0.5 <= 10.0 + 1e-9  # played seconds by then (t_end) stay margin behind the 10 s rendered
    assert release_at(10.0, 0.01, 0.5) <= 10.0 and release_at(0.3, 3.0, 0.5) == 0.3


def test_a_did_you_mean_click_answers_that_entry_without_asking_again(svc):
    from types import SimpleNamespace

    pytest.importorskip("gradio")
    import app

    class _Assistant:
        asked: list = []

        def ask(self, q):
            self.asked.append(q)
            return SimpleNamespace(outcome="clarify", answered=False, text="Did you mean: A? / B?", lang="en",
                                   score=0.4, matched_id=None, matched_question=None, suggestions=[], source="kb",
                                   speech="Did you mean one of these?",
                                   candidates=[SimpleNamespace(id="a", question="A?"), SimpleNamespace(id="b", question="B?")])

        def answer_entry(self, entry_id, lang):
            return SimpleNamespace(outcome="answer", answered=True, text=f"answer of {entry_id}", lang=lang, score=1.0,
                                   matched_id=entry_id, matched_question=f"{entry_id.upper()}?", suggestions=[],
                                   source="kb", speech=f"answer of {entry_id}", candidates=[])

    svc._assistant = _Assistant()
    h = app.Handlers(svc, streaming=False)
    first = next(h.ask("something vague", str(DEFAULT_AVATAR), "wav2lip96", "auto"))
    assert "Did you mean" in first.answer and first.suggestions["choices"] == [("A?", "#en:a"), ("B?", "#en:b")]
    question, *shown = next(h.ask_choice("#en:b", str(DEFAULT_AVATAR), "wav2lip96", "auto"))
    picked = app.AskValues(*shown)
    assert question == "B?" and "answer of b" in picked.answer and svc._assistant.asked == ["something vague"]


def test_an_example_row_is_made_once_per_model_and_again_when_its_files_are_gone(svc):
    import shutil
    import threading

    from services.results import VideoResult

    made = []

    def make():
        made.append(1)
        out = svc.dirs.new("example-")
        (out / "speech.wav").write_bytes(b"RIFF")
        return VideoResult(path=None, model="wav2lip96", model_title="Wav2Lip 96", img_size=96, seconds=0.0, fps=0.0,
                           n_frames=0, duration_s=1.0, render_fps=0.0, audio_path=out / "speech.wav")

    threads = [threading.Thread(target=svc.example, args=(("audio", 0, "wav2lip96"), make)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = svc.example(("audio", 0, "wav2lip96"), make)
    assert len(made) == 1  # four clicks at once and one more: made once
    svc.example(("audio", 0, "wav2lip256"), make)
    assert len(made) == 2  # another model: its own result
    shutil.rmtree(first.audio_path.parent)  # swept after keep_outputs_s
    again = svc.example(("audio", 0, "wav2lip96"), make)
    assert len(made) == 3 and again.audio_path.is_file()


def test_visitor_messages_keep_decoder_words_and_settings_for_the_log():
    from services.checks import visitor_message

    msg = visitor_message("x.mp4 could not be read as media: moov atom not found")
    assert msg.startswith("x.mp4 could not be read: it may be damaged") and "moov" not in msg
    msg = visitor_message("Could not read 'a.ogg' as audio: it is damaged or not an audio file (wav, mp3, ...). "
                          "ffmpeg said: Invalid data found when processing input")
    assert msg.endswith("(wav, mp3, ...).") and "ffmpeg" not in msg
    assert visitor_message("The file is too big (DH_MAX_UPLOAD_MB).") == "The file is too big."
    assert visitor_message("No face found in the avatar a.png.") == "No face found in the avatar a.png."


def test_the_apps_pipelines_carry_the_lip_sync_check_of_precision_levers(offline_settings, tmp_path):
    """Issue 25: a faster precision is taken only if the lip-sync check passes; the app builds every pipeline with
    it. Random local weights are not the published ones, so the check says it did not run (and why)."""
    from services.served import with_random_generators

    settings = with_random_generators(offline_settings, ["wav2lip96"], tmp_path / "w")
    svc = AppServices(settings, tmp_parent=tmp_path)
    try:
        gate = svc.models._quality_gate("wav2lip96", None)
        assert gate is not None and not gate.weights_published
        precision = svc.pipeline("wav2lip96").generator.precision
        assert precision["quality_gate"]["present"] is True
        assert precision["quality_gate"]["ran"] is False  # random weights: nothing to compare lip-sync on
    finally:
        svc.close()
