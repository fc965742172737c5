"""Start-up warm-ups: after them the first request's audio and speech cost what any later one costs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tts import TTS, Engine, EngineStatus, Speech
from tts.espeak import EspeakEngine
from tts.warmup import warm_up as tts_warm_up
from wav2lip384.media import audio

ROOT = Path(__file__).resolve().parents[1]


def test_audio_warm_up_changes_nothing_and_is_cheap_the_second_time():
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    first = audio.warm_up()
    assert first >= 0.0
    before = audio.melspectrogram(wav)
    assert audio.warm_up() < 2.0  # everything is loaded now: ~1 ms (generous bound for a busy CI machine)
    assert np.array_equal(audio.melspectrogram(wav), before)
    assert before.shape == (80, 81) and np.isfinite(before).all()


@pytest.mark.slow  # a new interpreter loads librosa: ~10-25 s
def test_first_mel_in_a_fresh_process_is_fast_after_warm_up():
    """What the start-up thread buys: measured in a new interpreter, where librosa is not loaded yet."""
    code = textwrap.dedent("""
        import time, numpy as np
        from wav2lip384.media import audio
        warm = audio.warm_up()
        t0 = time.perf_counter()
        audio.melspectrogram(np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1)
        print(warm, time.perf_counter() - t0)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         check=True)
    warm, first_mel = (float(v) for v in out.stdout.split()[-2:])
    assert first_mel < 1.5, (warm, first_mel)  # ~0.05 s; 8-25 s without the warm-up on the same machine
    assert warm > first_mel


class _Counting(Engine):
    name = "counting"

    def __init__(self, fail: bool = False):
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    def status(self):
        return EngineStatus(self.name, True, "ok", ("zh", "en"))

    def synthesize(self, text, lang):
        self.calls.append((text, lang))
        if self.fail:
            raise RuntimeError("model file is corrupt")
        return Speech(np.full(1600, 0.1, np.float32), 16000, self.name, lang, text, 0.0)


def test_tts_warm_up_speaks_one_phrase_per_language_with_the_auto_engine():
    eng = _Counting()
    report = tts_warm_up(TTS(engines=[eng, EspeakEngine()]))
    assert set(report) == {"zh", "en"} and all(r.engine == "counting" and not r.error for r in report.values())
    assert [lang for _, lang in eng.calls] == ["zh", "en"]


def test_tts_warm_up_never_raises_and_reports_what_failed():
    report = tts_warm_up(TTS(engines=[_Counting(fail=True)]), langs=("en",))
    assert report["en"].engine == "" and "corrupt" in report["en"].error


def test_tts_warm_up_with_the_offline_engine_makes_the_next_sentence_cheap():
    t = TTS(engine="espeak")
    report = tts_warm_up(t)
    assert {r.engine for r in report.values()} == {"espeak"}
    sp = t.synthesize("您好，请问有什么可以帮您？", lang="zh")
    assert sp.duration_s > 1.0 and sp.seconds_spent < 2.0


def test_warm_up_asks_one_question_and_transcribes_once_where_spoken_questions_work(monkeypatch):
    """The warm-up pays the assistant's first question and the speech recogniser's first transcription (which
    loads its weights), the recogniser only where it is available."""
    from types import SimpleNamespace

    from common.settings import Settings
    from services import AppServices
    from services.results import RecognizerState
    from services.warmup import WARM_QUESTION

    monkeypatch.setattr("tts.warmup.warm_up", lambda tts: {})  # paid elsewhere in this file
    monkeypatch.setattr("wav2lip384.media.audio.warm_up", lambda: 0.0)
    svc = AppServices(Settings())
    try:
        asked, heard = [], []
        monkeypatch.setattr(svc, "ask", lambda question, *a, **k: asked.append(question))
        monkeypatch.setattr(svc, "recognizer", lambda: SimpleNamespace(transcribe=heard.append))
        monkeypatch.setattr(svc, "speech_recognition", lambda: RecognizerState(True, "a stand-in"))
        seconds = svc.warm_up(models=())
        assert asked == [WARM_QUESTION] and len(heard) == 1 and heard[0][1] == 16000 and len(heard[0][0]) == 16000
        assert {"assistant", "speech recognition"} <= set(seconds)
        monkeypatch.setattr(svc, "speech_recognition", lambda: RecognizerState(False, "offline, not cached"))
        svc.warm_up(models=())
        assert len(heard) == 1  # unavailable: nothing loaded, nothing downloaded
    finally:
        svc.close()
