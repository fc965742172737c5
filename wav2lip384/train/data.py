"""Datasets over preprocessed clips (the output of ``python -m wav2lip384.preprocess``).

Layout read here (written by ``preprocess.py``)::

    DATA/manifest.json         {"size", "fps", "clips": [{"id", "source", "split", "dir", "n_frames", ...}]}
    DATA/<clip dir>/00000.jpg  square face crops, size x size, one per video frame at 25 fps
    DATA/<clip dir>/audio.wav  16 kHz mono, exactly n_frames * 640 samples

Every sample is a pure function of ``(seed, index)``: ``__getitem__(i)`` seeds its own
``numpy.random.default_rng((seed, i))``. The training loop asks for sample indices that depend only on the
step and rank, which is what makes resume exact and DDP ranks disjoint (see ``loop.py``).

Tensor conventions (those of the original Wav2Lip, which the models follow): images float32 in [0, 1],
channels in BGR order (the public Wav2Lip-96 weights were trained on OpenCV's BGR frames; the inference
pipeline feeds the models the same order); mel windows (1, 80, 16) = 80 mel bands x 16 mel frames
(0.2 s = 5 video frames at 25 fps).
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserFacingError

FPS = 25
MEL_STEP = 16  # mel frames per SyncNet window (0.2 s)
MEL_PER_FRAME = 80.0 / FPS  # mel frames per video frame (mel hop 200 samples at 16 kHz = 80 mel frames/s)
T = 5  # video frames per window (paper: five consecutive images)


@dataclass(frozen=True)
class Clip:
    id: str
    source: str
    split: str  # "train" | "val"
    dir: Path
    n_frames: int
    speaker: str = ""  # manifest "speaker" (older manifests: the source)


def read_manifest(data_dir: str | Path) -> dict:
    data_dir = Path(data_dir)
    path = data_dir / "manifest.json"
    if not path.is_file():
        raise UserFacingError(f"{data_dir} has no manifest.json: run `python -m wav2lip384.preprocess --videos DIR "
                              f"--out {data_dir}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def load_clips(data_dir: str | Path, split: str, *, size: int | None = None, min_frames: int = 3 * T) -> list[Clip]:
    """Clips of one split, checked against the requested model size."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    if size is not None and int(manifest["size"]) != int(size):
        raise UserFacingError(f"{data_dir} was preprocessed at size {manifest['size']}, not {size}: "
                              f"preprocess again with --size {size}")
    clips = [Clip(c["id"], c["source"], c["split"], data_dir / c["dir"], int(c["n_frames"]),
                  c.get("speaker", c["source"]))
             for c in manifest["clips"] if c["split"] == split and int(c["n_frames"]) >= min_frames]
    return clips


def no_clips_message(data_dir, split: str) -> str:
    """Why a split is empty and what to do, from the manifest's own account of the split."""
    how = read_manifest(data_dir).get("split") or {}
    why = f" (preprocess: split by {how['by']}: {how['reason']})" if how else ""
    msg = f"no usable {split} clips in {data_dir} (each needs at least {3 * T} frames){why}. "
    if split == "val":
        return msg + ("Training needs a validation split (it decides when the sync loss turns on and shows "
                      "overfitting): preprocess more material, a smaller --max-clip to get more clips from one "
                      "video, or --val-sources; or pass --val-samples 0 to train without validation "
                      "(the sync loss then turns on from the training batches' expert loss)")
    return msg + "See its preprocess_report.json"


class _ByteLRU:
    """A least-recently-used cache bounded by the bytes of the numpy arrays it holds.

    Hand-written (20 lines over ``OrderedDict``): ``functools.lru_cache`` bounds entries, not bytes, and the
    project has no cache library (cachetools' ``getsizeof`` would do it).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = int(max_bytes), 0
        self._items: OrderedDict = OrderedDict()

    def get(self, key):
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return  # larger than the whole budget: not cached
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._items[key] = value
        self.bytes += value.nbytes
        while self.bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= dropped.nbytes

    def __len__(self) -> int:
        return len(self._items)


class ClipStore:
    """Frames and mel spectrograms of clips, decoded from disk on demand, with a bounded cache.

    Frames stream: each access decodes the JPEGs it needs; decoded frames and mels go into one LRU cache of
    at most ``cache_mb`` MB *per process* (every DataLoader worker has its own, so a run holds at most
    ``(workers + 1) * cache_mb``, whatever the dataset's size; 0 disables it). Memory is flat in the dataset
    size: the paper's 300 min at 384 px would be ~200 GB of decoded frames, which an unbounded per-worker
    cache (this class's earlier behaviour) tried to hold. A mel costs ~26 kB per second of audio and is
    recomputed (~ms per clip) when evicted.
    """

    def __init__(self, clips: list[Clip], size: int, cache_mb: float = 256.0):
        self.clips, self.size = clips, size
        self.cache = _ByteLRU(int(cache_mb * 2**20))

    def mel(self, k: int) -> np.ndarray:
        """(n_mel_frames, 80) float32 Wav2Lip mel of clip k (time first, as the original's crop code)."""
        m = self.cache.get(("mel", k))
        if m is None:
            from wav2lip384 import audio

            wav = audio.load_audio(self.clips[k].dir / "audio.wav")
            m = np.ascontiguousarray(audio.melspectrogram(wav).T, dtype=np.float32)
            self.cache.put(("mel", k), m)
        return m

    def _read(self, k: int, i: int) -> np.ndarray:
        img = self.cache.get(("frame", k, i))
        if img is not None:
            return img
        import cv2

        img = cv2.imread(str(self.clips[k].dir / f"{i:05d}.jpg"), cv2.IMREAD_COLOR)  # (H, W, 3) BGR uint8
        if img is None:
            raise UserFacingError(f"missing frame {i} of clip {self.clips[k].id} in {self.clips[k].dir}")
        if img.shape[0] != self.size or img.shape[1] != self.size:
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        self.cache.put(("frame", k, i), img)
        return img

    def frames(self, k: int, start: int, n: int = T) -> np.ndarray:
        """(n, H, W, 3) uint8 BGR frames start..start+n-1 of clip k (a new array: callers may modify it)."""
        return np.stack([self._read(k, i) for i in range(start, start + n)])

    def mel_window(self, k: int, frame: int) -> np.ndarray | None:
        """(1, 80, 16) mel window starting at video frame ``frame``, or None if it runs past the audio."""
        m = self.mel(k)
        start = int(MEL_PER_FRAME * frame)  # the original's int(80 * frame / fps)
        if start < 0 or start + MEL_STEP > len(m):
            return None
        return m[start:start + MEL_STEP].T[None].copy()


def to_chw(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float32 in [0, 1]."""
    return np.ascontiguousarray(frames.transpose(3, 0, 1, 2), dtype=np.float32) / 255.0


def stack_lower_half(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (3*T, H//2, W) float32: lower half of each frame, frames stacked on channels."""
    h = frames.shape[1]
    x = frames[:, h // 2:].astype(np.float32) / 255.0  # (T, H/2, W, 3)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(-1, h - h // 2, frames.shape[2]))


class _Base:
    def __init__(self, data_dir, split: str, size: int, seed: int, cache_mb: float = 256.0):
        self.clips = load_clips(data_dir, split, size=size)
        self.manifest = read_manifest(data_dir)
        if not self.clips:
            raise UserFacingError(no_clips_message(data_dir, split))
        self.store = ClipStore(self.clips, size, cache_mb)
        self.size, self.seed, self.split = size, seed, split

    def __len__(self) -> int:  # nominal: samples are drawn, not enumerated
        return sum(c.n_frames for c in self.clips)

    def describe(self) -> str:
        """One line for logs: clips, duration, speakers and how preprocessing split the data."""
        how = self.manifest.get("split") or {}
        speakers = sorted({c.speaker for c in self.clips})
        return (f"{len(self.clips)} clips, {sum(c.n_frames for c in self.clips) / FPS:.1f} s, "
                f"{len(speakers)} speaker(s) {speakers[:6]}{'...' if len(speakers) > 6 else ''}"
                + (f" (split by {how['by']}: {how['reason']})" if how else ""))

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, 1 if self.split == "val" else 0, int(index)))


@dataclass(frozen=True)
class SyncSampling:
    positive_prob: float = 0.5
    foreign_prob: float = 0.3  # share of negatives whose audio comes from another clip (when there is one)
    min_shift: int = 5  # shifted negatives are at least this many frames (0.2 s) off


class SyncPairs(_Base):
    """SyncNet samples: 5 consecutive frames (lower halves) with a 16-mel-frame window.

    Positive (label 1): the window that starts at the first frame. Negative (label 0): a window shifted by at
    least ``min_shift`` frames in the same clip, or taken from another clip ("foreign" audio).
    Returns ``faces`` (15, H/2, W), ``mel`` (1, 80, 16), ``label`` () float32.
    """

    def __init__(self, data_dir, split: str, size: int, seed: int = 0, sampling: SyncSampling = SyncSampling(),
                 cache_mb: float = 256.0):
        super().__init__(data_dir, split, size, seed, cache_mb)
        self.sampling = sampling

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = self._rng(index)
        s = self.sampling
        for _ in range(100):
            k = int(rng.integers(len(self.clips)))
            n = self.clips[k].n_frames
            start = int(rng.integers(0, n - T + 1))
            positive = rng.random() < s.positive_prob
            if positive:
                mel = self.store.mel_window(k, start)
            elif len(self.clips) > 1 and rng.random() < s.foreign_prob:
                other = int(rng.integers(len(self.clips) - 1))
                other += other >= k
                mel = self.store.mel_window(other, int(rng.integers(0, self.clips[other].n_frames - T + 1)))
            else:
                shifts = [d for d in range(-n, n) if abs(d) >= s.min_shift and 0 <= start + d <= n - T]
                if not shifts:
                    continue
                mel = self.store.mel_window(k, start + int(rng.choice(shifts)))
            if mel is None:
                continue
            faces = stack_lower_half(self.store.frames(k, start))
            return {"faces": faces, "mel": mel.astype(np.float32),
                    "label": np.float32(1.0 if positive else 0.0)}
        raise RuntimeError("could not draw a SyncNet sample: clips too short")


@dataclass(frozen=True)
class GenSampling:
    # frame k of the window is driven by the mel window that starts at frame k + indiv_mel_offset. The original
    # Wav2Lip's training code (and the paper: "(i-1)-th, i-th, ..., (i+3)-th") uses -1.
    indiv_mel_offset: int = -1


class GeneratorWindows(_Base):
    """Generator samples, as in the paper §2.1.2.

    - ``x`` (6, 5, H, W): the 5 target frames with their lower half zeroed, stacked on channels with 5
      reference frames from another random position of the same clip;
    - ``indiv_mels`` (5, 1, 80, 16): one window per frame (frames i-1 .. i+3 by default, see GenSampling);
    - ``mel`` (1, 80, 16): the window of the 5 frames, for the expert's sync loss;
    - ``gt`` (3, 5, H, W): the 5 target frames.
    """

    def __init__(self, data_dir, split: str, size: int, seed: int = 0, sampling: GenSampling = GenSampling(),
                 cache_mb: float = 256.0):
        super().__init__(data_dir, split, size, seed, cache_mb)
        self.sampling = sampling

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = self._rng(index)
        off = self.sampling.indiv_mel_offset
        for _ in range(100):
            k = int(rng.integers(len(self.clips)))
            n = self.clips[k].n_frames
            start = int(rng.integers(max(0, -off), n - T + 1))
            ref = int(rng.integers(0, n - T + 1))
            if abs(ref - start) < T and n >= 3 * T:  # reference window should not be the target itself
                continue
            mel = self.store.mel_window(k, start)
            indiv = [self.store.mel_window(k, start + j + off) for j in range(T)]
            if mel is None or any(m is None for m in indiv):
                continue
            gt = to_chw(self.store.frames(k, start))  # (3, T, H, W)
            masked = gt.copy()
            masked[:, :, self.size // 2:] = 0.0  # lower half zeroed
            x = np.concatenate([masked, to_chw(self.store.frames(k, ref))], axis=0)  # (6, T, H, W)
            return {"x": x, "indiv_mels": np.stack(indiv).astype(np.float32), "mel": mel.astype(np.float32),
                    "gt": gt}
        raise RuntimeError("could not draw a generator sample: clips too short")


@functools.lru_cache(maxsize=8)
def manifest_summary(data_dir: str) -> dict:
    """Clip/frame counts per split, for model cards and logs."""
    m = read_manifest(data_dir)
    out: dict = {"size": m["size"], "fps": m.get("fps", FPS)}
    for split in ("train", "val"):
        cs = [c for c in m["clips"] if c["split"] == split]
        out[split] = {"clips": len(cs), "frames": sum(int(c["n_frames"]) for c in cs),
                      "sources": sorted({c["source"] for c in cs})}
    return out
