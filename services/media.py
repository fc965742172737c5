"""Media helpers of the app layer: per-request temporary directories, speech splitting for streaming,
joining chunks, writing speech to a file, and the mouth-sharpness figure shown under each video."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


class RequestDirs:
    """Per-request temporary directories under one root, swept by age and removed at :meth:`close`."""

    def __init__(self, parent: str | Path | None = None, keep_s: float = 900.0):
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="digital-human-", dir=parent))
        self.keep_s = keep_s
        self._lock = threading.Lock()

    def new(self, prefix: str = "req-") -> Path:
        self.sweep()
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))

    def sweep(self, now: float | None = None) -> int:
        """Remove request directories older than ``keep_s``; returns how many went."""
        now = time.time() if now is None else now
        removed = 0
        with self._lock:
            for d in self.root.glob("*"):
                try:
                    if d.is_dir() and now - d.stat().st_mtime > self.keep_s:
                        shutil.rmtree(d, ignore_errors=True)
                        removed += 1
                except FileNotFoundError:  # swept by another thread
                    pass
        return removed

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def mouth_clarity(video: str | Path, max_frames: int = 12, detector=None) -> float | None:
    """Mean variance of the Laplacian over the lower half of the face (the lip-synced area) of a few frames.

    A standard no-reference sharpness figure: the 384 model should score higher than the 96 model's
    upscaled 96×96 mouth. Returns None when the video has no readable frames.
    """
    import cv2

    from wav2lip384.video import open_video

    stream = open_video(video, max_frames=max_frames)
    try:
        frames = list(stream.frames)
    finally:
        stream.close()
    if not frames:
        return None
    box = None
    if detector is not None:
        found = detector.detect_batch([frames[0]])[0]
        if len(found):
            areas = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
            box = found[int(np.argmax(areas)), :4].astype(int)
    scores = []
    for f in frames:
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        if box is not None:
            x1, y1, x2, y2 = (int(max(v, 0)) for v in box)
            g = g[(y1 + y2) // 2:y2, x1:x2]
        if g.size:
            scores.append(float(cv2.Laplacian(g, cv2.CV_64F).var()))
    return float(np.mean(scores)) if scores else None


def split_speech(wave: np.ndarray, sr: int = 16000, first_s: float = 1.0, max_s: float = 3.0) -> list[np.ndarray]:
    """Cut one sentence of speech (n,) into pieces at its quietest moments: the first about ``first_s`` long,
    the others at most about ``max_s``.

    Streaming renders and sends one video chunk per piece, so a short first piece gets the first frame on
    screen sooner, and pieces no longer than a few seconds keep later chunks arriving before the previous
    ones have finished playing. Cuts fall on the lowest 20 ms energy between 60 % and 100 % of the target
    length (a pause between words), never leaving a piece under 0.4 s.
    """
    pieces: list[np.ndarray] = []
    target = first_s
    rest = np.asarray(wave, np.float32)
    hop, win = int(0.01 * sr), int(0.02 * sr)
    while len(rest) > int((target + 0.4) * sr):
        lo, hi = int(0.6 * target * sr), int(target * sr)
        starts = np.arange(lo, hi - win, hop)
        if len(starts) == 0:
            break
        energy = np.array([float(np.mean(np.square(rest[i:i + win]))) for i in starts])
        cut = int(starts[int(np.argmin(energy))] + win // 2)
        pieces.append(rest[:cut])
        rest = rest[cut:]
        target = max_s
    pieces.append(rest)
    return pieces


def concat_videos(chunks: list[Path], out_path: Path) -> Path:
    """Join H.264/AAC chunks into one mp4 without re-encoding (ffmpeg concat demuxer)."""
    if len(chunks) == 1:
        shutil.copyfile(chunks[0], out_path)
        return out_path
    from wav2lip384.video import ffmpeg_exe

    listing = out_path.with_suffix(".txt")
    listing.write_text("".join(f"file '{Path(c).resolve().as_posix()}'\n" for c in chunks), encoding="utf-8")
    proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0",
                           "-i", str(listing), "-c", "copy", "-movflags", "+faststart", str(out_path)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"joining {len(chunks)} chunks failed: {proc.stderr.strip()[-300:]}")
    return out_path


def write_wav(wave: np.ndarray, sr: int, path: Path) -> Path:
    """Speech (n,) float in [-1, 1] -> 16-bit PCM WAV (what every browser plays)."""
    import soundfile as sf

    sf.write(str(path), np.clip(np.asarray(wave, np.float32), -1.0, 1.0), int(sr), subtype="PCM_16")
    return path
