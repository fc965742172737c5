"""The lip-sync check of precision levers (issue 25): a faster precision (bf16, int8, any runtime) is taken only if
it keeps the lips in sync as well as fp32 does, by the protocol's own score.

:class:`LseGate` is a ``quality_gate`` for :func:`wav2lip384.render.optimize.optimize_generator` (and
``LipSyncPipeline(quality_gate=...)``). "auto" precision calls it for a candidate that was already timed faster
and found within the grey-level tolerance of fp32; the gate then renders the example clip(s) (a photo avatar and
a few seconds of example speech) once with the fp32 generator and once with the candidate, exactly as a request
renders them (the model's crop policy and pads, the generator's mel windows, the feathered paste-back, H.264 at
the pipeline's quality with lossless audio), scores both videos with syncnet_python's network
(:func:`wav2lip384.evaluate.lse.video_scores`: LSE-D, LSE-C, the face found once in the photo) and refuses the
candidate when its LSE-C (mean over the clips) is lower than fp32's by more than :data:`MAX_LSE_C_DROP`.

It runs ONLY where the figure means something: the generator's weights are the published file (random or
half-trained weights have no lip sync to lose) and syncnet_python's weights resolve. Otherwise its verdict says
"not run: <why>" and it accepts (the grey-level tolerance still applies). Its :attr:`LseGate.cache_key` says
which of these holds (and which SyncNet file, clips and detector), so a precision decided without the check is
decided again once the check can run.

The generators are used directly (the photo's face features encoded once, then ``decode(encode_audio(mel))``
per batch, as a request for a photo avatar runs them), not through the render pipeline: the pipeline being built
is the one asking. Rendering a 3 s clip costs 75 generator frames per model plus 70 SyncNet windows per
video; it happens once per machine and weights (the decision is cached).
"""

from __future__ import annotations

import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserFacingError
from wav2lip384.evaluate.lse import DEFAULT_SYNCNET, FPS

MAX_LSE_C_DROP = 0.1  # issue 25: a lever that lowers LSE-C by more than this on the example clips is not chosen
GATE_SECONDS = 3.0  # of example speech per clip (75 frames: scored as a short clip, same windows for both)
NOT_PUBLISHED = "not run: weights are not published ones"
NO_SYNCNET = "not run: no SyncNet weights"
CRF = 18  # the pipeline's default video quality: the check scores what a visitor would see

Scorer = Callable[[str, Path], dict]  # (generator label, rendered video) -> {"lse_c", "lse_d", ...}


@dataclass(frozen=True)
class ExampleClip:
    """A photo avatar (``face``) and example speech (``speech``, its first ``seconds``)."""

    face: Path
    speech: Path
    seconds: float = GATE_SECONDS

    def identity(self) -> list:
        """Names, content digests and length: what the check's figures depend on of the clip."""
        return [self.face.name, _digest(self.face), self.speech.name, _digest(self.speech), self.seconds]


def _digest(path: Path) -> str:
    from wav2lip384.weights import file_sha256

    return file_sha256(path)[:16]


@dataclass
class _Prepared:
    """One clip, ready for any generator: the photo, its raw face box, the crop box by the model's policy, the
    model's face input (1, 6, S, S), the mel windows (n, 80, 16) and the speech file the videos carry."""

    photo: np.ndarray
    raw_box: np.ndarray
    box: np.ndarray
    face_input: Any
    windows: np.ndarray
    wav_path: Path


class LseGate:
    """``quality_gate(name, candidate, fp32) -> verdict``: refuse a candidate whose LSE-C on the example clips is
    more than ``max_drop`` below fp32's (module docstring). Build it with :func:`lse_gate_for`.

    ``syncnet``: a spec of syncnet_python's weights (path or ``owner/name:file``; "" = scores turned off) or a
    model from :func:`wav2lip384.evaluate.load_syncnet_s`. ``model``: the registry id of the generator (its crop
    policy and pads); ``detector``: a :class:`wav2lip384.faces.FaceDetector` (default: S3FD, else OpenCV's).
    ``scorer``: replaces SyncNet (``scorer(label, video) -> {"lse_c", "lse_d"}``; tests make a drop exact with
    it). ``work_dir``: where the short videos are written (a temporary folder inside, removed after each check).
    """

    def __init__(self, clips: Sequence[ExampleClip], *, weights_published: bool, syncnet: Any = DEFAULT_SYNCNET,
                 model: str | int | None = None, detector=None, s3fd_checkpoint: str | None = None,
                 device: str = "cpu", max_drop: float = MAX_LSE_C_DROP, scorer: Scorer | None = None,
                 work_dir: str | Path | None = None, batch_size: int = 8):
        from wav2lip384 import faces as F
        from wav2lip384.models import registry

        self.clips = [ExampleClip(Path(c.face), Path(c.speech), float(c.seconds)) for c in clips]
        if not self.clips:
            raise ValueError("the lip-sync check needs at least one example clip")
        self.weights_published = bool(weights_published)
        self.syncnet_spec = syncnet
        self.max_drop = float(max_drop)
        self.scorer = scorer
        self.device = device
        self.work_dir = Path(work_dir).expanduser() if work_dir is not None else None
        self.batch_size = int(batch_size)
        entry = registry.get(model) if model is not None else None
        self.crop_policy = entry.crop if entry is not None else F.DEFAULT_CROP_POLICY
        self.pads = tuple(entry.pads) if entry is not None else F.DEFAULT_PADS
        self._detector = detector
        self._s3fd = s3fd_checkpoint
        self._syncnet = None if isinstance(syncnet, (str, Path)) else syncnet  # a given model
        self._syncnet_error = ""
        self._key: Any = None
        self._fp32: tuple[Any, list] | None = None  # (weak ref to the fp32 model, its figures): once per decision

    # ------------------------------------------------------------------------------------- can it run?
    def not_run_reason(self) -> str:
        """"" when the check runs; else its "not run: <why>" verdict (resolves SyncNet's weights once: a Hub
        download when they are not cached and the Hub is reachable)."""
        if not self.weights_published:
            return NOT_PUBLISHED
        if self.scorer is not None:
            return ""
        if self._syncnet is None and not self._syncnet_error:
            from wav2lip384.evaluate.lse import load_syncnet_s

            spec = str(self.syncnet_spec or "")
            if not spec:
                self._syncnet_error = "lip-sync scores are turned off (DH_SYNCNET_CHECKPOINT is empty)"
            else:
                try:
                    self._syncnet = load_syncnet_s(spec, self.device)
                except UserFacingError as err:
                    self._syncnet_error = str(err)
        return f"{NO_SYNCNET} ({self._syncnet_error})" if self._syncnet is None else ""

    @property
    def cache_key(self) -> dict:
        """What a precision decision depends on of this check: whether it runs (and why not), else the SyncNet
        file (sha256), the clips (content digests), the detector, crop policy and threshold."""
        if self._key is None:
            syncnet = self._known_syncnet()  # a local or cached file: known without loading it
            why = "" if syncnet else self.not_run_reason()
            if why:
                self._key = {"check": "lse_c", "runs": False, "why": why.split(" (")[0]}
            else:
                if not syncnet:
                    prov = getattr(self._syncnet, "provenance", None)
                    syncnet = (prov.sha256 or prov.describe()) if prov is not None else "given model"
                self._key = {"check": "lse_c", "runs": True, "max_drop": self.max_drop, "syncnet": syncnet,
                             "clips": [c.identity() for c in self.clips], "detector": self.detector.name,
                             "crop": [self.crop_policy, list(self.pads)]}
        return self._key

    def _known_syncnet(self) -> str:
        """The SyncNet file's sha256 when the check will run on a file that is already here ("" otherwise)."""
        if not self.weights_published:
            return ""
        if self.scorer is not None:
            return "injected scorer"
        if self._syncnet is not None or not str(self.syncnet_spec or ""):
            return ""
        from wav2lip384.evaluate.lse import syncnet_provenance

        return syncnet_provenance(self.syncnet_spec).sha256

    @property
    def detector(self):
        if self._detector is None:
            from wav2lip384 import faces as F

            self._detector = F.build_detector(self._s3fd or F.DEFAULT_S3FD_CHECKPOINT, device=self.device)
        return self._detector

    # ------------------------------------------------------------------------------------------ the check
    def __call__(self, name: str, candidate, fp32) -> dict:
        why = self.not_run_reason()
        if why:
            return {"ran": False, "accepted": True, "verdict": why}
        t0 = time.perf_counter()
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="lse-gate-", dir=self.work_dir) as tmp:
            work = Path(tmp)
            prepared = [self._prepare(c, work / f"speech{i}.wav", fp32.img_size) for i, c in enumerate(self.clips)]
            if self._fp32 is None or self._fp32[0]() is not fp32:  # a weak reference: the gate keeps no model
                self._fp32 = (weakref.ref(fp32), self._score_all("torch-fp32", fp32, prepared, work))
            ref = self._fp32[1]
            cand = self._score_all(name, candidate, prepared, work)
        lse_c_ref = float(np.mean([r["lse_c"] for r in ref]))
        lse_c = float(np.mean([r["lse_c"] for r in cand]))
        drop = lse_c_ref - lse_c
        accepted = drop <= self.max_drop
        figures = f"LSE-C {lse_c:.3f} against {lse_c_ref:.3f} with fp32"
        verdict = (f"accepted ({figures})" if accepted
                   else f"rejected: LSE-C lower by {drop:.3f} than fp32's, more than {self.max_drop:g} ({figures})")
        return {"ran": True, "accepted": accepted, "verdict": verdict, "lse_c_fp32": round(lse_c_ref, 4),
                "lse_c": round(lse_c, 4), "lse_c_drop": round(drop, 4), "max_drop": self.max_drop,
                "lse_d_fp32": round(float(np.mean([r["lse_d"] for r in ref])), 4),
                "lse_d": round(float(np.mean([r["lse_d"] for r in cand])), 4),
                "clips": [{"face": c.face.name, "speech": c.speech.name, "seconds": c.seconds,
                           "lse_c_fp32": round(r["lse_c"], 4), "lse_c": round(k["lse_c"], 4)}
                          for c, r, k in zip(self.clips, ref, cand, strict=True)],
                "syncnet": self.cache_key["syncnet"], "detector": self.detector.description,
                "seconds": round(time.perf_counter() - t0, 2)}

    def _score_all(self, label: str, model, prepared: list[_Prepared], work: Path) -> list[dict]:
        out = []
        for i, prep in enumerate(prepared):
            video = self._render(model, prep, work / f"{label.replace('/', '_')}-{i}.mp4")
            out.append(self._score(label, video, prep))
        return out

    def _score(self, label: str, video: Path, prep: _Prepared) -> dict:
        if self.scorer is not None:
            return self.scorer(label, video)
        from wav2lip384.evaluate.lse import video_scores

        n_frames = len(prep.windows)
        res = video_scores(video, syncnet=self._syncnet, detector=self.detector, device=self.device,
                           boxes=np.repeat(prep.raw_box[None], n_frames, axis=0))  # the photo's face, once
        lse = res["lse"]
        if not lse["available"]:
            raise UserFacingError(f"lip-sync check: {video.name}: {lse['reason']}")
        return {"lse_c": lse["lse_c"], "lse_d": lse["lse_d"], "av_offset_frames": lse["av_offset_frames"]}

    # --------------------------------------------------------------------------------------- rendering
    def _prepare(self, clip: ExampleClip, wav_path: Path, size: int) -> _Prepared:
        import soundfile as sf

        from common.audio import load_audio
        from wav2lip384 import faces as F
        from wav2lip384.media.audio import (
            GENERATOR_WINDOW_OFFSET_S,
            SAMPLES_PER_FRAME,
            mel_windows,
            melspectrogram,
        )
        from wav2lip384.media.video import read_image
        from wav2lip384.render.optimize import calibration_from_crops

        photo = read_image(clip.face)
        if photo.shape[0] % 2 or photo.shape[1] % 2:  # H.264 (yuv420p) pads odd sizes: keep the frame's size
            photo = np.ascontiguousarray(photo[: photo.shape[0] // 2 * 2, : photo.shape[1] // 2 * 2])
        raw = F.detect_faces(self.detector, [photo]).boxes  # (1, 4), NaN when no face
        if np.isnan(raw[0, 0]):
            raise UserFacingError(f"lip-sync check: no face in {clip.face.name} ({self.detector.description})")
        box = F.face_boxes(raw, photo.shape, pads=self.pads, smooth=False, policy=self.crop_policy)[0]
        n = int(round(clip.seconds * FPS))
        wav = load_audio(clip.speech, max_seconds=None)[: n * SAMPLES_PER_FRAME]
        n = len(wav) // SAMPLES_PER_FRAME
        if n < 6:
            raise UserFacingError(f"lip-sync check: {clip.speech.name} is too short")
        wav = wav[: n * SAMPLES_PER_FRAME]
        sf.write(wav_path, wav, 16000)
        # the generator's windows, as the pipeline builds them (LipSyncPipeline.mel_windows)
        windows = mel_windows(melspectrogram(wav), FPS, n_frames=n, offset_s=GENERATOR_WINDOW_OFFSET_S)
        crop = F.crop_face(photo, box, size)[None]  # (1, S, S, 3) RGB
        _, face_input = calibration_from_crops(crop, windows[:1], n=1)  # the pipeline's model input (1, 6, S, S)
        return _Prepared(photo, raw[0], box, face_input, windows, wav_path)

    def _render(self, model, prep: _Prepared, out: Path) -> Path:
        """The clip through ``model``: every frame's mouth pasted into the photo, H.264 + lossless audio."""
        import torch

        from wav2lip384 import faces as F
        from wav2lip384.media.video import VideoWriter

        device = next(iter(model.parameters())).device
        h, w = prep.photo.shape[:2]
        with VideoWriter(out, w, h, FPS, audio_path=prep.wav_path, audio_codec="flac", crf=CRF) as writer, \
                torch.inference_mode():
            feats = model.encode_faces(prep.face_input.to(device))  # once per photo, as a request does
            for i in range(0, len(prep.windows), self.batch_size):
                mel = torch.from_numpy(prep.windows[i:i + self.batch_size])[:, None].to(device)  # (b, 1, 80, 16)
                pred = model.decode(model.encode_audio(mel), feats)  # (b, 3, S, S) BGR [0, 1]
                pred = (pred.float().clamp_(0, 1).mul_(255).add_(0.5).permute(0, 2, 3, 1)
                        .to(torch.uint8).cpu().numpy()[..., ::-1])  # (b, S, S, 3) RGB
                for face in pred:
                    writer.write(F.paste_back(prep.photo, np.ascontiguousarray(face), prep.box, feather=True))
        return out


def lse_gate_for(model: str | int | None, *, weights_published: bool, face: str | Path, speech: str | Path,
                 seconds: float = GATE_SECONDS, syncnet: Any = DEFAULT_SYNCNET, detector=None,
                 s3fd_checkpoint: str | None = None, device: str = "cpu", work_dir: str | Path | None = None,
                 max_drop: float = MAX_LSE_C_DROP) -> LseGate:
    """The lip-sync check for ``model``'s pipeline (``LipSyncPipeline(..., quality_gate=lse_gate_for(...))``).

    ``weights_published``: the generator's weights are the published file
    (:attr:`wav2lip384.weights.Provenance.published`); ``face`` / ``speech``: the example photo and speech
    (the first ``seconds`` are rendered); ``syncnet``: DH_SYNCNET_CHECKPOINT's spec (or a loaded model);
    ``detector``: the app's shared face detector. Nothing is loaded until a precision decision asks."""
    return LseGate([ExampleClip(Path(face), Path(speech), seconds)], weights_published=weights_published,
                   syncnet=syncnet, model=model, detector=detector, s3fd_checkpoint=s3fd_checkpoint, device=device,
                   max_drop=max_drop, work_dir=work_dir)

