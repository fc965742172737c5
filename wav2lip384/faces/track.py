"""Following one face through a video: keyframe detection in a region around the predicted face, optical flow
between keyframes, and a gate that rejects detections off the track (:func:`track_faces`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from wav2lip384.faces.detect import Detections, FaceDetector, count_faces, largest_face


# ------------------------------------------------------------------------------------------------ tracking
# Why a tracker: per-frame "largest face" takes whatever the detector returns, so one false box (Haar finds a
# "face" on a coat collar in 10 of the 250 frames of a real 1080x1920 clip) moves the mouth patch onto the
# chest, and 5-frame smoothing spreads it to the neighbours. And detecting every frame of a 1080x1920 video is
# slow on a CPU. So: detect on keyframes only, in a small region around the predicted face (reduced scale),
# follow the face between keyframes with optical flow, and accept a detection only when it agrees with the
# track (centre distance and size change against the prediction from its neighbours). Works with any
# FaceDetector (S3FD or the Haar fallback): it only calls ``detect_batch`` on smaller images.
@dataclass(frozen=True)
class TrackConfig:
    """Knobs of :func:`track_faces` (defaults measured on the shared clips)."""

    keyframe_interval: int = 5  # run the detector every this many frames (1: every frame)
    rescan_interval: int = 50  # also scan the whole frame (reduced scale) this often: counts faces, recovers
    scan_max_side: int = 360  # longer side of a whole-frame scan
    init_scans: int = 3  # whole-frame scans of the first keyframes that choose the face to follow
    roi_scale: float = 2.2  # side of the detection region around the predicted face / the face's size
    roi_side: int = 144  # the region is resized to this longer side for detection (face ~ 65 px)
    gate_centre: float = 0.30  # accept a detection whose centre is within this many face widths of the track
    gate_size: float = 1.40  # ... and whose size differs by at most this factor
    flow_face: int = 96  # optical flow runs on images scaled so the face is about this many pixels wide


def _wh(box) -> tuple[float, float]:
    return float(box[2] - box[0]), float(box[3] - box[1])


def box_agreement(cand: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(centre distance / ref width, size ratio >= 1, IoU) of box ``cand`` against ``ref`` (both x1, y1, x2, y2)."""
    cw, ch = _wh(cand)
    rw, rh = _wh(ref)
    dist = float(np.hypot((cand[0] + cand[2] - ref[0] - ref[2]) / 2, (cand[1] + cand[3] - ref[1] - ref[3]) / 2))
    size = float(np.sqrt(max(cw * ch, 1e-6) / max(rw * rh, 1e-6)))
    ix = max(0.0, min(cand[2], ref[2]) - max(cand[0], ref[0]))
    iy = max(0.0, min(cand[3], ref[3]) - max(cand[1], ref[1]))
    inter = ix * iy
    iou = inter / max(cw * ch + rw * rh - inter, 1e-6)
    return dist / max(rw, 1e-6), max(size, 1.0 / max(size, 1e-6)), float(iou)


def match_candidate(cands: np.ndarray, ref: np.ndarray | None, *, gate_centre: float = 0.30,
                    gate_size: float = 1.40) -> np.ndarray | None:
    """The (4,) box among (K, 5) candidates that agrees best with the track box ``ref`` (highest IoU among those
    within the centre-distance and size gates), or None when none agrees (all are outliers)."""
    if cands is None or len(cands) == 0 or ref is None:
        return None
    best, best_iou = None, -1.0
    for c in cands:
        dist, size, iou = box_agreement(c[:4], ref)
        if dist <= gate_centre and size <= gate_size and iou > best_iou:
            best, best_iou = c[:4].astype(np.float32), iou
    return best


def face_tracklets(per_frame: dict[int, np.ndarray], *, gate_centre: float = 0.45, gate_size: float = 1.6
                   ) -> list[list[tuple[int, np.ndarray]]]:
    """Candidates (K, 5) of whole-frame scans {frame: detections} linked into tracklets [(frame, box), ...]:
    each candidate joins the tracklet whose latest box it agrees with best (centre distance and size gates)."""
    tracklets: list[list[tuple[int, np.ndarray]]] = []
    for i in sorted(per_frame):
        used: set[int] = set()
        for c in per_frame[i]:
            box = c[:4].astype(np.float32)
            pick, pick_d = None, np.inf
            for t, tr in enumerate(tracklets):
                if t in used or tr[-1][0] == i:
                    continue
                dist, size, _ = box_agreement(box, tr[-1][1])
                if dist <= gate_centre and size <= gate_size and dist < pick_d:
                    pick, pick_d = t, dist
            if pick is None:
                tracklets.append([(i, box)])
                used.add(len(tracklets) - 1)
            else:
                tracklets[pick].append((i, box))
                used.add(pick)
    return tracklets


def dominant_face(per_frame: dict[int, np.ndarray], **gates) -> tuple[int, np.ndarray] | None:
    """(frame, box) where the face seen most often (then: largest) first appears among whole-frame scans.

    The tracklet (:func:`face_tracklets`) covering the most scans, weighted by its median size, is the face
    to follow. A false box that comes and goes (a collar, a pattern) loses against the face that is there in
    every scan, even when it is larger in some frames.
    """
    tracklets = face_tracklets(per_frame, **gates)
    if not tracklets:
        return None

    def weight(tr):
        return len(tr) * float(np.median([np.sqrt(np.prod(_wh(b))) for _, b in tr]))

    return max(tracklets, key=weight)[0]


def persistent_multi_face_frames(per_frame: dict[int, np.ndarray], min_area_ratio: float = 0.25) -> list[int]:
    """Scanned frames showing two or more faces that each persist (seen in at least half of the scans, and in
    two or more): a second person, not a false box that comes and goes (which "more than one face" would be)."""
    big = {}
    for i, found in per_frame.items():
        if len(found):
            area = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
            big[i] = found[area >= min_area_ratio * area.max()]
        else:
            big[i] = found
    need = max(2, int(np.ceil(0.5 * len(per_frame))))
    persistent = [tr for tr in face_tracklets(big) if len(tr) >= need]
    seen: dict[int, int] = {}
    for tr in persistent:
        for i, _ in tr:
            seen[i] = seen.get(i, 0) + 1
    return sorted(i for i, k in seen.items() if k >= 2)


class _FlowTracker:
    """Follows a box from frame to frame with pyramidal Lucas-Kanade optical flow on corner points.

    Works on a grey region around the box scaled so the face is ~``face_px`` wide (cheap at any frame size);
    the box moves and scales with the similarity transform fitted (RANSAC) to the points that track well
    both forwards and backwards. Returns the box unchanged when too few points survive.
    """

    def __init__(self, face_px: int = 96):
        self.face_px = face_px

    def _region(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        import cv2

        h, w = frame.shape[:2]
        bw, bh = _wh(box)
        x0, y0 = int(max(0, box[0] - bw)), int(max(0, box[1] - bh))
        x1, y1 = int(min(w, box[2] + bw)), int(min(h, box[3] + bh))
        scale = min(1.0, self.face_px / max(bw, 1.0))
        gray = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale))),
                              interpolation=cv2.INTER_AREA)
        return gray, scale, x0, y0

    def follow(self, frames: Sequence[np.ndarray], box: np.ndarray) -> tuple[list[np.ndarray], list[bool]]:
        """Boxes in frames[1:] starting from ``box`` in frames[0] (one region for the whole run), and for each
        whether the flow followed it (False: too few points tracked; the box is then the previous one)."""
        import cv2

        out: list[np.ndarray] = []
        oks: list[bool] = []
        if len(frames) < 2:
            return out, oks
        ref_box = np.asarray(box, np.float32)
        # every region uses the first box's rectangle (the frames have one size, so the rectangles match)
        regions = [self._region(f, ref_box) for f in frames]
        _, scale, x0, y0 = regions[0]
        grays = [r[0] for r in regions]
        offset = np.array([x0, y0, x0, y0], np.float32)
        cur = (ref_box - offset) * scale  # box in region pixels
        pts = self._points(grays[0], cur)
        for k in range(1, len(grays)):
            nxt, ok = cur, False
            if pts is not None and len(pts) >= 6:
                p1, st, _ = cv2.calcOpticalFlowPyrLK(grays[k - 1], grays[k], pts, None, winSize=(15, 15), maxLevel=2)
                back, st_b, _ = cv2.calcOpticalFlowPyrLK(grays[k], grays[k - 1], p1, None, winSize=(15, 15), maxLevel=2)
                good = (st[:, 0] == 1) & (st_b[:, 0] == 1) & (np.linalg.norm(back - pts, axis=2)[:, 0] < 1.0)
                if good.sum() >= 6:
                    m, _ = cv2.estimateAffinePartial2D(pts[good], p1[good], method=cv2.RANSAC, ransacReprojThreshold=1.0)
                    s = float(np.hypot(m[0, 0], m[1, 0])) if m is not None else 0.0
                    if 0.8 <= s <= 1.25:  # a face does not change size by 25 % in one frame
                        cx, cy = m @ np.array([(cur[0] + cur[2]) / 2, (cur[1] + cur[3]) / 2, 1.0], np.float32)
                        hw, hh = (cur[2] - cur[0]) * s / 2, (cur[3] - cur[1]) * s / 2
                        nxt, ok = np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32), True
                    pts = p1[good].reshape(-1, 1, 2)
                else:
                    pts = None
            cur = nxt
            if pts is None or len(pts) < 12:
                pts = self._points(grays[k], cur)
            out.append((cur / scale + offset).astype(np.float32))
            oks.append(ok)
        return out, oks

    @staticmethod
    def _points(gray: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        import cv2

        mask = np.zeros_like(gray)
        bw, bh = _wh(box)
        x0, y0 = int(max(0, box[0] + 0.1 * bw)), int(max(0, box[1] + 0.1 * bh))
        x1, y1 = int(min(gray.shape[1], box[2] - 0.1 * bw)), int(min(gray.shape[0], box[3] - 0.1 * bh))
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        mask[y0:y1, x0:x1] = 255
        pts = cv2.goodFeaturesToTrack(gray, maxCorners=60, qualityLevel=0.01, minDistance=3, mask=mask)
        return None if pts is None else pts.astype(np.float32)


def _scan(detector: FaceDetector, frame: np.ndarray, max_side: int) -> np.ndarray:
    """All faces in the whole ``frame`` (downscaled to ``max_side``), (K, 5) in frame pixels."""
    import cv2

    h, w = frame.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    img = frame if scale >= 1.0 else cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                interpolation=cv2.INTER_AREA)
    found = np.asarray(detector.detect_batch([np.ascontiguousarray(img)])[0], np.float32).reshape(-1, 5).copy()
    found[:, :4] /= scale
    return found


def _roi_detect(detector: FaceDetector, frame: np.ndarray, box: np.ndarray, cfg: TrackConfig) -> np.ndarray:
    """Faces in a square region of ``cfg.roi_scale`` face sizes around ``box``, resized to ``cfg.roi_side``."""
    import cv2

    h, w = frame.shape[:2]
    bw, bh = _wh(box)
    half = cfg.roi_scale * max(bw, bh) / 2
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return np.zeros((0, 5), np.float32)
    scale = min(1.0, cfg.roi_side / max(x1 - x0, y1 - y0))
    region = np.ascontiguousarray(frame[y0:y1, x0:x1])
    if scale < 1.0:
        region = cv2.resize(region, (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))),
                            interpolation=cv2.INTER_AREA)
    found = np.asarray(detector.detect_batch([region])[0], np.float32).reshape(-1, 5).copy()
    found[:, :4] = found[:, :4] / scale + [x0, y0, x0, y0]
    return found


def track_faces(detector: FaceDetector, frames: Sequence[np.ndarray], config: TrackConfig | None = None, *,
                seed: np.ndarray | None = None, seed_frame: np.ndarray | None = None,
                progress: Callable[[int], None] | None = None) -> Detections:
    # size-reason: one algorithm in four numbered steps (docstring); its two closures (scan, choose) and the steps
    #   share the per-frame arrays (boxes, counts, scans, rejected); the parts that stand alone are already apart.
    """The followed face in every frame of ``frames`` (all one size): keyframe detection + optical flow.

    1. The face to follow is the one seen most often in whole-frame scans of the first keyframes
       (:func:`dominant_face`), or ``seed`` (its box in ``seed_frame``, the frame before ``frames[0]``) when
       continuing an earlier run.
    2. Every ``keyframe_interval`` frames the detector runs on a small region around the face the flow
       predicts (plus a whole-frame scan every ``rescan_interval`` frames, and whenever the region has
       nothing). Of all detections, the one agreeing with the prediction is kept (:func:`match_candidate`); if
       none agrees, the frame's detections are outliers (listed in ``rejected``) and the tracked box is used.
    3. Between keyframes the flow-tracked boxes are corrected linearly so they meet the next keyframe's box
       (no jump at keyframes): outliers are replaced by the track between good frames, before any smoothing.
    4. Where the flow loses the face (a cut, a black frame, the face leaving), every frame of that keyframe
       interval is detected, so frames without a face are exactly those where the detector finds none and
       the flow cannot follow (``missing``), as with per-frame detection.

    Returns :class:`Detections` (mode "track") with boxes before pads and smoothing.
    """
    cfg = config or TrackConfig()
    n = len(frames)
    boxes = np.full((n, 4), np.nan, np.float32)  # (N, 4)
    counts = np.zeros(n, np.int32)
    rejected: list[int] = []
    detected = np.zeros(n, bool)
    if n == 0:
        return Detections(boxes, counts, detector.description, mode="track")
    step = max(1, int(cfg.keyframe_interval))
    keys = list(range(0, n, step))
    if keys[-1] != n - 1:
        keys.append(n - 1)
    flow = _FlowTracker(cfg.flow_face)
    scans: dict[int, np.ndarray] = {}
    gates = {"gate_centre": cfg.gate_centre, "gate_size": cfg.gate_size}
    loose = {"gate_centre": 2 * cfg.gate_centre, "gate_size": cfg.gate_size ** 2}

    def scan(i: int) -> np.ndarray:
        if i not in scans:
            scans[i] = _scan(detector, frames[i], cfg.scan_max_side)
            counts[i] = count_faces(scans[i])
        return scans[i]

    def choose(i: int, pred: np.ndarray | None, flow_ok: bool) -> np.ndarray | None:
        """Frame i's box: the detection agreeing with ``pred``, else the flow-tracked ``pred`` (when the flow
        followed the face into this frame), else None (no face). ``flow_ok=False`` with a ``pred``: a stale
        reference (after a gap): gates are looser, and if none agrees the face seen most often in this and the
        next keyframes is taken when it is in this frame (the person moved while no face was seen)."""
        cands = _roi_detect(detector, frames[i], pred, cfg) if pred is not None else np.zeros((0, 5), np.float32)
        best = match_candidate(cands, pred, **gates)
        if best is not None and not counts[i]:
            counts[i] = 1
        if best is None or i % cfg.rescan_interval == 0:
            full = scan(i)
            if best is None:
                if pred is None:
                    best = largest_face(full)
                elif flow_ok:
                    best = match_candidate(full, pred, **gates)
                else:
                    best = match_candidate(full, pred, **loose)
                    if best is None and len(full):  # the face moved during a gap: the face seen most from here
                        ahead = {j: scan(j) for j in range(i, min(n, i + 2 * step + 1), step)}
                        found = dominant_face(ahead)
                        best = found[1] if found is not None and found[0] == i else None
            cands = np.concatenate([cands, full])
        if best is not None:
            detected[i] = True
            return best
        if flow_ok and pred is not None:
            if len(cands):
                rejected.append(i)  # something was detected, but not on the face the flow follows
            return pred
        return None

    last_good: np.ndarray | None = None  # the face's last known box
    first_pred, first_ok = None, False
    if seed is not None and not np.isnan(np.asarray(seed, np.float32)[0]):
        last_good = np.asarray(seed, np.float32)
        if seed_frame is not None:  # predict frame 0 from the frame before it
            (first_pred,), (first_ok,) = flow.follow([seed_frame, frames[0]], last_good)
    else:
        found = dominant_face({k: scan(k) for k in keys[:max(1, cfg.init_scans)]})
        last_good = None if found is None else found[1]
    box0 = choose(0, first_pred if first_ok else last_good, first_ok)
    if box0 is not None:
        boxes[0] = last_good = box0
    if progress is not None:
        progress(1)
    prev_k = 0
    for k in keys[1:]:
        pb = boxes[prev_k]
        smooth_run = False
        if not np.isnan(pb[0]):
            tracked, oks = flow.follow(frames[prev_k:k + 1], pb)  # boxes and flow success for prev_k+1..k
            if all(oks):
                smooth_run = True
                box = choose(k, tracked[-1], True)
                boxes[k] = last_good = box
                span = k - prev_k
                drift = box - tracked[-1]
                for j in range(1, span):
                    boxes[prev_k + j] = tracked[j - 1] + drift * (j / span)
        if not smooth_run:
            # the flow lost the face somewhere in this interval (or there was none): every frame on its own
            for i in range(prev_k + 1, k + 1):
                pred, ok = last_good, False
                if not np.isnan(boxes[i - 1][0]):
                    (pred,), (ok,) = flow.follow(frames[i - 1:i + 1], boxes[i - 1])
                box = choose(i, pred, ok)
                if box is not None:
                    boxes[i] = last_good = box
        if progress is not None:
            progress(k - prev_k)
        prev_k = k
    # frames before a face was found (e.g. a first frame where only a false box was detected): follow the
    # face backwards from the first good frame while the flow holds
    for j in range(1, n):
        if np.isnan(boxes[j - 1][0]) and not np.isnan(boxes[j][0]):
            a = j - 1
            while a > 0 and np.isnan(boxes[a - 1][0]):
                a -= 1
            back, oks = flow.follow([frames[i] for i in range(j, a - 1, -1)], boxes[j])  # j-1, j-2, ..., a
            for i, b, ok in zip(range(j - 1, a - 1, -1), back, oks, strict=True):
                if not ok:
                    break
                boxes[i] = b
                if i in scans and len(scans[i]):
                    rejected.append(i)
    multi = persistent_multi_face_frames(scans)
    return Detections(boxes, counts, detector.description, multi, sorted(set(rejected)), detected, "track")
