"""Prepared avatars (frames, face boxes, model-size crops, encoder features) in one bounded, locked store.

:class:`AvatarStore` is what the pipeline asks for an avatar (``store.get(path, frames_needed=...)``):

- **Keyed by content** (SHA-256 of the file), so a renamed copy is the same avatar.
- **One lock per avatar**: two first requests for the same avatar decode it once and detect its faces once
  (the second waits for the first, then finds everything cached); different avatars prepare in parallel.
- **One memory budget** (``memory_bytes``, from ``Settings.avatar_memory_mb``) for every cached byte: decoded
  frames, crops at the model size and encoder features (:meth:`AvatarStore.features`). When a new avatar or
  a new feature would go over it, the least recently used *other* avatars are dropped whole.
- **One disk budget** (``disk_bytes``, from ``Settings.avatar_disk_mb``) for ``cache_dir/avatars/<hash>/``:
  after every write, least recently used avatar folders are removed until the folder fits.
- **Every cache file is written under a unique temporary name, then renamed** into place (atomic on one file
  system), so concurrent writers (threads or processes) never interleave and a crash leaves no half file.

What is kept where, and why:
- **Face detections** (the tracked face per frame, :func:`faces.track_faces`) go to disk and memory: they are
  the expensive step of a new avatar, and a few KB per avatar.
- **Crops** stay in memory only. Re-cutting them from the decoded frames costs 2-4 ms a frame, while reading
  them back from disk cost more (measured on the 1080x1920 demo clip: 384 px crops 432 KB/frame, 55 % of
  that npz-compressed, 19 ms/frame to load; PNG 35 %, 21 ms/frame): so they never fill the disk.
- **Frames** stay in memory only: decoding is cheap (a 10 s HEVC 1080x1920 clip decodes in ~1.5 s here)
  while raw frames are large (6 MB per 1080x1920 frame).
- **Encoder features** per model: :meth:`AvatarStore.features` gives a typed :class:`FeatureSlot` keyed by
  :class:`FeatureKey` (model, dtype, hash of the crop boxes); a slot for other boxes replaces the old one.

Video avatars play forwards then backwards ("ping-pong") until the audio ends, so no jump cut appears at
the loop point. Only the frames a request needs are decoded and detected; later, longer requests extend
what is cached. ``AvatarCache`` (the old name) is :class:`AvatarStore`; ``Avatar.extras`` stays as an untyped
dict for callers not yet moved to :meth:`AvatarStore.features` (its tensors are counted too).
"""
# size-reason: the avatar store: decoded frames, face crops and encoder features in memory and on disk under one lock;
#   the bounded caches share the eviction accounting.

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserFacingError
from wav2lip384 import faces as F
from wav2lip384.media.video import check_media, open_video, probe, read_image

DEFAULT_MAX_AVATAR_SECONDS = 60.0
DEFAULT_MAX_FRAME_BYTES = 2_000_000_000  # per avatar: ~320 frames of 1080x1920
# Larger avatars (4K phone videos, 24 MP photos) are scaled down to this longer side: on a CPU, decoding,
# pasting and H.264-encoding 4K frames would cost more than the lip-sync itself.
DEFAULT_MAX_SIDE = 1920
DEFAULT_MEMORY_BYTES = 3000 * 2**20
DEFAULT_DISK_BYTES = 2000 * 2**20
_TMP_SUFFIX = ".tmp"
_STALE_TMP_SECONDS = 3600.0  # temporary files older than this are leftovers of a killed process


def file_hash(path: str | Path) -> str:
    """SHA-256 of the file's bytes (hex, first 32 characters)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:32]


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` through ``write(file)`` into a uniquely named temporary file beside it, then rename it
    into place (``os.replace`` is atomic on one file system). The temporary file never outlives the call."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}{_TMP_SUFFIX}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pingpong_index(t: int, n: int) -> int:
    """Source frame for output frame ``t`` when ``n`` frames play 0..n-1, n-2..1, 0..n-1, ..."""
    if n <= 1:
        return 0
    period = 2 * n - 2
    k = t % period
    return k if k < n else period - k


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.split(" ")[0])[:32]


def nbytes_of(value: Any) -> int:
    """Bytes held by a cached value: numpy arrays, torch tensors, and lists/tuples/dicts of them."""
    if value is None:
        return 0
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # a torch tensor (no torch import here)
        return int(value.element_size() * value.numel())
    if isinstance(value, dict):
        return sum(nbytes_of(v) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return sum(nbytes_of(v) for v in value)
    return 0


@dataclass
class CropSet:
    """Crop boxes (N, 4) int32 (-1 rows: no face) and crops (N, S, S, 3) RGB uint8 for frames 0..N-1."""

    boxes: np.ndarray
    crops: np.ndarray


# ------------------------------------------------------------------------------------------ encoder features
@dataclass(frozen=True)
class FeatureKey:
    """What a set of encoder features depends on: the model (id and weights; the caller names it), the
    compute dtype, and the crop boxes they were computed from (other pads or smoothing: other features)."""

    model: str
    dtype: str
    boxes: str = ""

    @classmethod
    def of(cls, model: str, dtype: Any, boxes: np.ndarray | None = None) -> FeatureKey:
        digest = "" if boxes is None else hashlib.blake2b(np.ascontiguousarray(boxes).tobytes(), digest_size=8).hexdigest()
        return cls(str(model), str(dtype), digest)


class FeatureSlot:
    """Encoder features of one avatar for one :class:`FeatureKey`, by source frame index (a photo uses 0).

    ``put`` counts the bytes against the store's memory budget (evicting other avatars, least recently used
    first, if needed) and against the slot's own ``max_bytes``; it returns False, keeping nothing, when the
    value does not fit: the caller uses what it computed and computes it again next time.
    """

    def __init__(self, store: AvatarStore | None, avatar: Avatar, key: FeatureKey, max_bytes: int | None = None):
        self._store = store
        self._avatar = avatar
        self.key = key
        self.max_bytes = max_bytes
        self._items: dict[int, Any] = {}
        self.nbytes = 0
        self._lock = threading.Lock()

    def get(self, index: int, default: Any = None) -> Any:
        return self._items.get(int(index), default)

    def __contains__(self, index: int) -> bool:
        return int(index) in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def indices(self) -> set[int]:
        return set(self._items)

    def put(self, index: int, value: Any) -> bool:
        index = int(index)
        size = nbytes_of(value)
        with self._lock:
            if index in self._items:
                return True
            if self.max_bytes is not None and self.nbytes + size > self.max_bytes:
                return False
            if self._store is not None and not self._store._make_room(size, keep=self._avatar.key):
                return False
            self._items[index] = value
            self.nbytes += size
        return True

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


# ---------------------------------------------------------------------------------------------------- avatar
@dataclass
class Avatar:
    """A prepared avatar. ``frames`` (N, H, W, 3) RGB uint8 are the first N decoded frames.

    ``lock`` (re-entrant) serialises decoding, detection and crops of this avatar; :meth:`detect` and
    :meth:`crops` take it themselves.
    """

    key: str
    kind: str  # "image" | "video"
    name: str
    path: Path
    fps: float | None  # None for images
    width: int
    height: int
    frames: np.ndarray
    complete: bool  # all frames of the source (up to the cap) are in ``frames``
    truncated: bool = False  # the source is longer than the cap; only its first part is used
    source_size: tuple[int, int] | None = None  # (width, height) of the file when it was scaled down
    cache_dir: Path | None = None
    detections: dict[str, F.Detections] = field(default_factory=dict)  # detector slug -> faces per frame
    _crops: dict[tuple, CropSet] = field(default_factory=dict, repr=False)
    # untyped per-model data of callers not yet using AvatarStore.features (counted in nbytes all the same)
    extras: dict = field(default_factory=dict, repr=False)
    last_detected: int = 0  # frames the last detect() call had to run the detector on (0: all from cache)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _features: dict[tuple[str, str], FeatureSlot] = field(default_factory=dict, repr=False)
    _on_write: Callable[[], Any] | None = field(default=None, repr=False, compare=False)  # disk budget check
    _on_grow: Callable[[], Any] | None = field(default=None, repr=False, compare=False)  # memory budget check

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def nbytes(self) -> int:
        """Memory held by this avatar: frames + crops + encoder features (typed slots and ``extras``)."""
        return (int(self.frames.nbytes) + sum(c.crops.nbytes + c.boxes.nbytes for c in list(self._crops.values()))
                + sum(s.nbytes for s in list(self._features.values())) + nbytes_of(self.extras))

    def source_index(self, t: int) -> int:
        """Source frame index for output frame ``t`` (ping-pong over the video; 0 for a photo)."""
        return pingpong_index(t, self.n_frames) if self.kind == "video" else 0

    def needed_frames(self, start: int, count: int) -> int:
        """How many leading source frames output frames start..start+count-1 touch (before ping-pong)."""
        return 1 if self.kind == "image" else start + count

    # --- detection -----------------------------------------------------------------------------------
    def detect(self, detector: F.FaceDetector, *, upto: int | None = None, batch_size: int = 8,
               progress: Callable[[int], None] | None = None, track: bool | None = None,
               track_config: F.TrackConfig | None = None) -> F.Detections:
        """The face in decoded frames 0..upto-1 (default: all); cached ones are reused, new ones detected.

        ``track`` (default: True for videos) follows one face with :func:`faces.track_faces` (keyframe detection
        at a reduced scale, optical flow between keyframes, detections off the track rejected); ``False`` keeps
        the largest face of every frame (:func:`faces.detect_faces`; always used for a photo). Holds the
        avatar's lock: a concurrent request for the same avatar waits and then reuses the result.
        """
        with self.lock:
            track = (self.kind == "video") if track is None else bool(track)
            slug = _slug(detector.name)
            mode = "track" if track else "largest"
            upto = self.n_frames if upto is None else max(1, min(int(upto), self.n_frames))
            have = self.detections.get(slug)
            if have is not None and have.mode != mode:
                have = None
            if have is None:
                have = self._load_detections(slug, mode)
            done = 0 if have is None else len(have.boxes)
            self.last_detected = max(0, upto - done)
            if done < upto:
                if track:
                    seed = have.boxes[done - 1] if have is not None and done > 0 else None
                    new = F.track_faces(detector, self.frames[done:upto], track_config, seed=seed,
                                        seed_frame=self.frames[done - 1] if seed is not None else None,
                                        progress=progress)
                else:
                    new = F.detect_faces(detector, self.frames[done:upto], batch_size=batch_size, progress=progress)
                if have is None:
                    have = new
                else:
                    have = F.Detections(np.concatenate([have.boxes, new.boxes]),
                                        np.concatenate([have.n_faces, new.n_faces]), new.detector,
                                        have.multi_face_frames + [i + done for i in new.multi_face_frames],
                                        have.rejected + [i + done for i in new.rejected], mode=mode)
                self._save_detections(slug, mode, have)
            have.detector = detector.description
            have.mode = mode
            self.detections[slug] = have
            return have

    def _det_path(self, slug: str, mode: str = "largest") -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / (f"detections_{slug}.npz" if mode == "largest" else f"detections_{slug}_{mode}.npz")

    def _load_detections(self, slug: str, mode: str = "largest") -> F.Detections | None:
        p = self._det_path(slug, mode)
        if p is None or not p.is_file():
            return None
        try:
            with np.load(p) as z:
                boxes, counts = z["boxes"], z["n_faces"]
                rejected = z["rejected"] if "rejected" in z.files else np.zeros(len(boxes), bool)
        except (OSError, ValueError, KeyError, EOFError):  # damaged cache file: detect again
            return None
        boxes, counts, rejected = boxes[: self.n_frames], counts[: self.n_frames], rejected[: self.n_frames]
        return F.Detections(boxes, counts, slug, [int(i) for i in np.flatnonzero(counts > 1)],
                            [int(i) for i in np.flatnonzero(rejected)], mode=mode)

    def _save_detections(self, slug: str, mode: str, det: F.Detections) -> None:
        p = self._det_path(slug, mode)
        if p is None:
            return
        old = self._load_detections(slug, mode)
        if old is not None and len(old.boxes) > len(det.boxes):  # never shrink what is on disk
            return
        rejected = np.zeros(len(det.boxes), bool)
        rejected[[i for i in det.rejected if i < len(rejected)]] = True
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, lambda fh: np.savez_compressed(fh, boxes=det.boxes, n_faces=det.n_faces, rejected=rejected))
        if self._on_write is not None:
            self._on_write()

    def check_faces(self, det: F.Detections, upto: int, *, on_no_face: str = "error") -> list[int]:
        """Frames 0..upto-1 without a face. With ``on_no_face="error"`` the first one raises a clear error."""
        missing = [i for i in det.missing if i < upto]
        if missing and on_no_face == "error":
            i = missing[0]
            if self.kind == "image":
                raise UserFacingError(f"No face was found in the image {self.name} (frame 0). Please use a photo "
                                      f"where one face is clearly visible and facing the camera.")
            more = f" and {len(missing) - 1} other frame(s)" if len(missing) > 1 else ""
            raise UserFacingError(
                f"No face was found in frame {i} (at {i / (self.fps or 25):.2f} s) of the video {self.name}{more}. "
                f"Use a video where one face is visible in every frame, or let frames without a face pass "
                f"through unchanged (on_no_face='passthrough').")
        return missing

    # --- crops ---------------------------------------------------------------------------------------
    def crops(self, detector_name: str, size: int, *, pads=F.DEFAULT_PADS, smooth: bool = True,
              policy: str = F.DEFAULT_CROP_POLICY) -> CropSet:
        """Crop boxes by ``policy`` ("square": the paper's rule; "stretch": the original Wav2Lip box, resized
        without keeping the aspect) and model-size crops for every decoded frame (needs :meth:`detect` first).

        Kept in memory per (detector, policy, size, pads, smoothing) for the frames detected so far (cutting
        them again from the frames is cheaper than storing them on disk; see the module docstring).
        """
        if policy not in F.CROP_POLICIES:
            raise ValueError(f"crop policy must be one of {F.CROP_POLICIES}, not {policy!r}")
        with self.lock:
            slug = _slug(detector_name)
            det = self.detections[slug]
            n = len(det.boxes)
            pads = tuple(int(p) for p in pads)
            key = (slug, policy, int(size), pads, bool(smooth), n)
            hit = self._crops.get(key)
            if hit is not None:
                return hit
            boxes = F.face_boxes(det.boxes, (self.height, self.width), pads=pads, smooth=smooth, policy=policy)  # (n, 4)
            crops = np.zeros((n, size, size, 3), np.uint8)  # (n, S, S, 3)
            for i in range(n):
                if boxes[i, 0] >= 0:
                    crops[i] = F.crop_face(self.frames[i], boxes[i], size)
            hit = CropSet(boxes, crops)
            self._crops = {k: v for k, v in self._crops.items() if k[:5] != key[:5]}  # superseded by this longer set
            self._crops[key] = hit
        if self._on_grow is not None:
            self._on_grow()  # the store drops other avatars if the crops took it over its memory budget
        return hit


# ----------------------------------------------------------------------------------------------------- store
class AvatarStore:
    """Prepares avatars and keeps them within one memory budget and one disk budget (see the module docstring).

    ``memory_bytes``: frames + crops + encoder features of all avatars in memory; least recently used avatars
    are dropped first (the one being served is never dropped, even when it alone is over the budget).
    ``disk_bytes``: everything under ``cache_dir/avatars``; least recently used avatar folders are removed.
    ``max_items`` optionally bounds the number of avatars in memory as well. Thread-safe.
    """

    def __init__(self, cache_dir: str | Path | None, *, memory_bytes: int | None = None,
                 disk_bytes: int | None = DEFAULT_DISK_BYTES, max_items: int | None = None,
                 max_avatar_seconds: float = DEFAULT_MAX_AVATAR_SECONDS,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, max_side: int | None = DEFAULT_MAX_SIDE,
                 max_bytes: int | None = None):
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        # ``max_bytes`` is the old name of ``memory_bytes`` (AvatarCache)
        self.memory_bytes = int(memory_bytes if memory_bytes is not None else
                                max_bytes if max_bytes is not None else DEFAULT_MEMORY_BYTES)
        self.disk_bytes = None if disk_bytes is None else int(disk_bytes)
        self.max_items = max_items
        self.max_avatar_seconds = max_avatar_seconds
        self.max_frame_bytes = max_frame_bytes
        self.max_side = max_side
        self._hashes: dict[tuple, str] = {}  # (path, size, mtime) -> content hash: don't re-read unchanged files
        self._mem: OrderedDict[str, Avatar] = OrderedDict()  # least recently used first
        self._lock = threading.RLock()  # guards _mem, _hashes, stats; never held while taking an avatar's lock
        self._disk_lock = threading.Lock()
        self.stats = {"hits": 0, "misses": 0, "decodes": 0, "evicted": 0, "swept": 0}

    @classmethod
    def from_settings(cls, settings, cache_dir: str | Path | None = None, **kwargs) -> AvatarStore:
        """A store with the budgets of ``settings`` (``avatar_memory_mb``, ``avatar_disk_mb``); its disk cache in
        ``cache_dir`` (default: ``settings.cache_dir``/avatars)."""
        root = Path(cache_dir) if cache_dir is not None else Path(settings.cache_dir).expanduser() / "avatars"
        return cls(root, memory_bytes=int(settings.avatar_memory_mb * 2**20),
                   disk_bytes=int(settings.avatar_disk_mb * 2**20), **kwargs)

    # --- the old AvatarCache surface -------------------------------------------------------------------
    @property
    def max_bytes(self) -> int:
        return self.memory_bytes

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, key: str) -> bool:
        return key in self._mem

    def clear(self) -> None:
        with self._lock:
            self._mem.clear()

    @property
    def nbytes(self) -> int:
        """Memory held by all avatars in the store (frames + crops + encoder features)."""
        with self._lock:
            avatars = list(self._mem.values())
        return sum(a.nbytes for a in avatars)

    def keys(self) -> list[str]:
        """Content hashes of the avatars in memory, least recently used first."""
        with self._lock:
            return list(self._mem)

    # --- avatars -------------------------------------------------------------------------------------
    def key_of(self, path: str | Path) -> str:
        path = Path(path)
        st = path.stat()
        stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            key = self._hashes.get(stamp)
        if key is None:
            key = file_hash(path)
            with self._lock:
                if len(self._hashes) > 256:
                    self._hashes.clear()
                self._hashes[stamp] = key
        return key

    def get(self, path: str | Path, *, frames_needed: int = 1) -> Avatar:
        """The avatar for ``path`` with at least ``frames_needed`` leading frames decoded (when it has them).

        Concurrent calls for the same content share one :class:`Avatar` and decode it once (under its lock).
        """
        path = Path(path)
        kind = check_media(path, kinds=("image", "video"), what="avatar")
        key = self.key_of(path)
        with self._lock:
            av = self._mem.get(key)
            if av is None:
                av = Avatar(key, kind, path.name, path, None, 0, 0, np.zeros((0, 1, 1, 3), np.uint8), False,
                            cache_dir=self._entry_dir(key))
                av._on_write = self.sweep_disk
                av._on_grow = lambda k=key: self._make_room(0, keep=k)
                self._mem[key] = av
                self.stats["misses"] += 1
                fresh = True
            else:
                self._mem.move_to_end(key)
                self.stats["hits"] += 1
                fresh = False
        try:
            with av.lock:
                av.path = path
                if av.n_frames == 0:  # first request (or a failed one before): decode
                    self._load(av, frames_needed)
                elif av.kind == "video" and not av.complete and av.n_frames < frames_needed:
                    self._decode_video(av, frames_needed)
        except BaseException:
            with self._lock:
                if fresh and self._mem.get(key) is av and av.n_frames == 0:
                    del self._mem[key]
            raise
        self._touch_disk(av)
        self._make_room(0, keep=key)
        return av

    def features(self, avatar: Avatar, key: FeatureKey, *, max_bytes: int | None = None) -> FeatureSlot:
        """The encoder-feature slot of ``avatar`` for ``key`` (created empty when new). A slot for the same model
        and dtype but other boxes is dropped (its features belong to crops no longer used)."""
        with avatar.lock:
            slot = avatar._features.get((key.model, key.dtype))
            if slot is None or slot.key != key:
                slot = FeatureSlot(self, avatar, key, max_bytes)
                avatar._features[(key.model, key.dtype)] = slot
            elif max_bytes is not None:
                slot.max_bytes = max_bytes
            return slot

    @staticmethod
    def feature_slots(avatar: Avatar) -> list[FeatureSlot]:
        """The encoder-feature slots ``avatar`` holds now (for reports: ``slot.key``, ``slot.nbytes``, ``slot.indices``)."""
        with avatar.lock:
            return list(avatar._features.values())

    def _make_room(self, size: int, *, keep: str | None = None) -> bool:
        """Drop least recently used avatars other than ``keep`` until ``size`` more bytes fit the memory budget
        (and the count fits ``max_items``). False when they cannot fit even then."""
        with self._lock:
            if keep is not None and keep in self._mem:
                self._mem.move_to_end(keep)
            total = sum(a.nbytes for a in self._mem.values())
            while len(self._mem) > 1 and (total + size > self.memory_bytes or
                                          (self.max_items is not None and len(self._mem) > self.max_items)):
                victim = next((k for k in self._mem if k != keep), None)
                if victim is None:
                    break
                total -= self._mem.pop(victim).nbytes
                self.stats["evicted"] += 1
            return total + size <= self.memory_bytes

    # --- disk ----------------------------------------------------------------------------------------
    def _entry_dir(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / "avatars" / key

    def _touch_disk(self, av: Avatar) -> None:
        """Write/refresh ``meta.json`` (its mtime is the folder's last use for the disk sweep)."""
        if av.cache_dir is None:
            return
        av.cache_dir.mkdir(parents=True, exist_ok=True)
        meta = {"key": av.key, "kind": av.kind, "name": av.name, "fps": av.fps, "width": av.width,
                "height": av.height, "last_used": time.time()}
        atomic_write(av.cache_dir / "meta.json", lambda fh: fh.write(json.dumps(meta)), mode="w")
        self.sweep_disk(keep=av.key)

    def disk_usage(self) -> int:
        """Bytes under ``cache_dir/avatars`` (0 without a cache directory)."""
        root = None if self.cache_dir is None else self.cache_dir / "avatars"
        if root is None or not root.is_dir():
            return 0
        return sum(size for _, size, _ in self._entries(root))

    @staticmethod
    def _entries(root: Path) -> list[tuple[Path, int, float]]:
        """(folder, bytes, last use) of every avatar folder under ``root``."""
        out = []
        for d in root.iterdir():
            if not d.is_dir():
                continue
            size, used = 0, 0.0
            for f in d.iterdir():
                try:
                    st = f.stat()
                except FileNotFoundError:  # renamed or removed by another writer meanwhile
                    continue
                size += st.st_size
                if f.name == "meta.json":
                    used = st.st_mtime
            out.append((d, size, used))
        return out

    def sweep_disk(self, keep: str | None = None) -> int:
        """Remove least recently used avatar folders until the disk cache fits ``disk_bytes``, and temporary
        files left by killed processes. Returns the bytes removed."""
        root = None if self.cache_dir is None else self.cache_dir / "avatars"
        if root is None or not root.is_dir():
            return 0
        removed = 0
        with self._disk_lock:
            now = time.time()
            for tmp in root.glob(f"*/.*{_TMP_SUFFIX}"):
                try:
                    if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                        tmp.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
            if self.disk_bytes is None:
                return 0
            entries = self._entries(root)
            total = sum(size for _, size, _ in entries)
            for d, size, _ in sorted(entries, key=lambda e: e[2]):
                if total <= self.disk_bytes:
                    break
                if d.name == keep:
                    continue
                shutil.rmtree(d, ignore_errors=True)
                total -= size
                removed += size
                self.stats["swept"] += 1
        return removed

    # --- decoding ------------------------------------------------------------------------------------
    def _load(self, av: Avatar, frames_needed: int) -> None:
        if av.kind == "image":
            img = read_image(av.path)  # (H, W, 3)
            h, w = img.shape[:2]
            if self.max_side and max(h, w) > self.max_side:
                import cv2

                scale = self.max_side / max(h, w)
                av.source_size = (w, h)
                img = cv2.resize(img, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA)
            av.frames = img[None]  # (1, H, W, 3)
            av.width, av.height, av.complete = img.shape[1], img.shape[0], True
        else:
            self._decode_video(av, frames_needed)

    def _decode_video(self, av: Avatar, frames_needed: int) -> None:
        """(Re)decode the first frames of the video: what is needed, doubled for the next request, capped."""
        try:  # one ``ffmpeg -i`` for the size and rate, then one decoder (started once per call)
            info = probe(av.path)
        except UserFacingError:
            info = None  # open_video below says what is wrong with the file
        coded = (info.video[0].get("width"), info.video[0].get("height")) if info and info.video else (None, None)
        scale_to = (self.max_side if self.max_side and coded[0] and coded[1] and max(coded) > self.max_side
                    else None)
        stream = open_video(av.path, max_side=scale_to, info=info)
        fps, w, h = stream.fps, stream.width, stream.height
        if scale_to:
            # the displayed size before scaling (a rotated file is coded the other way round)
            av.source_size = tuple(coded) if (coded[0] >= coded[1]) == (w >= h) else (coded[1], coded[0])
        cap = max(1, min(int(self.max_avatar_seconds * fps), self.max_frame_bytes // (w * h * 3)))
        target = min(cap, max(frames_needed, 2 * av.n_frames, int(2 * fps)))
        # one frame more than needed tells us whether the source goes on; then the decoder is stopped
        frames = np.empty((target, h, w, 3), np.uint8)  # (N, H, W, 3)
        n = 0
        more = False
        for frame in stream.frames:
            if n == target:
                more = True
                break
            frames[n] = frame
            n += 1
        stream.close()
        with self._lock:
            self.stats["decodes"] += 1
        if n == 0:
            raise UserFacingError(f"The video {av.name} has no frames that could be decoded.")
        av.frames = frames[:n]
        av.fps, av.width, av.height = fps, w, h
        av.truncated = more and target == cap
        av.complete = (not more) or av.truncated
        av._crops.clear()


AvatarCache = AvatarStore  # the old name (pipeline, services and tests use it)
