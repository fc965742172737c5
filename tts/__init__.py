"""Text to speech for the digital human: offline espeak-ng, a neural Hub voice, and a GPT-SoVITS client.

    from tts import TTS, Speech, to_lipsync_audio
    t = TTS(engine="auto")
    sp = t.synthesize("您好，请问有什么可以帮您？")      # Speech(wave float32 mono, sample_rate, engine, ...)
    audio16k = to_lipsync_audio(sp.wave, sp.sample_rate)  # for the lip-sync mel

Importing this package does no work; engines load on first use.
"""

from tts.base import TTS, Engine, EngineStatus, Speech, to_lipsync_audio

__all__ = ["TTS", "Engine", "EngineStatus", "Speech", "to_lipsync_audio"]
