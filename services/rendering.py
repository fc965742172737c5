"""Rendering: a checked avatar and speech -> a talking-avatar video (or, degraded, the speech alone).

One use case of :class:`services.core.AppServices`. Degrade, never break: when lip-sync cannot run (no weights,
the Hub unreachable, a model failing), the visitor still gets the speech as audio, with one calm notice of what is
missing; the policy's parts (which failures degrade, the notices, the speech-only result) are here, and answering
uses them too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.errors import ModelUnavailableError, UserFacingError
from services.checks import check_upload_size, count_faces
from services.media import RequestDirs, mouth_clarity, write_wav
from services.models import ModelCatalog
from services.results import AvatarCheck, VideoResult
from wav2lip384.models import registry
from wav2lip384.render.gpu import on_gpu

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEFAULT_AVATAR = EXAMPLES / "astronaut_512.jpg"
EXAMPLE_VIDEO_AVATAR = EXAMPLES / "astronaut_motion.mp4"
CLOSEUP_AVATAR = EXAMPLES / "astronaut_closeup.jpg"  # face ~414 px: what the model comparison defaults to
COMPARE_DEFAULT = registry.compare_default()  # the registry owns the UI defaults
# What a visitor reads when there is no video: what happened and what still works. Which weights are missing and
# what to set is for the operator: Status -> Details, the result's details and the log.
LIPSYNC_UNAVAILABLE = "Lip-sync is not available on this server yet — here is {what}."
LIPSYNC_FAILED = "The video could not be finished — here is {what}."
MODEL_UNAVAILABLE = "Not available on this server yet (the Status tab lists what can run)."



# The calls that render, as module-level functions so that on a Hugging Face ZeroGPU Space they are registered with
# ``spaces.GPU`` at import (a GPU is attached only while they run); elsewhere ``on_gpu`` returns them unchanged.
@on_gpu(duration=120)
def lipsync(pipe, **kwargs):
    """``pipe(**kwargs)``: one whole lip-sync render."""
    return pipe(**kwargs)


@on_gpu(duration=120)
def lipsync_stream(pipe, *args, **kwargs):
    """``pipe.stream(*args, **kwargs)``: a streamed answer's chunks (spaces.GPU accepts generators)."""
    yield from pipe.stream(*args, **kwargs)


class RenderingServices:
    """Avatars, lip-sync renders (Text, Audio, Compare tabs and examples). Needs ``models``, ``dirs``, ``settings``
    and the speech use case (``synthesize``, ``load_speech``)."""

    models: ModelCatalog
    dirs: RequestDirs

    def _init_rendering(self) -> None:
        self._examples_lock = threading.Lock()
        self._example_locks: dict[tuple, threading.Lock] = {}
        self._examples: dict[tuple, VideoResult] = {}

    def default_model(self, prefer: tuple[str, ...] = registry.preferred("render")) -> str:
        """The model examples render with: the first available of ``prefer``, else the registry default."""
        available = self.available_models()
        return next((m for m in prefer if m in available), available[0] if available else registry.DEFAULT_MODEL)

    def compare_default(self) -> list[str]:
        """The models the comparison ticks: those that can run here (up to three), else the usual three."""
        return self.available_models()[:3] or list(COMPARE_DEFAULT)

    def example(self, key: tuple, make: Callable[[], VideoResult]) -> VideoResult:
        """An example row's result, made once per ``key`` (row, model) and kept while its files live (request
        directories are swept after ``keep_outputs_s``; then it is made again). Two first clicks make it once."""
        with self._examples_lock:
            lock = self._example_locks.setdefault(key, threading.Lock())
        with lock:
            res = self._examples.get(key)
            files = [p for p in (res.path, res.audio_path) if p is not None] if res is not None else []
            if res is None or not all(Path(p).is_file() for p in files):
                res = self._examples[key] = make()
            else:  # served again: its directory counts as fresh for the sweep
                for d in {Path(p).parent for p in files}:
                    d.touch(exist_ok=True)
            return res


    # ---- input ----------------------------------------------------------------------------------------
    def check_avatar(self, avatar: str | Path | None) -> AvatarCheck:
        """Check an uploaded photo/video: type, size, readable, exactly one face in (the first frame of) it."""
        if avatar is None or str(avatar).strip() == "":
            raise UserFacingError("Choose an avatar: pick an example or upload a photo or video of one face.")
        from wav2lip384.media.video import check_media, open_video, read_image

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
        return AvatarCheck(path, kind)


    # ---- rendering ------------------------------------------------------------------------------------
    def _speech_only(self, model: str, wave: np.ndarray, out_dir: Path, t0: float, problem: str,
                     engine: str = "", notice: str = LIPSYNC_UNAVAILABLE) -> VideoResult:
        """The speech alone, with a plain notice for the visitor; ``problem`` (technical) goes to details/log."""
        spec = registry.get(model)
        log.info("speech only (%s): %s", spec.id, problem)
        audio = write_wav(wave, 16000, out_dir / "speech.wav")
        return VideoResult(path=None, model=spec.id, model_title=spec.title, img_size=spec.img_size,
                           seconds=time.perf_counter() - t0, fps=0.0, n_frames=0, duration_s=len(wave) / 16000.0,
                           render_fps=0.0, engine=engine, audio_path=audio,
                           notice=notice.format(what="the speech"), problem=problem,
                           source=self.models.checkpoint(spec.id), license=spec.license)

    def render(self, model: str | int, avatar: Path, wave: np.ndarray, out_dir: Path, t0: float,
               progress: Callable | None = None, engine: str = "", clarity: bool = False,
               on_no_face: str = "error") -> VideoResult:
        """Lip-sync ``wave`` (16 kHz) onto ``avatar`` with ``model``; the figures include loading only if
        the model was not loaded yet (callers that compare models load first)."""
        spec = registry.get(model)
        pipe = self.pipeline(spec.id)
        out = out_dir / f"avatar_{spec.id}.mp4"
        res = lipsync(pipe, face=avatar, audio=(wave, 16000), out_path=out, progress=progress, on_no_face=on_no_face)
        seconds = time.perf_counter() - t0
        lipsync_s = float((getattr(res, "timings", None) or {}).get("total") or seconds)
        warnings = list(getattr(res, "warnings", []) or [])
        return VideoResult(
            path=Path(res.output_path), model=spec.id, model_title=spec.title, img_size=spec.img_size,
            seconds=seconds, fps=float(res.fps), n_frames=int(res.n_frames), duration_s=float(res.duration_s),
            render_fps=float(res.n_frames) / max(lipsync_s, 1e-6),
            clarity=mouth_clarity(res.output_path, detector=self.face_detector()) if clarity else None,
            detector=str(getattr(res, "detector", "")), engine=engine, precision=str(getattr(res, "precision", "")),
            timings={k: float(v) for k, v in (getattr(res, "timings", None) or {}).items()
                     if isinstance(v, (int, float))},
            warnings=[w for w in warnings if not _for_the_operator(w)],
            notes=[w for w in warnings if _for_the_operator(w)], source=self.models.checkpoint(spec.id),
            license=spec.license)

    def _render_or_speech(self, model: str, avatar: Path, wave: np.ndarray, out_dir: Path, t0: float,
                          progress, engine: str, on_no_face: str) -> VideoResult:
        ok, msg = self.weights(model)
        if not ok:
            return self._speech_only(model, wave, out_dir, t0, msg, engine)
        try:
            res = self.render(model, avatar, wave, out_dir, t0, progress, engine=engine, on_no_face=on_no_face)
        except UserFacingError as err:
            if not _is_model_problem(err):
                raise  # bad input (no face, ...): the visitor can fix it, say so
            return self._speech_only(model, wave, out_dir, t0, str(err), engine)
        # the speech alone as well, for text and audio input alike (a download, and what API clients get)
        res.audio_path = write_wav(wave, 16000, out_dir / "speech.wav")
        return res

    def text_to_avatar(self, text: str, avatar: str | Path | None, model: str | int = registry.DEFAULT_MODEL,
                       lang: str | None = "auto", engine: str | None = "auto", progress: Callable | None = None,
                       on_no_face: str = "error") -> VideoResult:
        t0 = time.perf_counter()
        model = registry.canonical_id(model)
        avatar_path, _ = self.check_avatar(avatar)  # cheap checks first: avatar, text; then synthesis and models
        wave, sp = self.synthesize(text, lang, engine)
        return self._render_or_speech(model, avatar_path, wave, self.dirs.new(), t0, progress, sp.engine, on_no_face)

    def audio_to_avatar(self, audio: str | Path | None, avatar: str | Path | None, model: str | int = registry.DEFAULT_MODEL,
                        progress: Callable | None = None, on_no_face: str = "error") -> VideoResult:
        t0 = time.perf_counter()
        model = registry.canonical_id(model)
        avatar_path, _ = self.check_avatar(avatar)
        wave = self.load_speech(audio)
        return self._render_or_speech(model, avatar_path, wave, self.dirs.new(), t0, progress, "", on_no_face)

    def compare(self, avatar: str | Path | None, text: str = "", audio: str | Path | None = None,
                models: tuple[str, ...] | list[str] | None = None, lang: str | None = "auto",
                engine: str | None = "auto", progress: Callable | None = None) -> dict[str, VideoResult | str]:
        """The same speech and avatar through each chosen model (2-3), side by side.

        Each model is loaded before its clock starts, so the figures compare rendering, not loading. A model
        that cannot run gets an explanation string instead of a result.
        """
        chosen = [registry.canonical_id(m) for m in (models or self.compare_default()) if m not in (None, "")]
        chosen = list(dict.fromkeys(chosen))
        if not 1 <= len(chosen) <= 3:
            raise UserFacingError("Choose one to three models to compare.")
        avatar_path, _ = self.check_avatar(avatar)
        engine_used = ""
        if audio:
            wave = self.load_speech(audio)
        else:
            wave, sp = self.synthesize(text, lang, engine)
            engine_used = sp.engine
        out_dir = self.dirs.new("compare-")
        results: dict[str, VideoResult | str] = {}
        for m in chosen:
            ok, msg = self.weights(m)
            if not ok:
                log.info("compare: %s not available: %s", m, msg)
                results[m] = MODEL_UNAVAILABLE
                continue
            try:
                self.pipeline(m)
                results[m] = self.render(m, avatar_path, wave, out_dir, time.perf_counter(), progress,
                                         engine=engine_used, clarity=True)
            except UserFacingError as err:
                if not _is_model_problem(err):
                    raise
                log.warning("compare: %s could not run: %s", m, err)
                results[m] = MODEL_UNAVAILABLE
        return results


def _for_the_operator(warning: str) -> bool:
    """A pipeline note about how this server is set up (which face detector runs), not about the visitor's input:
    Status shows it (Face detector row); the result keeps it in its details."""
    return "detector" in warning.lower()


def _is_model_problem(err: UserFacingError) -> bool:
    """A lip-sync failure the visitor cannot fix (weights missing or unreachable), as opposed to bad input."""
    return isinstance(err, ModelUnavailableError)
