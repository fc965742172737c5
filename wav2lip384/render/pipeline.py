"""``LipSyncPipeline``: a face (photo or video) plus speech in, a lip-synced H.264/AAC mp4 out.

    pipe = LipSyncPipeline.from_pretrained("wav2lip256", cache_dir=Path("~/.cache/digital-human"))
    result = pipe("avatar.mp4", "speech.wav", "out.mp4")   # -> LipSyncResult (path, fps, frames, timings, ...)
    for chunk in pipe.stream("avatar.png", [(wav, sr), ...], out_dir):  # one playable chunk per segment
        ...
    pipe.calibrate("avatar.png", (wav, sr))  # "auto" re-measured with int8 calibrated on this avatar (cached)
    pipe.stream(..., should_stop=event.is_set)  # a barge-in ends the stream within one model batch

Steps of one request (each timed in ``LipSyncResult.timings``):
 1. ``audio``   — check and decode the speech to 16 kHz mono (any format ffmpeg reads; limit on length).
 2. ``mel``     — Wav2Lip mel spectrogram, one 16-frame window per video frame (as many frames as the audio).
 3. ``avatar``  — decode the avatar's frames (cached in memory by content hash).
 4. ``detect``  — largest face per frame (cached on disk + in memory: a second request skips it).
 5. ``crops``   — the model's pads, 5-frame smoothing, its crop policy (registry: "stretch" = the original
                  Wav2Lip box resized to the square input, what the public checkpoints were trained on;
                  "square" = the paper's bottom-edge square, for paper384 only), resize (cached too).
 6. ``model``   — the generator in batches under ``torch.inference_mode``; for a photo the face encoder
                  runs once (its input is the same for every frame) and only audio encoder + decoder run.
 7. ``paste``   — generated faces pasted back through a feathered lower-face mask (no box seam; the upper
                  face and everything outside the box unchanged). In pauses of the speech (render/silence.py)
                  the avatar's own frame is shown instead (the mouth rests closed and still; the model is not
                  run for it), blended into and out of over a few frames.
 8. ``encode``  — frames piped into ffmpeg as they are made (H.264 yuv420p + AAC muxed in the same process).

Models see BGR images in [0, 1], like the original Wav2Lip (its public weights were trained on OpenCV's BGR
frames, and our training data loader follows the same convention); frames everywhere else are RGB.
"""
# size-reason: LipSyncPipeline: the rendering steps in order (module docstring); the transforms are already apart in
#   optimize.py and the store in avatars.py.

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from common.errors import UserFacingError
from wav2lip384 import faces as F
from wav2lip384.media.video import VideoWriter, check_media
from wav2lip384.models import registry
from wav2lip384.render.avatars import Avatar, AvatarCache, CropSet
from wav2lip384.render.pacing import FramePace, frame_cost
from wav2lip384.render.silence import rest_weights

DEFAULT_FPS = 25.0  # photo avatars (and the rate the models were trained at)
# frames per generator call on CPU, by registry id: the registry's ``batch`` (the one place for it)
DEFAULT_BATCH = {spec.id: spec.batch for spec in registry.MODELS.values()}

AudioInput = str | os.PathLike | tuple[np.ndarray, int]


class RenderStopped(Exception):
    """Rendering was stopped by the caller's ``should_stop`` (a barge-in): the unfinished file was removed."""


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
    model: str  # registry id (wav2lip384.models.registry), e.g. "wav2lip256"
    avatar_kind: str = "video"
    warnings: list[str] = field(default_factory=list)
    avatar_cached: bool = False  # the avatar's face detections came from the cache
    precision: str = ""  # the generator's compute dtype and why (optimize.describe_precision)
    weights: str = ""  # where the generator's weights came from
    crop_policy: str = ""  # "stretch" | "square" (the model's registry entry)

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
class PreparedAvatar:
    """An avatar ready for the model: frames, face detections, crops (what :meth:`LipSyncPipeline.prepare`
    returns), frames without a face, warnings for the user, the output frame rate, detections from the cache."""

    avatar: Avatar
    det: F.Detections
    crops: CropSet
    missing: set[int]
    warnings: list[str]
    fps: float
    cached: bool


MIN_BATCH = 4  # the smallest model batch ``stream(max_batch_s=...)`` uses
VERIFY_FRAMES = 4  # frames of an avatar (other than the calibration avatar) int8 is checked on before it renders it


def _int8_possible(config, device, dtype) -> bool:
    """Whether "auto" could still pick an avatar-calibrated OpenVINO int8 model (:meth:`LipSyncPipeline.calibrate`)."""
    import torch

    from wav2lip384.render import runtime

    return (config.dtype == "auto" and config.int8 != "off" and device.type == "cpu" and dtype == torch.float32
            and runtime.available())


def _calibration_sound(seconds: float = 1.6) -> np.ndarray:
    """16 kHz speech-like calibration audio when none is given: a voiced sound whose pitch and loudness move like
    syllables (1.2 s), then a quiet pause (0.4 s), so the mel windows cover speech and silence."""
    t = np.arange(int(round(1.2 * 16000)), dtype=np.float32) / 16000.0
    pitch = 150.0 + 40.0 * np.sin(2 * np.pi * 0.8 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / 16000.0
    voiced = (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    quiet = 0.0005 * np.random.default_rng(0).standard_normal(int(round((seconds - 1.2) * 16000)))
    return (0.2 * np.concatenate([voiced, quiet])).astype(np.float32)


def describe_precision_of(gen, check: dict | None = None) -> str:
    """One line on how ``gen`` computes (optimize.describe_precision), and why when an avatar's check chose it."""
    from wav2lip384.render.optimize import describe_precision

    line = describe_precision(getattr(gen, "precision", {"dtype": "fp32"}) or {"dtype": "fp32"})
    if check and check.get("verified") is False:
        line += (f"; int8 was outside tolerance on this avatar's frames (mean {check['mean_diff_levels']:.2f}/255, "
                 f"p99 {check['p99_diff_levels']:.1f}/255 from fp32)")
    return line


@dataclass
class _Int8Check:
    """An avatar-calibrated int8 model runs: which avatar it was calibrated on, the calibration's mel windows
    (reused to verify other avatars), the torch model an avatar outside tolerance renders with, the fp32
    reference, and per avatar key the verification result."""

    avatar_key: str
    mel: np.ndarray  # (n, 1, 80, 16) calibration mel windows
    fallback: object
    reference: object
    results: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, gen, key: str, crops: CropSet, missing, config) -> dict:
        """``gen`` (int8) against the fp32 reference on ``VERIFY_FRAMES`` of this avatar's crops (frames with a
        face, spread evenly) and the calibration's mel windows, on the rows the paste-back shows; the same
        tolerance as "auto" (optimize.within_tolerance). Cached per avatar key."""
        import torch

        from wav2lip384.render.optimize import calibration_from_crops, diff_levels, paste_first_row, within_tolerance

        with self.lock:
            if key in self.results:
                return self.results[key]
            usable = [i for i in range(len(crops.crops)) if i not in missing] or [0]
            n = min(VERIFY_FRAMES, len(self.mel))
            mel, faces = calibration_from_crops(crops.crops[usable], self.mel[:, 0], n=n)
            outs = []
            with torch.inference_mode():
                for m in (gen, self.reference):
                    dtype = next(m.parameters()).dtype
                    emb = m.encode_audio(mel.to(dtype))
                    outs.append(m.decode(emb, m.trim_feats(m.encode_faces(faces.to(dtype)))).float())
            d = diff_levels(outs[0], outs[1], paste_first_row(int(gen.img_size)))
            self.results[key] = {"verified": within_tolerance(d, config), **d}
            return self.results[key]


def _weights_fingerprint(generator) -> str:
    """A short digest of the loaded weights (first and last parameter tensors and the parameter count): two
    generators of one architecture with other weights never share cached encoder features."""
    import hashlib

    params = list(generator.parameters())
    h = hashlib.blake2b(digest_size=8)
    h.update(str(sum(p.numel() for p in params)).encode())
    for p in (params[0], params[-1]):
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _registry_entry(generator, model):
    """The registry entry of ``model``, else the one whose architecture is the generator's, else (a generator of
    another architecture, e.g. trained by ``wav2lip384.train``) the trainable entry of its size, else None."""
    from wav2lip384.models import registry

    if model is not None:
        return registry.get(model)
    from wav2lip384.weights import generator_config

    for mid in registry.ids():
        try:
            if generator_config(mid) == generator.config:
                return registry.get(mid)
        except Exception:  # an architecture this version cannot build: not this one
            continue
    same = [registry.get(m) for m in registry.ids() if registry.get(m).img_size == generator.img_size]
    trainable = [e for e in same if e.trainable]
    return (trainable or same or [None])[0]


class LipSyncPipeline:
    """Lip-sync inference around one generator (see the module docstring for the steps)."""

    def __init__(self, generator, *, model: str | int | None = None, model_name: str = "", weights: str = "",
                 crop_policy: str | None = None, pads: Sequence[int] | None = None,
                 detector: F.FaceDetector | None = None,
                 detector_checkpoint: str | None = F.DEFAULT_S3FD_CHECKPOINT, device: str = "cpu",
                 dtype=None, cache_dir: str | os.PathLike | None = None, batch_size: int | None = None,
                 max_audio_seconds: float = 300.0, on_no_face: str = "error", feather: bool = True,
                 crf: int = 18, preset: str = "veryfast", show_progress: bool = True,
                 avatar_cache: AvatarCache | None = None, optimize=None, feature_cache_mb: float = 1024.0,
                 rest_in_pauses: bool = True, quality_gate=None):
        """``model``: the registry id (or alias) the generator belongs to; it sets the crop policy, the pads and
        the default batch (``crop_policy`` / ``pads`` / ``batch_size`` override them). None: recognised from the
        generator's architecture (a 384 generator of another architecture counts as ``paper384``: our trainer's).
        ``rest_in_pauses``: in pauses of the speech show the avatar's own mouth, not the model's (render/silence.py).
        """
        import torch

        from wav2lip384.render.optimize import DEFAULT, PLAIN, describe_precision, optimize_generator

        if on_no_face not in ("error", "passthrough"):
            raise ValueError("on_no_face must be 'error' or 'passthrough'")
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        # ``optimize``: None = the default transforms of wav2lip384.render.optimize (BN folded into the convolutions,
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
        entry = _registry_entry(generator, model)
        self.model = entry.id if entry is not None else (model_name or f"custom{self.size}")
        self.model_name = model_name or (entry.title if entry is not None else self.model)
        self.load_info = getattr(generator, "load_info", None)  # weights.LoadInfo: source, sizes, load times
        self.weights = weights or getattr(self.load_info, "spec", "")
        # the crop the weights were trained on (registry); our own trainer uses the paper's square crop
        self.crop_policy = crop_policy or (entry.crop if entry is not None else "square")
        if self.crop_policy not in F.CROP_POLICIES:
            raise ValueError(f"crop_policy must be one of {F.CROP_POLICIES}, not {self.crop_policy!r}")
        self.pads = tuple(int(p) for p in (pads if pads is not None else
                                           (entry.pads if entry is not None else F.DEFAULT_PADS)))
        self.batch_size = int(batch_size or DEFAULT_BATCH.get(self.model, 32 if self.size <= 96 else 8))
        source = generator.to(self.device, self.dtype).eval()
        self.quality_gate = quality_gate  # a faster precision must pass it too (wav2lip384.evaluate.gate)
        # "auto": the fastest verified precision here (optimize.py); decisions kept in the pipeline's cache
        self.generator = optimize_generator(source, config, batch_size=self.batch_size, quality_gate=quality_gate,
                                            cache_dir=cache_dir)
        self.precision = describe_precision(getattr(self.generator, "precision", {"dtype": "fp32"}))
        # what encoder features depend on besides the crops: the model and its weights, the transforms (rows
        # kept, BN folded); the compute dtype / runtime is added per generator (_feature_model_of), so pipelines
        # that agree on all of them may share features
        self._feature_base = "|".join((self.model, _weights_fingerprint(generator),
                                       json.dumps(config.to_dict(), sort_keys=True)))
        # int8 in the product path (calibrate): the fp32 weights "auto" measures from, kept only where an
        # avatar-calibrated OpenVINO int8 model may still win (CPU, "auto", fp32 input, OpenVINO installed);
        # when fp32 runs already, that model itself (its transforms are idempotent: no second copy)
        self._reference = None
        if _int8_possible(config, self.device, self.dtype):
            chosen = getattr(self.generator, "precision", {}).get("chosen", "")
            self._reference = self.generator if chosen == "torch-fp32" else source
        self._int8: _Int8Check | None = None  # set when an avatar-calibrated int8 model runs (calibrate)
        self._lock = threading.Lock()
        self.max_audio_seconds, self.on_no_face, self.feather = float(max_audio_seconds), on_no_face, feather
        self.crf, self.preset, self.show_progress = crf, preset, show_progress
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        # share one AvatarCache between pipelines (e.g. the app's models) to prepare avatars once
        self.avatars = avatar_cache or AvatarCache(self.cache_dir)
        self._detector = detector
        self._detector_checkpoint = detector_checkpoint
        self.rest_in_pauses = bool(rest_in_pauses)
        # wall seconds per output frame that ran the model, and per render whatever its length (starting and
        # finishing the encoder), as last measured, per avatar kind ("image"/"video"): a stream's FramePace starts
        # from them (the app's warm-up measures them before the first answer)
        self.frame_seconds: dict[str, float] = {}
        self.render_fixed_seconds: dict[str, float] = {}

    # ---------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, model: str | int = registry.DEFAULT_MODEL, checkpoint: str | os.PathLike | None = None, *,
                        size: int | None = None,
                        detector_checkpoint: str | None = F.DEFAULT_S3FD_CHECKPOINT, device: str = "cpu",
                        dtype=None, cache_dir: str | os.PathLike | None = None,
                        weights_cache_dir: str | os.PathLike | None = None, batch_size: int | None = None,
                        download_progress: Callable[[int, int | None], None] | None = None,
                        **kwargs) -> LipSyncPipeline:
        """The pipeline of registry id ``model`` (``"wav2lip96"``, ``"wav2lip256"``, ``"livetalking384"``,
        ``"paper384"``; ``96`` and ``384`` are aliases; ``size=`` is the old keyword for the same).

        ``checkpoint``: a local file/folder or a Hub spec ``owner/name:file``; None = the model's default weights
        (paper384 has none: a clear :class:`UserFacingError` says how to provide them). A ``.pth`` is copied
        once, weights only, to safetensors under ``weights_cache_dir`` (default ``cache_dir/weights``) and read
        from there later. ``download_progress(done_bytes, total_bytes)`` follows a Hub download.
        """
        import torch

        from wav2lip384.models import registry
        from wav2lip384.weights import load_generator

        entry = registry.get(size if size is not None else model)
        dtype = dtype or torch.float32
        if weights_cache_dir is None and cache_dir is not None:
            weights_cache_dir = Path(cache_dir).expanduser() / "weights"
        generator = load_generator(entry.id, checkpoint, device=device, dtype=dtype, cache_dir=weights_cache_dir,
                                   progress=download_progress)
        weights = os.fspath(checkpoint) if checkpoint else (entry.default_weights or "default weights")
        return cls(generator, model=entry.id, weights=weights, detector_checkpoint=detector_checkpoint,
                   device=device, dtype=dtype, cache_dir=cache_dir, batch_size=batch_size, **kwargs)

    @property
    def detector(self) -> F.FaceDetector:
        """The face detector (S3FD when its weights resolve, else the offline Haar cascade), built once."""
        if self._detector is None:
            self._detector = F.build_detector(self._detector_checkpoint, device=str(self.device))
        return self._detector

    # ------------------------------------------------------------------------- inspection (bench, tests)
    def prepare(self, face: str | os.PathLike, seconds: float, *, fps: float | None = None, smooth: bool = True,
                pads: Sequence[int] | None = None, on_no_face: str | None = None) -> PreparedAvatar:
        """Decode, detect and crop ``face`` for ``seconds`` of speech, as a request does before the model
        (cached the same way: a later request for the avatar starts from here)."""
        return self._prepare(face, 0, seconds, fps=fps, pads=pads, smooth=smooth,
                             on_no_face=on_no_face or self.on_no_face, timings={})

    def mel_windows(self, wav16: np.ndarray, fps: float, n_frames: int | None = None) -> np.ndarray:
        """(N, 80, 16) mel windows, one per output frame, of 16 kHz mono speech."""
        return self._mel_windows(wav16, fps, n_frames)

    def pasted_frames(self, prep: PreparedAvatar, windows: np.ndarray, frames: Sequence[int],
                      generator=None) -> list[np.ndarray]:
        """Output frames ``frames`` (indices into ``windows``) from ``generator`` (default: this pipeline's
        optimised one) run on full model inputs, pasted back as a request pastes them (nothing encoded). Compares
        generators on identical crops and speech; frames without a face are returned unchanged."""
        import torch

        gen = self.generator if generator is None else generator
        av = prep.avatar
        src = [av.source_index(t) for t in frames]
        todo = [k for k, s in enumerate(src) if s not in prep.missing]
        out: list[np.ndarray] = [av.frames[s] for s in src]
        if not todo:
            return out
        dtype = next(gen.parameters()).dtype if generator is not None else self.dtype
        with torch.inference_mode():
            mel = torch.from_numpy(windows[[frames[k] for k in todo]])[:, None]  # (b, 1, 80, 16)
            faces = self._face_batch(prep.crops.crops[[src[k] for k in todo]])  # (b, 6, S, S)
            pred = gen(mel.to(self.device, dtype), faces.to(dtype))  # (b, 3, S, S) BGR [0, 1]
            pred = (pred.float().clamp_(0, 1).mul_(255).add_(0.5).permute(0, 2, 3, 1)
                    .to(torch.uint8).cpu().numpy()[..., ::-1])  # (b, S, S, 3) RGB uint8
        for j, k in enumerate(todo):
            out[k] = F.paste_back(av.frames[src[k]], pred[j], prep.crops.boxes[src[k]], feather=self.feather)
        return out

    def feature_cache(self, face: str | os.PathLike) -> dict:
        """Encoder features this pipeline keeps for an avatar in the avatar store: {"bytes": int, "frames": set of
        source frame indices} (a photo: frame 0 once encoded; empty for an avatar not prepared yet)."""
        slots = [s for s in self.avatars.feature_slots(self.avatars.get(face))
                 if s.key.model.startswith(self._feature_base + "|")]
        return {"bytes": sum(s.nbytes for s in slots), "frames": set().union(*(s.indices for s in slots))}

    def _feature_model_of(self, gen) -> str:
        """The model part of the encoder-feature key for generator ``gen``: the pipeline's model, weights and
        transforms, and how ``gen`` computes (runtime and dtype; an int8 model also its calibration)."""
        prec = getattr(gen, "precision", {}) or {}
        how = getattr(gen, "feature_tag", "") or prec.get("chosen") or f"torch-{prec.get('dtype', 'fp32')}"
        return f"{self._feature_base}|{how}"

    def _feature_key(self, gen, boxes: np.ndarray):
        from wav2lip384.render.avatars import FeatureKey

        return FeatureKey.of(self._feature_model_of(gen), self.dtype, boxes)

    # ------------------------------------------------------------------- int8 on the avatar's own frames
    def calibrate(self, face: str | os.PathLike, audio: AudioInput | None = None, *, frames: int | None = None,
                  should_stop: Callable[[], bool] | None = None, cache_dir: str | os.PathLike | None = None) -> dict:
        """Let "auto" consider OpenVINO int8 calibrated on this avatar's own model inputs, and run the winner.

        Prepares ``face`` (decode, detect, crop: cached like a request), takes ``frames`` face crops and mel windows
        of ``audio`` (speech with pauses, e.g. one synthesised sentence; None: a built-in voiced sound and a
        pause) spread evenly (:func:`optimize.calibration_from_crops`), and re-runs the measured choice of
        :func:`optimize.optimize_generator` with that calibration: int8 is quantised on half of it, every
        candidate is timed and verified on all of it, and a candidate that is faster than the running one and
        within tolerance replaces ``self.generator`` (the decision and the int8 IR are cached on disk, so a
        later start with the same weights, machine and avatar decides in seconds). When int8 runs, every OTHER
        avatar is verified on a few of its own frames before its first render (:meth:`avatar_precision`) and
        renders with the previous torch model when int8 is outside tolerance there.

        Returns the decision (:func:`optimize.precision_status` of the model now running, plus
        ``"swapped"``). Without a possible int8 candidate (GPU, a fixed dtype, ``int8="off"``, OpenVINO missing)
        nothing is measured and ``"swapped"`` is False. ``cache_dir``: where decisions and int8 IR are kept
        (default: DH_CACHE_DIR's, as for the choice made at construction). ``should_stop()`` True before the
        measurement starts: nothing is measured."""
        from wav2lip384.render.optimize import calibration_from_crops, optimize_generator, precision_status

        with self._lock:
            reference = self._reference
        if reference is None:
            return {**precision_status(self.generator), "swapped": False,
                    "skipped": "no int8 candidate here (GPU, a fixed dtype, int8 off, or OpenVINO not installed)"}
        if audio is None:
            wav16 = _calibration_sound()
        else:
            with tempfile.TemporaryDirectory(prefix="calibrate-", dir=self._tmp_root()) as tmp:
                wav16 = self._speech(audio, Path(tmp)).wav16
        prep = self.prepare(face, len(wav16) / 16000.0)
        windows = self._mel_windows(wav16, prep.fps)  # (N, 80, 16)
        usable = [i for i in range(len(prep.crops.crops)) if i not in prep.missing] or [0]
        n = int(frames or (8 if self.size <= 96 else 4))
        mel, faces = calibration_from_crops(prep.crops.crops[usable], windows, n=n)
        if should_stop is not None and should_stop():
            return {**precision_status(self.generator), "swapped": False, "skipped": "stopped"}
        new = optimize_generator(reference, self.optimization, batch_size=self.batch_size, calibration=(mel, faces),
                                 cache_dir=cache_dir if cache_dir is not None else self.cache_dir,
                                 quality_gate=self.quality_gate)
        chosen = new.precision.get("chosen", "")
        with self._lock:
            old = self.generator
            running = getattr(old, "precision", {}).get("chosen", "")
            swapped = chosen != running or chosen == "openvino-int8"
            if chosen == "openvino-int8":
                import hashlib

                digest = hashlib.sha256(mel.numpy().tobytes() + faces.numpy().tobytes()).hexdigest()[:16]
                new.feature_tag = f"{chosen}@{digest}"  # other calibration, other int8 model, other features
                previous = self._int8.fallback if self._int8 is not None else old
                fallback = previous if getattr(previous, "backend", "torch") == "torch" else reference
                self._int8 = _Int8Check(prep.avatar.key, np.asarray(mel), fallback, reference,
                                        {prep.avatar.key: {"verified": True, "calibrated_on": True}})
                self.generator = new
            elif swapped:  # a torch dtype measured faster on the avatar's frames: int8 lost, fp32 no longer needed
                self.generator, self._int8, self._reference = new, None, None
            else:  # the same torch path won again: keep the running model, record the newer measurement
                old.precision = new.precision
                self._int8, self._reference = None, None
            self.precision = describe_precision_of(self.generator)
            return {**precision_status(self.generator), "swapped": swapped}

    def avatar_precision(self, face: str | os.PathLike) -> dict:
        """How ``face`` renders: {"precision": one line for Status/log, "verified": bool | None, diff levels}; an
        avatar other than the calibration avatar is verified here (a few of its frames through int8 and fp32)
        when an avatar-calibrated int8 model runs and it was not verified yet (None: no check needed)."""
        av = self.avatars.get(face)
        self._generator_for(av)  # verifies it when needed
        check = self._int8
        info = dict(check.results.get(av.key, {})) if check is not None else {}
        return {"precision": self._precision_for(av), "verified": info.get("verified"), **info}

    def _precision_for(self, av: Avatar) -> str:
        """How avatar ``av`` was rendered, in one line (the running model's, or why it fell back there)."""
        check = self._int8
        info = check.results.get(av.key) if check is not None else None
        if not info:
            return self.precision
        return describe_precision_of(self.generator if info.get("verified") else check.fallback, info)

    def _generator_for(self, av: Avatar, crops: CropSet | None = None, missing: set[int] | frozenset = frozenset()):
        """The generator that renders avatar ``av``: ``self.generator``, unless an avatar-calibrated int8 model
        runs and this avatar's frames take it outside tolerance of fp32 (then the previous torch model).
        Verifies the avatar on first use (``crops``: its prepared crops; without them it is prepared here)."""
        with self._lock:
            gen, check = self.generator, self._int8
        if check is None:
            return gen
        result = check.results.get(av.key)
        if result is None:
            if crops is None:
                prep = self._prepare(av.path, 0, 1.0, fps=None, pads=None, smooth=True, on_no_face="passthrough",
                                     timings={})
                crops, missing = prep.crops, prep.missing
            result = check.verify(gen, av.key, crops, missing, self.optimization)
        return gen if result.get("verified") else check.fallback

    # --------------------------------------------------------------------------------------- requests
    def __call__(self, face: str | os.PathLike, audio: AudioInput, out_path: str | os.PathLike | None = None, *,
                 fps: float | None = None, smooth: bool = True, pads: Sequence[int] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 on_no_face: str | None = None, should_stop: Callable[[], bool] | None = None) -> LipSyncResult:
        """Lip-sync ``face`` (image or video file) to ``audio`` (file path or ``(samples, sample_rate)``).

        ``fps`` applies to photo avatars (default 25); a video avatar keeps its own frame rate.
        ``out_path=None`` writes ``lipsync.mp4`` into a new directory that the caller owns.
        ``pads`` (top, bottom, left, right) default to the model's (registry). ``progress(done, total)`` is
        called after each batch of frames (a tqdm bar is shown as well). ``should_stop()`` is asked between model
        batches: True stops rendering within one batch and raises :class:`RenderStopped` (no file is left).
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
            rest = rest_weights(speech.wav16, prep.fps, n) if self.rest_in_pauses else None
            writer = self._render(prep, windows, range(n), range(n), speech.mux_path, out_path, "mp4", timings,
                                  progress, rest=rest, should_stop=should_stop)
            timings.pop("model_frames", None)  # a count, not a step's seconds
            timings.pop("fixed", None)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        timings["total"] = time.perf_counter() - t_start
        return LipSyncResult(output_path=out_path, fps=prep.fps, n_frames=n, duration_s=n / prep.fps,
                             width=writer.out_width, height=writer.out_height,
                             timings={k: round(v, 4) for k, v in timings.items()}, detector=prep.det.detector,
                             model=self.model, avatar_kind=prep.avatar.kind, warnings=prep.warnings,
                             avatar_cached=prep.cached, precision=self._precision_for(prep.avatar),
                             weights=self.weights,
                             crop_policy=self.crop_policy)

    def stream(self, face: str | os.PathLike, audio_segments: Iterable[tuple[np.ndarray, int]],
               out_dir: str | os.PathLike, *, fps: float | None = None, smooth: bool = True,
               pads: Sequence[int] | None = None, fmt: str = "mp4", max_chunk_seconds: float | None = None,
               on_no_face: str | None = None, audio_codec: str | None = None,
               pace: FramePace | None = None, should_stop: Callable[[], bool] | None = None,
               max_batch_s: float | None = None) -> Iterator[Path]:
        """Yield one playable video chunk per audio segment (e.g. one per synthesised sentence).

        Frame indices continue across chunks (the video avatar keeps playing where the last chunk stopped)
        and chunk lengths follow the cumulative audio duration, so the chunks played back to back stay in
        sync. ``fmt="ts"`` writes MPEG-TS segments with continuous timestamps (HLS-style), ``"mp4"``
        self-contained fast-start mp4 files. ``max_chunk_seconds`` splits long segments into several chunks
        (the first video appears sooner); the mel is still computed over the whole segment, so the split
        changes no frame.

        ``audio_codec``: default ``"flac"`` in mp4 chunks, ``"aac"`` in ts. Lossless audio decodes to exactly the
        segment's samples, so a player (or Gradio's streaming output) that decodes chunk after chunk and queues
        the samples hears the speech for as long as it lasts; AAC chunks decode up to one AAC frame (64 ms at
        16 kHz) longer with ffmpeg < 7 (its end padding), which added up to +0.2 s over an 8-chunk answer.

        ``pace`` (render/pacing.py): before each chunk it picks the chunk's frame rate from the render speed
        measured so far (this pipeline's last render of the avatar's kind, then every chunk of this stream, which
        is recorded into it before the chunk is yielded): the avatar's rate, or half of it when that cannot keep up
        with the voice. The audio is untouched: a chunk at half the rate lasts as long as its speech. Segments are
        read one at a time, after the previous chunk was taken, so the caller may size each next one from the
        pace.

        ``should_stop()`` (a barge-in: the visitor speaks or asks again) is asked before each segment is read, before
        each chunk and between model batches: once it returns True the stream ends within one model batch,
        without yielding the unfinished chunk (its file is removed). ``max_batch_s`` bounds how long one model
        batch may take at the speed ``pace`` measured (batch = that many seconds / seconds per frame, at most the
        pipeline's batch, at least ``MIN_BATCH``), i.e. how late a stop is seen; None: the pipeline's batch.
        Measured on the 2-core bf16 CPU (random 96, shared machine): bf16 costs about the same per frame in
        batches of 4 to 32, fp32 up to 2x more per frame in batches of 4 than of 32, so keep it None for fp32.
        """
        # size-reason: one loop over segments and the chunks cut from them; the counters that keep chunks in sync
        #   with the speech (frames_done, emitted, index), the pace and the stop test are shared by both levels.
        audio_codec = audio_codec or ("flac" if fmt == "mp4" else "aac")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="lipsync-stream-", dir=self._tmp_root()))
        try:
            frames_done = 0  # frames at the avatar's rate whose speech earlier segments held
            emitted = 0  # frames at the avatar's rate that earlier chunks' videos cover (at half the rate this may
            # differ from the speech by one frame at a chunk's end; the next chunk evens it out: no drift)
            seconds_done = 0.0
            index = 0
            stop = should_stop or (lambda: False)
            for k, segment in enumerate(_until(audio_segments, stop)):
                timings: dict[str, float] = {}
                speech = self._speech(segment, work, name=f"segment_{k:04d}.wav", limit_total=seconds_done)
                prep = self._prepare(face, frames_done, speech.seconds, fps=fps, pads=pads, smooth=smooth,
                                     on_no_face=on_no_face or self.on_no_face, timings=timings)
                seconds_done += speech.seconds
                n = max(1, int(round(seconds_done * prep.fps)) - frames_done)  # cumulative: no drift
                windows = self._mel_windows(speech.wav16, prep.fps, n_frames=n)  # (n, 80, 16)
                rest = rest_weights(speech.wav16, prep.fps, n) if self.rest_in_pauses else None
                if pace is not None:
                    pace.base_fps = prep.fps
                    if pace.frame_s is None:
                        pace.frame_s = self.frame_seconds.get(prep.avatar.kind)
                        pace.fixed_s = self.render_fixed_seconds.get(prep.avatar.kind, 0.0)
                per = n if not max_chunk_seconds else max(1, int(round(max_chunk_seconds * prep.fps)))
                for a in range(0, n, per):
                    if stop():
                        return
                    b = min(n, a + per)
                    step = pace.choose() if pace is not None else 1
                    # output frames of this chunk: its speech ends at frame frames_done + b (avatar's rate)
                    m = max(1, int(np.floor((frames_done + b - emitted) / step + 0.5)))
                    times = [emitted + j * step for j in range(m)]  # at the avatar's rate, from the answer's start
                    picks = [min(n - 1, max(0, t - frames_done)) for t in times]  # into this segment's windows
                    mux = speech.mux_path if per >= n else speech.slice_to(
                        work / f"piece_{index:04d}.wav", a / prep.fps, None if b == n else b / prep.fps)
                    path = out_dir / f"chunk_{index:04d}.{fmt}"
                    t = time.perf_counter()
                    batch = None
                    if max_batch_s and pace is not None and pace.frame_s:
                        batch = max(MIN_BATCH, min(self.batch_size, int(max_batch_s / pace.frame_s)))
                    try:
                        self._render(prep, windows, picks, times, mux, path, fmt, timings, None,
                                     start_time=emitted / prep.fps, audio_codec=audio_codec, rest=rest, step=step,
                                     should_stop=stop, batch_size=batch, b_frames=False)
                    except RenderStopped:
                        return
                    if pace is not None:  # measured before the chunk is handed on: the next one's rate uses it
                        pace.record(m, int(timings.pop("model_frames", m)), time.perf_counter() - t,
                                    timings.pop("fixed", 0.0))
                    emitted += m * step
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
        from wav2lip384.media.audio import load_audio, resample_mono

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
        from wav2lip384.media.audio import GENERATOR_WINDOW_OFFSET_S, frames_for_audio, mel_windows, melspectrogram

        n = n_frames or frames_for_audio(len(wav16), fps)
        # frame i is driven by the window starting 40 ms earlier: the alignment the generators were trained with
        # (the original inference used 0, so its mouths led the sound by one frame; see audio.py)
        return mel_windows(melspectrogram(wav16), fps, n_frames=n, offset_s=GENERATOR_WINDOW_OFFSET_S)  # (N, 80, 16)

    def _prepare(self, face, start: int, seconds: float, *, fps, pads, smooth, on_no_face, timings) -> PreparedAvatar:
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
        pads = self.pads if pads is None else tuple(int(p) for p in pads)
        crops = avatar.crops(detector.name, self.size, pads=pads, smooth=smooth, policy=self.crop_policy)
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
        return PreparedAvatar(avatar, det, crops, set(missing), warnings, rate, cached)

    def _face_batch(self, crops: np.ndarray):
        """(B, S, S, 3) RGB uint8 crops -> (B, 6, S, S) model input: [lower half masked | reference], BGR in [0, 1]."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1]))  # RGB -> BGR, (B, S, S, 3)
        x = x.to(self.device).permute(0, 3, 1, 2).to(self.dtype).div_(255.0)  # (B, 3, S, S)
        masked = x.clone()
        masked[:, :, self.size // 2:] = 0  # the generator must draw the lower half from the audio
        return torch.cat([masked, x], dim=1)  # (B, 6, S, S)

    def _video_feats(self, gen, av: Avatar, crops: CropSet, src: list[int]) -> list:
        """Encoder features (trimmed to the rows the decoder reads) of source frames ``src`` by generator ``gen``,
        batched per level; computed for frames not cached yet, and kept while the avatar's feature budget allows."""
        import torch

        # typed slot of the avatar store: counted in its memory budget; the boxes decide the crops (pads,
        # smoothing, policy), so other boxes mean another slot
        slot = self.avatars.features(av, self._feature_key(gen, crops.boxes), max_bytes=self.feature_cache_bytes)
        new = [s for s in dict.fromkeys(src) if s not in slot]
        fresh = {}
        if new:
            feats = gen.trim_feats(gen.encode_faces(self._face_batch(crops.crops[new])))  # per level (n, C, h', w)
            for j, s in enumerate(new):
                one = [f[j:j + 1].clone() for f in feats]  # (1, C, h', w) each; clone frees the batch tensor
                if not slot.put(s, one):  # over the budget: used for this batch only
                    fresh[s] = one
        per_frame = [slot.get(s) or fresh[s] for s in src]
        return [torch.cat([f[level] for f in per_frame]) for level in range(len(per_frame[0]))]  # (b, C, h', w)

    def _render(self, prep: PreparedAvatar, windows: np.ndarray, picks: Sequence[int], times: Sequence[int],
                mux_path: Path, out_path: Path, fmt: str, timings: dict[str, float], progress,
                start_time: float = 0.0, audio_codec: str = "aac", rest: np.ndarray | None = None,
                step: int = 1, should_stop: Callable[[], bool] | None = None,
                batch_size: int | None = None, b_frames: bool = True) -> VideoWriter:
        """Render output frames ``picks`` (indices into ``windows`` and ``rest``) at frame times ``times`` (frames
        at the avatar's rate from the start of the answer: they pick the video avatar's source frames), written at
        the avatar's rate / ``step``. ``rest``: per window, how much of the rest pose (the avatar's own frame) to
        show (render/silence.py); a frame that is all rest pose skips the model. ``should_stop()`` is asked before
        and after each model batch: True aborts the file and raises :class:`RenderStopped`. ``batch_size``:
        frames per model call (default ``self.batch_size``)."""
        # size-reason: the render loop (batches through the model, rest-pose frames around it, paste-back, the
        # encoder) shares its buffers and timings across those steps; split, each step would take them all.
        import torch
        from tqdm.auto import tqdm

        av = prep.avatar
        picks, times = list(picks), list(times)
        n = len(picks)
        rest_w = np.zeros(n, np.float32) if rest is None else np.asarray(rest, np.float32)[picks]
        t_model = t_paste = t_encode = 0.0
        model_frames = 0
        t_all = time.perf_counter()
        photo = av.kind == "image"
        gen = self._generator_for(av, prep.crops, prep.missing)  # int8 unless outside tolerance on this avatar
        batch = max(1, int(batch_size or self.batch_size))
        stop = should_stop or (lambda: False)
        writer = VideoWriter(out_path, av.width, av.height, prep.fps / step, audio_path=mux_path, fmt=fmt,
                             crf=self.crf, preset=self.preset, start_time=start_time, audio_codec=audio_codec,
                             b_frames=b_frames)
        t_fixed = time.perf_counter() - t_all  # starting the encoder (and closing it, below): per render
        bar = tqdm(total=n, desc=f"lip-sync {self.model}", unit="frame", disable=not self.show_progress, leave=False)
        try:
            with torch.inference_mode():
                feats = None
                if photo and 0 not in prep.missing and bool(np.any(rest_w < 1.0)):
                    slot = self.avatars.features(av, self._feature_key(gen, prep.crops.boxes[:1]))
                    feats = slot.get(0)
                    if feats is None:
                        t = time.perf_counter()
                        feats = gen.encode_faces(self._face_batch(prep.crops.crops[:1]))  # once per photo
                        slot.put(0, feats)  # kept while the store's memory budget allows
                        t_model += time.perf_counter() - t
                for b0 in range(0, n, batch):
                    if stop():
                        raise RenderStopped
                    ks = range(b0, min(n, b0 + batch))
                    src = [av.source_index(times[k]) for k in ks]
                    # the model runs for frames with a face that are not wholly the rest pose
                    todo = [j for j, (k, s) in enumerate(zip(ks, src, strict=True))
                            if s not in prep.missing and rest_w[k] < 1.0]
                    model_frames += len(todo)
                    out = None
                    t = time.perf_counter()
                    if todo:
                        mel = torch.from_numpy(windows[[picks[ks[j]] for j in todo]])[:, None]  # (b, 1, 80, 16)
                        mel = mel.to(self.device, self.dtype)
                        if feats is not None:
                            pred = gen.decode(gen.encode_audio(mel), feats)  # (b, 3, S, S)
                        elif self.feature_cache_bytes > 0:
                            feats_b = self._video_feats(gen, av, prep.crops, [src[j] for j in todo])  # per level
                            pred = gen.decode(gen.encode_audio(mel), feats_b)  # (b, 3, S, S)
                        else:
                            pred = gen(mel, self._face_batch(prep.crops.crops[[src[j] for j in todo]]))
                        # (b, 3, S, S) BGR [0, 1] -> (b, S, S, 3) RGB uint8
                        out = (pred.float().clamp_(0, 1).mul_(255).add_(0.5).permute(0, 2, 3, 1)
                               .to(torch.uint8).cpu().numpy()[..., ::-1])
                    t_model += time.perf_counter() - t
                    if todo and stop():
                        raise RenderStopped
                    made = dict(zip(todo, range(len(todo)), strict=True))  # position in the batch -> row of ``out``
                    for j, (k, s) in enumerate(zip(ks, src, strict=True)):
                        t = time.perf_counter()
                        frame = av.frames[s]  # the rest pose (and frames without a face)
                        if j in made:
                            pasted = F.paste_back(frame, out[made[j]], prep.crops.boxes[s], feather=self.feather)
                            w = float(rest_w[k])
                            frame = pasted if w <= 0.0 else _blend(pasted, frame, w)
                        t2 = time.perf_counter()
                        writer.write(frame)
                        t3 = time.perf_counter()
                        t_paste += t2 - t
                        t_encode += t3 - t2
                    bar.update(len(src))
                    if progress is not None:
                        progress(min(n, b0 + batch), n)
            t = time.perf_counter()
            writer.close()
            t_encode += time.perf_counter() - t
            t_fixed += time.perf_counter() - t
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
        cost = frame_cost(n, model_frames, time.perf_counter() - t_all, t_fixed)
        if cost is not None:
            self.frame_seconds[av.kind] = cost
            self.render_fixed_seconds[av.kind] = t_fixed
        timings["model"] = timings.get("model", 0.0) + t_model
        timings["paste"] = timings.get("paste", 0.0) + t_paste
        timings["encode"] = timings.get("encode", 0.0) + t_encode
        timings["model_frames"] = model_frames
        timings["fixed"] = t_fixed
        return writer


def _until(items: Iterable, stop: Callable[[], bool]) -> Iterator:
    """``items`` one at a time while ``stop()`` is False (asked before each next item is read)."""
    it = iter(items)
    while not stop():
        try:
            yield next(it)
        except StopIteration:
            return


def _blend(generated: np.ndarray, rest: np.ndarray, w: float) -> np.ndarray:
    """``w`` of the rest pose over ``1 - w`` of the generated frame (uint8 RGB, same size), only where they
    differ (the pasted face box)."""
    diff = np.any(generated != rest, axis=2)
    rows, cols = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
    if rows.size == 0:
        return generated
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    out = generated.copy()
    g = generated[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = (g + w * (rest[y0:y1, x0:x1].astype(np.float32) - g) + 0.5).astype(np.uint8)
    return out
