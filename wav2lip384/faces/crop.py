"""Box geometry: pads, temporal smoothing, the crop box by policy (the paper's bottom-edge square or the original
Wav2Lip stretch) and the crop resized to the model size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_PADS: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right (pixels of the frame)
SMOOTH_WINDOW = 5  # frames, as in Wav2Lip's inference
CROP_POLICIES = ("square", "stretch")
DEFAULT_CROP_POLICY = "square"

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels (x2, y2 exclusive)


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
