"""The engine interface, the registry that picks an engine, and the ``TTS`` facade the app uses.

An engine turns one already-normalised sentence-sized text in one language into a float32 waveform at
its native rate. ``TTS`` does everything around that: validation, language detection, normalisation,
sentence splitting, engine choice (``auto`` = best available for the language) and fallback to the
next available engine when a remote/neural engine fails mid-request, so the avatar always speaks.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.audio import resample
from common.errors import UserFacingError

log = logging.getLogger(__name__)

LANGS = ("zh", "en")


@dataclass(frozen=True)
class EngineStatus:
    name: str
    available: bool
    reason: str
    languages: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"name": self.name, "available": self.available, "reason": self.reason,
                "languages": list(self.languages)}


@dataclass
class Speech:
    """One synthesised utterance. ``wave``: (n,) float32 mono in [-1, 1] at ``sample_rate``."""

    wave: np.ndarray
    sample_rate: int
    engine: str
    lang: str
    text: str
    seconds_spent: float
    extra: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return float(len(self.wave)) / float(self.sample_rate)

    @property
    def rtf(self) -> float:
        """Real-time factor: compute seconds per second of audio."""
        return self.seconds_spent / max(self.duration_s, 1e-9)


class Engine(abc.ABC):
    """Text (one sentence-sized chunk, already normalised) + language -> :class:`Speech`."""

    name: str = "engine"
    languages: tuple[str, ...] = LANGS

    @abc.abstractmethod
    def status(self) -> EngineStatus:
        """Whether the engine can run here now, and why not. Must be fast (no long network waits)."""

    @abc.abstractmethod
    def synthesize(self, text: str, lang: str) -> Speech:
        """Raise :class:`UserFacingError` for problems the user can fix, anything else for failures."""


@dataclass(frozen=True)
class TTSConfig:
    engine: str = "auto"
    gpt_sovits_url: str = ""
    gpt_sovits_ref_audio: str = ""
    gpt_sovits_prompt_text: str = ""
    gpt_sovits_prompt_lang: str = "zh"
    neural_model: str = ""  # empty: the neural engine's default Hub repo
    cache_dir: str | None = None
    max_chars: int = 1000
    status_ttl_s: float = 30.0  # how long an availability answer is trusted (the GPT-SoVITS server may come and go)


def _concat(parts: list[Speech], text: str, lang: str, t0: float) -> Speech:
    """Join per-sentence speech (all from one engine/rate) with a short pause between sentences."""
    sr = parts[0].sample_rate
    pause = np.zeros(int(0.15 * sr), np.float32)
    waves: list[np.ndarray] = []
    for i, sp in enumerate(parts):
        if i:
            waves.append(pause)
        w = sp.wave
        if sp.sample_rate != sr:  # a fallback engine inside one answer: bring it to the first rate
            w = resample(w, sp.sample_rate, sr)
        waves.append(w.astype(np.float32, copy=False))
    engines = sorted({p.engine for p in parts})
    return Speech(wave=np.concatenate(waves), sample_rate=sr, engine="+".join(engines), lang=lang, text=text,
                  seconds_spent=time.perf_counter() - t0, extra={"sentences": len(parts)})


class TTS:
    """The app's text-to-speech entry point. Cheap to construct: engines load lazily on first use."""

    def __init__(self, engine: str = "auto", gpt_sovits_url: str = "", gpt_sovits_ref_audio: str = "",
                 gpt_sovits_prompt_text: str = "", gpt_sovits_prompt_lang: str = "zh", cache_dir: str | None = None,
                 *, neural_model: str = "", max_chars: int = 1000, engines: list[Engine] | None = None) -> None:
        self.config = TTSConfig(engine=engine or "auto", gpt_sovits_url=gpt_sovits_url,
                                gpt_sovits_ref_audio=gpt_sovits_ref_audio,
                                gpt_sovits_prompt_text=gpt_sovits_prompt_text,
                                gpt_sovits_prompt_lang=gpt_sovits_prompt_lang or "zh", neural_model=neural_model,
                                cache_dir=cache_dir, max_chars=int(max_chars))
        self._engines = engines if engines is not None else self._default_engines()
        self._status: dict[str, tuple[float, EngineStatus]] = {}
        self._status_lock = threading.Lock()
        names = [e.name for e in self._engines]
        if self.config.engine != "auto" and self.config.engine not in names:
            raise UserFacingError(f"Unknown TTS engine {self.config.engine!r}; choose one of: auto, {', '.join(names)}.")

    @classmethod
    def from_settings(cls, settings, cache_dir: str | os.PathLike | None = None) -> TTS:
        """The ONE way the product builds its TTS from a :class:`common.settings.Settings` (the app's services, the
        ``python -m tts`` CLI, the warm-up). ``cache_dir``: where voices are downloaded; default
        ``<settings.cache_dir>/tts``, the app's place, so the CLI and the app share one download."""
        s = settings
        cache = Path(cache_dir) if cache_dir is not None else Path(s.cache_dir).expanduser() / "tts"
        return cls(engine=s.tts_engine, gpt_sovits_url=s.gpt_sovits_url, gpt_sovits_ref_audio=s.gpt_sovits_ref_audio,
                   gpt_sovits_prompt_text=s.gpt_sovits_prompt_text, gpt_sovits_prompt_lang=s.gpt_sovits_prompt_lang,
                   cache_dir=str(cache), neural_model=s.tts_neural_model, max_chars=s.tts_max_chars)

    def _default_engines(self) -> list[Engine]:
        """Priority order for ``auto``: the paper's GPT-SoVITS (when configured), neural, espeak-ng."""
        from tts.espeak import EspeakEngine
        from tts.gpt_sovits import GptSovitsConfig, GptSovitsEngine
        from tts.neural import SherpaVitsEngine

        c = self.config
        return [
            GptSovitsEngine(GptSovitsConfig(url=c.gpt_sovits_url, ref_audio=c.gpt_sovits_ref_audio,
                                            prompt_text=c.gpt_sovits_prompt_text, prompt_lang=c.gpt_sovits_prompt_lang)),
            SherpaVitsEngine(model=c.neural_model or None, cache_dir=c.cache_dir),
            EspeakEngine(),
        ]

    # ---- registry -------------------------------------------------------------------------------
    def _engine(self, name: str) -> Engine:
        for e in self._engines:
            if e.name == name:
                return e
        raise UserFacingError(f"Unknown TTS engine {name!r}; choose one of: auto, "
                              f"{', '.join(e.name for e in self._engines)}.")

    def _status_of(self, engine: Engine, refresh: bool = False) -> EngineStatus:
        now = time.monotonic()
        with self._status_lock:
            cached = self._status.get(engine.name)
            if cached and not refresh and now - cached[0] < self.config.status_ttl_s:
                return cached[1]
        try:
            st = engine.status()
        except Exception as err:  # a status probe must never take the app down
            st = EngineStatus(engine.name, False, f"status check failed: {type(err).__name__}: {err}", engine.languages)
        with self._status_lock:
            self._status[engine.name] = (now, st)
        return st

    def engines(self, refresh: bool = False) -> list[EngineStatus]:
        return [self._status_of(e, refresh) for e in self._engines]

    def _candidates(self, lang: str, engine: str | None) -> list[Engine]:
        """Engines to try, in order. An explicit engine is tried alone; ``auto`` lists all usable ones."""
        wanted = engine or self.config.engine
        if wanted and wanted != "auto":
            e = self._engine(wanted)
            st = self._status_of(e)
            if not st.available:
                raise UserFacingError(f"TTS engine {wanted!r} is not available: {st.reason}")
            if lang not in st.languages:
                raise UserFacingError(f"TTS engine {wanted!r} does not speak {lang!r} (it speaks {', '.join(st.languages)}).")
            return [e]
        out = [e for e in self._engines if (st := self._status_of(e)).available and lang in st.languages]
        if not out:
            reasons = "; ".join(f"{s.name}: {s.reason}" for s in self.engines())
            raise UserFacingError(f"No text-to-speech engine can speak {lang!r} here ({reasons}).")
        return out

    def active_engine(self, lang: str = "zh") -> str:
        return self._candidates(lang, None)[0].name

    # ---- synthesis ------------------------------------------------------------------------------
    def _prepare(self, text: str, lang: str | None) -> tuple[str, list[tuple[str, str]]]:
        """(language, [(sentence as written, sentence normalised for speech), ...])."""
        from tts.text import check_text, detect_language, normalize, split_sentences

        text = check_text(text, self.config.max_chars)
        if lang is None or lang == "auto":
            lang = detect_language(text)
        if lang not in LANGS:
            raise UserFacingError(f"Unsupported language {lang!r}: use 'zh' or 'en'.")
        sentences = [(p, n) for p in split_sentences(text, lang) if (n := normalize(p, lang)).strip()]
        if not sentences:
            raise UserFacingError("The text has nothing to read aloud (only punctuation or symbols).")
        return lang, sentences

    def _speak_one(self, sentence: tuple[str, str], lang: str, candidates: list[Engine]) -> Speech:
        """Speak one sentence with the first candidate that works; the last one's failure is the user's error."""
        written, spoken = sentence
        order = list(candidates)
        for i, e in enumerate(order):
            try:
                sp = e.synthesize(spoken, lang)
            except Exception as err:
                if i == len(order) - 1:
                    if isinstance(err, UserFacingError):
                        raise
                    raise UserFacingError(f"Text-to-speech failed ({e.name}: {type(err).__name__}: {err}).") from err
                # engine failed (server gone, download failed, model error): mark it and fall back
                log.warning("TTS engine %s failed (%s: %s); falling back", e.name, type(err).__name__, err)
                with self._status_lock:
                    self._status[e.name] = (time.monotonic(), EngineStatus(
                        e.name, False, f"failed just now: {type(err).__name__}: {err}", e.languages))
                candidates.remove(e)  # the rest of this answer goes straight to the next engine
                continue
            sp.wave = np.nan_to_num(np.asarray(sp.wave, np.float32).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
            sp.text = written  # subtitles show what was written; what was read is in extra["normalized"]
            sp.extra["normalized"] = spoken
            return sp
        raise UserFacingError("No text-to-speech engine is available.")  # pragma: no cover - candidates non-empty

    def stream(self, text: str, lang: str | None = None, engine: str | None = None) -> Iterator[Speech]:
        """One :class:`Speech` per sentence, each as soon as it is ready.

        Input problems (empty, too long, unknown engine) raise here, at the call, not at the first ``next``.
        """
        lang, sentences = self._prepare(text, lang)
        candidates = self._candidates(lang, engine)
        return (self._speak_one(s, lang, candidates) for s in sentences)

    def synthesize(self, text: str, lang: str | None = None, engine: str | None = None) -> Speech:
        t0 = time.perf_counter()
        lang, sentences = self._prepare(text, lang)
        candidates = self._candidates(lang, engine)
        parts = [self._speak_one(s, lang, candidates) for s in sentences]
        sp = _concat(parts, text, lang, t0)
        sp.extra["normalized"] = " ".join(n for _, n in sentences)
        return sp


def to_lipsync_audio(wave: np.ndarray, sr: int, dither: float = 1e-4, seed: int = 0) -> np.ndarray:
    """Speech at the engine's rate -> (n,) float32 16 kHz mono for the lip-sync mel.

    A tiny Gaussian dither (default 1e-4 ~ -80 dBFS, inaudible) is added so that stretches of digital
    silence never give log(0) / 0-division NaNs in a mel normalisation. Seeded: same input, same output.
    Multi-channel input ``(n, channels)`` is averaged to mono.
    """
    w = np.asarray(wave, dtype=np.float32)
    if w.ndim == 2:
        w = w.mean(axis=1)
    w = np.nan_to_num(w.reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    w = resample(w, int(sr), 16000)
    rng = np.random.default_rng(seed)
    w = w + (dither * rng.standard_normal(len(w))).astype(np.float32)
    return np.clip(w, -1.0, 1.0).astype(np.float32)
