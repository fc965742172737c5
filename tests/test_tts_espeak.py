"""The offline voice (espeak-ng) through the public TTS API: real audio, plausible length, clear errors."""

import threading

import numpy as np
import pytest

from common.errors import UserFacingError
from tts import TTS, Speech, to_lipsync_audio

ZH = "您好，请问有什么可以帮您？"
EN = "Hello, how can I help you today?"


@pytest.fixture(scope="module")
def tts():
    return TTS(engine="espeak")


def _rms(w):
    return float(np.sqrt(np.mean(np.square(w, dtype=np.float64))))


@pytest.mark.parametrize("text, lang, band", [
    (ZH, "zh", (0.12, 0.6)),   # seconds per Chinese character (people speak ~4-5 chars/s)
    (EN, "en", (0.03, 0.15)),  # seconds per English letter incl. spaces (~12-15 chars/s)
])
def test_speech_is_audible_and_of_plausible_length(tts, text, lang, band):
    sp = tts.synthesize(text)  # language detected
    assert isinstance(sp, Speech) and sp.lang == lang and sp.engine == "espeak" and sp.text == text
    assert sp.wave.dtype == np.float32 and sp.wave.ndim == 1 and np.isfinite(sp.wave).all()
    assert sp.sample_rate == 22050
    assert _rms(sp.wave) > 0.01 and np.abs(sp.wave).max() <= 1.0
    per_char = sp.duration_s / len(text)
    assert band[0] < per_char < band[1], per_char
    assert sp.seconds_spent > 0


def test_stream_yields_one_speech_per_sentence(tts):
    parts = list(tts.stream("您好。请拨打12345热线。Thank you."))  # detected zh for the whole answer
    assert len(parts) == 3
    assert all(p.duration_s > 0.3 and _rms(p.wave) > 0.01 for p in parts)
    whole = tts.synthesize("您好。请拨打12345热线。")
    assert whole.extra["sentences"] == 2 and "幺二三四五" in whole.extra["normalized"]


def test_explicit_language_overrides_detection(tts):
    assert tts.synthesize("OK", lang="zh").lang == "zh"


@pytest.mark.parametrize("bad", ["", "   \n"])
def test_empty_text_gives_a_clear_error(tts, bad):
    with pytest.raises(UserFacingError, match="empty"):
        tts.synthesize(bad)


def test_over_long_text_gives_a_clear_error():
    t = TTS(engine="espeak", max_chars=50)
    with pytest.raises(UserFacingError, match="too long.*limit is 50"):
        t.synthesize("好" * 51)
    with pytest.raises(UserFacingError, match="too long"):
        t.stream("好" * 51)  # raised at the call, before any audio


def test_unknown_engine_and_language_are_user_errors():
    with pytest.raises(UserFacingError, match="Unknown TTS engine"):
        TTS(engine="nope")
    with pytest.raises(UserFacingError, match="Unsupported language"):
        TTS(engine="espeak").synthesize("hi", lang="fr")


def test_concurrent_requests_do_not_mix_audio(tts):
    """espeak-ng is global C state: two threads at once must each get exactly their own sentence."""
    ref = {t: tts.synthesize(t, engine="espeak").wave for t in (ZH, EN)}
    out, errors = {}, []

    def run(t):
        try:
            out[t] = tts.synthesize(t, engine="espeak").wave
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(t,)) for t in (ZH, EN)]
    [th.start() for th in threads]
    [th.join() for th in threads]
    assert not errors
    for t in (ZH, EN):
        # espeak-ng adds random pitch flutter, so samples differ run to run; lengths stay within a few
        # samples, while audio mixed between the two requests would be off by a second or more.
        assert abs(len(out[t]) - len(ref[t])) < 0.01 * len(ref[t])
        assert _rms(out[t]) > 0.01


def test_lipsync_audio_is_16k_mono_dithered(tts):
    sp = tts.synthesize(ZH)
    a = to_lipsync_audio(sp.wave, sp.sample_rate)
    assert a.dtype == np.float32 and a.ndim == 1
    assert abs(len(a) / 16000 - sp.duration_s) < 0.01
    silent = to_lipsync_audio(np.zeros(44100, np.float32), 44100)
    assert len(silent) == 16000 and 0 < np.abs(silent).max() < 1e-3  # dither present, inaudible
    np.testing.assert_array_equal(silent, to_lipsync_audio(np.zeros(44100, np.float32), 44100))  # deterministic
    stereo = to_lipsync_audio(np.zeros((32000, 2), np.float32), 32000)
    assert stereo.shape == (16000,)


@pytest.mark.slow  # librosa's first STFT/mel call takes a few seconds
def test_silent_answer_gives_no_nan_mel():
    import librosa

    silent = to_lipsync_audio(np.zeros(16000 * 2, np.float32), 48000)
    mel = librosa.feature.melspectrogram(y=silent, sr=16000, n_fft=800, hop_length=200, win_length=800, n_mels=80)
    # a plain log-mel (no floor): digital silence would give log(0) = -inf; the dither keeps it finite
    logmel = np.log(mel)
    assert np.isfinite(logmel).all()
    try:
        from wav2lip384.media.audio import melspectrogram
    except ImportError:
        return  # the lip-sync package's mel is not there yet; librosa's check above stands
    assert np.isfinite(melspectrogram(silent)).all()


def test_streamed_sentences_carry_written_and_spoken_text(tts):
    parts = list(tts.stream("请拨打12345热线。谢谢！"))
    assert [p.text for p in parts] == ["请拨打12345热线。", "谢谢！"]
    assert parts[0].extra["normalized"] == "请拨打幺二三四五热线。"
