"""Speech: text -> the avatar's voice, a recording -> speech for lip-sync, a spoken question -> text.

One use case of :class:`services.core.AppServices` (it composes this class with the others). The voice and the
speech recogniser load lazily on first use and are kept for the life of the process.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from common.errors import UserFacingError
from common.settings import Settings
from services.checks import check_speech, check_upload_size
from services.results import RecognizerState, SynthesizedSpeech, Transcript

log = logging.getLogger(__name__)

LANG_CHOICES = ("auto", "zh", "en")
ASR_UNAVAILABLE = ("Questions by voice are not available on this server yet — please type your question instead. "
                   "语音提问暂不可用，请输入文字提问。")


class SpeechRecognitionUnavailable(UserFacingError):
    """Spoken questions cannot be understood here (no recogniser); typing still works."""


class SpeechServices:
    """The voice (TTS) and the speech recogniser. Thread-safe; uses ``settings``, ``cache_dir``."""

    settings: Settings
    cache_dir: Path

    def _init_speech(self) -> None:
        self._tts_lock, self._asr_lock = threading.Lock(), threading.Lock()
        self._speak_lock = threading.Lock()
        self._tts = None
        self._asr = None

    def tts(self):
        with self._tts_lock:
            if self._tts is None:
                from tts import TTS

                self._tts = TTS.from_settings(self.settings, cache_dir=self.cache_dir / "tts")
            return self._tts

    def _say(self, text: str, lang: str | None, engine: str | None):
        """One synthesis at a time: ten concurrent espeak-ng calls returned empty speech or crashed the process in
        the soak test; speech is ~100x faster than lip-sync, so serialising it costs the renders nothing."""
        with self._speak_lock:
            return self.tts().synthesize(text, lang=lang, engine=_chosen(engine))

    def _say_sentences(self, text: str, lang: str | None, engine: str | None) -> list:
        """The speech of each sentence, synthesised one request at a time (see :meth:`_say`)."""
        with self._speak_lock:
            return list(self.tts().stream(text, lang=lang, engine=_chosen(engine)))

    def recognizer(self):
        """The speech recogniser for spoken questions (loads its weights at the first transcription)."""
        with self._asr_lock:
            if self._asr is None:
                from qa.asr import SpeechRecognizer

                self._asr = SpeechRecognizer(self.settings.asr_model)
            return self._asr

    def recognizer_loaded(self) -> bool:
        """The speech recogniser's weights are loaded (it loads them at the first transcription)."""
        return getattr(self._asr, "_recognizer", None) is not None

    def speech_recognition(self) -> RecognizerState:
        """(available, technical detail) of the speech recogniser, without loading or downloading it."""
        try:
            st = self.recognizer().status()
        except Exception as err:  # an incomplete install: spoken questions are off, typing works
            return RecognizerState(False, f"{type(err).__name__}: {err}")
        return RecognizerState(bool(st.get("available")), str(st.get("detail", "")))

    def transcribe(self, audio: str | Path | None) -> Transcript:
        """A spoken question -> (text, language). Clear messages for no file, silence, or a missing model."""
        if audio is None or str(audio).strip() == "":
            raise UserFacingError("Record or upload your question first. 请先录制或上传您的问题。")
        ok, detail = self.speech_recognition()
        if not ok:  # said at once, before the recording is even read
            log.info("spoken question refused: %s", detail)
            raise SpeechRecognitionUnavailable(ASR_UNAVAILABLE)
        from qa.asr import transcribe_file
        from wav2lip384.media.video import check_media

        check_media(audio, kinds=("audio", "video"), what="spoken question")
        check_upload_size(audio, self.settings.max_upload_mb, "spoken question")
        text, lang, _, _ = transcribe_file(audio, self.recognizer())
        return Transcript(text, lang)


    def tts_engine_names(self) -> list[str]:
        try:
            return ["auto"] + [e.name for e in self.tts().engines()]
        except Exception:  # the dropdown still offers "auto"
            return ["auto"]


    def synthesize(self, text: str, lang: str | None, engine: str | None) -> SynthesizedSpeech:
        """Text -> (16 kHz mono speech for lip-sync, the tts Speech)."""
        from tts import to_lipsync_audio

        if not (text or "").strip():
            raise UserFacingError("Please type the text the avatar should say. 请输入要朗读的文字。")
        sp = self._say(text, _chosen(lang), engine)
        wave = to_lipsync_audio(sp.wave, sp.sample_rate)
        check_speech(wave, 16000, self.settings.max_audio_seconds, "synthesised speech")
        return SynthesizedSpeech(wave, sp)

    def load_speech(self, audio: str | Path | None) -> np.ndarray:
        if audio is None or str(audio).strip() == "":
            raise UserFacingError("Upload or record some speech first. 请先上传或录制语音。")
        from wav2lip384.media.audio import load_audio
        from wav2lip384.media.video import check_media

        check_media(audio, kinds=("audio", "video"), what="audio")
        check_upload_size(audio, self.settings.max_upload_mb, "audio")
        wave = load_audio(audio, sample_rate=16000, max_seconds=self.settings.max_audio_seconds)
        check_speech(wave, 16000, self.settings.max_audio_seconds, f"audio {Path(audio).name}")
        return wave


def _chosen(option: str | None) -> str | None:
    """A voice or language picked in the UI, None for "auto" (or nothing): the TTS then decides."""
    return None if option in (None, "", "auto") else option
