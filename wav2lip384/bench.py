"""Benchmark: frames per second of the generator alone and of the whole pipeline, 96 and 384, photo and video.

    python -m wav2lip384.bench --json            # JSON on stdout (a table without --json)

Entries (each pipeline entry has ``fps`` = frames of output video per second of wall time for the whole
request, audio decode to mux, on the same clip and audio):
- ``ours_96_video``, ``ours_96_photo``, ``ours_384_video``, ``ours_384_photo``: the pipeline with a warm
  avatar cache (the app's steady state: the avatar was prepared by an earlier request);
  ``ours_96_video.fps_cold`` is the first request, detection included. Per-stage times in ms.
  The photo avatar is the video's first frame, so photo and video entries see the same face.
- ``model_96``, ``model_384``: the generator alone at the pipeline's batch size: full forward (video
  avatars) and audio encoder + decoder with the face features computed once (photo avatars), with GFLOPs
  per frame and achieved GFLOP/s.
- ``matmul_peak_gflops``: this machine's fp32 matmul throughput, for scale.
Real weights are used when they resolve (``DH_WAV2LIP96_CHECKPOINT`` / ``DH_WAV2LIP384_CHECKPOINT``);
otherwise random weights of the same architecture (same cost), and ``weights`` says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.errors import UserFacingError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_VIDEO = SHARED_DATA / "video" / "retalking_face2.mp4"
DEFAULT_AUDIO = SHARED_DATA / "audio" / "wenet_aishell-BAC009S0724W0121_zh.wav"


def matmul_peak_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """fp32 GFLOP/s of repeated (n x n) @ (n x n) matmuls with torch's current thread count."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        count += 1
    return round(2 * n ** 3 * count / (time.perf_counter() - t0) / 1e9, 1)


def load_generator_or_random(size: int, spec: str | None):
    """(generator, description): real weights when ``spec`` resolves, else seeded random weights."""
    import torch

    from wav2lip384.models import build_model
    from wav2lip384.weights import load_generator

    if spec:
        try:
            return load_generator(spec, size), f"real ({spec})"
        except UserFacingError as err:
            reason = str(err).split(". ")[0]
    else:
        reason = "no checkpoint configured"
    torch.manual_seed(0)
    return build_model("generator", size).eval(), f"random (real weights unavailable: {reason})"


def flops_per_frame(gen) -> tuple[float, float]:
    """(full forward, audio encoder + decoder) GFLOPs for one frame, counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    s = gen.img_size
    mel, faces = torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, s, s)
    with torch.inference_mode():
        feats = gen.encode_faces(faces)
        with FlopCounterMode(display=False) as full:
            gen(mel, faces)
        with FlopCounterMode(display=False) as part:
            gen.decode(gen.encode_audio(mel), feats)
    return full.get_total_flops() / 1e9, part.get_total_flops() / 1e9


def bench_model(gen, batch: int, iters: int) -> dict:
    """Frames/s of the generator alone (random inputs of the real shapes)."""
    import torch

    s = gen.img_size
    mel = torch.randn(batch, 1, 80, 16)
    faces = torch.rand(batch, 6, s, s)
    out = {"batch": batch}
    with torch.inference_mode():
        gen(mel[:2], faces[:2])  # warm-up (first-call allocations)
        t0 = time.perf_counter()
        for _ in range(iters):
            gen(mel, faces)
        out["video_fps"] = round(batch * iters / (time.perf_counter() - t0), 2)
        feats = gen.encode_faces(faces[:1])
        t0 = time.perf_counter()
        for _ in range(iters):
            gen.decode(gen.encode_audio(mel), feats)
        out["photo_fps"] = round(batch * iters / (time.perf_counter() - t0), 2)
    full, part = flops_per_frame(gen)
    out["gflops_per_frame"] = round(full, 3)
    out["gflops_per_frame_photo"] = round(part, 3)
    out["achieved_gflops_video"] = round(full * out["video_fps"], 1)
    out["achieved_gflops_photo"] = round(part * out["photo_fps"], 1)
    return out


def _entry(res, wall: float) -> dict:
    return {"fps": round(res.n_frames / wall, 2), "n_frames": res.n_frames, "wall_s": round(wall, 3),
            "stages_ms": {k: round(v * 1000, 1) for k, v in res.timings.items()},
            "detector": res.detector.split(" (")[0], "avatar_cached": res.avatar_cached}


def run(video: Path, audio: Path, seconds: float, sizes: list[int], iters: int, settings) -> dict:
    import cv2
    import soundfile as sf
    import torch

    from wav2lip384.pipeline import LipSyncPipeline
    from wav2lip384.video import open_video

    out: dict = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "torch": torch.__version__, "load_avg_start": [round(x, 2) for x in os.getloadavg()]},
                 "clip": {"video": video.name, "audio": audio.name, "audio_seconds": seconds}, "weights": {}}
    out["matmul_peak_gflops"] = matmul_peak_gflops()
    work = Path(tempfile.mkdtemp(prefix="lipsync-bench-"))
    try:
        # the same speech for every entry; the photo avatar is the video's first frame
        data, sr = sf.read(str(audio), dtype="float32", always_2d=True)
        clip = work / "speech.wav"
        sf.write(str(clip), data[: int(seconds * sr)], sr)
        short = work / "short.wav"  # prepares the photo avatar before its timed request
        sf.write(str(short), data[: int(0.2 * sr)], sr)
        stream = open_video(video, max_frames=1)
        first = next(stream.frames)
        stream.close()
        photo = work / "photo.png"
        cv2.imwrite(str(photo), first[..., ::-1])
        out["clip"]["size"] = [int(first.shape[1]), int(first.shape[0])]
        from wav2lip384.audio import melspectrogram

        melspectrogram(np.zeros(8000, np.float32) + 1e-3)  # librosa's one-off JIT, not part of any request
        avatars = None
        for size in sizes:
            spec = settings.wav2lip96_checkpoint if size == 96 else settings.wav2lip384_checkpoint
            gen, desc = load_generator_or_random(size, spec)
            out["weights"][str(size)] = desc
            pipe = LipSyncPipeline(gen, model_name=f"wav2lip-{size}", detector_checkpoint=settings.s3fd_checkpoint,
                                   cache_dir=work / "cache", show_progress=False, avatar_cache=avatars)
            out[f"model_{size}"] = bench_model(pipe.generator, pipe.batch_size, iters)
            out["optimization"] = getattr(pipe, "optimization", None) and pipe.optimization.to_dict()
            for kind, face in (("video", video), ("photo", photo)):
                cold = None
                if avatars is None:  # first request for this avatar: decode + detection included
                    # (later sizes share this pipeline's avatar cache, as the app shares one across models)
                    t0 = time.perf_counter()
                    res = pipe(face, clip if kind == "video" else short, work / f"cold_{kind}.mp4")
                    cold = res.n_frames / (time.perf_counter() - t0) if kind == "video" else None
                t0 = time.perf_counter()
                res = pipe(face, clip, work / f"{size}_{kind}.mp4")
                entry = _entry(res, time.perf_counter() - t0)
                if cold is not None:
                    entry["fps_cold"] = round(cold, 2)
                out[f"ours_{size}_{kind}"] = entry
            avatars = pipe.avatars  # the app keeps one avatar cache across models
            del pipe, gen
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["notes"] = [
        "fps = output frames / wall time of one whole request (audio decode .. mux) with the avatar prepared "
        "by an earlier request (frames, face boxes and crops cached); fps_cold = the first request for the avatar "
        "(decode + face detection included).",
        "load_avg: other processes share these CPUs; figures are only comparable within one run.",
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wav2lip384.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON (default: a short table)")
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="video avatar (its first frame = the photo)")
    p.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="speech")
    p.add_argument("--seconds", type=float, default=1.6, help="seconds of speech to lip-sync (default 1.6)")
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 384], choices=(96, 384))
    p.add_argument("--iters", type=int, default=1, help="timed generator batches for the model-alone figures")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    from common.settings import Settings

    settings = Settings.from_env()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        for f in (args.video, args.audio):
            if not f.is_file():
                raise UserFacingError(f"benchmark input {f} not found (pass --video/--audio)")
        result = run(args.video, args.audio, args.seconds, args.sizes, args.iters, settings)
    except UserFacingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'entry':<16}{'fps':>8}  stages (ms)")
        for key, val in result.items():
            if key.startswith("ours_"):
                print(f"{key:<16}{val['fps']:>8}  {val['stages_ms']}")
            elif key.startswith("model_"):
                print(f"{key:<16}{val['video_fps']:>8}  photo {val['photo_fps']} fps, {val['gflops_per_frame']} GFLOPs/frame")
        print(f"matmul peak {result['matmul_peak_gflops']} GFLOP/s; weights: {result['weights']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
