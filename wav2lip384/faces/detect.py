"""Face detectors and one detection pass over frames.

Frames are RGB ``uint8`` arrays of shape (H, W, 3). Detectors share one small interface (:class:`FaceDetector`):
:class:`S3FDDetector` (the paper's and Wav2Lip's detector, through ``face-alignment``) and :class:`HaarDetector`
(OpenCV's bundled cascade, always available offline). :func:`detect_faces` keeps the largest face per frame;
:func:`count_faces` is the one rule for "how many faces matter" (pipeline and upload checks alike).
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserFacingError

log = logging.getLogger(__name__)

DEFAULT_S3FD_CHECKPOINT = "camenduru/Wav2Lip:face_detection/detection/sfd/s3fd.pth"
# face-alignment's own download name for the same network, looked up in the torch hub cache
_TORCH_HUB_S3FD_NAME = "s3fd-619a316812.pth"
# Detection runs on frames whose longer side is at most this many pixels (boxes are scaled back). Talking
# heads are large in the frame, and S3FD at 1080x1920 costs ~8x more on CPU for the same box.
DETECT_MAX_SIDE = 720


# ----------------------------------------------------------------------------------------------- detectors
class FaceDetector(ABC):
    """Finds faces in RGB frames. ``name`` says which detector ran (it is reported with every result)."""

    name: str = "detector"
    note: str = ""  # why this detector was chosen (e.g. fallback reason); shown in reports

    @abstractmethod
    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """For each frame (H, W, 3) RGB uint8, all of one size, return an (K, 5) array [x1, y1, x2, y2, score]."""

    @property
    def description(self) -> str:
        return f"{self.name} ({self.note})" if self.note else self.name


class S3FDDetector(FaceDetector):
    """S3FD via ``face_alignment.detection.sfd`` with an explicit local weights file (no download)."""

    name = "s3fd"

    def __init__(self, weights: str | Path, device: str = "cpu", threshold: float = 0.5):
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        # Passing path_to_detector makes face-alignment load this file instead of downloading its own copy.
        self._det = SFDDetector(device=device, path_to_detector=str(weights), filter_threshold=threshold)
        self.device = device
        self.weights = Path(weights)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()  # (B,H,W,3) -> (B,3,H,W) RGB
        with torch.inference_mode():
            found = self._det.detect_from_batch(batch)
        return [np.asarray(f, dtype=np.float32).reshape(-1, 5) for f in found]


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (ships inside opencv-python, so it works offline)."""

    name = "opencv-haar"
    # Haar boxes end around the lower lip/chin, S3FD boxes just below the chin; extending the box down by this
    # fraction of its height brings the two into rough agreement so the same pads work for both.
    BOTTOM_EXTEND = 0.10
    MIN_RELATIVE_SCORE = 0.5

    def __init__(self, note: str = ""):
        import cv2

        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():  # pragma: no cover - broken OpenCV install
            raise RuntimeError(f"could not load the Haar cascade {path}")
        self.note = note

    def _detect_one(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        min_side = max(24, int(0.08 * min(gray.shape)))  # talking heads are not tiny; faster too
        out = np.zeros((0, 5), np.float32)
        for neighbours in (5, 3):  # retry more leniently before declaring "no face"
            boxes, _, weights = self._cascade.detectMultiScale3(
                gray, scaleFactor=1.1, minNeighbors=neighbours, minSize=(min_side, min_side), outputRejectLevels=True)
            if len(boxes):
                b = np.asarray(boxes, np.float32)
                x1, y1, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
                y2 = np.minimum(y1 + h * (1 + self.BOTTOM_EXTEND), gray.shape[0])
                score = np.asarray(weights, np.float32).reshape(-1)
                out = np.stack([x1, y1, x1 + w, y2, score], axis=1)
                # Haar's weak extra hits (collars, ears, background) score well below the real face
                out = out[score >= self.MIN_RELATIVE_SCORE * score.max()]
                break
        return out

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self._detect_one(f) for f in frames]


def s3fd_candidates(checkpoint: str | None) -> list[str]:
    """Where S3FD weights may come from, in order: the configured spec, then face-alignment's torch hub file."""
    out = [checkpoint] if checkpoint else []
    try:
        import torch

        out.append(str(Path(torch.hub.get_dir()) / "checkpoints" / _TORCH_HUB_S3FD_NAME))
    except Exception:  # pragma: no cover
        pass
    return out


def build_detector(checkpoint: str | None = DEFAULT_S3FD_CHECKPOINT, device: str = "cpu",
                   fallback: bool = True) -> FaceDetector:
    """S3FD when its weights resolve (local path / Hub cache / Hub / torch hub cache), else the Haar cascade.

    ``checkpoint`` is a local path or ``owner/name:path/in/repo``; ``None`` or "" skips straight to the torch
    hub cache. With ``fallback=False`` a missing S3FD raises :class:`UserFacingError` instead.
    """
    from common.hub import resolve_file

    reasons = []
    for spec in s3fd_candidates(checkpoint):
        try:
            path = resolve_file(spec, what="S3FD face detector weights")
            return S3FDDetector(path, device=device)
        except UserFacingError as err:
            reasons.append(str(err))
        except Exception as err:  # corrupt file, wrong state dict: say so and fall back
            reasons.append(f"{spec}: {type(err).__name__}: {err}")
    msg = "S3FD weights not available"
    detail = (f" ({reasons[0]})" if reasons else "") + "; set DH_S3FD_CHECKPOINT to a local s3fd.pth or a Hub file"
    if not fallback:
        raise UserFacingError(msg + detail)
    log.warning("face detection falls back to the OpenCV Haar cascade: %s%s", msg, detail)
    return HaarDetector(note="offline fallback: " + msg)


@functools.lru_cache(maxsize=4)
def cached_detector(checkpoint: str | None, device: str = "cpu") -> FaceDetector:
    """:func:`build_detector` once per (checkpoint, device) per process."""
    return build_detector(checkpoint, device)


# ------------------------------------------------------------------------------------------ detection run
@dataclass
class Detections:
    """One face per frame. ``boxes`` (N, 4) float32, NaN rows where no face was found.

    From :func:`detect_faces`: the largest face of every frame. From :func:`track_faces`: the followed face
    (``rejected``: frames whose detections were all off the track, replaced by the tracked box; ``detected``:
    (N,) bool, frames where the detector's box was used rather than the flow-tracked one;
    ``multi_face_frames``: scanned frames with two persistent faces, see :func:`persistent_multi_face_frames`).
    """

    boxes: np.ndarray
    n_faces: np.ndarray  # (N,) int: how many faces the detector saw in each frame (0 where it did not look)
    detector: str
    multi_face_frames: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    detected: np.ndarray | None = None
    mode: str = "largest"  # "largest" (detect_faces) | "track" (track_faces)

    @property
    def missing(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(np.isnan(self.boxes[:, 0]))]


def largest_face(found: np.ndarray) -> np.ndarray | None:
    """The (4,) box of largest area among (K, 5) detections, or None."""
    if found is None or len(found) == 0:
        return None
    area = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
    return found[int(np.argmax(area)), :4].astype(np.float32)


def count_faces(found: np.ndarray, min_area_ratio: float = 0.25) -> int:
    """Faces at least ``min_area_ratio`` times the largest one's area (tiny background detections don't count).

    The ONE rule for "how many faces matter", used by the pipeline (its multi-face warning) and by the upload
    check (``services.checks.count_faces``). The pipeline's rule was kept (a quarter of the area, i.e. about half
    the width of a similar box) rather than the upload check's former "a third of the width": that way an
    upload accepted as one face is also one face while rendering, and a poster or passer-by in the background is
    ignored by both."""
    if found is None or len(found) == 0:
        return 0
    area = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
    return int(np.sum(area >= min_area_ratio * area.max()))


def detect_faces(detector: FaceDetector, frames: Sequence[np.ndarray], *, batch_size: int = 8,
                 max_side: int = DETECT_MAX_SIDE, progress: Callable[[int], None] | None = None) -> Detections:
    """Run ``detector`` over ``frames`` (all one size), keeping the largest face in each.

    Frames are downscaled so their longer side is at most ``max_side`` for detection; boxes come back in
    the original frame's pixels.
    """
    import cv2

    n = len(frames)
    boxes = np.full((n, 4), np.nan, np.float32)
    counts = np.zeros(n, np.int32)
    if n == 0:
        return Detections(boxes, counts, detector.description)
    h, w = frames[0].shape[:2]
    scale = min(1.0, max_side / max(h, w))
    for start in range(0, n, batch_size):
        chunk = [np.ascontiguousarray(f) for f in frames[start:start + batch_size]]
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            chunk = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in chunk]
        for k, found in enumerate(detector.detect_batch(chunk)):
            counts[start + k] = count_faces(found)
            best = largest_face(found)
            if best is not None:
                boxes[start + k] = best / scale
        if progress is not None:
            progress(len(chunk))
    multi = [int(i) for i in np.flatnonzero(counts > 1)]
    return Detections(boxes, counts, detector.description, multi)
