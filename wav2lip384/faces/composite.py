"""Paste-back: the generated face into the frame through a feathered lower-face mask."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np


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
