"""Audio for lip-sync: Wav2Lip's mel spectrogram and per-frame mel windows. Decoding (``load_audio``) and the one
resampler (``resample_mono``) live in :mod:`common.audio` and are re-exported here.

This module is the one owner of the mel settings (:class:`wav2lip384.models.config.AudioConfig`); training,
inference and evaluation all call it, so the features a model was trained on are the features it sees.
"""

from __future__ import annotations

import functools

import numpy as np

from common.audio import DEFAULT_MAX_SECONDS, ffmpeg_exe, load_audio, resample_mono  # noqa: F401  (re-exported)
from wav2lip384.models.config import AudioConfig

SAMPLES_PER_FRAME = 16000 // 25  # 640 samples of 16 kHz speech per 25 fps video frame


# ---------------------------------------------------------------------------------------------------------
# Mel spectrogram (the original Wav2Lip recipe, ``audio.py`` + ``hparams.py`` of Rudrabha/Wav2Lip)
# ---------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _mel_basis(cfg: AudioConfig) -> np.ndarray:
    import librosa

    # (80, n_fft/2 + 1) Slaney-normalised filters, librosa's defaults as the original used them.
    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.num_mels, fmin=cfg.fmin,
                               fmax=cfg.fmax)


def melspectrogram(wav: np.ndarray, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """(T_samples,) float at ``cfg.sample_rate`` -> (80, 1 + T_samples // hop) float32 in [-4, 4].

    pre-emphasis -> |STFT| (centre-padded) -> mel -> dB with a floor at ``min_level_db`` -> minus
    ``ref_level_db`` -> symmetric normalisation to [-max_abs, max_abs], clipped.
    Digital silence hits the dB floor (no log of zero), so it maps to -4 without NaN.
    """
    import librosa

    y = np.asarray(wav, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"expected non-empty mono samples (T,), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("audio samples contain NaN or infinity")
    # zi=0 makes librosa's pre-emphasis identical to the original scipy lfilter([1, -k], [1], wav)
    # (librosa's default initial state 2*y[0]-y[1] would change the first sample).
    y = librosa.effects.preemphasis(y, coef=cfg.preemphasis, zi=np.zeros(1))
    spec = np.abs(librosa.stft(y=y, n_fft=cfg.n_fft, hop_length=cfg.hop_size, win_length=cfg.win_size))
    mel = _mel_basis(cfg) @ spec  # (80, frames)
    # 20*log10(max(amin, x)): amin = 10^(min_level_db/20) = 1e-5 as the original's _amp_to_db.
    db = librosa.amplitude_to_db(mel, ref=1.0, amin=10.0 ** (cfg.min_level_db / 20.0), top_db=None)
    db = db - cfg.ref_level_db
    return _normalize(db, cfg).astype(np.float32)


def warm_up(cfg: AudioConfig = AudioConfig()) -> float:
    """Pay the audio path's one-off start-up cost now, so the first request does not; returns the seconds spent.

    The first mel in a process is slow (measured 8-14 s on a busy 2-core machine, ~100 s when numba's cache
    is empty) although a mel of seconds of audio then takes milliseconds: librosa loads scipy.signal,
    scikit-learn and numba on first use, and numba compiles librosa's kernels unless its on-disk cache holds
    them (it lives next to librosa in ``__pycache__``, or in ``NUMBA_CACHE_DIR`` when that is set). One
    mel of 0.2 s of a tone and one resampling do all of that. Safe to call again (then it costs ~1 ms) and
    from a background thread (Python's import lock serialises the imports with a concurrent request).
    """
    import time

    t0 = time.perf_counter()
    n = cfg.sample_rate // 5
    tone = (0.1 * np.sin(2 * np.pi * 220.0 * np.arange(n) / cfg.sample_rate)).astype(np.float32)  # (n,)
    melspectrogram(tone, cfg)  # (80, 1 + n // hop)
    resample_mono(tone, cfg.sample_rate, cfg.sample_rate // 2)
    ffmpeg_exe()  # locates (and on first use unpacks/checks) the bundled ffmpeg binary load_audio runs
    return time.perf_counter() - t0


def _normalize(db: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    # Hand-written: this symmetric rescaling of [min_level_db, 0] dB to [-4, 4] is Wav2Lip's own
    # convention (hparams symmetric_mels + allow_clipping_in_normalization); no library provides it.
    m = cfg.max_abs_value
    return np.clip((2.0 * m) * ((db - cfg.min_level_db) / (-cfg.min_level_db)) - m, -m, m)


# ---------------------------------------------------------------------------------------------------------
# Windows per video frame
# ---------------------------------------------------------------------------------------------------------
def mel_start(frame_index: int, fps: float, cfg: AudioConfig = AudioConfig()) -> int:
    """First mel frame of video frame ``frame_index``: int(80 * (i / fps)), as Wav2Lip's training code
    (its inference code's int(i * 80/fps) gives the same integers for 24/25/29.97/30/60 fps)."""
    return int(cfg.mel_fps * (frame_index / fps))


def n_video_frames(mel: np.ndarray, fps: float, cfg: AudioConfig = AudioConfig()) -> int:
    """How many video frames the original inference loop makes for this mel (the last one right-aligned)."""
    t = max(mel.shape[1], cfg.mel_step_size)
    i = 0
    while mel_start(i, fps, cfg) + cfg.mel_step_size <= t:
        i += 1
    return i + 1


def frames_for_audio(n_samples: int, fps: float, cfg: AudioConfig = AudioConfig()) -> int:
    """Video frames that cover ``n_samples`` of audio at ``fps`` (rounded; at least 1). Pass it as
    ``mel_windows(..., n_frames=...)`` to make a video as long as the audio (the original loop stops up to
    ~0.15 s early because its last window must fit inside the mel)."""
    return max(1, int(round(n_samples / cfg.sample_rate * fps)))


# The Wav2Lip generators (the public checkpoints and ours) were trained with frame f driven by the mel window
# that starts one 25-fps frame EARLIER (the original ``get_segmented_mels``: ``crop_audio_window(spec, i - 2)``
# for i = f + 1; evidence and citations in wav2lip384/train/data.py). The original inference used offset 0, so
# its mouths lead the sound by 40 ms. Our pipeline passes this offset, so inference matches training.
GENERATOR_WINDOW_OFFSET_S = -1.0 / 25.0


def window_start(frame_index: int, fps: float, offset_s: float = 0.0, cfg: AudioConfig = AudioConfig()) -> int:
    """First mel frame of video frame ``frame_index`` shifted by ``offset_s`` seconds (clamped at 0). When the
    offset is a whole number of frames at ``fps`` (e.g. -40 ms at 25 fps) it is exactly ``mel_start(i + k)``,
    the formula training uses, so the windows are bit-identical to training's."""
    k = offset_s * fps
    if abs(k - round(k)) < 1e-9:
        return max(0, mel_start(frame_index + int(round(k)), fps, cfg))
    return max(0, int(cfg.mel_fps * (frame_index / fps + offset_s) + 1e-6))


def mel_windows(mel: np.ndarray, fps: float, n_frames: int | None = None,
                cfg: AudioConfig = AudioConfig(), offset_s: float = 0.0) -> np.ndarray:
    """(80, T) mel -> (N, 80, 16) float32: one window of ``mel_step_size`` frames per video frame.

    Window i starts at :func:`window_start` (``offset_s`` 0: :func:`mel_start`, the original inference; the
    pipeline passes :data:`GENERATOR_WINDOW_OFFSET_S`, the training alignment); a window that would run past the
    end is right-aligned to the end (the original inference loop, which also stops there). ``n_frames=None``
    gives the original's count; an explicit ``n_frames`` gives exactly that many (every window past the end is
    the last one).
    Hand-written because no library slices spectrograms per video frame this way. A mel shorter than one
    window (< 0.2 s of audio) is padded on the right with silence (-max_abs) instead of failing.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    step = cfg.mel_step_size
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2 or mel.shape[0] != cfg.num_mels:
        raise ValueError(f"expected a ({cfg.num_mels}, T) mel spectrogram, got {mel.shape}")
    if mel.shape[1] < step:
        mel = np.pad(mel, ((0, 0), (0, step - mel.shape[1])), constant_values=-cfg.max_abs_value)
    t = mel.shape[1]
    count = n_video_frames(mel, fps, cfg) if n_frames is None else int(n_frames)
    if count <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    starts = np.array([min(window_start(i, fps, offset_s, cfg), t - step) for i in range(count)])
    idx = starts[:, None] + np.arange(step)[None, :]  # (N, 16)
    return np.ascontiguousarray(mel[:, idx].transpose(1, 0, 2))  # (80, N, 16) -> (N, 80, 16)
