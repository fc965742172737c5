"""Engine choice and fallback as the app sees it, with small stand-in engines next to the real espeak-ng."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserFacingError
from tts import TTS, Engine, EngineStatus, Speech
from tts.espeak import EspeakEngine
from tts.neural import SherpaVitsEngine


class Broken(Engine):
    name = "broken"

    def __init__(self):
        self.calls = 0

    def status(self):
        return EngineStatus(self.name, True, "looks fine", ("zh", "en"))

    def synthesize(self, text, lang):
        self.calls += 1
        raise RuntimeError("model exploded")


class EnglishOnly(Engine):
    name = "english_only"
    languages = ("en",)

    def status(self):
        return EngineStatus(self.name, True, "ok", self.languages)

    def synthesize(self, text, lang):
        return Speech(np.full(8000, 0.1, np.float32), 8000, self.name, lang, text, 0.0)


def test_auto_falls_back_once_and_remembers_the_failure():
    broken = Broken()
    t = TTS(engines=[broken, EspeakEngine()])
    sp = t.synthesize("您好。谢谢。")
    assert sp.engine == "espeak" and sp.extra["sentences"] == 2
    assert broken.calls == 1  # marked unavailable after the first failure, not retried per sentence
    st = {s.name: s for s in t.engines()}["broken"]
    assert not st.available and "model exploded" in st.reason
    assert t.active_engine("zh") == "espeak"


def test_explicit_engine_failure_is_a_user_error_naming_the_engine():
    t = TTS(engines=[Broken(), EspeakEngine()])
    with pytest.raises(UserFacingError, match="broken.*model exploded"):
        t.synthesize("您好", engine="broken")


def test_language_decides_the_engine():
    t = TTS(engines=[EnglishOnly(), EspeakEngine()])
    assert t.active_engine("en") == "english_only" and t.active_engine("zh") == "espeak"
    assert t.synthesize("Hello.").engine == "english_only"
    assert t.synthesize("您好。").engine == "espeak"
    with pytest.raises(UserFacingError, match="does not speak 'zh'"):
        t.synthesize("您好", engine="english_only")


def test_neural_status_never_downloads(monkeypatch):
    """Online but not cached: available, and the reason says the model downloads on first use."""
    import common.hub

    monkeypatch.setattr(common.hub, "hub_reachable", lambda *a, **k: True)
    st = SherpaVitsEngine(model="someone/not-cached-model").status()
    assert st.available and "first use" in st.reason


def test_when_every_engine_fails_the_user_gets_the_last_reason():
    class AlsoBroken(Broken):
        name = "also_broken"

    t = TTS(engines=[Broken(), AlsoBroken()])
    with pytest.raises(UserFacingError, match="also_broken.*model exploded"):
        t.synthesize("您好")


def test_from_settings_passes_the_tts_settings():
    from common.settings import Settings

    s = Settings.from_env({"DH_TTS_ENGINE": "espeak", "DH_TTS_MAX_CHARS": "20", "DH_GPT_SOVITS_URL": "http://127.0.0.1:9"})
    t = TTS.from_settings(s)
    assert t.config.engine == "espeak" and t.config.max_chars == 20 and t.config.gpt_sovits_url == "http://127.0.0.1:9"
    with pytest.raises(UserFacingError, match="limit is 20"):
        t.synthesize("好" * 21)


def test_from_settings_is_the_one_factory_and_shares_the_apps_voice_cache(tmp_path):
    """The app's services, the CLI and the warm-up all build the TTS with ``TTS.from_settings``: one place maps
    settings to the engines, and a voice downloaded by the CLI is the app's too (``<cache_dir>/tts``)."""
    import ast
    from pathlib import Path

    from common.settings import Settings

    t = TTS.from_settings(Settings(cache_dir=str(tmp_path)))
    assert t.config.cache_dir == str(tmp_path / "tts")
    assert TTS.from_settings(Settings(), cache_dir=tmp_path / "x").config.cache_dir == str(tmp_path / "x")
    root = Path(__file__).resolve().parents[1]
    builders = []
    for path in [root / "app.py", *(root / d for d in ("services", "tts", "qa", "wav2lip384", "common"))]:
        for f in ([path] if path.is_file() else sorted(path.rglob("*.py"))):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "TTS":
                    builders.append(str(f.relative_to(root)))
    assert builders == [], f"build the TTS with TTS.from_settings, not TTS(...): {builders}"
