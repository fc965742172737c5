"""Neural TTS from Hub weights: a VITS-family ONNX model run by ``sherpa-onnx`` (default: MeloTTS zh_en).

Why this choice (read before changing it):
- **MeloTTS Chinese (mix EN)**, exported to ONNX by the sherpa-onnx project as the Hub repo
  ``csukuangfj/vits-melo-tts-zh_en``: MIT licence (free for commercial use), one speaker for both Chinese
  and English, including mixed "请上传PDF文件" sentences, 44.1 kHz, and built for real-time CPU inference.
- **sherpa-onnx** (Apache-2.0, ~15 MB wheel incl. its own ONNX Runtime): the model directory carries
  everything the front end needs (lexicon, tokens, jieba dictionary, number/date FSTs), so synthesis is
  fully offline once the snapshot is cached - no spaCy model, no g2p download at run time.
- Rejected: ``kokoro``/``misaki`` (Apache-2.0 weights, but misaki's English needs a spaCy model
  downloaded at run time and its Chinese g2p pulls extra packages - fragile offline, and an 82M model is
  slower on 2 cores); facebook MMS-TTS via transformers (CC-BY-NC: not permissive); piper (GPL-3.0
  engine, no good Chinese voice).

Any sherpa-onnx VITS model directory works (``model.onnx`` or one ``*.onnx``, ``tokens.txt``, optional
``lexicon.txt``, ``dict/``, ``*.fst``); pass a local directory or another Hub repo as ``model``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path

import numpy as np

from common.errors import UserFacingError
from common.hub import resolve_snapshot
from tts.base import Engine, EngineStatus, Speech

DEFAULT_MODEL = "csukuangfj/vits-melo-tts-zh_en"
_PATTERNS = ["model.onnx", "tokens.txt", "lexicon.txt", "dict/*", "*.fst", "README.md", "LICENSE"]
_HOW_TO_FIX = ("Run once with internet access to cache it, or download the sherpa-onnx 'vits-melo-tts-zh_en' "
               "model directory and point DH_TTS_NEURAL_MODEL at it. The espeak-ng voice is used meanwhile.")


def _find_files(model_dir: Path) -> dict[str, str]:
    onnx = model_dir / "model.onnx"
    if not onnx.is_file():
        found = sorted(p for p in model_dir.glob("*.onnx") if "int8" not in p.name) or sorted(model_dir.glob("*.onnx"))
        if not found:
            raise UserFacingError(f"Neural TTS: no .onnx model in {model_dir}. {_HOW_TO_FIX}")
        onnx = found[0]
    tokens = model_dir / "tokens.txt"
    if not tokens.is_file():
        raise UserFacingError(f"Neural TTS: {model_dir} has no tokens.txt; it is not a sherpa-onnx VITS model.")
    lexicon = model_dir / "lexicon.txt"
    # We spell numbers/dates ourselves (tts.text); the FSTs still help with whatever slips through.
    fsts = [str(model_dir / n) for n in ("date.fst", "phone.fst", "number.fst", "new_heteronym.fst")
            if (model_dir / n).is_file()]
    return {"model": str(onnx), "tokens": str(tokens), "lexicon": str(lexicon) if lexicon.is_file() else "",
            "dict_dir": str(model_dir / "dict") if (model_dir / "dict").is_dir() else "",
            "data_dir": str(model_dir / "espeak-ng-data") if (model_dir / "espeak-ng-data").is_dir() else "",
            "rule_fsts": ",".join(fsts)}


@functools.lru_cache(maxsize=2)
def _load(model_dir: str, num_threads: int):
    """One ``sherpa_onnx.OfflineTts`` per (directory, threads) for the process (loading takes ~1-2 s)."""
    import sherpa_onnx

    f = _find_files(Path(model_dir))
    vits = sherpa_onnx.OfflineTtsVitsModelConfig(model=f["model"], lexicon=f["lexicon"], tokens=f["tokens"],
                                                 data_dir=f["data_dir"], dict_dir=f["dict_dir"])
    cfg = sherpa_onnx.OfflineTtsConfig(
        model=sherpa_onnx.OfflineTtsModelConfig(vits=vits, num_threads=num_threads, provider="cpu"),
        rule_fsts=f["rule_fsts"], max_num_sentences=1)
    # sherpa-onnx calls exit() on a bad config inside the constructor; validate first to raise instead.
    if not cfg.validate():
        raise UserFacingError(f"Neural TTS: {model_dir} is not a usable sherpa-onnx VITS model directory.")
    return sherpa_onnx.OfflineTts(cfg)


class SherpaVitsEngine(Engine):
    name = "neural"
    languages = ("zh", "en")

    def __init__(self, model: str | None = None, cache_dir: str | None = None, num_threads: int | None = None,
                 speaker_id: int = 0, speed: float = 1.0, languages: tuple[str, ...] = ("zh", "en")) -> None:
        self.model = model or DEFAULT_MODEL
        self.cache_dir = cache_dir  # HF cache is managed by huggingface_hub; kept for the common signature
        self.num_threads = num_threads or max(1, min(2, os.cpu_count() or 1))
        self.speaker_id = speaker_id
        self.speed = speed
        self.languages = tuple(languages)
        # ONNX Runtime sessions are thread-safe, sherpa-onnx's text front end (jieba, FST rules) is not
        # documented as such: one synthesis at a time per engine.
        self._lock = threading.Lock()
        self._resolved: Path | None = None

    def _model_dir(self) -> Path:
        """Local model directory; downloads the Hub snapshot on first use (resolved once per engine)."""
        if self._resolved is None:
            self._resolved = resolve_snapshot(self.model, what="Neural TTS model", how_to_fix=_HOW_TO_FIX,
                                              allow_patterns=_PATTERNS)
        return self._resolved

    def status(self) -> EngineStatus:
        """Fast: looks at the local directory or the HF cache; never starts the ~180 MB download itself."""
        try:
            import sherpa_onnx  # noqa: F401
        except ImportError:
            return EngineStatus(self.name, False, "the sherpa-onnx package is not installed", self.languages)
        try:
            if self._resolved is not None or Path(self.model).expanduser().is_dir():
                _find_files(self._model_dir())
                return EngineStatus(self.name, True, f"sherpa-onnx VITS model {self._model_dir()}", self.languages)
            from huggingface_hub import try_to_load_from_cache

            from common.hub import hub_reachable

            cached = try_to_load_from_cache(self.model, "model.onnx")
            if isinstance(cached, str):
                _find_files(self._model_dir())  # cache hit: resolves instantly, no network
                return EngineStatus(self.name, True, f"sherpa-onnx VITS model {self.model} (cached)", self.languages)
            if hub_reachable():
                return EngineStatus(self.name, True, f"sherpa-onnx VITS model {self.model} "
                                    "(downloads ~180 MB from the Hub on first use)", self.languages)
            self._model_dir()  # not cached and no Hub: raises the clear offline message
        except UserFacingError as err:
            return EngineStatus(self.name, False, str(err), self.languages)
        return EngineStatus(self.name, False, "model not found", self.languages)  # pragma: no cover

    def synthesize(self, text: str, lang: str) -> Speech:
        t0 = time.perf_counter()
        tts = _load(str(self._model_dir()), self.num_threads)
        with self._lock:
            audio = tts.generate(text, sid=self.speaker_id, speed=self.speed)
        wave = np.asarray(audio.samples, dtype=np.float32).reshape(-1)  # (n,)
        if wave.size == 0:
            raise RuntimeError(f"neural TTS produced no audio for {text!r}")
        return Speech(wave=wave, sample_rate=int(audio.sample_rate), engine=self.name, lang=lang, text=text,
                      seconds_spent=time.perf_counter() - t0)
