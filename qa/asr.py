"""Ask by voice: speech (an audio file, or samples + rate) -> text, Chinese and English.

Recogniser: **SenseVoice-Small** (FunAudioLLM), exported to ONNX (int8) by the sherpa-onnx project as the Hub
repo ``csukuangfj/sherpa-onnx-sense-voice-zh-en-ja-ko-yue-2024-07-17``, run by ``sherpa-onnx`` (already a
dependency for the neural voice, bundles ONNX Runtime). Why this one (evidence, read before changing it):

- zh + en in one model with automatic language identification (also ja, ko, Cantonese); its authors report
  lower Chinese error rates than Whisper-large-v3 (AISHELL-1 CER ~3 % vs ~5 %), while Whisper-small - the
  Whisper of comparable size (244 M vs 234 M parameters) - averages ~16 % short-form WER across languages;
- non-autoregressive CTC: one encoder pass per utterance, no token-by-token decoding. The authors report
  ~17x real time on CPU (RTF ~0.06) against "slow" for Whisper-small; ``python -m qa asr-bench --json``
  measures it here (the real model is not reachable from this build machine, see qa/README.md);
- size: the int8 ONNX file is ~230 MB; no PyTorch at run time;
- licence: the FunASR model licence (use, modification and commercial use allowed, with attribution);
  sherpa-onnx is Apache-2.0. Whisper (MIT) through transformers remains possible with a local directory but
  is not wired here: it is ~3-5x slower on CPU and weaker in Chinese at the same size.

Weights are resolved like every other model (:func:`common.hub.resolve_snapshot`: local directory, then the
Hugging Face cache, then the Hub when reachable); offline and uncached this raises one
:class:`~common.errors.UserFacingError` naming the repo and the setting ``DH_ASR_MODEL``.

Any sherpa-onnx SenseVoice directory works (``model.int8.onnx`` or ``model.onnx`` + ``tokens.txt``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserFacingError
from common.hub import resolve_snapshot

DEFAULT_MODEL = "csukuangfj/sherpa-onnx-sense-voice-zh-en-ja-ko-yue-2024-07-17"
SAMPLE_RATE = 16_000  # the model's feature extractor rate; other rates are resampled
MAX_SECONDS = 60.0  # a spoken question; longer recordings are refused with a clear message
_PATTERNS = ["model.int8.onnx", "tokens.txt", "README.md", "LICENSE"]
_HOW_TO_FIX = (f"Run once with internet access so the Hub repo {DEFAULT_MODEL} is cached, or download a "
               "sherpa-onnx SenseVoice model directory (model.int8.onnx + tokens.txt) and point the setting "
               "DH_ASR_MODEL at it. Typing the question works meanwhile.")
_LANG_TAG = re.compile(r"<\|([A-Za-z_]+)\|>")
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Transcript:
    text: str  # recognised text ("" when nothing was recognised)
    language: str  # "zh" | "en" | "ja" | "ko" | "yue" (the model's language tag; from the text when absent)
    seconds: float  # duration of the audio
    timings: dict[str, float] = field(default_factory=dict)  # load_s, decode_audio_s, recognise_s, rtf
    model: str = ""


def _find_files(model_dir: Path) -> dict[str, str]:
    for name in ("model.int8.onnx", "model.onnx"):
        if (model_dir / name).is_file():
            onnx = model_dir / name
            break
    else:
        found = sorted(model_dir.glob("*.onnx"))
        if not found:
            raise UserFacingError(f"Speech recognition: no .onnx model in {model_dir}. {_HOW_TO_FIX}")
        onnx = found[0]
    tokens = model_dir / "tokens.txt"
    if not tokens.is_file():
        raise UserFacingError(f"Speech recognition: {model_dir} has no tokens.txt; it is not a sherpa-onnx "
                              f"SenseVoice model directory. {_HOW_TO_FIX}")
    return {"model": str(onnx), "tokens": str(tokens)}


def _language(tag: str, text: str) -> str:
    m = _LANG_TAG.fullmatch(tag.strip()) if tag else None
    if m and m.group(1) in ("zh", "en", "ja", "ko", "yue"):
        return m.group(1)
    return "zh" if _HAN.search(text) else "en"


class SpeechRecognizer:
    """SenseVoice through sherpa-onnx. Loads lazily on the first :meth:`transcribe`; thread-safe.

    ``model``: a Hub repo ``owner/name`` or a local directory ("" = :data:`DEFAULT_MODEL`).
    ``language``: "auto" (the model identifies zh/en/...), or force "zh" / "en".
    Instances share nothing: each owns its recogniser.
    """

    def __init__(self, model: str = "", *, num_threads: int | None = None, language: str = "auto",
                 use_itn: bool = True, max_seconds: float = MAX_SECONDS):
        if language not in ("auto", "zh", "en", "ja", "ko", "yue"):
            raise UserFacingError(f"Speech recognition: unknown language {language!r}; use auto, zh or en.")
        self.model = model or DEFAULT_MODEL
        self.num_threads = int(num_threads or max(1, min(2, os.cpu_count() or 1)))
        self.language = language
        self.use_itn = use_itn  # inverse text normalisation: punctuation and digits ("二零二四" -> "2024")
        self.max_seconds = max_seconds
        self._lock = threading.Lock()
        self._recognizer = None
        self._model_dir: Path | None = None
        self.load_seconds = 0.0

    def model_dir(self) -> Path:
        if self._model_dir is None:
            self._model_dir = resolve_snapshot(self.model, what="Speech recognition model",
                                               how_to_fix=_HOW_TO_FIX, allow_patterns=_PATTERNS)
        return self._model_dir

    def _load(self):
        if self._recognizer is not None:
            return self._recognizer
        import sherpa_onnx

        t0 = time.perf_counter()
        f = _find_files(self.model_dir())
        model_cfg = sherpa_onnx.OfflineModelConfig(
            sense_voice=sherpa_onnx.OfflineSenseVoiceModelConfig(model=f["model"], language=self.language,
                                                                 use_itn=self.use_itn),
            tokens=f["tokens"], num_threads=self.num_threads, provider="cpu")
        # sherpa-onnx calls exit() on a bad config inside the constructor: validate the same config first
        if not model_cfg.validate():
            raise UserFacingError(f"Speech recognition: {self.model_dir()} is not a usable sherpa-onnx SenseVoice "
                                  f"model directory. {_HOW_TO_FIX}")
        rec = sherpa_onnx.OfflineRecognizer.from_sense_voice(
            model=f["model"], tokens=f["tokens"], num_threads=self.num_threads, sample_rate=SAMPLE_RATE,
            feature_dim=80, language=self.language, use_itn=self.use_itn, provider="cpu")
        self._recognizer = rec
        self.load_seconds = time.perf_counter() - t0
        return rec

    def status(self) -> dict:
        """Plain data for a status panel; never downloads (looks at the local directory / HF cache only)."""
        out = {"engine": "sherpa-onnx SenseVoice", "model": self.model, "loaded": self._recognizer is not None,
               "language": self.language, "threads": self.num_threads}
        try:
            import sherpa_onnx  # noqa: F401
        except ImportError:
            return {**out, "available": False, "detail": "the sherpa-onnx package is not installed"}
        if self._model_dir is not None or Path(self.model).expanduser().is_dir():
            return {**out, "available": True, "detail": f"local model {self.model}"}
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(self.model, "tokens.txt")
        except Exception:  # a malformed repo id: not available
            cached = None
        if isinstance(cached, str):
            return {**out, "available": True, "detail": f"{self.model} (cached)"}
        from common.hub import hub_reachable

        if hub_reachable():
            return {**out, "available": True, "detail": f"{self.model} (downloads ~230 MB on first use)"}
        return {**out, "available": False, "detail": f"Hub unreachable and {self.model} not cached; set DH_ASR_MODEL "
                                                      "to a local SenseVoice directory"}

    def transcribe(self, audio: str | os.PathLike | tuple[np.ndarray, int]) -> Transcript:
        """Speech -> :class:`Transcript`. ``audio``: a file path (any format ffmpeg reads) or ``(wave, sr)``.

        ``wave`` is mono or (n, channels), float in [-1, 1] or integer PCM. Raises UserFacingError for
        unreadable, silent-free-of-samples or too long audio, and when the model is unavailable.
        """
        t0 = time.perf_counter()
        wav = self._samples(audio)  # (n,) float32 at SAMPLE_RATE
        t_audio = time.perf_counter() - t0
        seconds = len(wav) / SAMPLE_RATE
        with self._lock:  # one decode at a time per recogniser (its streams are cheap, the session is shared)
            rec = self._load()
            t1 = time.perf_counter()
            stream = rec.create_stream()
            stream.accept_waveform(SAMPLE_RATE, wav)
            rec.decode_stream(stream)
            result = stream.result
            t_rec = time.perf_counter() - t1
        text = " ".join(_LANG_TAG.sub(" ", result.text).split())  # no stray <|tag|> tokens in what users see
        timings = {"load_s": round(self.load_seconds, 4), "decode_audio_s": round(t_audio, 4),
                   "recognise_s": round(t_rec, 4), "rtf": round(t_rec / seconds, 4) if seconds > 0 else 0.0}
        return Transcript(text=text, language=_language(getattr(result, "lang", ""), text), seconds=round(seconds, 3),
                          timings=timings, model=self.model)

    def _samples(self, audio) -> np.ndarray:
        if isinstance(audio, tuple):
            if len(audio) != 2:
                raise UserFacingError("Speech recognition: give audio as a file path or (samples, sample_rate).")
            wave, sr = audio
            if isinstance(wave, (int, float)) and isinstance(sr, np.ndarray):  # Gradio's (sr, wave) order
                wave, sr = sr, wave
            wav = np.asarray(wave)
            if wav.size == 0:
                raise UserFacingError("The recording is empty; please record your question again.")
            if np.issubdtype(wav.dtype, np.integer):
                wav = wav.astype(np.float32) / float(np.iinfo(wav.dtype).max)  # int PCM -> [-1, 1]
            wav = wav.astype(np.float32)
            if wav.ndim == 2:
                # (n, channels) as Gradio/soundfile give it; (channels, n) when the first axis is the short one
                wav = wav.mean(axis=1) if wav.shape[1] <= wav.shape[0] else wav.mean(axis=0)  # (n,)
            if wav.ndim != 1:
                raise UserFacingError(f"Speech recognition: expected mono or stereo samples, got shape {wav.shape}.")
            sr = int(sr)
            if sr <= 0:
                raise UserFacingError(f"Speech recognition: invalid sample rate {sr}.")
            if len(wav) > (self.max_seconds + 0.01) * sr:
                raise UserFacingError(f"The recording is longer than {self.max_seconds:g} s; please ask a shorter "
                                      "question.")
            if sr != SAMPLE_RATE:
                from common.audio import resample_mono

                wav = resample_mono(wav, sr, SAMPLE_RATE)  # (m,)
            wav = np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0)
            return np.ascontiguousarray(wav, dtype=np.float32)
        from common.audio import load_audio

        # ffmpeg decode: wav/mp3/m4a/ogg/webm as browsers record them; errors name the file, not server paths
        return load_audio(audio, sample_rate=SAMPLE_RATE, max_seconds=self.max_seconds)


def transcribe_file(path: str | os.PathLike, recognizer: SpeechRecognizer) -> tuple[str, str, float, dict]:
    """What the app calls: speech file -> (text, language, seconds, timings).

    Raises UserFacingError when nothing was recognised (silence, noise), so the user is asked to speak again.
    """
    t = recognizer.transcribe(path)
    if not t.text.strip():
        raise UserFacingError("No speech was recognised in the recording; please speak clearly and try again. "
                              "没有识别到语音，请靠近麦克风再说一遍。")
    return t.text, t.language, t.seconds, t.timings




def bench(recognizer: SpeechRecognizer, files: list[Path], repeats: int = 3) -> dict:
    """Real-time factor of ``recognizer`` on speech files (``python -m qa asr-bench --json``).

    Each file is recognised once to warm up and then ``repeats`` times; rtf = recognition time / audio time
    (audio decoding excluded, reported apart). When the model is unavailable the result says why.
    """
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict = {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": recognizer.num_threads,
                 "model": recognizer.model, "repeats": repeats, "files": []}
    try:
        recognizer.model_dir()
    except UserFacingError as err:
        return {**out, "available": False, "reason": str(err)}
    audio = spent = 0.0
    for f in files:
        first = recognizer.transcribe(f)  # warm-up; loads the model on the first file
        times = [recognizer.transcribe(f).timings["recognise_s"] for _ in range(repeats)]
        mean = float(np.mean(times)) if times else first.timings["recognise_s"]
        out["files"].append({"file": Path(f).name, "seconds": first.seconds, "language": first.language,
                             "text": first.text, "decode_audio_s": first.timings["decode_audio_s"],
                             "recognise_s": round(mean, 4), "rtf": round(mean / max(first.seconds, 1e-9), 4)})
        audio += first.seconds
        spent += mean
    out.update(available=True, load_s=round(recognizer.load_seconds, 3), audio_s=round(audio, 3),
               recognise_s=round(spent, 4), rtf=round(spent / max(audio, 1e-9), 4))
    return out


__all__ = ["DEFAULT_MODEL", "SpeechRecognizer", "Transcript", "bench", "transcribe_file"]
