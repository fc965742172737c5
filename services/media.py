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
    """Mouth sharpness of a few frames: the project's one sharpness measure
    (:func:`wav2lip384.evaluate.sharpness`, the variance of the Laplacian over the lower half of the face: the
    lip-synced area) on the face box found in the first frame (the whole frame without a detector or a face).

    The 384 model should score higher than the 96 model's upscaled 96×96 mouth. Returns None when the video has
    no readable frames.
    """
    from wav2lip384.evaluate import sharpness
    from wav2lip384.media.video import open_video

    stream = open_video(video, max_frames=max_frames)
    try:
        frames = list(stream.frames)
    finally:
        stream.close()
    if not frames:
        return None
    y1, y2, x1, x2 = 0, frames[0].shape[0], 0, frames[0].shape[1]
    if detector is not None:
        found = detector.detect_batch([frames[0]])[0]
        if len(found):
            areas = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
            bx1, by1, bx2, by2 = (int(max(v, 0)) for v in found[int(np.argmax(areas)), :4])
            if bx2 > bx1 and by2 > by1:
                y1, y2, x1, x2 = by1, by2, bx1, bx2
    crops = np.stack([f[y1:y2, x1:x2, ::-1] for f in frames])  # RGB -> the measure's BGR
    return sharpness(crops)["laplacian_var"]


CUT_FROM = 0.6  # split_speech cuts a piece between this share of its target and all of it


def split_speech(wave: np.ndarray, sr: int = 16000, first_s: float = 1.0, max_s: float = 3.0,
                 fps: float = 25.0, first_from_s: float | None = None) -> list[np.ndarray]:
    """Cut one sentence of speech (n,) into pieces at its quietest moments: the first about ``first_s`` long
    (at least ``first_from_s`` when given), the others at most about ``max_s``.

    Streaming renders and sends one video chunk per piece, so a short first piece gets the first frame on
    screen sooner, and pieces no longer than a few seconds keep later chunks arriving before the previous
    ones have finished playing. Cuts fall on the video frame boundary (a multiple of ``1 / fps`` from the start
    of ``wave``) with the lowest 20 ms energy around it, between ``CUT_FROM`` and all of the target length (a pause
    between words), never leaving a piece under 0.4 s. On a frame boundary every piece but the last is as long
    as the whole frames of its video chunk, so no chunk's audio and video differ in length (a chunk plays as
    long as its longer track; sub-frame pieces made each chunk up to half a frame longer than its speech).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    pieces: list[np.ndarray] = []
    target = first_s
    wave = np.asarray(wave, np.float32)
    done = 0  # samples of ``wave`` already in pieces (always on a frame boundary)
    half = int(0.01 * sr)  # the energy window: 20 ms centred on the candidate cut
    frame = sr / fps  # samples per video frame (not always whole, e.g. 16 kHz at 30 fps)
    shortest = CUT_FROM * first_s if first_from_s is None else min(first_from_s, first_s)
    while len(wave) - done > int((target + 0.4) * sr):
        # frame boundaries k / fps (from the start of ``wave``) between ``shortest`` and the target
        k_lo = int(np.ceil((done + shortest * sr) / frame))
        k_hi = int(np.floor((done + target * sr) / frame))
        k_hi = max(k_lo, k_hi)  # a window narrower than a frame: the boundary just after its start
        cuts = [int(round(k * frame)) for k in range(k_lo, k_hi + 1)]
        cuts = [c for c in cuts if c - half >= done and c + half <= len(wave)]
        if not cuts:
            break
        energy = [float(np.mean(np.square(wave[c - half:c + half]))) for c in cuts]
        cut = cuts[int(np.argmin(energy))]
        pieces.append(wave[done:cut])
        done = cut
        target = max_s
        shortest = CUT_FROM * max_s
    pieces.append(wave[done:])
    return pieces


def _read_chunk(path: Path, sample_rate: int | None, channels: int, work: Path) -> tuple[float, np.ndarray | None]:
    """One ffmpeg pass over a chunk: the exact length of its video (end of its last frame minus start of its
    first, from packet timestamps: the bundled ffmpeg has no ffprobe) and, when ``sample_rate`` is given, its
    audio as (T, C) float32 at that rate: every sample the file says it holds (the bundled ffmpeg trims an
    encoder's priming and padding where the container records them), none when it has no audio."""
    from fractions import Fraction

    from wav2lip384.media.video import ffmpeg_exe

    crc, pcm = work / f"{path.stem}.framecrc", work / f"{path.stem}.f32"
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(path),
           "-map", "0:v:0", "-c", "copy", "-f", "framecrc", str(crc)]
    if sample_rate:
        cmd += ["-map", "0:a:0?", "-f", "f32le", "-ac", str(channels), "-ar", str(sample_rate), str(pcm)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"reading {Path(path).name} failed: {proc.stderr.strip()[-300:]}")
    tb = Fraction(1, 1)
    start = end = None
    for line in crc.read_text().splitlines():
        if line.startswith("#tb 0:"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]  # stream, dts, pts, duration, size, crc
            pts, dur = int(fields[2]), int(fields[3])
            start = pts if start is None else min(start, pts)
            end = pts + dur if end is None else max(end, pts + dur)
    if start is None:
        raise RuntimeError(f"{Path(path).name} has no video frames")
    audio = None
    if sample_rate and pcm.exists():
        audio = np.fromfile(pcm, np.float32).reshape(-1, channels)
    return float((end - start) * tb), audio


def concat_videos(chunks: list[Path], out_path: Path) -> Path:
    """Join H.264 chunks (with audio) into one fast-start mp4 with AAC audio, the video without re-encoding
    (see :class:`ChunkJoiner`, which can read the chunks while they are still being made)."""
    chunks = [Path(c) for c in chunks]
    if not chunks:
        raise ValueError("no chunks to join")
    with ChunkJoiner(Path(out_path).parent) as joiner:
        for c in chunks:
            joiner.add(c)
        return joiner.join(out_path)


class ChunkJoiner:
    """Joins chunks into one mp4 as :func:`concat_videos` does, reading each chunk as it is added, on a worker
    thread: a streamed answer adds each chunk as soon as it is rendered, so when the last one is out only the
    final ffmpeg pass is left (reading 18 chunks after the last one took ~1.5 s on a loaded 2-core machine, and
    the stream's end - which a player waits for - came only after it).

    The video is the chunks' frames back to back (ffmpeg concat demuxer, each file given its video length: by
    default it steps by the longer track, which added up to half a frame per chunk); the audio is every chunk's
    decoded samples back to back, encoded once (one AAC stream, so no priming or padding between chunks). A
    chunk's audio and video start together, so every chunk stays in sync in the joined file.
    """

    def __init__(self, work_parent: Path):
        from concurrent.futures import ThreadPoolExecutor

        self._work = Path(tempfile.mkdtemp(prefix="concat-", dir=work_parent))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="join")
        self._reads: list = []
        self._chunks: list[Path] = []
        self._format: tuple[int | None, int] | None = None

    def add(self, chunk: Path) -> None:
        """Start reading ``chunk`` (the next one of the answer) in the background."""
        from wav2lip384.media.video import probe

        chunk = Path(chunk)
        if self._format is None:  # the first chunk fixes the joined audio's rate and channels
            first = probe(chunk).audio
            sr = int(first[0]["sample_rate"] or 16000) if first else None
            self._format = (sr, 2 if first and str(first[0]["channels"] or "").startswith("stereo") else 1)
        self._chunks.append(chunk)
        self._reads.append(self._pool.submit(_read_chunk, chunk, *self._format, self._work))

    def join(self, out_path: Path) -> Path:
        """The joined mp4 at ``out_path``, once every added chunk has been read."""
        import soundfile as sf

        from wav2lip384.media.video import ffmpeg_exe

        if not self._chunks:
            raise ValueError("no chunks to join")
        sr, ch = self._format
        lines, parts = [], []
        for c, read in zip(self._chunks, self._reads, strict=True):
            seconds, audio = read.result()
            lines.append(f"file '{c.resolve().as_posix()}'\nduration {seconds:.6f}\n")
            if sr:  # a chunk without audio is silent for as long as its video
                parts.append(audio if audio is not None and len(audio) else
                             np.zeros((int(round(seconds * sr)), ch), np.float32))
        listing = self._work / "chunks.txt"
        listing.write_text("".join(lines), encoding="utf-8")
        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
        if sr:
            sf.write(str(self._work / "audio.wav"), np.clip(np.concatenate(parts), -1.0, 1.0), sr, subtype="PCM_16")
            cmd += ["-i", str(self._work / "audio.wav"), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
        else:
            cmd += ["-map", "0:v:0"]
        cmd += ["-c:v", "copy", "-movflags", "+faststart", str(out_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"joining {len(self._chunks)} chunks failed: {proc.stderr.strip()[-300:]}")
        return Path(out_path)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> ChunkJoiner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_wav(wave: np.ndarray, sr: int, path: Path) -> Path:
    """Speech (n,) float in [-1, 1] -> 16-bit PCM WAV (what every browser plays)."""
    import soundfile as sf

    sf.write(str(path), np.clip(np.asarray(wave, np.float32), -1.0, 1.0), int(sr), subtype="PCM_16")
    return path
