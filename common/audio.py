"""Generic audio for every package: decode any file to mono float32 samples (``load_audio``, through the ffmpeg
binary shipped by ``imageio-ffmpeg``, called with an argument list through pipes, never a shell), and the ONE
resampler (:func:`resample`: soxr at high quality, the backend librosa itself uses).

ffmpeg reads wav/mp3/m4a/aac/flac/ogg/opus and the audio track of video files, downmixes and resamples in one
pass. ``qa`` (speech recognition), ``tts`` and ``wav2lip384`` all use these; none has its own copy.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from common.errors import UserFacingError

DEFAULT_MAX_SECONDS = 300.0
_DECODE_TIMEOUT_S = 300.0


def ffmpeg_exe() -> str:
    """The bundled ffmpeg binary (located, and on first use unpacked/checked, by imageio-ffmpeg)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def load_audio(path: str | os.PathLike, *, sample_rate: int = 16000,
               max_seconds: float | None = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Decode an audio (or video) file to mono float32 samples in [-1, 1] at ``sample_rate``.

    Raises :class:`UserFacingError` for a missing, empty, unreadable or non-audio file, for a file without
    any sound, and for audio longer than ``max_seconds`` (``None`` = no limit).
    """
    p = Path(os.fspath(path)).expanduser()
    name = p.name
    if not p.is_file():
        raise UserFacingError(f"Audio file {name!r} was not found.")
    if p.stat().st_size == 0:
        raise UserFacingError(f"Audio file {name!r} is empty (0 bytes).")

    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
           "-i", str(p.resolve()),
           "-map", "0:a:0",  # first audio stream; a clear error when there is none
           "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(int(sample_rate)),
           # Downmix = mean of the channels (as librosa.load / the original Wav2Lip); ffmpeg's default
           # stereo->mono matrix is 0.707*(L+R), which exceeds [-1, 1] on loud audio.
           "-rematrix_maxval", "1.0"]
    if max_seconds is not None:
        # Decode a little past the limit only: enough to tell "too long" without decoding hours of audio.
        cmd += ["-t", f"{float(max_seconds) + 1.0:.3f}"]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=_DECODE_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise UserFacingError(f"Decoding audio file {name!r} took longer than {_DECODE_TIMEOUT_S:.0f} s; "
                              "please upload a shorter or simpler file.") from None
    if proc.returncode != 0:
        detail = _last_line(proc.stderr).replace(str(p.resolve()), name)  # no server paths in user messages
        if "matches no streams" in detail:
            raise UserFacingError(f"File {name!r} contains no audio track.")
        raise UserFacingError(f"Could not read {name!r} as audio: it is damaged or not an audio file "
                              f"(wav, mp3, m4a, flac, ogg, ...). ffmpeg said: {detail}")
    wav = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if wav.size == 0:
        raise UserFacingError(f"Audio file {name!r} contains no sound samples.")
    if max_seconds is not None and wav.size > int(round(max_seconds * sample_rate)) + sample_rate // 100:
        raise UserFacingError(f"Audio file {name!r} is longer than the maximum of {max_seconds:g} s; "
                              "please upload a shorter clip.")
    if not np.all(np.isfinite(wav)):
        wav = np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0)
    return wav


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no details"


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """(T,) float audio at ``sr_in`` -> float32 at ``sr_out``: soxr at high quality (librosa's own default backend;
    imports in ~0.3 s vs ~2 s for scipy.signal). The one resampler of the project."""
    wave = np.asarray(wave, dtype=np.float32)
    if int(sr_in) == int(sr_out):
        return wave
    import soxr

    return soxr.resample(wave, int(sr_in), int(sr_out), quality="HQ").astype(np.float32, copy=False)


def resample_mono(wav: np.ndarray, orig_sr: int, target_sr: int = 16000) -> np.ndarray:
    """In-memory audio (e.g. TTS output, (T,) or (T, C) / (C, T)) -> mono float32 at ``target_sr``."""
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim == 2:  # channels on the shorter axis
        x = x.mean(axis=0 if x.shape[0] < x.shape[1] else 1)
    if x.ndim != 1:
        raise ValueError(f"expected (T,) or 2-D audio, got shape {x.shape}")
    return resample(x, orig_sr, target_sr)
