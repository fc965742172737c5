"""Input checks of the app layer: each raises a UserFacingError that says what to do, before any model runs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from common.errors import UserFacingError

log = logging.getLogger(__name__)

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
        raise UserFacingError(f"The {what} is {size_mb:.0f} MB; the limit here is {max_mb:g} MB. Please use a smaller "
                              "file.")


def check_speech(wave: np.ndarray, sr: int, max_seconds: float, name: str = "audio") -> None:
    """Reject speech the avatar cannot lip-sync: too short, too long or silent."""
    seconds = len(wave) / float(sr)
    if seconds < MIN_AUDIO_SECONDS:
        raise UserFacingError(f"The {name} is only {seconds:.2f} s long; record at least {MIN_AUDIO_SECONDS} s of speech.")
    if seconds > max_seconds + 0.05:
        raise UserFacingError(f"The {name} is {seconds:.0f} s long; the limit here is {max_seconds:g} s. Please use a "
                              "shorter one.")
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if not np.isfinite(rms) or rms < SILENCE_RMS:
        log.info("%s is silent: RMS level %.0f dBFS", name, 20 * np.log10(max(rms, 1e-12)))
        raise UserFacingError(f"The {name} is silent: there is no speech to lip-sync. Check the microphone or pick "
                              "another file.")


def count_faces(image: np.ndarray, detector) -> int:
    """Faces the detector sees in one RGB frame (H, W, 3), large enough to matter: the pipeline's own rule
    (:func:`wav2lip384.faces.count_faces`), so the upload check and the rendering agree on one image."""
    from wav2lip384.faces import count_faces as faces_that_matter

    return faces_that_matter(detector.detect_batch([np.ascontiguousarray(image)])[0])


# Technical tails the layers below add to a message a visitor reads (a decoder's own words, a setting's name):
# kept in the log, cut from what is shown.
_DECODER_SAID = re.compile(r"\s*(?:ffmpeg said:|could not be read as media:).*$", re.S)
_SETTING = re.compile(r"\s*\((?:set )?DH_[A-Z0-9_]+[^)]*\)")


def visitor_message(text: str) -> str:
    """``text`` of a user-facing error in plain words: a decoder's message and setting names go to the log."""
    plain = _SETTING.sub("", text)
    said = _DECODER_SAID.search(plain)
    if said:
        head = plain[:said.start()].rstrip(" .:")
        plain = (f"{head}." if "damaged" in head else
                 f"{head} could not be read: it may be damaged, or not a photo, video or audio file. Please try "
                 "another file.")
    if plain != text:
        log.info("shown to the visitor as %r: %s", plain, text)
    return plain
