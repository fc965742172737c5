"""Turn talking-head recordings into training clips: ``python -m wav2lip384.train.preprocess --videos DIR --out DIR``.

Per source video (paper §2.1.1 and §2.1.3):
1. audio -> 16 kHz mono (``wav2lip384.media.audio.load_audio``, the same decoder as inference);
2. sentence-length clips: cut at pauses in the speech (non-silent stretches from ``librosa.effects.split``;
   a gap of at least ``min_pause_s`` is a pause; cuts at the middle of pauses; clips shorter than
   ``min_clip_s`` merge into a neighbour; clips longer than ``max_clip_s`` are cut at their quietest frame);
   all cut points sit on 25 fps frame boundaries, so a clip of N frames has exactly N * 640 audio samples;
3. frames resampled to 25 fps: for each 25 fps timestamp the source frame on screen at that moment (what
   ffmpeg's ``fps`` filter does), read through ``wav2lip384.media.video.open_video``;
4. faces: the inference detector (``faces.build_detector``: S3FD when its weights are available, else the
   offline fallback; the report names it), the same pads and smoothing (per clip) and the paper's
   bottom-edge square crop (``faces.square_crop_box``) resized to ``--size`` (``faces.crop_face``);
5. a clip is dropped, and counted in the report, when the face is lost in any of its frames, when the face
   is smaller than ``min_face_px`` (median box width; upscaling it would teach the model blur), or when it is
   shorter than ``min_clip_frames``;
6. output: ``OUT/<source>/<clipNNN>/00000.jpg...`` (BGR JPEGs, i.e. ordinary colour files) + ``audio.wav``
   (16 kHz mono PCM16), ``OUT/manifest.json`` (clips with their split) and ``OUT/preprocess_report.json``.

Train/validation split (``split_clips``; there is always a validation split when the material allows one,
and the manifest says how it was made, ``manifest["split"]``):
- 2+ speakers -> by *speaker* (a speaker is the first sub-folder under ``--videos`` when the recordings are
  organised as ``SPEAKER/video.mp4``, else each video is its own speaker): no speaker on both sides;
- one speaker, 2+ videos -> by *video*: no recording on both sides;
- one video -> by *clip*: the last ``round(val_fraction * n)`` clips in time (at least 1) are validation, so
  validation is later, unseen speech of the same person (contiguous, not interleaved, to limit leakage);
- one clip -> no split possible (``by: "none"`` with the reason); the trainer then refuses to start and says
  what to do (e.g. a smaller ``--max-clip``). In every case at least one clip stays in training.
Sources and speakers are ordered by a hash of their name (deterministic, independent of file order);
``--val-sources`` names the validation videos explicitly.

Video frames are decoded twice (detect, then crop) so memory stays flat for long 4K recordings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserFacingError
from wav2lip384.media.audio import SAMPLES_PER_FRAME  # 640: 16 kHz at 25 fps
from wav2lip384.media.video import frame_map as _frame_map

FPS = 25
SAMPLE_RATE = 16000
MANIFEST_FORMAT = "wav2lip384-clips/1"


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 384
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right: the inference default
    smooth: bool = True
    min_face_px: int | None = None  # None: size // 2 (at most 2x upscaling)
    top_db: float = 35.0  # below the loudest part by this much = silence
    min_pause_s: float = 0.25
    min_clip_s: float = 1.0
    max_clip_s: float = 10.0
    min_clip_frames: int = 15  # shorter clips cannot give a 5-frame window with shifted negatives
    val_fraction: float = 0.25
    val_sources: tuple[str, ...] = ()
    jpeg_quality: int = 95
    detect_batch: int = 8
    detect_max_side: int = 720  # frames are downscaled to this longer side for detection (faces.detect_faces)

    @property
    def min_face(self) -> int:
        return self.min_face_px if self.min_face_px is not None else self.size // 2


@dataclass
class VideoReport:
    source: str
    path: str
    src_fps: float
    duration_s: float
    frames_25fps: int
    clips_kept: int = 0
    frames_kept: int = 0
    dropped: list[dict] = field(default_factory=list)
    error: str | None = None


VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


# ------------------------------------------------------------------------------------------- segmentation
def split_at_pauses(wav: np.ndarray, n_frames: int, cfg: PreprocessConfig) -> list[tuple[int, int]]:
    """Sentence-like clips as (first_frame, end_frame) ranges of 25 fps frames covering [0, n_frames)."""
    import librosa

    if n_frames <= 0:
        return []
    if not np.any(wav):
        return [(0, n_frames)]
    voiced = librosa.effects.split(wav, top_db=cfg.top_db, frame_length=1024, hop_length=256)  # (K, 2) samples
    cuts = [0]
    for (_, end), (start, _) in zip(voiced[:-1], voiced[1:]):
        if (start - end) / SAMPLE_RATE >= cfg.min_pause_s:
            cuts.append(int(round((start + end) / 2 / SAMPLES_PER_FRAME)))  # middle of the pause, on a frame
    cuts.append(n_frames)
    cuts = sorted({min(max(c, 0), n_frames) for c in cuts})
    segs = [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    # merge clips shorter than min_clip_s into the shorter neighbour
    min_f = int(round(cfg.min_clip_s * FPS))
    merged = True
    while merged and len(segs) > 1:
        merged = False
        for i, (a, b) in enumerate(segs):
            if b - a < min_f:
                if i == 0:
                    j = 1
                elif i == len(segs) - 1:
                    j = i - 1
                else:
                    j = i - 1 if (segs[i - 1][1] - segs[i - 1][0]) <= (segs[i + 1][1] - segs[i + 1][0]) else i + 1
                lo, hi = min(i, j), max(i, j)
                segs[lo:hi + 1] = [(segs[lo][0], segs[hi][1])]
                merged = True
                break
    # cut clips longer than max_clip_s at their quietest frame (away from the ends)
    max_f = int(round(cfg.max_clip_s * FPS))
    out: list[tuple[int, int]] = []
    stack = list(reversed(segs))
    while stack:
        a, b = stack.pop()
        if b - a <= max_f:
            out.append((a, b))
            continue
        frames = wav[a * SAMPLES_PER_FRAME: b * SAMPLES_PER_FRAME]
        rms = np.sqrt(np.mean(frames[: (b - a) * SAMPLES_PER_FRAME].reshape(b - a, -1) ** 2, axis=1))
        lo, hi = min_f, (b - a) - min_f
        k = a + lo + int(np.argmin(rms[lo:hi])) if hi > lo else a + (b - a) // 2
        stack += [(k, b), (a, k)]
    return out


def _n_val(n: int, fraction: float) -> int:
    """Validation items out of n: round(fraction * n), at least 1 and at most n - 1 (0 when n < 2)."""
    return min(max(1, int(round(fraction * n))), n - 1) if n >= 2 else 0


def _hash_order(names) -> list[str]:
    return sorted(names, key=lambda s: hashlib.sha1(s.encode()).hexdigest())


def assign_splits(sources: list[str], cfg: PreprocessConfig) -> dict[str, str]:
    """{name: "train"|"val"} for whole groups (videos or speakers); ``cfg.val_sources`` names videos."""
    if cfg.val_sources:
        unknown = set(cfg.val_sources) - set(sources)
        if unknown:
            raise UserFacingError(f"--val-sources names unknown videos: {sorted(unknown)}; known: {sorted(sources)}")
        return {s: "val" if s in cfg.val_sources else "train" for s in sources}
    order = _hash_order(sources)
    n_val = _n_val(len(order), cfg.val_fraction)
    return {s: "val" if i < n_val else "train" for i, s in enumerate(order)}


def split_clips(clips: list[dict], cfg: PreprocessConfig) -> dict:
    """Set ``clip["split"]`` for every clip (see the module docstring); returns how: ``{"by", "reason", ...}``.

    Clips need ``source``, ``speaker`` (defaults to the source) and ``start_s``.
    """
    for c in clips:
        c.setdefault("speaker", c["source"])
    sources = sorted({c["source"] for c in clips})
    speakers = sorted({c["speaker"] for c in clips})
    if cfg.val_sources:
        by, groups = "video", assign_splits(sources, cfg)
        key = "source"
        reason = f"--val-sources {' '.join(cfg.val_sources)}"
    elif len(speakers) >= 2:
        by, groups, key = "speaker", assign_splits(speakers, cfg), "speaker"
        reason = f"{len(speakers)} speakers: no speaker on both sides"
    elif len(sources) >= 2:
        by, groups, key = "video", assign_splits(sources, cfg), "source"
        reason = f"one speaker, {len(sources)} videos: no video on both sides"
    else:
        order = sorted(clips, key=lambda c: (c["source"], c["start_s"]))
        n_val = _n_val(len(order), cfg.val_fraction)
        for i, c in enumerate(order):
            c["split"] = "val" if i >= len(order) - n_val else "train"
        if n_val == 0:
            return {"by": "none", "reason": f"{len(clips)} clip(s) from one video: nothing to hold out for validation "
                                            f"(record more, or cut shorter clips with a smaller --max-clip)"}
        return {"by": "clip", "reason": f"one video: its last {n_val} of {len(order)} clips (in time) are validation"}
    for c in clips:
        c["split"] = groups[c[key]]
    return {"by": by, "reason": reason}


def speaker_of(video: Path, root: Path) -> str | None:
    """The first sub-folder of ``video`` under ``root`` (recordings organised as SPEAKER/video.mp4), else None."""
    try:
        rel = video.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return rel.parts[0] if len(rel.parts) > 1 else None


def _source_name(path: Path, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem) or "video"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


# ----------------------------------------------------------------------------------------------- one video
def preprocess_video(path: Path, source: str, out_dir: Path, detector, cfg: PreprocessConfig) -> tuple[
        VideoReport, list[dict]]:
    # size-reason: one pass over one video (detect, segment, crop, write) whose stages share the decoded frames and the
    #   report; splitting would copy or pass them around.
    """Detect, segment, crop and write the clips of one video. Returns its report and its clips' entries."""
    import cv2
    import soundfile as sf

    from wav2lip384.media import audio as audio_mod
    from wav2lip384 import faces
    from wav2lip384.media.video import open_video

    wav = audio_mod.load_audio(path, max_seconds=None)  # (T,) float32 16 kHz mono
    n_max = len(wav) // SAMPLES_PER_FRAME  # 25 fps frames the audio covers

    # pass 1: detect on the source frames that the 25 fps sequence uses, counting the source frames on the way
    # (the video may end before or after the audio; the clip range is settled once the count is known)
    stream = open_video(path)
    src_fps = stream.fps
    fmap = _frame_map(src_fps, 1 << 62, n_max)  # source frame shown at each 25 fps timestamp
    wanted: dict[int, list[int]] = {}
    for k, j in enumerate(fmap):
        wanted.setdefault(int(j), []).append(k)
    raw = np.full((max(n_max, 1), 4), np.nan, np.float32)
    shape = None
    n_src = 0
    batch_frames, batch_idx = [], []

    def flush():
        if batch_frames:
            det = faces.detect_faces(detector, batch_frames, batch_size=cfg.detect_batch, max_side=cfg.detect_max_side)
            for j, box in zip(batch_idx, det.boxes):
                for k in wanted[j]:
                    raw[k] = box
            batch_frames.clear()
            batch_idx.clear()

    try:
        for j, frame in enumerate(stream.frames):
            n_src = j + 1
            if j in wanted:
                shape = frame.shape
                batch_frames.append(frame)
                batch_idx.append(j)
                if len(batch_frames) >= cfg.detect_batch:
                    flush()
        flush()
    finally:
        stream.close()
    video_s = n_src / src_fps
    n_out = int(min(np.floor(video_s * FPS + 1e-6), n_max))
    rep = VideoReport(source, str(path), src_fps, round(min(video_s, len(wav) / SAMPLE_RATE), 3), n_out)
    if n_out <= 0:
        rep.error = "no frames or no audio"
        return rep, []
    raw = raw[:n_out]
    wanted = {j: [k for k in ks if k < n_out] for j, ks in wanted.items() if j < n_src}

    # clips and their fate
    plans = []  # (clip_no, f0, f1, squares)
    for a, b in split_at_pauses(wav[: n_out * SAMPLES_PER_FRAME], n_out, cfg):
        entry = {"frames": [a, b], "seconds": [round(a / FPS, 2), round(b / FPS, 2)]}
        if b - a < cfg.min_clip_frames:
            rep.dropped.append(entry | {"reason": "too_short", "detail": f"{b - a} frames < {cfg.min_clip_frames}"})
            continue
        lost = np.flatnonzero(np.isnan(raw[a:b, 0]))
        if len(lost):
            rep.dropped.append(entry | {"reason": "face_lost", "detail": f"no face in {len(lost)} of {b - a} frames "
                                                                       f"(first: frame {a + int(lost[0])})"})
            continue
        width = float(np.median(raw[a:b, 2] - raw[a:b, 0]))
        if width < cfg.min_face:
            rep.dropped.append(entry | {"reason": "face_too_small",
                                        "detail": f"median face width {width:.0f}px < {cfg.min_face}px"})
            continue
        squares = faces.face_boxes(raw[a:b], shape, pads=cfg.pads, smooth=cfg.smooth)  # (n, 4) int
        plans.append((len(plans), a, b, squares))

    # pass 2: crop and write
    clips = []
    owner = np.full(n_out, -1, np.int64)
    for p, (_, a, b, _) in enumerate(plans):
        owner[a:b] = p
    dirs = []
    for c, a, b, _ in plans:
        d = out_dir / source / f"clip{c:03d}"
        d.mkdir(parents=True, exist_ok=True)
        dirs.append(d)
        sf.write(d / "audio.wav", wav[a * SAMPLES_PER_FRAME: b * SAMPLES_PER_FRAME], SAMPLE_RATE, subtype="PCM_16")
    if plans:
        last = max((j for j, ks in wanted.items() if any(owner[k] >= 0 for k in ks)), default=-1)
        stream = open_video(path)
        try:
            for j, frame in enumerate(stream.frames):
                if j > last:
                    break
                for k in wanted.get(j, ()):
                    p = owner[k]
                    if p < 0:
                        continue
                    _, a, _, squares = plans[p]
                    crop = faces.crop_face(frame, squares[k - a], cfg.size)  # (size, size, 3) RGB
                    cv2.imwrite(str(dirs[p] / f"{k - a:05d}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        finally:
            stream.close()
    for (c, a, b, _), d in zip(plans, dirs):
        clips.append({"id": f"{source}/clip{c:03d}", "source": source, "dir": f"{source}/clip{c:03d}",
                      "n_frames": b - a, "duration_s": round((b - a) / FPS, 3), "start_s": round(a / FPS, 3)})
        rep.clips_kept += 1
        rep.frames_kept += b - a
    return rep, clips


# ---------------------------------------------------------------------------------------------- whole run
def preprocess(videos: list[Path], out_dir: str | Path, cfg: PreprocessConfig, detector=None,
               log=lambda msg: None, speakers: dict[Path, str] | None = None) -> dict:
    """Preprocess ``videos`` into ``out_dir``; returns the report (also written to preprocess_report.json).

    ``speakers`` maps a video to its speaker's name (default: every video is its own speaker).
    """
    from wav2lip384 import faces

    if not videos:
        raise UserFacingError("no videos to preprocess")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if detector is None:
        detector = faces.build_detector()
    t0 = time.monotonic()
    taken: set[str] = set()
    named = [(p, _source_name(p, taken)) for p in videos]
    reports, clips = [], []
    for path, source in named:
        log(f"preprocessing {path.name} as {source}")
        try:
            rep, cl = preprocess_video(path, source, out_dir, detector, cfg)
        except UserFacingError as err:  # unreadable file: reported, the others still run
            rep, cl = VideoReport(source, str(path), 0.0, 0.0, 0, error=str(err)), []
        reports.append(rep)
        speaker = (speakers or {}).get(path) or source
        clips += [c | {"speaker": speaker} for c in cl]
    split = split_clips(clips, cfg)
    log(f"validation split by {split['by']}: {split['reason']}")
    manifest = {"format": MANIFEST_FORMAT, "size": cfg.size, "fps": FPS, "sample_rate": SAMPLE_RATE,
                "detector": detector.description, "config": asdict(cfg), "split": split, "clips": clips}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    dropped = [d | {"source": r.source} for r in reports for d in r.dropped]
    reasons: dict[str, int] = {}
    for d in dropped:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    report = {
        "out": str(out_dir), "size": cfg.size, "detector": detector.description,
        "videos": len(videos), "videos_failed": [{"source": r.source, "error": r.error} for r in reports if r.error],
        "clips_kept": len(clips), "clips_dropped": len(dropped), "dropped_by_reason": reasons,
        "frames_kept": sum(c["n_frames"] for c in clips),
        "split": {"by": split["by"], "reason": split["reason"]} | {
            s: {"clips": sum(1 for c in clips if c["split"] == s),
                "seconds": round(sum(c["n_frames"] for c in clips if c["split"] == s) / FPS, 2),
                "sources": sorted({c["source"] for c in clips if c["split"] == s}),
                "speakers": sorted({c["speaker"] for c in clips if c["split"] == s})} for s in ("train", "val")},
        "seconds": round(time.monotonic() - t0, 1),
        "per_video": [asdict(r) for r in reports],
    }
    (out_dir / "preprocess_report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def find_videos(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise UserFacingError(f"--videos {folder}: no such folder")
    vids = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    if not vids:
        raise UserFacingError(f"no video files ({', '.join(VIDEO_EXTS)}) under {folder}")
    return vids


def main(argv: list[str] | None = None) -> int:
    from common.settings import Settings

    p = argparse.ArgumentParser(prog="python -m wav2lip384.train.preprocess", description=__doc__.split("\n")[0])
    p.add_argument("--videos", required=True, help="a folder of recordings (searched recursively; SPEAKER/video.mp4 sub-folders name "
                        "the speakers for the validation split) or one file")
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=384, help="face crop size (96 or 384; other sizes for tiny runs)")
    p.add_argument("--pads", type=int, nargs=4, default=(0, 10, 0, 0), metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"))
    p.add_argument("--no-smooth", action="store_true")
    p.add_argument("--min-face", type=int, default=None, help="minimum face width in pixels (default size/2)")
    p.add_argument("--min-pause", type=float, default=0.25, help="seconds of silence that end a sentence")
    p.add_argument("--max-clip", type=float, default=10.0, help="seconds")
    p.add_argument("--val-fraction", type=float, default=0.25,
                   help="share of speakers (2+), videos (one speaker) or clips (one video) held out for validation")
    p.add_argument("--val-sources", nargs="*", default=(), help="source names (file stems) for validation")
    p.add_argument("--limit", type=int, default=0, help="only the first N videos (smoke runs)")
    args = p.parse_args(argv)
    try:
        from wav2lip384 import faces

        settings = Settings.from_env()
        cfg = PreprocessConfig(size=args.size, pads=tuple(args.pads), smooth=not args.no_smooth,
                               min_face_px=args.min_face, min_pause_s=args.min_pause, max_clip_s=args.max_clip,
                               val_fraction=args.val_fraction, val_sources=tuple(args.val_sources))
        videos = find_videos(args.videos)
        if args.limit:
            videos = videos[: args.limit]
        root = Path(args.videos)
        speakers = {v: sp for v in videos if (sp := speaker_of(v, root)) is not None} if root.is_dir() else {}
        detector = faces.build_detector(settings.s3fd_checkpoint, device=settings.device)
        report = preprocess(videos, args.out, cfg, detector, log=lambda m: print(m, file=sys.stderr, flush=True),
                            speakers=speakers)
    except UserFacingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = dict(report)
    report.pop("per_video")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
