"""``LipSyncPipeline``: a face (photo or video) plus speech in, a lip-synced H.264/AAC mp4 out.

    pipe = LipSyncPipeline.from_pretrained(size=96, cache_dir=Path("~/.cache/digital-human"))
    result = pipe("avatar.mp4", "speech.wav", "out.mp4")   # -> LipSyncResult (path, fps, frames, timings, ...)
    for chunk in pipe.stream("avatar.png", [(wav, sr), ...], out_dir):  # one playable chunk per segment
        ...

Steps of one request (each timed in ``LipSyncResult.timings``):
 1. ``audio``   — check and decode the speech to 16 kHz mono (any format ffmpeg reads; limit on length).
 2. ``mel``     — Wav2Lip mel spectrogram, one 16-frame window per video frame (as many frames as the audio).
 3. ``avatar``  — decode the avatar's frames (cached in memory by content hash).
 4. ``detect``  — largest face per frame (cached on disk + in memory: a second request skips it).
 5. ``crops``   — pads, 5-frame smoothing, the paper's square crop, resize to the model size (cached too).
 6. ``model``   — the generator in batches under ``torch.inference_mode``; for a photo the face encoder
                  runs once (its input is the same for every frame) and only audio encoder + decoder run.
 7. ``paste``   — generated faces pasted back through a feathered lower-face mask (no box seam; the upper
                  face and everything outside the box unchanged).
 8. ``encode``  — frames piped into ffmpeg as they are made (H.264 yuv420p + AAC muxed in the same process).

Models see BGR images in [0, 1], like the original Wav2Lip (its public weights were trained on OpenCV's BGR
frames, and our training data loader follows the same convention); frames everywhere else are RGB.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from common.errors import UserFacingError
from wav2lip384 import faces as F
from wav2lip384.avatar import Avatar, AvatarCache, CropSet
from wav2lip384.video import VideoWriter, check_media

DEFAULT_FPS = 25.0  # photo avatars (and the rate the models were trained at)
DEFAULT_BATCH = {96: 32, 384: 8}  # frames per generator call on CPU (larger gains little, costs memory)

AudioInput = str | os.PathLike | tuple[np.ndarray, int]


@dataclass
class LipSyncResult:
    output_path: Path
    fps: float
    n_frames: int
    duration_s: float
    width: int
    height: int
    timings: dict[str, float]
    detector: str
    model: str
    avatar_kind: str = "video"
    warnings: list[str] = field(default_factory=list)
    avatar_cached: bool = False  # the avatar's face detections came from the cache
    precision: str = ""  # the generator's compute dtype and why (optimize.describe_precision)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_path"] = str(self.output_path)
        return d


@dataclass
class _Speech:
    wav16: np.ndarray  # (T,) float32 at 16 kHz (what the mel is computed from)
    mux_path: Path  # the file ffmpeg muxes (the original upload, or a wav written in the request's temp dir)
    samples: np.ndarray | None = None  # in-memory input as given, (T,) or (T, C), for slicing into chunks
    sample_rate: int = 16000

    def slice_to(self, path: Path, t0: float, t1: float | None) -> Path:
        """Write seconds t0..t1 (None: to the end) of the speech to ``path`` (wav) for muxing one chunk."""
        import soundfile as sf

        data, sr = (self.samples, self.sample_rate) if self.samples is not None else (self.wav16, 16000)
        a = int(round(t0 * sr))
        b = len(data) if t1 is None else int(round(t1 * sr))
        sf.write(str(path), np.clip(data[a:b], -1.0, 1.0), sr, subtype="PCM_16")
        return path

    @property
    def seconds(self) -> float:
        return len(self.wav16) / 16000.0


@dataclass
class _Prepared:
    avatar: Avatar
    det: F.Detections
    crops: CropSet
    missing: set[int]
    warnings: list[str]
    fps: float
    cached: bool


class LipSyncPipeline:
    """Lip-sync inference around one generator (see the module docstring for the steps)."""

    def __init__(self, generator, *, model_name: str = "", detector: F.FaceDetector | None = None,
                 detector_checkpoint: str | None = F.DEFAULT_S3FD_CHECKPOINT, device: str = "cpu",
                 dtype=None, cache_dir: str | os.PathLike | None = None, batch_size: int | None = None,
                 max_audio_seconds: float = 300.0, on_no_face: str = "error", feather: bool = True,
                 crf: int = 18, preset: str = "veryfast", show_progress: bool = True,
                 avatar_cache: AvatarCache | None = None, optimize=None, feature_cache_mb: float = 1024.0):
        import torch

        from wav2lip384.optimize import DEFAULT, PLAIN, describe_precision, optimize_generator

        if on_no_face not in ("error", "passthrough"):
            raise ValueError("on_no_face must be 'error' or 'passthrough'")
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        # ``optimize``: None = the default transforms of wav2lip384.optimize (BN folded into the convolutions,
        # channels_last, lower-half decoding, bf16 where native and verified); False = plain eager fp32; or an
        # OptimizeConfig. Lower-half decoding leaves the rows
        # above the paste mask unset, so it is used with the feathered paste-back only.
        config = PLAIN if optimize is False else (DEFAULT if optimize is None or optimize is True else optimize)
        if not feather and config.lower_half:
            config = replace(config, lower_half=False)
        self.optimization = config
        # video avatars: encoder features per source frame kept (rows the decoder reads only) up to this size
        # per avatar and model, so a later request with the same avatar runs only audio encoder + decoder
        self.feature_cache_bytes = int(feature_cache_mb * 2**20) if optimize is not False else 0
        self.size = int(generator.img_size)
        self.model_name = model_name or f"wav2lip-{self.size}"
        self.batch_size = int(batch_size or DEFAULT_BATCH.get(self.size, 8))
        self.generator = optimize_generator(generator.to(self.device, self.dtype).eval(), config,
                                            batch_size=self.batch_size)
        # "auto" runs bf16 only where it is native and verified on these weights (optimize.py)
        self.precision = describe_precision(getattr(self.generator, "precision", {"dtype": "fp32"}))
        self.max_audio_seconds = float(max_audio_seconds)
        self.on_no_face = on_no_face
        self.feather = feather
        self.crf, self.preset = crf, preset
        self.show_progress = show_progress
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        # share one AvatarCache between pipelines (e.g. the app's 96 and 384 models) to prepare avatars once
        self.avatars = avatar_cache or AvatarCache(self.cache_dir)
        self._detector = detector
        self._detector_checkpoint = detector_checkpoint

    # ---------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, size: int = 96, checkpoint: str | None = None, *,
                        detector_checkpoint: str | None = F.DEFAULT_S3FD_CHECKPOINT, device: str = "cpu",
                        dtype=None, cache_dir: str | os.PathLike | None = None, batch_size: int | None = None,
                        **kwargs) -> LipSyncPipeline:
        """Load the generator for ``size`` (96 | 384) from a local file or a Hub spec (``owner/name:file``).

        ``checkpoint=None`` uses the default for the size (96: the public Wav2Lip GAN weights; 384 has no
        public weights, so a clear :class:`UserFacingError` says how to provide them).
        """
        import torch

        from wav2lip384.weights import load_generator

        dtype = dtype or torch.float32
        generator = load_generator(checkpoint, size, device=device, dtype=dtype)
        name = f"wav2lip-{size} ({checkpoint or 'default weights'})"
        return cls(generator, model_name=name, detector_checkpoint=detector_checkpoint, device=device, dtype=dtype,
                   cache_dir=cache_dir, batch_size=batch_size, **kwargs)

    @property
    def detector(self) -> F.FaceDetector:
        """The face detector (S3FD when its weights resolve, else the offline Haar cascade), built once."""
        if self._detector is None:
            self._detector = F.build_detector(self._detector_checkpoint, device=str(self.device))
        return self._detector

    # --------------------------------------------------------------------------------------- requests
    def __call__(self, face: str | os.PathLike, audio: AudioInput, out_path: str | os.PathLike | None = None, *,
                 fps: float | None = None, smooth: bool = True, pads: Sequence[int] = F.DEFAULT_PADS,
                 progress: Callable[[int, int], None] | None = None,
                 on_no_face: str | None = None) -> LipSyncResult:
        """Lip-sync ``face`` (image or video file) to ``audio`` (file path or ``(samples, sample_rate)``).

        ``fps`` applies to photo avatars (default 25); a video avatar keeps its own frame rate.
        ``out_path=None`` writes ``lipsync.mp4`` into a new directory that the caller owns.
        ``progress(done, total)`` is called after each batch (a tqdm bar is shown as well).
        """
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        work = Path(tempfile.mkdtemp(prefix="lipsync-", dir=self._tmp_root()))  # per-request temp dir
        try:
            # 1. audio
            t = time.perf_counter()
            speech = self._speech(audio, work)
            timings["audio"] = time.perf_counter() - t
            # 2-5. avatar, detection, crops
            prep = self._prepare(face, 0, speech.seconds, fps=fps, pads=pads, smooth=smooth,
                                 on_no_face=on_no_face or self.on_no_face, timings=timings)
            # 2. mel windows (after the avatar: a video avatar decides the frame rate)
            t = time.perf_counter()
            windows = self._mel_windows(speech.wav16, prep.fps)  # (N, 80, 16)
            timings["mel"] = time.perf_counter() - t
            n = len(windows)
            if out_path is None:
                out_path = Path(tempfile.mkdtemp(prefix="lipsync-out-", dir=self._tmp_root())) / "lipsync.mp4"
            out_path = Path(out_path)
            # 6-8. model, paste-back, encode
            writer = self._render(prep, windows, 0, speech.mux_path, out_path, "mp4", timings, progress)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        timings["total"] = time.perf_counter() - t_start
        return LipSyncResult(output_path=out_path, fps=prep.fps, n_frames=n, duration_s=n / prep.fps,
                             width=writer.out_width, height=writer.out_height,
                             timings={k: round(v, 4) for k, v in timings.items()}, detector=prep.det.detector,
                             model=self.model_name, avatar_kind=prep.avatar.kind, warnings=prep.warnings,
                             avatar_cached=prep.cached, precision=self.precision)

    def stream(self, face: str | os.PathLike, audio_segments: Iterable[tuple[np.ndarray, int]],
               out_dir: str | os.PathLike, *, fps: float | None = None, smooth: bool = True,
               pads: Sequence[int] = F.DEFAULT_PADS, fmt: str = "mp4", max_chunk_seconds: float | None = None,
               on_no_face: str | None = None) -> Iterator[Path]:
        """Yield one playable video chunk per audio segment (e.g. one per synthesised sentence).

        Frame indices continue across chunks (the video avatar keeps playing where the last chunk stopped)
        and chunk lengths follow the cumulative audio duration, so the chunks played back to back stay in
        sync. ``fmt="ts"`` writes MPEG-TS segments with continuous timestamps (HLS-style), ``"mp4"``
        self-contained fast-start mp4 files. ``max_chunk_seconds`` splits long segments into several chunks
        (the first video appears sooner); the mel is still computed over the whole segment, so the split
        changes no frame.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="lipsync-stream-", dir=self._tmp_root()))
        try:
            frames_done = 0
            seconds_done = 0.0
            index = 0
            for k, segment in enumerate(audio_segments):
                timings: dict[str, float] = {}
                speech = self._speech(segment, work, name=f"segment_{k:04d}.wav", limit_total=seconds_done)
                prep = self._prepare(face, frames_done, speech.seconds, fps=fps, pads=pads, smooth=smooth,
                                     on_no_face=on_no_face or self.on_no_face, timings=timings)
                seconds_done += speech.seconds
                n = max(1, int(round(seconds_done * prep.fps)) - frames_done)  # cumulative: no drift
                windows = self._mel_windows(speech.wav16, prep.fps, n_frames=n)  # (n, 80, 16)
                per = n if not max_chunk_seconds else max(1, int(round(max_chunk_seconds * prep.fps)))
                for a in range(0, n, per):
                    b = min(n, a + per)
                    mux = speech.mux_path if per >= n else speech.slice_to(
                        work / f"piece_{index:04d}.wav", a / prep.fps, None if b == n else b / prep.fps)
                    path = out_dir / f"chunk_{index:04d}.{fmt}"
                    self._render(prep, windows[a:b], frames_done + a, mux, path, fmt, timings, None,
                                 start_time=(frames_done + a) / prep.fps)
                    index += 1
                    yield path
                frames_done += n
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -------------------------------------------------------------------------------------- internals
    def _tmp_root(self) -> str | None:
        if self.cache_dir is None:
            return None
        root = self.cache_dir / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        return str(root)

    def _speech(self, audio: AudioInput, work: Path, name: str = "speech.wav", limit_total: float = 0.0) -> _Speech:
        from wav2lip384.audio import load_audio, resample_mono

        remaining = self.max_audio_seconds - limit_total
        if isinstance(audio, tuple):
            samples, sr = audio
            samples = np.asarray(samples, dtype=np.float32)
            if samples.size == 0 or not sr or sr <= 0:
                raise UserFacingError("The speech is empty: nothing to lip-sync.")
            length = samples.shape[0] if samples.ndim == 1 or samples.shape[0] > samples.shape[-1] else samples.shape[-1]
            if length / sr > remaining + 1e-6:
                raise UserFacingError(f"The speech is {length / sr:.1f} s long; the maximum is "
                                      f"{self.max_audio_seconds:g} s.")
            if not np.all(np.isfinite(samples)):
                raise UserFacingError("The speech contains invalid samples (NaN or infinity).")
            wav16 = resample_mono(samples, int(sr), 16000)
            import soundfile as sf

            mux = work / name
            data = samples if samples.ndim == 1 or samples.shape[0] > samples.shape[-1] else samples.T  # (T, C)
            sf.write(str(mux), np.clip(data, -1.0, 1.0), int(sr), subtype="PCM_16")
            if wav16.size < 160:
                raise UserFacingError("The speech is shorter than 10 ms: nothing to lip-sync.")
            return _Speech(wav16, mux, data, int(sr))
        else:
            path = Path(audio)
            check_media(path, kinds=("audio", "video"), what="audio file")
            wav16 = load_audio(path, sample_rate=16000, max_seconds=remaining)
            mux = path
        if wav16.size < 160:
            raise UserFacingError("The speech is shorter than 10 ms: nothing to lip-sync.")
        return _Speech(wav16, mux)

    def _mel_windows(self, wav16: np.ndarray, fps: float, n_frames: int | None = None) -> np.ndarray:
        from wav2lip384.audio import frames_for_audio, mel_windows, melspectrogram

        n = n_frames or frames_for_audio(len(wav16), fps)
        return mel_windows(melspectrogram(wav16), fps, n_frames=n)  # (N, 80, 16)

    def _prepare(self, face, start: int, seconds: float, *, fps, pads, smooth, on_no_face, timings) -> _Prepared:
        t = time.perf_counter()
        cache = self.avatars
        # a video's own frame rate is known only once it is open: guess high, then top up if needed
        avatar = cache.get(face, frames_needed=start + int(np.ceil(seconds * max(fps or DEFAULT_FPS, 30.0))) + 1)
        rate = avatar.fps if avatar.kind == "video" else float(fps or DEFAULT_FPS)
        count = int(round(seconds * rate)) + 1
        if avatar.kind == "video" and not avatar.complete and avatar.n_frames < start + count:
            avatar = cache.get(face, frames_needed=start + count)
        needed = min(avatar.n_frames, avatar.needed_frames(start, count))
        timings["avatar"] = time.perf_counter() - t
        t = time.perf_counter()
        detector = self.detector
        from tqdm.auto import tqdm

        with tqdm(total=needed, desc="face detection", unit="frame", leave=False,
                  disable=not self.show_progress) as bar:  # long only on an avatar's first request
            det = avatar.detect(detector, upto=needed, batch_size=8, progress=bar.update)
        cached = avatar.last_detected == 0
        timings["detect"] = time.perf_counter() - t
        t = time.perf_counter()
        missing = avatar.check_faces(det, needed, on_no_face=on_no_face)
        crops = avatar.crops(detector.name, self.size, pads=pads, smooth=smooth)
        timings["crops"] = time.perf_counter() - t
        warnings = []
        multi = [i for i in det.multi_face_frames if i < needed]
        if multi:
            where = "the image" if avatar.kind == "image" else f"{len(multi)} frame(s) (first: frame {multi[0]})"
            warnings.append(f"More than one face was found in {where}; the largest face was lip-synced.")
        if missing:
            warnings.append(f"No face in {len(missing)} frame(s) (first: frame {missing[0]}); they were left unchanged.")
        if fps and avatar.kind == "video" and abs(float(fps) - rate) > 1e-3:
            warnings.append(f"The avatar video's own frame rate ({rate:g} fps) was used, not {float(fps):g} fps.")
        if avatar.source_size is not None:
            warnings.append(f"The avatar ({avatar.source_size[0]}x{avatar.source_size[1]}) was scaled down to "
                            f"{avatar.width}x{avatar.height} to keep lip-sync fast on this machine.")
        if avatar.truncated:
            warnings.append(f"The avatar video is long; only its first {avatar.n_frames} frames are used.")
        if isinstance(detector, F.HaarDetector):
            warnings.append("Faces were found with the offline OpenCV detector (S3FD weights not available).")
        return _Prepared(avatar, det, crops, set(missing), warnings, rate, cached)

    def _face_batch(self, crops: np.ndarray):
        """(B, S, S, 3) RGB uint8 crops -> (B, 6, S, S) model input: [lower half masked | reference], BGR in [0, 1]."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1]))  # RGB -> BGR, (B, S, S, 3)
        x = x.to(self.device).permute(0, 3, 1, 2).to(self.dtype).div_(255.0)  # (B, 3, S, S)
        masked = x.clone()
        masked[:, :, self.size // 2:] = 0  # the generator must draw the lower half from the audio
        return torch.cat([masked, x], dim=1)  # (B, 6, S, S)

    def _video_feats(self, av: Avatar, crops: CropSet, src: list[int]) -> list:
        """Encoder features (trimmed to the rows the decoder reads) of source frames ``src``, batched per level;
        computed for frames not cached yet, and kept while the avatar's feature budget allows."""
        import torch

        gen = self.generator
        # the boxes decide the crops (pads, smoothing): other boxes, other features
        key = ("video_feats", self.model_name, id(gen), self.dtype, hash(crops.boxes.tobytes()))
        store = av.extras.setdefault(key, {"bytes": 0, "frames": {}})
        cached = store["frames"]
        new = [s for s in dict.fromkeys(src) if s not in cached]
        fresh = {}
        if new:
            feats = gen.trim_feats(gen.encode_faces(self._face_batch(crops.crops[new])))  # per level (n, C, h', w)
            for j, s in enumerate(new):
                one = [f[j:j + 1].clone() for f in feats]  # (1, C, h', w) each; clone frees the batch tensor
                size = sum(t.numel() * t.element_size() for t in one)
                if store["bytes"] + size <= self.feature_cache_bytes:
                    cached[s] = one
                    store["bytes"] += size
                else:
                    fresh[s] = one
        per_frame = [cached.get(s) or fresh[s] for s in src]
        return [torch.cat([f[level] for f in per_frame]) for level in range(len(per_frame[0]))]  # (b, C, h', w)

    def _render(self, prep: _Prepared, windows: np.ndarray, start: int, mux_path: Path, out_path: Path, fmt: str,
                timings: dict[str, float], progress, start_time: float = 0.0) -> VideoWriter:
        import torch
        from tqdm.auto import tqdm

        av = prep.avatar
        n = len(windows)
        t_model = t_paste = t_encode = 0.0
        photo = av.kind == "image"
        gen = self.generator
        writer = VideoWriter(out_path, av.width, av.height, prep.fps, audio_path=mux_path, fmt=fmt, crf=self.crf,
                             preset=self.preset, start_time=start_time)
        bar = tqdm(total=n, desc=f"lip-sync {self.size}", unit="frame", disable=not self.show_progress, leave=False)
        try:
            with torch.inference_mode():
                feats = None
                if photo and 0 not in prep.missing:
                    key = ("face_feats", self.model_name, id(gen), self.dtype, prep.crops.boxes[0].tobytes())
                    feats = av.extras.get(key)
                    if feats is None:
                        t = time.perf_counter()
                        feats = gen.encode_faces(self._face_batch(prep.crops.crops[:1]))  # once per photo
                        av.extras.clear()  # one model's features per avatar is enough
                        av.extras[key] = feats
                        t_model += time.perf_counter() - t
                for b0 in range(0, n, self.batch_size):
                    ts = range(start + b0, start + min(n, b0 + self.batch_size))
                    src = [av.source_index(t) for t in ts]
                    todo = [k for k, s in enumerate(src) if s not in prep.missing]
                    out = None
                    t = time.perf_counter()
                    if todo:
                        mel = torch.from_numpy(windows[[b0 + k for k in todo]])[:, None]  # (b, 1, 80, 16)
                        mel = mel.to(self.device, self.dtype)
                        if feats is not None:
                            pred = gen.decode(gen.encode_audio(mel), feats)  # (b, 3, S, S)
                        elif self.feature_cache_bytes > 0 and hasattr(gen, "trim_feats"):
                            feats_b = self._video_feats(av, prep.crops, [src[k] for k in todo])  # per level (b,C,h',w)
                            pred = gen.decode(gen.encode_audio(mel), feats_b)  # (b, 3, S, S)
                        else:
                            pred = gen(mel, self._face_batch(prep.crops.crops[[src[k] for k in todo]]))
                        # (b, 3, S, S) BGR [0, 1] -> (b, S, S, 3) RGB uint8
                        out = (pred.float().clamp_(0, 1).mul_(255).add_(0.5).permute(0, 2, 3, 1)
                               .to(torch.uint8).cpu().numpy()[..., ::-1])
                    t_model += time.perf_counter() - t
                    j = 0
                    for s in src:
                        t = time.perf_counter()
                        frame = av.frames[s]
                        if s not in prep.missing:
                            frame = F.paste_back(frame, out[j], prep.crops.boxes[s], feather=self.feather)
                            j += 1
                        t2 = time.perf_counter()
                        writer.write(frame)
                        t3 = time.perf_counter()
                        t_paste += t2 - t
                        t_encode += t3 - t2
                    bar.update(len(src))
                    if progress is not None:
                        progress(min(n, b0 + self.batch_size), n)
            t = time.perf_counter()
            writer.close()
            t_encode += time.perf_counter() - t
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
        timings["model"] = timings.get("model", 0.0) + t_model
        timings["paste"] = timings.get("paste", 0.0) + t_paste
        timings["encode"] = timings.get("encode", 0.0) + t_encode
        return writer
