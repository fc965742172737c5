"""Pauses in the speech: where the mouth should rest closed and still, and how far each frame rests.

Lip-sync generators draw a mouth for every frame, silence included, and in silence they draw one that twitches or
hangs half open (their training clips are mostly speech). In a pause the avatar's own frame is the rest pose: a
photo's mouth as photographed, a video's mouth as filmed. :func:`rest_weights` says, per video frame, how much of
the rest pose to show (1 = all of it: the model is not run for that frame; 0 = the generated mouth only; between:
a blend, over a few frames into and out of each pause).

Pauses are found from the 16 kHz wave's energy per video frame, with hysteresis (a pause begins below
``enter_db`` and ends above ``leave_db``, both relative to the speech's loud frames) and a minimum length, so the
short closures inside words (p, b, t) stay with the model, which draws them.
"""

from __future__ import annotations

import numpy as np

SR = 16000
ENTER_DB = -35.0  # a pause begins where a frame is this far below the speech's loud frames (95th percentile)
LEAVE_DB = -28.0  # ... and ends where a frame is back above this
FLOOR_RMS = 10 ** (-60 / 20)  # below this a frame is silent whatever the speech's level (digital silence)
MIN_PAUSE_S = 0.25  # shorter quiet runs are part of a word
RAMP_S = 0.12  # the blend into and out of the rest pose (3 frames at 25 fps)


def frame_rms(wav16: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames,) RMS of the samples each video frame spans ([i / fps, (i + 1) / fps); 0 past the end)."""
    wav16 = np.asarray(wav16, np.float32)
    edges = np.round(np.arange(n_frames + 1) * SR / fps).astype(np.int64).clip(0, len(wav16))
    sq = np.concatenate([[0.0], np.cumsum(np.square(wav16, dtype=np.float64))])
    counts = np.maximum(edges[1:] - edges[:-1], 1)
    return np.sqrt((sq[edges[1:]] - sq[edges[:-1]]) / counts).astype(np.float32)


def pause_frames(wav16: np.ndarray, fps: float, n_frames: int, *, enter_db: float = ENTER_DB,
                 leave_db: float = LEAVE_DB, min_pause_s: float = MIN_PAUSE_S) -> np.ndarray:
    """(n_frames,) bool: the frames in a pause of the speech (hysteresis, at least ``min_pause_s`` long)."""
    rms = frame_rms(wav16, fps, n_frames)
    loud = float(np.percentile(rms, 95)) if n_frames else 0.0
    enter = max(FLOOR_RMS, loud * 10 ** (enter_db / 20))
    leave = max(FLOOR_RMS, loud * 10 ** (leave_db / 20))
    quiet = np.zeros(n_frames, bool)
    state = False
    for i, r in enumerate(rms):
        state = r < (leave if state else enter)
        quiet[i] = state
    # runs shorter than the minimum pause are speech
    min_len = max(1, int(round(min_pause_s * fps)))
    i = 0
    while i < n_frames:
        if quiet[i]:
            j = i
            while j < n_frames and quiet[j]:
                j += 1
            if j - i < min_len:
                quiet[i:j] = False
            i = j
        else:
            i += 1
    return quiet


def rest_weights(wav16: np.ndarray, fps: float, n_frames: int, *, ramp_s: float = RAMP_S,
                 **kwargs) -> np.ndarray:
    """(n_frames,) float32 in [0, 1]: how much of the rest pose each frame shows (see the module docstring).

    Inside a pause the weight rises over ``ramp_s`` from its first frame and falls over ``ramp_s`` to its last;
    a pause that touches either end of the wave does not ramp there (the speech around it is in another chunk,
    cut at this pause), so a pause cut in two by a chunk boundary rests through the boundary."""
    quiet = pause_frames(wav16, fps, n_frames, **kwargs)
    w = np.zeros(n_frames, np.float32)
    ramp = max(1, int(round(ramp_s * fps)))
    i = 0
    while i < n_frames:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < n_frames and quiet[j]:
            j += 1
        k = np.arange(j - i, dtype=np.float32)
        up = np.ones_like(k) if i == 0 else np.minimum(1.0, (k + 1) / (ramp + 1))
        down = np.ones_like(k) if j == n_frames else np.minimum(1.0, (j - i - k) / (ramp + 1))
        w[i:j] = np.minimum(up, down)
        i = j
    return w
