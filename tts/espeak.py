"""espeak-ng through a small hand-written ctypes binding: offline, Chinese (cmn) and English, always there.

Why hand-written: the PyPI package ``espeakng-loader`` ships ``libespeak-ng.so`` and its ``espeak-ng-data``
directory but no Python API for synthesis, and the Python bindings that exist (``py-espeak-ng`` shells out
to a system binary, ``espeakng`` needs the apt package, ``pyttsx3`` drives the sound card) either are not
maintained or do not work offline without apt. Five C functions are all we need:
``espeak_Initialize`` (synchronous mode: ``espeak_Synth`` returns when all audio has been handed to our
callback), ``espeak_SetSynthCallback``, ``espeak_SetVoiceByName``, ``espeak_SetParameter`` and
``espeak_Synth``.

espeak-ng keeps all of its state in C globals (current voice, callback, parameters), so every use goes
through one lock held for the whole voice-select + synth sequence; concurrent requests serialise.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import time

import numpy as np

from tts.base import Engine, EngineStatus, Speech

# From espeak-ng's speak_lib.h (stable public ABI since espeak 1.x).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAM_RATE = 1  # words per minute
_PARAM_PITCH = 3
_EE_OK = 0

# int callback(short *wav, int numsamples, espeak_EVENT *events); returning 0 continues synthesis.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

VOICES = {"zh": "cmn", "en": "en-us"}


class _EspeakLibrary:
    """The loaded C library, initialised once per process; use only while holding ``self.lock``."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lock = threading.Lock()
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        data = espeakng_loader.get_data_path().encode()
        # buflength 0 -> default 200 ms chunks handed to the callback; options 0 -> no phoneme events.
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {self.sample_rate}); data path {data!r}")
        self._chunks: list[np.ndarray] = []
        # Keep a reference to the ctypes callback for the life of the library, or it is garbage-collected.
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, numsamples, _events) -> int:
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0

    def synth(self, text: str, voice: str, rate_wpm: int, pitch: int) -> np.ndarray:
        """int16 PCM at ``self.sample_rate`` for ``text`` (caller holds no lock; we take it)."""
        payload = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(payload, len(payload))
        with self.lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise RuntimeError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
            self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            self._chunks = []
            err = self._lib.espeak_Synth(buf, len(payload), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE,
                                         None, None)
            chunks, self._chunks = self._chunks, []
        if err != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with code {err}")
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


@functools.lru_cache(maxsize=1)
def _library() -> _EspeakLibrary:
    return _EspeakLibrary()


class EspeakEngine(Engine):
    """Formant synthesis: robotic but instant, offline and always available (the fallback of ``auto``)."""

    name = "espeak"
    languages = ("zh", "en")

    def __init__(self, rate_wpm: int = 165, pitch: int = 50) -> None:
        self.rate_wpm = rate_wpm
        self.pitch = pitch

    def status(self) -> EngineStatus:
        try:
            lib = _library()
        except Exception as err:  # missing .so or data: say so, the registry will not pick us
            return EngineStatus(self.name, False, f"espeak-ng could not load: {err}", self.languages)
        return EngineStatus(self.name, True, f"espeak-ng via espeakng-loader, {lib.sample_rate} Hz", self.languages)

    def synthesize(self, text: str, lang: str) -> Speech:
        t0 = time.perf_counter()
        lib = _library()
        pcm = lib.synth(text, VOICES[lang], self.rate_wpm, self.pitch)  # (n,) int16
        wave = (pcm.astype(np.float32) / 32768.0)
        return Speech(wave=wave, sample_rate=lib.sample_rate, engine=self.name, lang=lang, text=text,
                      seconds_spent=time.perf_counter() - t0)
