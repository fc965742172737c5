"""Input checks of the app layer: each raises a UserFacingError that says what to do, before any model runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import UserFacingError

MAX_QUESTION_CHARS = 500
MIN_AUDIO_SECONDS = 0.3
SILENCE_RMS = 10 ** (-55 / 20)  # below -55 dBFS RMS the upload is treated as silence


def check_question(question: str | None) -> str:
    q = (question or "").strip()
    if not q:
        raise UserFacingError("Please type a question first. 请先输入一个问题。")
    if len(q) > MAX_QUESTION_CHARS:
        raise UserFacingError(f"The question is too long ({len(q)} characters); keep it under {MAX_QUESTION_CHARS}. "
                              f"问题太长，请少于 {MAX_QUESTION_CHARS} 个字符。")
    return q


def check_upload_size(path: str | Path, max_mb: float, what: str) -> None:
    size_mb = Path(path).stat().st_size / 2**20
    if size_mb > max_mb:
        raise UserFacingError(f"The {what} is {size_mb:.0f} MB; the limit is {max_mb:g} MB (DH_MAX_UPLOAD_MB).")


def check_speech(wave: np.ndarray, sr: int, max_seconds: float, name: str = "audio") -> None:
    """Reject speech the avatar cannot lip-sync: too short, too long or silent."""
    seconds = len(wave) / float(sr)
    if seconds < MIN_AUDIO_SECONDS:
        raise UserFacingError(f"The {name} is only {seconds:.2f} s long; record at least {MIN_AUDIO_SECONDS} s of speech.")
    if seconds > max_seconds + 0.05:
        raise UserFacingError(f"The {name} is {seconds:.0f} s long; the limit is {max_seconds:g} s (DH_MAX_AUDIO_SECONDS).")
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if not np.isfinite(rms) or rms < SILENCE_RMS:
        raise UserFacingError(f"The {name} is silent (level {20 * np.log10(max(rms, 1e-12)):.0f} dBFS): "
                              "there is no speech to lip-sync. Check the microphone or pick another file.")


def count_faces(image: np.ndarray, detector) -> int:
    """Faces the detector sees in one RGB frame (H, W, 3), large enough to matter: the pipeline's own rule
    (:func:`wav2lip384.faces.count_faces`), so the upload check and the rendering agree on one image."""
    from wav2lip384.faces import count_faces as faces_that_matter

    return faces_that_matter(detector.detect_batch([np.ascontiguousarray(image)])[0])
