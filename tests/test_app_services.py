"""The app's services layer and UI wiring, without loading any model (fast).

What a user sees here: clear messages for bad input, the status panel saying what is missing and what to do,
384 choices disabled (not hidden) without 384 weights, temporary files cleaned up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserFacingError
from common.services import (
    DEFAULT_AVATAR,
    AppServices,
    RequestDirs,
    check_question,
    check_speech,
    count_faces,
    split_speech,
)
from common.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline_settings(tmp_path) -> Settings:
    """No lip-sync weights at all (the Hub is offline in tests), caches in tmp."""
    return Settings(wav2lip96_checkpoint=str(tmp_path / "missing96"), wav2lip384_checkpoint="",
                    cache_dir=str(tmp_path / "cache"))


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
    with pytest.raises(UserFacingError, match="limit is 0.5 s"):
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
        svc._check_avatar(None)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(UserFacingError, match="unsupported type"):
        svc._check_avatar(txt)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(UserFacingError, match="not a valid PNG"):
        svc._check_avatar(fake)
    with pytest.raises(UserFacingError, match="No face found"):
        svc._check_avatar(_write_png(tmp_path / "wall.png", np.full((200, 200, 3), 120, np.uint8)))
    with pytest.raises(UserFacingError, match="2 faces found"):
        svc._check_avatar(_write_png(tmp_path / "two.png", np.concatenate([astronaut, astronaut], axis=1)))
    assert svc._check_avatar(DEFAULT_AVATAR) == (DEFAULT_AVATAR, "image")


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


def test_missing_weights_are_reported_with_what_to_do_and_requests_refused(svc):
    status = {it.part: it for it in svc.status()}
    w384 = status["Wav2Lip-384 weights"]
    assert not w384.ok and "DH_WAV2LIP384_CHECKPOINT" in w384.fix and "train" in w384.fix
    w96 = status["Wav2Lip-96 weights"]
    assert not w96.ok and "DH_WAV2LIP96_CHECKPOINT" in w96.fix
    assert {"Face detector", "Question embedder", "TTS engine"} <= set(status)
    assert status["TTS engine"].ok  # espeak-ng works offline
    assert "DH_S3FD_CHECKPOINT" in status["Face detector"].fix or "s3fd" in status["Face detector"].active
    md = svc.status_markdown()
    assert "| part | state | active | what to do |" in md and "| Wav2Lip-384 weights | **missing** |" in md
    assert svc.available_sizes() == []
    with pytest.raises(UserFacingError, match="384×384 model is unavailable.*DH_WAV2LIP384_CHECKPOINT"):
        svc.text_to_avatar("hello", DEFAULT_AVATAR, 384)
    with pytest.raises(UserFacingError, match="96×96 model is unavailable"):
        svc.audio_to_avatar(ROOT / "examples" / "speech_en.ogg", DEFAULT_AVATAR, 96)
    with pytest.raises(UserFacingError, match="Unknown model size"):
        svc.weights(128)


def test_examples_are_small_and_documented():
    ex = ROOT / "examples"
    files = [p for p in ex.iterdir() if p.is_file() and p.suffix in (".png", ".ogg", ".wav", ".mp4", ".jpg")]
    assert {p.name for p in files} >= {"astronaut.png", "speech_en.ogg", "speech_zh.ogg"}
    assert sum(p.stat().st_size for p in files) < 500_000
    readme = (ex / "README.md").read_text(encoding="utf-8")
    for p in files:
        assert p.name in readme
    assert "public domain" in readme and "skimage.data.astronaut" in readme


# ------------------------------------------------------------------------------------------ UI wiring
def test_ui_has_four_scriptable_tabs_and_disables_384_without_weights(svc, offline_settings):
    gr = pytest.importorskip("gradio")
    import app

    demo = app.build_demo(offline_settings, svc)
    api_names = {dep.get("api_name") for dep in demo.config["dependencies"]}
    assert {"text_to_avatar", "audio_to_avatar", "ask", "compare"} <= api_names
    tabs = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs[:4] == ["Text → Avatar", "Audio → Avatar", "Ask the assistant", "96 vs 384"] and "Status" in tabs
    radios = [b for b in demo.blocks.values() if isinstance(b, gr.Radio) and b.label == "Lip-sync model"]
    assert radios and all(r.interactive is False and "384 is disabled" in r.info for r in radios)
    assert all(("384", "384") in [(str(v), str(v)) for _, v in r.choices] for r in radios)  # shown, not hidden
    assert any(isinstance(b, gr.DeepLinkButton) for b in demo.blocks.values())


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
    with pytest.raises(gr.Error, match="still running"):
        gradio_errors(crash)()


def test_ask_handler_refuses_an_empty_question_before_loading_anything(svc):
    gr = pytest.importorskip("gradio")
    from app import Handlers, gradio_errors

    with pytest.raises(gr.Error, match="type a question"):
        next(gradio_errors(Handlers(svc).ask)("  ", str(DEFAULT_AVATAR), "96", "auto"))
    assert svc._assistant is None  # nothing heavy was loaded for a bad request
