"""Face detection, box post-processing and the paper's square crop rule.

Frames everywhere in this module are RGB ``uint8`` arrays of shape (H, W, 3).

Detectors share one small interface (:class:`FaceDetector`):
- :class:`S3FDDetector` — S3FD, the detector the paper and Wav2Lip use, run through the ``face-alignment``
  package's implementation with weights from a local file or the Hub (Wav2Lip's ``s3fd.pth`` has the same
  state dict as face-alignment's own) or from the torch hub cache.
- :class:`HaarDetector` — OpenCV's bundled Haar cascade: always available offline, less accurate. Used when
  the S3FD weights cannot be had; the name of the detector actually used travels with every result.

Box pipeline for a sequence of frames (the same for inference and for training preprocessing):
raw detection (largest face) -> :func:`apply_pads` -> :func:`smooth_boxes` (5 frames, switchable)
-> crop box by policy -> :func:`crop_face` resize to the model size.

Crop policies (:data:`CROP_POLICIES`):
- ``"square"`` — :func:`square_crop_box`, the paper's bottom-edge square (§2.1.3), for the paper's own model.
- ``"stretch"`` — :func:`stretch_crop_box`, the original Wav2Lip rule the public checkpoints (96, 256, the
  community 384) were trained on: the padded detector box, clipped to the frame, resized to the model's square
  input without keeping the aspect ratio. :func:`paste_back` resizes the output back to the box's w x h.
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

DEFAULT_PADS: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right (pixels of the frame)
SMOOTH_WINDOW = 5  # frames, as in Wav2Lip's inference
DEFAULT_S3FD_CHECKPOINT = "camenduru/Wav2Lip:face_detection/detection/sfd/s3fd.pth"
# face-alignment's own download name for the same network, looked up in the torch hub cache
_TORCH_HUB_S3FD_NAME = "s3fd-619a316812.pth"
# Detection runs on frames whose longer side is at most this many pixels (boxes are scaled back). Talking
# heads are large in the frame, and S3FD at 1080x1920 costs ~8x more on CPU for the same box.
DETECT_MAX_SIDE = 720
CROP_POLICIES = ("square", "stretch")
DEFAULT_CROP_POLICY = "square"

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels (x2, y2 exclusive)


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
    """Largest face per frame. ``boxes`` (N, 4) float32, NaN rows where no face was found."""

    boxes: np.ndarray
    n_faces: np.ndarray  # (N,) int: how many faces the detector saw in each frame
    detector: str
    multi_face_frames: list[int] = field(default_factory=list)

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
    """Faces at least ``min_area_ratio`` times the largest one's area (tiny background detections don't count)."""
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


# ----------------------------------------------------------------------------------------- box geometry
def apply_pads(boxes: np.ndarray, pads: Sequence[int], frame_shape: Sequence[int]) -> np.ndarray:
    """Grow (N, 4) boxes by ``pads`` = (top, bottom, left, right) pixels, clipped to the frame (Wav2Lip's rule)."""
    top, bottom, left, right = (int(p) for p in pads)
    h, w = int(frame_shape[0]), int(frame_shape[1])
    b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    b[:, 0] = np.maximum(0, b[:, 0] - left)
    b[:, 1] = np.maximum(0, b[:, 1] - top)
    b[:, 2] = np.minimum(w, b[:, 2] + right)
    b[:, 3] = np.minimum(h, b[:, 3] + bottom)
    return b


def smooth_boxes(boxes: np.ndarray, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """Average each box over a centred window of ``window`` frames (shrunk at the ends; NaN rows ignored).

    Wav2Lip averages over the *next* T frames; a centred window has no half-window lag against the lips.
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    if window <= 1 or len(b) <= 1:
        return b.copy()
    half = window // 2
    out = np.empty_like(b)
    for i in range(len(b)):
        win = b[max(0, i - half): i + half + 1]
        win = win[~np.isnan(win[:, 0])]
        out[i] = win.mean(axis=0) if len(win) and not np.isnan(b[i, 0]) else b[i]
    return out


def square_crop_box(box: Sequence[float], frame_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """The paper's crop rule (§2.1.3): keep the box's bottom edge and take the square above it.

    "using the bottom edge of the cropped face image as a reference, selecting the square down, and then
    resizing to 384x384": the square's side is the length of the box's bottom edge (its width) and the
    square sits on that edge, so a box taller than wide loses some forehead and nothing is stretched (a
    plain resize of the rectangle to a square would distort the face). If the square would leave the frame
    at the top, it shrinks (bottom edge kept, horizontally centred on the box) rather than move off the chin.

    ``box`` is (x1, y1, x2, y2) in pixels; returns integer (x1, y1, x2, y2) with x2 - x1 == y2 - y1 >= 1,
    inside a frame of ``frame_shape`` (H, W, ...). Used identically by inference and training preprocessing.
    """
    h, w = int(frame_shape[0]), int(frame_shape[1])
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
    y2 = max(1.0, min(y2, h))
    side = int(round(x2 - x1))
    bottom = int(round(y2))
    side = max(1, min(side, bottom, w))  # shrink if the square would leave the frame at the top
    cx = (x1 + x2) / 2.0
    left = int(round(cx - side / 2.0))
    left = max(0, min(left, w - side))
    return left, bottom - side, left + side, bottom


def stretch_crop_box(box: Sequence[float], frame_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """The original Wav2Lip crop: the (padded) box itself, rounded to pixels and clipped to the frame.

    Its aspect ratio is whatever the detector gave; :func:`crop_face` stretches it to the model's square
    input, which is what the public Wav2Lip checkpoints saw in training. Returns integer (x1, y1, x2, y2)
    with x2 > x1 and y2 > y1 inside a frame of ``frame_shape`` (H, W, ...).
    """
    h, w = int(frame_shape[0]), int(frame_shape[1])
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, y1 = max(0, min(x1, w - 1)), max(0, min(y1, h - 1))
    x2, y2 = max(x1 + 1, min(x2, w)), max(y1 + 1, min(y2, h))
    return x1, y1, x2, y2


def crop_box(box: Sequence[float], frame_shape: Sequence[int], policy: str = DEFAULT_CROP_POLICY
             ) -> tuple[int, int, int, int]:
    """The crop box of ``policy`` ("square" | "stretch") for one padded, smoothed box."""
    if policy == "square":
        return square_crop_box(box, frame_shape)
    if policy == "stretch":
        return stretch_crop_box(box, frame_shape)
    raise ValueError(f"crop policy must be one of {CROP_POLICIES}, not {policy!r}")


def face_boxes(raw: np.ndarray, frame_shape: Sequence[int], *, pads: Sequence[int] = DEFAULT_PADS,
               smooth: bool = True, policy: str = DEFAULT_CROP_POLICY) -> np.ndarray:
    """Raw largest-face boxes (N, 4) -> crop boxes (N, 4) int32 by ``policy`` (rows of -1 where no face)."""
    if policy not in CROP_POLICIES:
        raise ValueError(f"crop policy must be one of {CROP_POLICIES}, not {policy!r}")
    padded = apply_pads(raw, pads, frame_shape)
    if smooth:
        padded = smooth_boxes(padded, SMOOTH_WINDOW)
    out = np.full((len(padded), 4), -1, np.int32)
    for i, b in enumerate(padded):
        if not np.isnan(b[0]):
            out[i] = crop_box(b, frame_shape, policy)
    return out


def crop_face(frame: np.ndarray, box: Sequence[int], size: int) -> np.ndarray:
    """Cut ``box`` out of ``frame`` and resize it to (size, size, 3).

    A square box (policy "square") is scaled without distortion; any other box is stretched (policy "stretch").
    """
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box)
    patch = frame[y1:y2, x1:x2]
    interp = cv2.INTER_AREA if max(patch.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


# -------------------------------------------------------------------------------------------- paste-back
def _ramp(n: int, start: float, end: float) -> np.ndarray:
    """Smoothstep from 0 at fraction ``start`` to 1 at fraction ``end`` across n pixels."""
    t = np.arange(n, dtype=np.float32) / max(n - 1, 1)  # first and last pixel exactly at 0 and 1
    x = np.clip((t - start) / max(end - start, 1e-6), 0.0, 1.0)
    return x * x * (3 - 2 * x)


@functools.lru_cache(maxsize=64)
def lower_face_mask(side: int, top: float = 0.45, full: float = 0.62, edge: float = 0.10,
                    width: int | None = None) -> np.ndarray:
    """Feathered (side, width, 1) float32 blend mask for a pasted face: 0 on the upper face and at the border.

    ``side`` is the box height, ``width`` its width (default: ``side``, a square box). The generator only
    redraws the lower half of its input (the upper half is its reference), so the mask rises from 0 at ``top``
    of the box height to 1 at ``full``, and falls to 0 over ``edge`` (fractions of each side) at the left,
    right and bottom borders, so the paste has no visible seam and pixels on/outside the box stay unchanged.
    """
    height, width = int(side), int(side if width is None else width)
    vertical = _ramp(height, top, full) * (1.0 - _ramp(height, 1.0 - edge, 1.0))  # (H,)
    horizontal = _ramp(width, 0.0, edge) * (1.0 - _ramp(width, 1.0 - edge, 1.0))  # (W,)
    mask = vertical[:, None] * horizontal[None, :]  # (H, W)
    mask = mask[:, :, None]  # (H, W, 1)
    mask.setflags(write=False)
    return mask


def paste_back(frame: np.ndarray, face: np.ndarray, box: Sequence[int], *, feather: bool = True) -> np.ndarray:
    """Return a copy of ``frame`` with ``face`` (S, S, 3) resized into ``box`` through the lower-face mask.

    ``box`` may be square (policy "square") or any rectangle (policy "stretch": the face is resized back to
    the box's width x height). Only pixels inside the box change; with ``feather=False`` the whole box is
    replaced (original Wav2Lip).
    """
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    out = frame.copy()
    grow = bw * bh > face.shape[0] * face.shape[1]
    patch = cv2.resize(face, (bw, bh), interpolation=cv2.INTER_LINEAR if grow else cv2.INTER_AREA)  # (bh, bw, 3)
    if not feather:
        out[y1:y2, x1:x2] = patch
        return out
    mask = lower_face_mask(bh, width=bw)  # (bh, bw, 1)
    region = out[y1:y2, x1:x2].astype(np.float32)
    region += (patch.astype(np.float32) - region) * mask
    out[y1:y2, x1:x2] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
    return out
