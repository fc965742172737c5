"""Datasets over preprocessed clips (the output of ``python -m wav2lip384.train.preprocess``).

Layout read here (written by ``preprocess.py``)::

    DATA/manifest.json         {"size", "fps", "clips": [{"id", "source", "split", "dir", "n_frames", ...}]}
    DATA/<clip dir>/00000.jpg  square face crops, size x size, one per video frame at 25 fps
    DATA/<clip dir>/audio.wav  16 kHz mono, exactly n_frames * 640 samples

Every sample is a pure function of ``(seed, index)``: ``__getitem__(i)`` seeds its own
``numpy.random.default_rng((seed, i))``. The training loop asks for sample indices that depend only on the
step and rank, which is what makes resume exact and DDP ranks disjoint (see ``loop.py``).

Tensor conventions (those of the original Wav2Lip, which the models follow): images in [0, 1],
channels in BGR order (the public Wav2Lip-96 weights were trained on OpenCV's BGR frames; the inference
pipeline feeds the models the same order); mel windows (1, 80, 16) = 80 mel bands x 16 mel frames
(0.2 s = 5 video frames at 25 fps). Samples carry images as **uint8** (0..255): a quarter of the bytes to
pass from DataLoader workers and to copy to the GPU, and no float conversion on the CPU (it cost about half of
a 384 px generator sample's build time); ``loop.to_device`` turns uint8 tensors into float32 / 255 on the device.
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
        raise UserFacingError(f"{data_dir} has no manifest.json: run `python -m wav2lip384.train.preprocess --videos DIR "
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

    Frames stream: each access decodes the JPEGs it needs; decoded frames go into an LRU cache of at most
    ``cache_mb`` MB *per process* (0 disables it) and mels into their own LRU of ``MEL_CACHE_MB`` (a mel
    costs ~26 kB per second of audio, so 32 MB hold ~20 min; kept apart so frame churn never evicts them, as
    recomputing one costs far more than decoding a frame). Every DataLoader worker has its own caches, so a
    run holds at most ``(workers + 1) * (cache_mb + 32)`` MB, whatever the dataset's size. Memory is flat in
    the dataset size: the paper's 300 min at 384 px would be ~200 GB of decoded frames, which an unbounded
    per-worker cache (this class's earlier behaviour) tried to hold.
    """

    MEL_CACHE_MB = 32

    def __init__(self, clips: list[Clip], size: int, cache_mb: float = 256.0):
        self.clips, self.size = clips, size
        self.cache = _ByteLRU(int(cache_mb * 2**20))
        self.mels = _ByteLRU(self.MEL_CACHE_MB * 2**20)

    def mel(self, k: int) -> np.ndarray:
        """(n_mel_frames, 80) float32 Wav2Lip mel of clip k (time first, as the original's crop code)."""
        m = self.mels.get(k)
        if m is None:
            from wav2lip384.media import audio

            wav = audio.load_audio(self.clips[k].dir / "audio.wav")
            m = np.ascontiguousarray(audio.melspectrogram(wav).T, dtype=np.float32)
            self.mels.put(k, m)
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
        from wav2lip384.media.audio import mel_start

        m = self.mel(k)
        if frame < 0:
            return None
        start = mel_start(frame, FPS)  # int(80 * frame / fps): the original's, and inference's formula
        if start + MEL_STEP > len(m):
            return None
        return m[start:start + MEL_STEP].T[None].copy()


def to_chw(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (3, T, H, W) uint8 (float conversion happens on the device)."""
    return np.ascontiguousarray(frames.transpose(3, 0, 1, 2))


def stack_lower_half(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (3*T, H//2, W) uint8: lower half of each frame, frames stacked on channels."""
    h = frames.shape[1]
    x = frames[:, h // 2:]  # (T, H/2, W, 3)
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


# ----------------------------------------------------------------------------------------------------------
# Sampling and mel/frame alignment: the original Wav2Lip's (Rudrabha/Wav2Lip), the facts and the choices.
#
# SyncNet (``color_syncnet_train.py``, ``Dataset.__getitem__``): a clip is drawn uniformly; an anchor frame
# ``img_name`` and a different frame ``wrong_img_name`` are drawn uniformly from *all* frames of that same
# clip (``while wrong_img_name == img_name``); with probability 1/2 the 5 faces start at the anchor (label 1),
# else at the wrong frame (label 0); the mel window *always* starts at the anchor
# (``crop_audio_window(orig_mel, img_name)``: ``int(80 * frame / fps)``, 16 mel frames); a draw whose 5-frame
# window or mel runs past the clip's end is redrawn. So negatives are same-clip, any offset from 1 frame
# (40 ms) up: near misses are included (a 10 s clip: 8 of its ~245 offsets are within 4 frames, 3 %; a 1 s
# clip: 8 of 20, 40 %), and there is no audio from other clips. The paper (section 2.1.1) only says "the
# audio does not correspond to the images". Choice: exactly the original (faces shifted, audio fixed, same
# clip, any offset >= ``min_shift`` = 1); ``foreign_prob`` > 0 optionally adds other-clip audio (0 = the
# original; this project used 0.3 and ``min_shift`` 5 before, which taught no offsets under 0.2 s).
#
# Generator (``wav2lip_train.py`` and ``hq_wav2lip_train.py``, ``Dataset``): the mel for the expert's sync
# loss is ``crop_audio_window(orig_mel, img_name)``, starting at the window's first frame f (as SyncNet was
# trained); the per-frame mels come from ``get_segmented_mels(orig_mel, img_name)``:
# ``start_frame_num = f + 1`` then ``crop_audio_window(spec, i - 2)`` for i in f+1..f+5 (the "0-indexing ->
# 1-indexing" comment notwithstanding: the original preprocess names frames 0.jpg, 1.jpg, ...), i.e. frame
# f + j is driven by the window starting at frame f + j - 1; draws with f - 1 < 0 are rejected. Choice: the
# original's offset of -1 frame (``GenSampling.indiv_mel_offset``); it is recorded in the exported model's
# training.json as ``mel_frame_offset``.
#
# Inference today (``wav2lip384/media/audio.py`` ``mel_windows``, called by ``pipeline.LipSyncPipeline._mel_windows``
# with ``n_frames = frames_for_audio(...)``): frame i gets the window starting at ``mel_start(i, fps) =
# int(80 * i / fps)`` (offset 0, the original ``inference.py``'s ``int(i * 80 / fps)``), right-aligned at the
# end. The original repository has the same mismatch between its training (-1) and inference (0) code: a
# generator trained with -1 and driven with 0 renders frame i as it learnt to render frame i + 1, i.e. the
# mouth leads the sound by one frame (40 ms at 25 fps), for the public weights as for self-trained ones.
# The fix belongs to inference (same alignment as training): start frame i's window at
# ``max(0, int(80 * (i / fps - 1 / 25)))``, i.e. 40 ms earlier, clamped at the start; at 25 fps that is
# exactly ``mel_start(i - 1)``. ``inference_window_start`` below is that rule; tests check that training
# draws its windows with it.
# ----------------------------------------------------------------------------------------------------------
INDIV_MEL_OFFSET = -1  # frames (at 25 fps): the original training code's per-frame window offset


def inference_window_start(frame: int, fps: float = FPS, offset_frames: int = INDIV_MEL_OFFSET) -> int:
    """First mel frame of the window that drives video frame ``frame`` (what inference should use).

    At 25 fps: ``mel_start(frame + offset_frames)``, the very formula training uses (bit-identical windows).
    At other rates the offset is a time (one 25 fps frame = 40 ms): ``int(80 * (frame / fps + offset / 25))``.
    Clamped at 0 (the first frame has no earlier audio; training never draws it).
    """
    from wav2lip384.media.audio import mel_start

    if abs(fps - FPS) < 1e-9:
        return max(0, mel_start(frame + offset_frames, FPS))
    return max(0, int(80.0 * (frame / fps + offset_frames / FPS) + 1e-6))


@dataclass(frozen=True)
class SyncSampling:
    positive_prob: float = 0.5  # the original: random.choice([True, False])
    foreign_prob: float = 0.0  # share of negatives with audio from another clip (the original: none)
    min_shift: int = 1  # negatives' faces are at least this many frames off the audio (the original: 1)


@dataclass(frozen=True)
class SyncDraw:
    clip: int
    audio_start: int  # first frame of the mel window (the anchor)
    face_start: int  # first of the 5 face frames
    audio_clip: int  # the clip the audio comes from (== clip unless a foreign negative)
    label: float


class SyncPairs(_Base):
    """SyncNet samples: 5 consecutive frames (lower halves) with a 16-mel-frame window (see the notes above).

    Positive (label 1): faces and audio start at the same frame. Negative (label 0): the faces start at another
    frame of the same clip, any offset >= ``min_shift`` (near misses included), the audio stays at the anchor;
    or, with ``foreign_prob``, audio from another clip.
    Returns ``faces`` (15, H/2, W), ``mel`` (1, 80, 16), ``label`` () float32.
    """

    def __init__(self, data_dir, split: str, size: int, seed: int = 0, sampling: SyncSampling = SyncSampling(),
                 cache_mb: float = 256.0):
        super().__init__(data_dir, split, size, seed, cache_mb)
        self.sampling = sampling

    def draw(self, index: int) -> SyncDraw:
        """Which frames and audio sample ``index`` uses (a pure function of the seed and the index)."""
        rng = self._rng(index)
        s = self.sampling
        for _ in range(100):
            k = int(rng.integers(len(self.clips)))
            n = self.clips[k].n_frames
            anchor = int(rng.integers(0, n - T + 1))  # window fits (the original redraws when it does not)
            if self.store.mel_window(k, anchor) is None:
                continue
            if rng.random() < s.positive_prob:
                return SyncDraw(k, anchor, anchor, k, 1.0)
            if len(self.clips) > 1 and s.foreign_prob > 0 and rng.random() < s.foreign_prob:
                other = int(rng.integers(len(self.clips) - 1))
                other += other >= k
                a = int(rng.integers(0, self.clips[other].n_frames - T + 1))
                if self.store.mel_window(other, a) is None:
                    continue
                return SyncDraw(k, a, anchor, other, 0.0)
            wrong = [f for f in range(0, n - T + 1) if abs(f - anchor) >= s.min_shift]
            if not wrong:
                continue
            return SyncDraw(k, anchor, int(rng.choice(wrong)), k, 0.0)
        raise RuntimeError("could not draw a SyncNet sample: clips too short")

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        d = self.draw(index)
        mel = self.store.mel_window(d.audio_clip, d.audio_start)  # (1, 80, 16)
        faces = stack_lower_half(self.store.frames(d.clip, d.face_start))  # (15, H/2, W)
        return {"faces": faces, "mel": mel.astype(np.float32), "label": np.float32(d.label)}


@dataclass(frozen=True)
class GenSampling:
    # frame f + j of the window is driven by the mel window that starts at frame f + j + indiv_mel_offset:
    # -1 as the original's get_segmented_mels (see the notes above)
    indiv_mel_offset: int = INDIV_MEL_OFFSET


class GeneratorWindows(_Base):
    """Generator samples, as in the paper section 2.1.2 and the original's Dataset.

    - ``x`` (6, 5, H, W): the 5 target frames with their lower half zeroed, stacked on channels with 5
      reference frames from another random position of the same clip (the original: any other start frame;
      here at least 5 frames away, so the reference never contains a target frame whose mouth the model
      could copy -- a deliberate difference);
    - ``indiv_mels`` (5, 1, 80, 16): one window per frame, starting ``indiv_mel_offset`` frames from it
      (frames f-1 .. f+3: the original's alignment, see the notes above);
    - ``mel`` (1, 80, 16): the window starting at the first target frame, for the expert's sync loss;
    - ``gt`` (3, 5, H, W): the 5 target frames.
    """

    def __init__(self, data_dir, split: str, size: int, seed: int = 0, sampling: GenSampling = GenSampling(),
                 cache_mb: float = 256.0):
        super().__init__(data_dir, split, size, seed, cache_mb)
        self.sampling = sampling

    def draw(self, index: int) -> tuple[int, int, int]:
        """(clip, first target frame, first reference frame) of sample ``index`` (pure function of it)."""
        rng = self._rng(index)
        off = self.sampling.indiv_mel_offset
        for _ in range(100):
            k = int(rng.integers(len(self.clips)))
            n = self.clips[k].n_frames
            start = int(rng.integers(max(0, -off), n - T + 1))  # the original rejects f - 1 < 0
            ref = int(rng.integers(0, n - T + 1))
            if abs(ref - start) < T and n >= 3 * T:  # reference window should not be the target itself
                continue
            if self.store.mel_window(k, start) is None or self.store.mel_window(k, start + T - 1 + off) is None:
                continue  # windows start in order, so the last one fitting means all fit
            return k, start, ref
        raise RuntimeError("could not draw a generator sample: clips too short")

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        k, start, ref = self.draw(index)
        off = self.sampling.indiv_mel_offset
        mel = self.store.mel_window(k, start)  # (1, 80, 16)
        indiv = [self.store.mel_window(k, start + j + off) for j in range(T)]  # 5 x (1, 80, 16)
        gt = to_chw(self.store.frames(k, start))  # (3, T, H, W)
        masked = gt.copy()
        masked[:, :, self.size // 2:] = 0  # lower half zeroed
        x = np.concatenate([masked, to_chw(self.store.frames(k, ref))], axis=0)  # (6, T, H, W)
        return {"x": x, "indiv_mels": np.stack(indiv).astype(np.float32), "mel": mel.astype(np.float32),
                "gt": gt}


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
