"""qa.asr: speech -> text through sherpa-onnx's SenseVoice recogniser.

The real SenseVoice weights are not reachable from the build machine, so the code path runs on a tiny
model built here with the SenseVoice ONNX interface (inputs x (N, T, 560) LFR features, x_length, language,
text_norm; output CTC logits (N, T + 4, V) whose first four frames are the language / emotion / event / ITN
tags) and random seeded weights. Its transcripts are whatever those weights decode to - real model output,
not meaningful speech recognition. The real model runs in the slow test when it is in the local cache.
"""

from __future__ import annotations

import json
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserFacingError
from qa.asr import DEFAULT_MODEL, SAMPLE_RATE, SpeechRecognizer, transcribe_file
from qa.asr_tiny import N_SPECIAL, TOKENS, build_tiny_sense_voice


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    pytest.importorskip("sherpa_onnx")
    pytest.importorskip("onnx")
    return build_tiny_sense_voice(tmp_path_factory.mktemp("sense_voice"))


def _speechlike(seconds: float, sr: int, seed: int = 1) -> np.ndarray:
    """A deterministic voiced signal (harmonics with a syllable-rate envelope), (n,) float32 in [-1, 1]."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.3 * x / np.abs(x).max() + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def _write_wav(path: Path, samples: np.ndarray, sr: int) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


def test_samples_in_memory_give_text_language_duration_and_timings(tiny_model):
    rec = SpeechRecognizer(str(tiny_model), num_threads=1)
    wav = _speechlike(2.0, SAMPLE_RATE)
    t = rec.transcribe((wav, SAMPLE_RATE))
    vocab_chars = set("".join(TOKENS[N_SPECIAL:]).replace("▁", " "))
    assert t.text and set(t.text) <= vocab_chars  # decoded through tokens.txt, tags removed
    assert t.language == "zh"  # the tiny model's language tag in auto mode
    assert t.seconds == pytest.approx(2.0, abs=1e-3)
    assert t.timings["recognise_s"] > 0 and t.timings["rtf"] == pytest.approx(t.timings["recognise_s"] / 2.0, rel=0.01, abs=1e-4)  # both rounded to 4 places
    assert rec.status()["loaded"] and rec.status()["available"]
    # deterministic: the same audio gives the same text
    assert rec.transcribe((wav, SAMPLE_RATE)).text == t.text


def test_forced_english_reads_the_models_language_tag(tiny_model):
    t = SpeechRecognizer(str(tiny_model), num_threads=1, language="en").transcribe((_speechlike(1.5, SAMPLE_RATE), SAMPLE_RATE))
    assert t.language == "en"


def test_file_path_stereo_44k_int16_and_gradio_order_agree(tiny_model, tmp_path):
    rec = SpeechRecognizer(str(tiny_model), num_threads=1)
    mono = _speechlike(2.0, 44_100)
    stereo = np.stack([mono, mono], axis=1)  # (n, 2)
    path = _write_wav(tmp_path / "q.wav", stereo, 44_100)
    text, lang, seconds, timings = transcribe_file(path, rec)
    assert text and lang == "zh" and seconds == pytest.approx(2.0, abs=0.01)
    assert {"load_s", "decode_audio_s", "recognise_s", "rtf"} <= set(timings)
    # Gradio's microphone value is (sample_rate, int16 samples): accepted in that order too
    pcm = (stereo * 32767).astype(np.int16)
    t2 = rec.transcribe((44_100, pcm))
    assert t2.seconds == pytest.approx(2.0, abs=0.01) and t2.text


def test_bad_audio_is_a_clear_user_error(tiny_model, tmp_path):
    rec = SpeechRecognizer(str(tiny_model), num_threads=1, max_seconds=5)
    with pytest.raises(UserFacingError, match="longer than 5 s"):
        rec.transcribe((np.zeros(6 * SAMPLE_RATE, np.float32), SAMPLE_RATE))
    with pytest.raises(UserFacingError, match="empty"):
        rec.transcribe((np.zeros(0, np.float32), SAMPLE_RATE))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 10)
    with pytest.raises(UserFacingError, match="junk.wav"):
        rec.transcribe(junk)
    with pytest.raises(UserFacingError, match="language"):
        SpeechRecognizer(str(tiny_model), language="fr")


def test_default_model_offline_names_repo_and_setting_at_once():
    rec = SpeechRecognizer("")  # the built-in default; conftest makes the Hub unreachable
    assert rec.model == DEFAULT_MODEL
    st = rec.status()
    assert st["available"] is False and "DH_ASR_MODEL" in st["detail"]
    t0 = time.perf_counter()
    with pytest.raises(UserFacingError) as err:
        rec.transcribe((_speechlike(1.0, SAMPLE_RATE), SAMPLE_RATE))
    assert time.perf_counter() - t0 < 5
    assert DEFAULT_MODEL in str(err.value) and "DH_ASR_MODEL" in str(err.value)


def test_directory_without_tokens_is_explained(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(UserFacingError, match="tokens.txt"):
        SpeechRecognizer(str(tmp_path)).transcribe((_speechlike(1.0, SAMPLE_RATE), SAMPLE_RATE))


def test_instances_share_nothing(tiny_model):
    a = SpeechRecognizer(str(tiny_model), num_threads=1, language="zh")
    b = SpeechRecognizer(str(tiny_model), num_threads=1, language="en")
    wav = (_speechlike(1.0, SAMPLE_RATE), SAMPLE_RATE)
    assert a.transcribe(wav).language == "zh" and b.transcribe(wav).language == "en"
    assert a.transcribe(wav).language == "zh"


def test_asr_bench_cli_prints_rtf_json(tiny_model, tmp_path, capsys):
    from qa.__main__ import main

    path = _write_wav(tmp_path / "a.wav", _speechlike(1.5, SAMPLE_RATE), SAMPLE_RATE)
    assert main(["asr-bench", "--json", "--model", str(tiny_model), "--audio", str(path), "--repeats", "1",
                 "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["available"] and out["rtf"] > 0 and out["files"][0]["seconds"] == pytest.approx(1.5, abs=1e-3)
    assert main(["asr-bench", "--json", "--model", "", "--audio", str(path)]) == 0  # default model, offline
    out = json.loads(capsys.readouterr().out)
    assert out["available"] is False and "DH_ASR_MODEL" in out["reason"]


@pytest.mark.slow
def test_real_speech_files_through_the_pipeline(tiny_model, shared_data):
    """The shared real recordings (16 kHz wav, 48 kHz stereo wav, AAC .m4a) decode and run end to end."""
    rec = SpeechRecognizer(str(tiny_model), num_threads=1)
    for name, seconds in (("wenet_aishell-BAC009S0724W0121_zh.wav", 4.3), ("sadtalker_chinese_news.wav", 8.0),
                          ("dreamtalk_acknowledgement_english.m4a", 16.6)):
        t = rec.transcribe(shared_data / "audio" / name)
        assert t.seconds == pytest.approx(seconds, abs=0.1) and t.text


@pytest.mark.slow
def test_real_model_when_cached_recognises_the_shared_speech(shared_data):
    """Runs only where the real SenseVoice model is in the local cache (never downloads in tests)."""
    rec = SpeechRecognizer("")
    try:
        rec.model_dir()
    except UserFacingError as err:
        pytest.skip(f"real SenseVoice model not available here: {err}")
    zh = rec.transcribe(shared_data / "audio" / "wenet_aishell-BAC009S0724W0121_zh.wav")
    en = rec.transcribe(shared_data / "audio" / "wenet_librispeech-1995-1837-0001_en.wav")
    assert zh.language == "zh" and len(zh.text) >= 8
    assert en.language == "en" and len(en.text.split()) >= 8
    assert zh.timings["rtf"] < 1.0 and en.timings["rtf"] < 1.0
