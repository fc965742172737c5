"""Avatar preparation (frames, face boxes, model-size crops) cached by the file's content hash.

What is cached where, and why:
- **Face detections** (largest face per frame + face counts) go to ``cache_dir/avatars/<hash>/`` on disk and
  stay in memory: detection is the expensive step (S3FD or Haar at ~0.1-0.3 s a frame on this CPU), so a
  second request with the same avatar — in this process or after a restart — skips it.
- **Crops at the model size** (square boxes by the paper's rule, resized to 96 or 384) are cached on disk
  and in memory per (detector, size, pads, smoothing).
- **Frames** stay in memory only (bounded LRU): decoding is cheap (a 10 s HEVC 1080x1920 clip decodes in
  ~1.5 s here) while raw frames are large on disk (6 MB per 1080x1920 frame).

Video avatars play forwards then backwards ("ping-pong") until the audio ends, so no jump cut appears at
the loop point. Only the frames a request needs are decoded and detected; later, longer requests extend
what is cached.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserFacingError
from wav2lip384 import faces as F
from wav2lip384.video import check_media, open_video, read_image

DEFAULT_MAX_AVATAR_SECONDS = 60.0
DEFAULT_MAX_FRAME_BYTES = 2_000_000_000  # per avatar: ~320 frames of 1080x1920
# Larger avatars (4K phone videos, 24 MP photos) are scaled down to this longer side: on a CPU, decoding,
# pasting and H.264-encoding 4K frames would cost more than the lip-sync itself.
DEFAULT_MAX_SIDE = 1920


def file_hash(path: str | Path) -> str:
    """SHA-256 of the file's bytes (hex, first 32 characters)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:32]


def pingpong_index(t: int, n: int) -> int:
    """Source frame for output frame ``t`` when ``n`` frames play 0..n-1, n-2..1, 0..n-1, ..."""
    if n <= 1:
        return 0
    period = 2 * n - 2
    k = t % period
    return k if k < n else period - k


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.split(" ")[0])[:32]


@dataclass
class CropSet:
    """Square boxes (N, 4) int32 (-1 rows: no face) and crops (N, S, S, 3) RGB uint8 for frames 0..N-1."""

    boxes: np.ndarray
    crops: np.ndarray


@dataclass
class Avatar:
    """A prepared avatar. ``frames`` (N, H, W, 3) RGB uint8 are the first N decoded frames."""

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
    detections: dict[str, F.Detections] = field(default_factory=dict)  # detector slug -> largest faces
    _crops: dict[tuple, CropSet] = field(default_factory=dict, repr=False)
    extras: dict = field(default_factory=dict, repr=False)  # e.g. encoder features of a photo, per model
    last_detected: int = 0  # frames the last detect() call had to run the detector on (0: all from cache)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def nbytes(self) -> int:
        return int(self.frames.nbytes) + sum(c.crops.nbytes for c in self._crops.values())

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
        the largest face of every frame (:func:`faces.detect_faces`; always used for a photo).
        """
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
                                    seed_frame=self.frames[done - 1] if seed is not None else None, progress=progress)
            else:
                new = F.detect_faces(detector, self.frames[done:upto], batch_size=batch_size, progress=progress)
            if have is None:
                have = new
            else:
                have = F.Detections(np.concatenate([have.boxes, new.boxes]), np.concatenate([have.n_faces, new.n_faces]),
                                    new.detector, have.multi_face_frames + [i + done for i in new.multi_face_frames],
                                    have.rejected + [i + done for i in new.rejected])
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
        except (OSError, ValueError, KeyError):  # damaged cache file: detect again
            return None
        boxes, counts, rejected = boxes[: self.n_frames], counts[: self.n_frames], rejected[: self.n_frames]
        det = F.Detections(boxes, counts, slug, [int(i) for i in np.flatnonzero(counts > 1)],
                           [int(i) for i in np.flatnonzero(rejected)])
        det.mode = mode
        return det

    def _save_detections(self, slug: str, mode: str, det: F.Detections) -> None:
        p = self._det_path(slug, mode)
        if p is None:
            return
        old = self._load_detections_raw(p)
        if old is not None and len(old) > len(det.boxes):  # never shrink what is on disk
            return
        rejected = np.zeros(len(det.boxes), bool)
        rejected[[i for i in det.rejected if i < len(rejected)]] = True
        tmp = p.with_suffix(".tmp.npz")
        np.savez(tmp, boxes=det.boxes, n_faces=det.n_faces, rejected=rejected)
        tmp.replace(p)

    @staticmethod
    def _load_detections_raw(p: Path) -> np.ndarray | None:
        if not p.is_file():
            return None
        try:
            with np.load(p) as z:
                return z["boxes"]
        except (OSError, ValueError, KeyError):
            return None

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

        Cached (memory and disk) per (detector, policy, size, pads, smoothing, frames)."""
        if policy not in F.CROP_POLICIES:
            raise ValueError(f"crop policy must be one of {F.CROP_POLICIES}, not {policy!r}")
        slug = _slug(detector_name)
        det = self.detections[slug]
        n = len(det.boxes)
        pads = tuple(int(p) for p in pads)
        key = (slug, policy, int(size), pads, bool(smooth), n)
        hit = self._crops.get(key)
        if hit is not None:
            return hit
        stem = f"crops_{slug}_{policy}_{size}_{'-'.join(map(str, pads))}_{int(smooth)}"
        path = None if self.cache_dir is None else self.cache_dir / f"{stem}_{n}.npz"
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    hit = CropSet(z["boxes"], z["crops"])
            except (OSError, ValueError, KeyError):
                hit = None
        if hit is None:
            boxes = F.face_boxes(det.boxes, (self.height, self.width), pads=pads, smooth=smooth, policy=policy)  # (n, 4)
            crops = np.zeros((n, size, size, 3), np.uint8)  # (n, S, S, 3)
            for i in range(n):
                if boxes[i, 0] >= 0:
                    crops[i] = F.crop_face(self.frames[i], boxes[i], size)
            hit = CropSet(boxes, crops)
            if path is not None:
                for old in self.cache_dir.glob(f"{stem}_*.npz"):
                    old.unlink(missing_ok=True)  # superseded by this longer set
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, boxes=hit.boxes, crops=hit.crops)
                tmp.replace(path)
        self._crops = {k: v for k, v in self._crops.items() if k[:5] != key[:5]}
        self._crops[key] = hit
        return hit


class AvatarCache:
    """Prepares avatars and keeps them: detections/crops on disk under ``cache_dir``, avatars in memory.

    The in-memory part is an LRU bounded by ``max_items`` and ``max_bytes`` (frames + crops). Thread-safe.
    """

    def __init__(self, cache_dir: str | Path | None, *, max_items: int = 3, max_bytes: int = 3_000_000_000,
                 max_avatar_seconds: float = DEFAULT_MAX_AVATAR_SECONDS,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, max_side: int | None = DEFAULT_MAX_SIDE):
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_avatar_seconds = max_avatar_seconds
        self.max_frame_bytes = max_frame_bytes
        self.max_side = max_side
        self._hashes: dict[tuple, str] = {}  # (path, size, mtime) -> content hash: don't re-read unchanged files
        self._mem: OrderedDict[str, Avatar] = OrderedDict()
        self._lock = threading.RLock()
        self.stats = {"hits": 0, "misses": 0, "decodes": 0}

    def __len__(self) -> int:
        return len(self._mem)

    def clear(self) -> None:
        with self._lock:
            self._mem.clear()

    def get(self, path: str | Path, *, frames_needed: int = 1) -> Avatar:
        """The avatar for ``path`` with at least ``frames_needed`` leading frames decoded (when it has them)."""
        path = Path(path)
        kind = check_media(path, kinds=("image", "video"), what="avatar")
        st = path.stat()
        stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        key = self._hashes.get(stamp)
        if key is None:
            key = file_hash(path)
            if len(self._hashes) > 256:
                self._hashes.clear()
            self._hashes[stamp] = key
        with self._lock:
            av = self._mem.get(key)
            if av is not None:
                self._mem.move_to_end(key)
                if av.kind == "video" and not av.complete and av.n_frames < frames_needed:
                    self._decode_video(av, frames_needed)
                self.stats["hits"] += 1
                av.path = path
                return av
            self.stats["misses"] += 1
            av = self._load(path, kind, key, frames_needed)
            self._mem[key] = av
            self._evict()
            return av

    def _evict(self) -> None:
        while len(self._mem) > 1 and (len(self._mem) > self.max_items or
                                      sum(a.nbytes for a in self._mem.values()) > self.max_bytes):
            self._mem.popitem(last=False)

    def _entry_dir(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        d = self.cache_dir / "avatars" / key
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _load(self, path: Path, kind: str, key: str, frames_needed: int) -> Avatar:
        entry = self._entry_dir(key)
        if kind == "image":
            img = read_image(path)  # (H, W, 3)
            source = None
            h, w = img.shape[:2]
            if self.max_side and max(h, w) > self.max_side:
                import cv2

                scale = self.max_side / max(h, w)
                source = (w, h)
                img = cv2.resize(img, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA)
            av = Avatar(key, "image", path.name, path, None, img.shape[1], img.shape[0], img[None], True,
                        cache_dir=entry, source_size=source)
        else:
            av = Avatar(key, "video", path.name, path, None, 0, 0, np.zeros((0, 1, 1, 3), np.uint8), False,
                        cache_dir=entry)
            self._decode_video(av, frames_needed)
        if entry is not None:
            meta = {"key": key, "kind": av.kind, "name": av.name, "fps": av.fps, "width": av.width, "height": av.height}
            (entry / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        return av

    def _decode_video(self, av: Avatar, frames_needed: int) -> None:
        """(Re)decode the first frames of the video: what is needed, doubled for the next request, capped."""
        probe = open_video(av.path, max_frames=1)
        fps, w, h = probe.fps, probe.width, probe.height
        probe.close()
        scale_to = self.max_side if self.max_side and max(w, h) > self.max_side else None
        stream = open_video(av.path, max_frames=1, max_side=scale_to) if scale_to else None
        if stream is not None:
            av.source_size = (w, h)
            w, h = stream.width, stream.height
            stream.close()
        cap = max(1, min(int(self.max_avatar_seconds * fps), self.max_frame_bytes // (w * h * 3)))
        target = min(cap, max(frames_needed, 2 * av.n_frames, int(2 * fps)))
        # one frame more than needed tells us whether the source goes on
        stream = open_video(av.path, max_frames=target + 1, max_side=scale_to)
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
        self.stats["decodes"] += 1
        if n == 0:
            raise UserFacingError(f"The video {av.name} has no frames that could be decoded.")
        av.frames = frames[:n]
        av.fps, av.width, av.height = fps, w, h
        av.truncated = more and target == cap
        av.complete = (not more) or av.truncated
        av._crops.clear()
