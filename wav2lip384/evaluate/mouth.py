"""How the mouth looks, without any downloaded weights: its sharpness, and how still it stays in pauses.

- :func:`sharpness` is the project's one sharpness figure (the Compare tab's "mouth sharpness" is it too):
  on the lower half of each face crop (the lip-synced area), the variance of the Laplacian of the grey image
  (the standard no-reference focus measure) and the share of spectral energy above a quarter of the Nyquist
  frequency; mean over frames. Higher = sharper.
- :func:`pause_motion` answers "does the mouth move when nobody speaks?": the mean absolute frame-to-frame
  change of the mouth region (lower half of the face crop, grey levels 0..255) between consecutive video
  frames that both lie in the same pause of the speech. A pause is a run of at least :data:`MIN_PAUSE_FRAMES`
  frames (160 ms at 25 fps, longer than the gaps inside words) whose audio (the frame's 40 ms) is more than
  :data:`PAUSE_DB` dB quieter than the loud speech of the clip (its 95th-percentile frame level), or digital
  silence. Lower = stiller; a real face at rest scores a few levels (noise, blinks do not reach the mouth).
  None when the speech has no pause.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PAUSE_DB = 20.0  # a frame is silent when its level is this far below the clip's loud speech
MIN_PAUSE_FRAMES = 4  # a pause lasts at least 4 frames (160 ms at 25 fps)
SILENCE_RMS = 1e-4  # below this RMS (-80 dBFS) a frame is silent whatever the rest of the clip


def sharpness(crops_bgr: np.ndarray) -> dict[str, float]:
    """Lower-face sharpness of (N, H, W, 3) BGR crops: mean variance of Laplacian and high-frequency energy share."""
    import cv2

    lap, hf = [], []
    for img in crops_bgr:
        gray = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY).astype(np.float64)
        lower = gray[gray.shape[0] // 2:]
        if lower.size == 0:
            continue
        lap.append(cv2.Laplacian(lower, cv2.CV_64F).var())
        x = (lower - lower.mean()) * np.outer(np.hanning(lower.shape[0]), np.hanning(lower.shape[1]))
        power = np.abs(np.fft.fftshift(np.fft.fft2(x))) ** 2
        fy = np.fft.fftshift(np.fft.fftfreq(lower.shape[0]))[:, None]
        fx = np.fft.fftshift(np.fft.fftfreq(lower.shape[1]))[None, :]
        radius = np.sqrt(fx ** 2 + fy ** 2)  # cycles/pixel; Nyquist = 0.5
        total = power.sum()
        hf.append(float(power[radius > 0.125].sum() / total) if total > 0 else 0.0)
    if not lap:
        raise ValueError("no image to measure")
    return {"laplacian_var": float(np.mean(lap)), "hf_energy": float(np.mean(hf))}


def pause_frames(wav: np.ndarray, n_frames: int, samples_per_frame: int = 640) -> np.ndarray:
    """(n_frames,) bool: the video frames inside a pause of the speech ``wav`` (16 kHz, 640 samples a frame)."""
    wav = np.asarray(wav, np.float64)
    n = min(n_frames, len(wav) // samples_per_frame)
    rms = np.sqrt(np.mean(wav[:n * samples_per_frame].reshape(n, samples_per_frame) ** 2, axis=1)) if n else np.zeros(0)
    loud = float(np.percentile(rms, 95)) if n else 0.0
    quiet = (rms < loud * 10 ** (-PAUSE_DB / 20)) | (rms < SILENCE_RMS)
    out = np.zeros(n_frames, bool)
    start = None
    for i, q in enumerate(list(quiet) + [False]):  # runs of quiet frames, long enough
        if q and start is None:
            start = i
        elif not q and start is not None:
            if i - start >= MIN_PAUSE_FRAMES:
                out[start:i] = True
            start = None
    return out


def pause_motion(crops_bgr: np.ndarray, wav: np.ndarray, fps: float = 25.0) -> dict[str, Any]:
    """Mean absolute frame-to-frame change (grey levels) of the mouth region during the speech's pauses.

    ``crops_bgr`` (N, S, S, 3): face crops of consecutive frames at ``fps`` (the lower half is the mouth region);
    ``wav``: the video's 16 kHz speech. Returns ``pause_motion`` (None without pauses), ``pause_seconds`` and
    ``pauses`` (how many).
    """
    import cv2

    spf = int(round(16000 / fps))
    silent = pause_frames(wav, len(crops_bgr), spf)
    pairs = [i for i in range(1, len(crops_bgr)) if silent[i] and silent[i - 1]]
    n_pauses = int(np.sum(silent[1:] & ~silent[:-1]) + (1 if len(silent) and silent[0] else 0))
    out: dict[str, Any] = {"pause_seconds": round(float(silent.sum()) / fps, 3), "pauses": n_pauses}
    if not pairs:
        return out | {"pause_motion": None}

    def mouth(i: int) -> np.ndarray:
        g = cv2.cvtColor(np.ascontiguousarray(crops_bgr[i]), cv2.COLOR_BGR2GRAY).astype(np.float32)
        return g[g.shape[0] // 2:]

    diffs = [float(np.mean(np.abs(mouth(i) - mouth(i - 1)))) for i in pairs]
    return out | {"pause_motion": float(np.mean(diffs))}
