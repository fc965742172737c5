"""Start-up warm-up for text to speech: the first sentence of the first visitor should not pay for loading.

    from tts import TTS
    from tts.warmup import warm_up
    report = warm_up(TTS.from_settings(settings))   # {"zh": WarmUp(engine="neural", seconds=...), ...}

The first synthesis in a process loads what the engine ``auto`` picks needs: the text normalisers
(jieba's dictionary, cn2an, num2words), espeak-ng's library and voice data, or the neural voice's ONNX model
(which ``huggingface_hub`` downloads once, ~180 MB, when it is not cached and the Hub is reachable). One short
phrase per language does all of that. Warm-up never raises: an engine that fails is logged and the request
path falls back as it always does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from tts.base import TTS

log = logging.getLogger(__name__)

PHRASES = {"zh": "您好。", "en": "Hello."}


@dataclass(frozen=True)
class WarmUp:
    lang: str
    engine: str  # the engine that spoke, "" when none could
    seconds: float
    error: str = ""


def warm_up(tts: TTS, langs: tuple[str, ...] = ("zh", "en"), engine: str | None = None) -> dict[str, WarmUp]:
    """Synthesise one short phrase per language with ``engine`` (default: the one ``auto`` picks)."""
    out: dict[str, WarmUp] = {}
    for lang in langs:
        t0 = time.perf_counter()
        try:
            sp = tts.synthesize(PHRASES.get(lang, "Hello."), lang=lang, engine=engine)
            out[lang] = WarmUp(lang, sp.engine, time.perf_counter() - t0)
        except Exception as err:  # a warm-up must never take the app down; the request path reports errors
            out[lang] = WarmUp(lang, "", time.perf_counter() - t0, f"{type(err).__name__}: {err}")
            log.warning("TTS warm-up for %s failed: %s", lang, out[lang].error)
    return out
