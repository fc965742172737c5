"""Audio decoding (ffmpeg), Wav2Lip mel features and per-frame windows."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from common.errors import UserFacingError
from wav2lip384.media.audio import frames_for_audio, load_audio, mel_windows, melspectrogram
from wav2lip384.models.config import AudioConfig

SR = 16000


def _tone(seconds: float, sr: int, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([x, 0.5 * x], axis=1)[:, :channels] if channels > 1 else x


def _reference_mel(wav: np.ndarray) -> np.ndarray:
    """The original Wav2Lip audio.py formulas written out with numpy/scipy, to pin our librosa calls."""
    import librosa
    from scipy.signal import lfilter

    y = lfilter([1, -0.97], [1], wav)
    spec = np.abs(librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800))
    mel = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ spec
    db = 20 * np.log10(np.maximum(np.exp(-100 / 20 * np.log(10)), mel)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def test_mel_frame_count_for_known_duration_and_matches_original_recipe(seeded):
    wav = (np.random.randn(SR * 2) * 0.1).astype(np.float32)  # exactly 2 s
    mel = melspectrogram(wav)
    assert mel.shape == (80, 1 + 2 * SR // 200) == (80, 161)  # 80 mel frames per second, centred STFT
    assert mel.dtype == np.float32 and mel.min() >= -4 and mel.max() <= 4
    np.testing.assert_allclose(mel, _reference_mel(wav.astype(np.float64)), atol=1e-4)


def test_digital_silence_gives_no_nan():
    mel = melspectrogram(np.zeros(SR, dtype=np.float32))
    assert np.isfinite(mel).all()
    assert np.all(mel == -4.0)


def test_mel_windows_per_frame_right_aligned_last():
    cfg = AudioConfig()
    mel = np.tile(np.arange(161, dtype=np.float32), (80, 1))  # value = mel frame index
    w = mel_windows(mel, fps=25)
    # original loop: starts int(80*i/25) while start+16 <= 161, then one right-aligned window
    assert w.shape == (47, 80, cfg.mel_step_size)
    assert w[1, 0, 0] == 3 and w[5, 0, 0] == 16 and w[-1, 0, -1] == 160 and w[-1, 0, 0] == 145
    fixed = mel_windows(mel, fps=25, n_frames=frames_for_audio(2 * SR, 25))
    assert fixed.shape == (50, 80, 16) and fixed[-1, 0, -1] == 160
    short = mel_windows(mel[:, :5], fps=25, n_frames=1)  # shorter than one window: padded with silence
    assert short.shape == (1, 80, 16) and short[0, 0, 4] == 4 and short[0, 0, 5] == -4


def test_load_audio_resamples_48k_stereo_to_16k_mono(tmp_path):
    path = tmp_path / "stereo48k.wav"
    sf.write(path, _tone(1.5, 48000, channels=2), 48000)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - int(1.5 * SR)) <= 2
    # channel mean (0.3 + 0.15) / 2 = 0.225 peak, as librosa.load would give
    assert 0.2 < np.abs(wav).max() < 0.25


def test_load_audio_rejects_bad_inputs_clearly(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(range(256)) * 4)
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all\n" * 50)
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    for path in (corrupt, text, empty, tmp_path / "missing.wav"):
        with pytest.raises(UserFacingError, match=path.name):
            load_audio(path)


def test_load_audio_too_long_and_silent_file(tmp_path):
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(3 * SR, dtype=np.float32), SR)
    with pytest.raises(UserFacingError, match="longer than the maximum of 2 s"):
        load_audio(long, max_seconds=2.0)
    assert len(load_audio(long, max_seconds=3.0)) == 3 * SR  # exactly at the limit is fine
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(UserFacingError, match="no sound"):
        load_audio(zero)


@pytest.mark.slow
@pytest.mark.parametrize("name,seconds", [
    ("sadtalker_chinese_news.wav", 8.0),  # 48 kHz stereo
    ("dreamtalk_acknowledgement_english.m4a", 16.6),  # AAC in .m4a
    ("wenet_aishell-BAC009S0724W0121_zh.wav", 4.3),  # 16 kHz mono
])
def test_load_audio_on_real_files(shared_data, name, seconds):
    wav = load_audio(shared_data / "audio" / name)
    assert wav.ndim == 1 and wav.dtype == np.float32
    assert abs(len(wav) / SR - seconds) < 0.1
    # channel mean, not ffmpeg's default 0.707*(L+R) (which reaches ~1.41 on this clipped 48 kHz file);
    # a little resampling overshoot above 1.0 is expected on clipped sources
    assert 0.01 < np.abs(wav).max() < 1.2
    mel = melspectrogram(wav)
    assert np.isfinite(mel).all() and mel.shape[1] == 1 + len(wav) // 200


@pytest.mark.slow
def test_load_audio_of_a_video_file_takes_its_soundtrack(shared_data):
    wav = load_audio(shared_data / "video" / "retalking_face2.mp4")
    assert abs(len(wav) / SR - 5.0) < 0.2


def test_resample_mono_for_in_memory_audio():
    from wav2lip384.media.audio import resample_mono

    stereo = _tone(0.5, 48000, channels=2)  # (T, 2)
    for arr in (stereo, stereo.T):
        out = resample_mono(arr, 48000)
        assert out.dtype == np.float32 and out.shape == (8000,)
    assert resample_mono(np.zeros(160), 16000).shape == (160,)


def test_the_training_alignment_offset_gives_trainings_windows():
    from wav2lip384.media.audio import GENERATOR_WINDOW_OFFSET_S, mel_start, mel_windows, window_start
    from wav2lip384.train.data import inference_window_start

    mel = np.arange(80 * 200, dtype=np.float32).reshape(80, 200)
    plain = mel_windows(mel, 25.0, n_frames=30)
    shifted = mel_windows(mel, 25.0, n_frames=30, offset_s=GENERATOR_WINDOW_OFFSET_S)
    assert np.array_equal(shifted[1:], plain[:-1])  # frame i now gets what frame i-1 got: 40 ms earlier
    assert np.array_equal(shifted[0], plain[0])  # clamped at the start
    for fps in (25.0, 30.0, 29.97):
        for i in range(60):
            assert window_start(i, fps, GENERATOR_WINDOW_OFFSET_S) == inference_window_start(i, fps)
    assert window_start(10, 25.0) == mel_start(10, 25.0)
