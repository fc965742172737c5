"""Benchmark: the original Wav2Lip strategy vs our pipeline (96/384, photo/video), side by side in one run.

    python -m wav2lip384.bench --json            # full run (the whole 4.3 s clip), JSON on stdout
    python -m wav2lip384.bench --json --quick    # 1.6 s of speech, no lever sweeps (~3 min on 2 busy cores)
    python -m wav2lip384.bench --json --quick --models livetalking384 wav2lip256   # those models' entries only

Every configuration runs in its own subprocess (one after the other), so its ``peak_rss_mb`` is that process's
``ru_maxrss`` and no configuration warms caches for another. Top-level entries (pipeline entries have ``fps`` =
frames of output video per second of wall time for one whole request, audio decode to mux, same clip and speech):
- ``baseline_96_original_style``: :mod:`wav2lip384.bench.baseline`, the original ``inference.py`` strategy (all frames
  read first, fixed ``--box`` as in the issue's measurement, full face encoder every frame, eager fp32, batch
  128, hard paste, per-frame resize, temp AVI then ffmpeg mux).
- ``ours_<M>_video`` / ``ours_<M>_photo`` with ``<M>`` = ``96`` (wav2lip96), ``384`` (paper384), ``256``
  (wav2lip256), ``livetalking384`` or any registry id (``--models ID ...`` selects both entries of each id):
  e.g. ``ours_96_video``, ``ours_384_photo``, ``ours_256_video``, ``ours_livetalking384_video``; our pipeline with its default
  optimisations (exact transforms + the precision "auto" measured on this machine and these weights: timed
  and verified within mean 1 / p99 4 grey levels of fp32, see ``precision`` with each candidate's fps) and the avatar prepared by an earlier request (the app's steady state);
  ``fps_cold`` = the first request for the avatar (frame decode + face detection included).
- ``plain_96_video``, ``plain_384_video``: the same pipeline with ``optimize=False`` (plain eager), for the
  optimisations' own speed-up.
- each pipeline entry: per-stage ms, ``model_ms_per_frame``, ``peak_rss_mb``, model GFLOPs per frame (nominal = the plain model's, as
  ``python -m wav2lip384.models --summary`` counts it; executed = what the optimised model really computes),
  achieved GFLOP/s (executed GFLOPs x frames / model seconds) and its fraction of ``matmul_peak_gflops``,
  and ``max_pixel_diff_vs_plain``: the largest difference (0..255) between the frames pasted from the
  optimised and from the plain eager model on the same crops and speech.
- ``ours_*@threads1``: the same with one torch thread (see the note at ``ENTRIES_QUICK``);
  ``baseline_96_original_style@threads1`` is the baseline with one thread, for ratios at equal thread counts;
  ``ours_96_video+fp32``/``ours_384_video+fp32`` force the exact fp32 path (what a CPU without native bf16
  gets); ``+bf16`` forces bf16 without the check; ``--entries ours_384_video+compile@threads1`` the opt-in
  ``torch.compile`` (its ``fps_cold`` includes compiling).
- ``ours_<M>_video+int8``: the app's path (``LipSyncPipeline.calibrate``): "auto" with OpenVINO int8 among the
  candidates, calibrated on this avatar's face crops and speech windows (``precision.chosen`` says what won);
  ``runtimes_<M>``: the generator's per-frame work on
  PyTorch, OpenVINO and ONNX Runtime in fp32 / bf16 / int8 with each one's difference from fp32
  (:mod:`wav2lip384.bench.runtimes`).
- both CPU classes in one run (``--cpu-classes``, default ``native avx2``): every entry again with the suffix
  ``@avx2``, its process started with ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (the AVX2 class
  reproduced on a bf16 CPU; ``cpu_classes`` in the JSON says so), with ``ratios_vs_baseline@avx2`` against the
  baseline measured in that class. ``weights_used`` names the file by its sha256 (``random (...)`` otherwise).
- ``levers_96``, ``levers_384`` (not with ``--quick``): the generator alone at the pipeline's batch size, one
  lever at a time (BN folding, lower-half decoding, channels_last, bf16 with its quality loss, torch.compile
  with its compile time when ``--with-compile`` is given, threads, batch sizes).
- ``matmul_peak_gflops``: this machine's fp32 ``torch.mm`` throughput on 2048x2048 matrices (best of 1 thread
  and torch's default; ``fraction_of_matmul_peak`` uses the peak at the entry's own thread count);
  ``matmul_peak_gflops_bf16`` the same in bf16 (``fraction_of_bf16_matmul_peak``: achieved / that peak, for
  entries at torch's default thread count, whatever dtype they ran; null where bf16 is not native: the bf16
  peak is then an emulated ~0.1 GFLOP/s and the entries run fp32, see ``precision``).
Real weights are used when they resolve (the model's variable, e.g. ``DH_LIVETALKING384_CHECKPOINT``, or its
public weights already in the Hugging Face cache); otherwise random weights of the same architecture (same
cost), and ``weights`` says so. The bench uses only the pipeline's public API (``prepare``, ``mel_windows``,
``pasted_frames``, ``feature_cache``).
"""
# size-reason: every benchmark entry of `python -m wav2lip384.bench` with its report; apart from the runtime, never
#   imported by it.

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.cli import user_errors_exit_2
from common.errors import UserFacingError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
DEFAULT_VIDEO = SHARED_DATA / "video" / "retalking_face2.mp4"
DEFAULT_AUDIO = SHARED_DATA / "audio" / "wenet_aishell-BAC009S0724W0121_zh.wav"


def matmul_peak_gflops(n: int = 2048, seconds: float = 3.0, dtype: str = "fp32") -> float:
    """fp32 GFLOP/s of (n x n) @ (n x n) matmuls with torch's current thread count: the best single product
    within ``seconds`` (on a shared machine the best moment is the closest to the hardware's peak)."""
    import torch

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    torch.mm(a, b)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return round(2 * n ** 3 / best / 1e9, 1)


# short names in entry names -> registry ids ("ours_256_video"); any registry id or alias works as well
from wav2lip384.models.registry import ALIASES as MODEL_TOKENS  # noqa: E402 (the registry owns the short names)


def model_id(token: str) -> str:
    """``"96"`` -> wav2lip96, ``"384"`` -> paper384, ``"256"`` -> wav2lip256, registry ids as they are."""
    from wav2lip384.models import registry

    return MODEL_TOKENS.get(token) or registry.canonical_id(token)


def model_token(model: str) -> str:
    """The short name of a registry id in entry names (inverse of :func:`model_id`)."""
    inverse = {v: k for k, v in MODEL_TOKENS.items()}
    return inverse.get(model, model)


def load_generator_or_random(model: str, spec: str | None):
    """(generator, description): real weights of registry id ``model`` when ``spec`` resolves (never
    downloads here: offline or not cached = random), else seeded random weights of the same architecture."""
    import torch

    from wav2lip384.models import build_model
    from wav2lip384.weights import generator_config, generator_status, load_generator

    if spec:
        status = generator_status(model, spec)
        if status.available and status.where != "hub":  # local file or already in the Hugging Face cache
            try:
                return load_generator(model, spec), weights_label(model, spec)
            except UserFacingError as err:
                reason = str(err).split(". ")[0]
        else:
            reason = status.message.split(". ")[0]
    else:
        reason = "no checkpoint configured"
    torch.manual_seed(0)
    return build_model("generator", generator_config(model)).eval(), f"random (real weights unavailable: {reason})"


def weights_label(model: str, spec: str) -> str:
    """Which weights ran, by the file's sha256: "published weights: repo : file @ rev · sha256 …" only for the
    registry's published file; a local file is named by its path and sha256 and never called real or published."""
    from wav2lip384.weights.provenance import weights_provenance

    prov = weights_provenance(model, spec, hash_now_bytes=1 << 40)  # hash now, whatever the size
    return prov.describe()


def avatar_calibration(pipe, face: Path, clip: Path, n: int):
    """The avatar's own calibration batch for precision/int8 decisions, through the pipeline's public API."""
    from wav2lip384.media.audio import load_audio
    from wav2lip384.render.optimize import calibration_from_crops

    wav = load_audio(clip, sample_rate=16000)
    prep = pipe.prepare(face, len(wav) / 16000)
    return calibration_from_crops(prep.crops.crops, pipe.mel_windows(wav, prep.fps), n=n)


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


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _inputs(work: Path, video: Path, audio: Path, seconds: float | None) -> tuple[Path, Path, Path]:
    """(speech clip, 0.2 s speech, photo = the video's first frame) written into ``work``."""
    import cv2
    import soundfile as sf

    from wav2lip384.media.video import open_video

    data, sr = sf.read(str(audio), dtype="float32", always_2d=True)
    clip = work / "speech.wav"
    sf.write(str(clip), data[: int(seconds * sr)] if seconds else data, sr)
    short = work / "short.wav"  # prepares the photo avatar before its timed request
    sf.write(str(short), data[: int(0.2 * sr)], sr)
    stream = open_video(video, max_frames=1)
    first = next(stream.frames)
    stream.close()
    photo = work / "photo.png"
    cv2.imwrite(str(photo), first[..., ::-1])
    return clip, short, photo


def _warm_mel() -> None:
    from wav2lip384.media.audio import melspectrogram

    melspectrogram(np.zeros(8000, np.float32) + 1e-3)  # librosa's one-off JIT, not part of any request


def _pixel_diff(pipe, plain_gen, face: Path, clip: Path, n: int) -> int:
    """Max |optimised - plain eager| (0..255) over the pasted frames of the first ``n`` output frames (same
    crops and speech, through the pipeline's public ``prepare`` / ``mel_windows`` / ``pasted_frames``)."""
    from wav2lip384.media.audio import load_audio

    wav = load_audio(clip, sample_rate=16000)
    prep = pipe.prepare(face, len(wav) / 16000)
    windows = pipe.mel_windows(wav, prep.fps)  # (N, 80, 16)
    idx = list(range(min(n, len(windows))))
    a = pipe.pasted_frames(prep, windows, idx)
    b = pipe.pasted_frames(prep, windows, idx, generator=plain_gen)
    return int(max(np.abs(x.astype(np.int16) - y.astype(np.int16)).max() for x, y in zip(a, b, strict=True)))


def run_one(name: str, video: Path, audio: Path, seconds: float | None, settings, with_compile: bool = False) -> dict:
    """One configuration (called in a fresh subprocess by :func:`run`)."""
    import torch

    work = Path(tempfile.mkdtemp(prefix="lipsync-bench-"))
    try:
        clip, short, photo = _inputs(work, video, audio, seconds)
        _warm_mel()
        if name.startswith("runtimes_"):
            entry, desc = _run_runtimes(name, video, clip, work, settings)
        elif name.startswith("levers_"):
            model = model_id(name.split("_", 1)[1])
            gen, desc = load_generator_or_random(model, _spec(model, settings))
            entry = bench_levers(gen, model=model, quick=False, with_compile=with_compile)
        elif name == "baseline_96_original_style":
            entry, desc = _run_baseline(video, clip, work, settings)
        else:
            entry, desc = _run_pipeline(name, video, clip, short, photo, work, settings)
        entry["weights"] = entry["weights_used"] = desc  # a file by its sha256, or "random (...)"
        entry["peak_rss_mb"] = _rss_mb()
        entry["torch_threads"] = torch.get_num_threads()
        return entry
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _spec(model: str, settings) -> str | None:
    from wav2lip384.models import registry

    return registry.get(model).weights_spec(settings) or registry.get(model).default_weights or None


def _run_baseline(video: Path, clip: Path, work: Path, settings) -> tuple[dict, str]:
    from wav2lip384 import faces as F
    from wav2lip384.bench.baseline import PADS, run_original_style
    from wav2lip384.media.video import open_video

    gen, desc = load_generator_or_random("wav2lip96", _spec("wav2lip96", settings))
    # the fixed --box of the measurement: the padded face box of the first frame (not timed)
    stream = open_video(video, max_frames=1)
    first = next(stream.frames)
    stream.close()
    det = F.detect_faces(F.build_detector(settings.s3fd_checkpoint), [first])
    x1, y1, x2, y2 = F.apply_pads(det.boxes, PADS, first.shape)[0]
    box = (int(y1), int(y2), int(x1), int(x2))
    res = run_original_style(video, clip, work / "baseline.mp4", gen, box=box)
    full, _ = flops_per_frame(gen)
    t_model = res["timings"]["model"]
    entry = {"fps": round(res["fps"], 2), "n_frames": res["n_frames"], "wall_s": res["timings"]["total"],
             "stages_ms": {k: round(v * 1000, 1) for k, v in res["timings"].items()}, "box_y1y2x1x2": list(box),
             "batch": 128, "gflops_per_frame_nominal": round(full, 3), "gflops_per_frame_executed": round(full, 3),
             "achieved_gflops": round(full * res["n_frames"] / t_model, 1), "max_pixel_diff_vs_plain": 0}
    return entry, desc


def _run_runtimes(name: str, video: Path, clip: Path, work: Path, settings) -> tuple[dict, str]:
    from wav2lip384.bench.runtimes import bench_runtimes
    from wav2lip384.render.pipeline import DEFAULT_BATCH, LipSyncPipeline

    model = model_id(name.split("_", 1)[1])
    gen, desc = load_generator_or_random(model, _spec(model, settings))
    pipe = LipSyncPipeline(gen, model=model, detector_checkpoint=settings.s3fd_checkpoint, cache_dir=work / "cache",
                           show_progress=False, optimize=False)
    batch = DEFAULT_BATCH.get(model, 8)
    mel, faces = avatar_calibration(pipe, video, clip, batch)
    del pipe
    entry = bench_runtimes(gen, mel, faces)
    entry["model"], entry["calibration"] = model, f"{batch} face crops and speech windows of the video avatar"
    return entry, desc


def _run_pipeline(name: str, video: Path, clip: Path, short: Path, photo: Path, work: Path, settings):
    from wav2lip384.render.optimize import OptimizeConfig
    from wav2lip384.render.pipeline import LipSyncPipeline

    name, _, extra = name.partition("+")  # "ours_384_video+fp32" / "+bf16" / "+compile": the default config plus that
    kind, token, avatar = name.split("_")  # e.g. "ours", "livetalking384", "video"
    model = model_id(token)
    gen, desc = load_generator_or_random(model, _spec(model, settings))
    optimize = {"compile": OptimizeConfig(compile=True), "bf16": OptimizeConfig(dtype="bf16"),
                "fp32": OptimizeConfig(dtype="fp32"), "int8": OptimizeConfig()}.get(extra, kind == "ours")
    pipe = LipSyncPipeline(gen, model=model, detector_checkpoint=settings.s3fd_checkpoint,
                           cache_dir=work / "cache", show_progress=False, optimize=optimize)
    face = video if avatar == "video" else photo
    if extra == "int8":  # the app's path: "auto" re-measured with int8 calibrated on this avatar's crops and speech
        pipe.calibrate(face, clip, frames=min(16, pipe.batch_size), cache_dir=work / "cache")
    cold = None
    if kind == "ours" or avatar == "photo":  # first request: decodes the avatar and detects the faces
        t0 = time.perf_counter()
        res = pipe(face, clip if avatar == "video" else short, work / "cold.mp4")
        cold = res.n_frames / (time.perf_counter() - t0)
    else:  # plain entries: prepare the avatar (decode + detection) without a whole first request
        from wav2lip384.media.audio import load_audio

        pipe.prepare(face, len(load_audio(clip, sample_rate=16000)) / 16000)
    t0 = time.perf_counter()
    res = pipe(face, clip, work / "warm.mp4")
    wall = time.perf_counter() - t0
    entry = {"model": res.model, "crop_policy": res.crop_policy,
             "fps": round(res.n_frames / wall, 2), "n_frames": res.n_frames, "wall_s": round(wall, 3),
             "stages_ms": {k: round(v * 1000, 1) for k, v in res.timings.items()},
             "model_ms_per_frame": round(1000 * res.timings["model"] / res.n_frames, 1), "batch": pipe.batch_size,
             "optimize": pipe.optimization.to_dict(), "detector": res.detector.split(" (")[0],
             "precision": getattr(pipe.generator, "precision", {"dtype": "fp32"}),
             "avatar_cached": res.avatar_cached}
    if avatar == "video" and cold is not None:
        entry["fps_cold"] = round(cold, 2)  # with torch.compile: includes compiling
    feature_cache = pipe.feature_cache(face)
    entry["encoder_feature_cache_mb"] = round(feature_cache["bytes"] / 2**20, 1)
    nominal_full, nominal_photo = flops_per_frame(gen)
    from dataclasses import replace

    from wav2lip384.render.optimize import optimize_generator

    # FLOPs of the same transforms without compile (a compiled call pads batch 1 to its static batch)
    # (without compile: the pipeline's own model; building another copy would add a model's size to peak_rss_mb)
    executed_model = (optimize_generator(gen, replace(pipe.optimization, compile=False))
                      if pipe.optimization.compile else pipe.generator)
    if getattr(executed_model, "backend", "torch") != "torch":  # another runtime: count its torch twin's FLOPs
        executed_model = optimize_generator(gen, replace(pipe.optimization, dtype="fp32", compile=False))
    exec_full, exec_photo = flops_per_frame(executed_model)
    nominal, executed = (nominal_full, exec_full) if avatar == "video" else (nominal_photo, exec_photo)
    if avatar == "video" and feature_cache["frames"]:  # frames whose encoder features were cached skipped the encoder
        av = pipe.avatars.get(face)
        cached = feature_cache["frames"]
        encoded = sum(av.source_index(t) not in cached for t in range(res.n_frames))
        executed = (res.n_frames * exec_photo + encoded * (exec_full - exec_photo)) / res.n_frames
        entry["frames_encoded_in_timed_request"] = encoded
    entry["gflops_per_frame_nominal"] = round(nominal, 3)
    entry["gflops_per_frame_executed"] = round(executed, 3)
    entry["achieved_gflops"] = round(executed * res.n_frames / res.timings["model"], 1)
    entry["effective_gflops"] = round(nominal * res.n_frames / res.timings["model"], 1)
    entry["max_pixel_diff_vs_plain"] = _pixel_diff(pipe, gen, face, clip, pipe.batch_size) if kind == "ours" else 0
    return entry, desc


def bench_levers(gen, *, model: str | None = None, quick: bool = False, with_compile: bool = False) -> dict:
    """The generator alone, one lever at a time, on the same random inputs; diffs vs plain eager fp32."""
    import torch

    from wav2lip384.render.optimize import DEFAULT, PLAIN, OptimizeConfig, optimize_generator, paste_first_row
    from wav2lip384.render.pipeline import DEFAULT_BATCH

    s = gen.img_size
    batch = DEFAULT_BATCH.get(model, 32 if s <= 96 else 8)  # the pipeline's batch for this model
    g = torch.Generator().manual_seed(0)
    mel, faces = torch.randn(batch, 1, 80, 16, generator=g), torch.rand(batch, 6, s, s, generator=g)
    faces[:, :3, :, s // 2:] = 0
    r = paste_first_row(s)

    def timed(model, m=mel, f=faces, reps=3):
        with torch.inference_mode():
            model(m[:2], f[:2])  # warm-up
            best, out = float("inf"), None
            for _ in range(reps):
                t0 = time.perf_counter()
                out = model(m, f)
                best = min(best, time.perf_counter() - t0)
        return len(m) / best, out.float()

    def quality(out, ref):
        d = (out[:, :, r:] - ref[:, :, r:]).abs() * 255  # rows the paste-back can show, 8-bit scale
        mse = float((d ** 2).mean())
        return {"max_pixel_diff": round(float(d.max()), 3), "mean_pixel_diff": round(float(d.mean()), 4),
                "psnr_db": round(10 * np.log10(255 ** 2 / mse), 1) if mse > 0 else None}

    res = {"batch": batch, "first_row_kept": r}
    plain_fps, ref = timed(optimize_generator(gen, PLAIN))
    res["plain"] = {"fps": round(plain_fps, 2)}
    configs = {"fold_bn": OptimizeConfig(lower_half=False, channels_last=False, dtype="fp32"),
               "lower_half": OptimizeConfig(fold_bn=False, channels_last=False, dtype="fp32"),
               "channels_last": OptimizeConfig(fold_bn=False, lower_half=False, dtype="fp32"),
               "fold_bn+lower_half": OptimizeConfig(channels_last=False, dtype="fp32"),
               "fold_bn+lower_half+channels_last (fp32)": OptimizeConfig(dtype="fp32"),
               "default (+ auto precision)": DEFAULT}
    for label, cfg in configs.items():
        model = optimize_generator(gen, cfg)
        fps, out = timed(model)
        res[label] = {"fps": round(fps, 2), "speedup_vs_plain": round(fps / plain_fps, 2), **quality(out, ref),
                      "precision": model.precision["dtype"]}
    res["dynamic_int8"] = {"applicable": False, "reason": "torch.ao.quantization.quantize_dynamic converts "
                           f"nn.Linear/RNN only; the generator has {sum(isinstance(m, torch.nn.Linear) for m in gen.modules())} "
                           "Linear layers (all convolutions)"}
    if not quick:
        # threads (restored afterwards)
        before = torch.get_num_threads()
        fast = optimize_generator(gen, DEFAULT)
        for n in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(n)
            res[f"default_threads_{n}"] = {"fps": round(timed(fast)[0], 2)}
        torch.set_num_threads(before)
        # batch sizes for the default model
        res["default_batch_fps"] = {}
        for b in ((8, 16, 32, 64) if s == 96 else (2, 4, 8, 16)):
            m2, f2 = mel[:1].expand(b, -1, -1, -1).contiguous(), faces[:1].expand(b, -1, -1, -1).contiguous()
            res["default_batch_fps"][str(b)] = round(timed(fast, m2, f2, reps=1)[0], 2)
    if with_compile:  # torch.compile: compile time (first call) vs steady-state speed (minutes on 2 cores)
        try:
            comp = optimize_generator(gen, OptimizeConfig(compile=True, dtype="fp32"), batch_size=batch)
            t0 = time.perf_counter()
            with torch.inference_mode():
                comp(mel, faces)
            compile_s = time.perf_counter() - t0
            fps, out = timed(comp)
            res["default+compile"] = {"fps": round(fps, 2), "speedup_vs_plain": round(fps / plain_fps, 2),
                                      "compile_s": round(compile_s, 1), **quality(out, ref)}
        except Exception as err:  # inductor needs a C++ toolchain; report instead of failing the benchmark
            res["default+compile"] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
    return res


# "@threadsN": the same entry with torch.set_num_threads(N) (on a busy 2-core machine one thread can beat two:
# OpenMP threads wait for each other whenever the OS deschedules one of them)
ENTRIES_QUICK = ["baseline_96_original_style", "baseline_96_original_style@threads1", "plain_96_video", "ours_96_video", "ours_96_photo",
                 "plain_384_video", "ours_384_video", "ours_384_photo", "ours_96_video@threads1",
                 "ours_384_video@threads1", "ours_384_photo@threads1",
                 # the public higher-resolution families (issue 12): random weights unless real ones resolve
                 "ours_256_video", "ours_livetalking384_video", "ours_livetalking384_photo"]
# "+fp32": the default transforms forced to fp32 (exact; what "auto" falls back to without native bf16);
# "+bf16": bf16 forced without the check; "+compile" (not run by default: minutes of compiling on 2 cores, and
# it did not pay here): opt-in torch.compile
ENTRIES_QUICK += ["runtimes_96", "ours_96_video+int8"]  # per-runtime model figures; "auto" with int8 calibrated
ENTRIES_FULL = ENTRIES_QUICK + ["ours_96_video+fp32", "ours_384_video+fp32", "levers_96", "levers_384",
                                "runtimes_livetalking384", "ours_livetalking384_video+int8"]
# the AVX2 class, reproduced on this bf16 CPU in child processes (oneDNN and ATen capped to AVX2 kernels)
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
CPU_CLASSES = ("native", "avx2")


def run(video: Path, audio: Path, seconds: float | None, entries: list[str], threads: int | None,
        with_compile: bool = False, cpu_classes: tuple[str, ...] = CPU_CLASSES) -> dict:
    """Every entry in its own subprocess, one after the other, for each CPU class (``avx2``: the same entries with
    the suffix ``@avx2``, their processes started with :data:`AVX2_ENV`); ratios computed from this one run."""
    # size-reason: one report assembled in the order it is read (machine, each class's entries, their ratios to
    # that class's baseline); helpers would pass the half-built report around.
    import torch

    out: dict = {"machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                             "load_avg_start": [round(x, 2) for x in os.getloadavg()],
                             "uptime_start": _uptime()},
                 "clip": {"video": video.name, "audio": audio.name, "audio_seconds": seconds or "all"}}
    peaks = {}
    before = torch.get_num_threads()
    for n in sorted({1, before}):  # on a shared machine one thread may reach more than two
        torch.set_num_threads(n)
        peaks[n] = matmul_peak_gflops()
    torch.set_num_threads(before)
    out["matmul_peak_gflops"] = max(peaks.values())
    out["matmul_peak_gflops_by_threads"] = {str(k): v for k, v in peaks.items()}
    out["matmul_peak_gflops_bf16"] = matmul_peak_gflops(dtype="bf16")  # torch's thread count; context for bf16 entries
    out["cpu_classes"] = {
        c: ("this CPU as it is" if c == "native" else
            "the AVX2 class reproduced on this CPU: each entry's process runs with " +
            " ".join(f"{k}={v}" for k, v in AVX2_ENV.items()) + " (oneDNN and ATen kernels capped to AVX2, so bf16 is "
            "emulated as on an AVX2-only CPU; OpenVINO's oneDNN convolutions follow the cap, a few of its own "
            "element-wise kernels still use AVX-512)")
        for c in cpu_classes}
    runs = [(name, c) for c in cpu_classes for name in entries]
    for name, cpu_class in runs:
        env = {**os.environ, **AVX2_ENV} if cpu_class == "avx2" else None
        key = name if cpu_class == "native" else f"{name}@avx2"
        name = key.removesuffix("@avx2")
        base_name, _, variant = name.partition("@threads")  # e.g. "ours_384_video@threads1"
        cmd = [sys.executable, "-m", "wav2lip384.bench", "--one", base_name, "--video", str(video),
               "--audio", str(audio)]
        if seconds:
            cmd += ["--seconds", str(seconds)]
        if variant or threads:
            cmd += ["--threads", str(variant or threads)]
        if with_compile:
            cmd.append("--with-compile")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            out[key] = {"error": proc.stderr.strip()[-1500:]}
            continue
        out[key] = json.loads(proc.stdout.strip().splitlines()[-1])  # the entry is the last line
        out[key]["cpu_class"] = cpu_class
        out[key]["process_wall_s"] = round(time.perf_counter() - t0, 1)
        out[key]["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    base = out.get("baseline_96_original_style", {}).get("fps")
    if base:
        out["ratios_vs_baseline"] = {k: round(v["fps"] / base, 2) for k, v in out.items()
                                     if isinstance(v, dict) and "fps" in v and k != "baseline_96_original_style"
                                     and not k.endswith("@avx2")}
    base_avx2 = out.get("baseline_96_original_style@avx2", {}).get("fps")
    if base_avx2:  # the AVX2 class against the baseline measured in that class, in this run
        out["ratios_vs_baseline@avx2"] = {k: round(v["fps"] / base_avx2, 2) for k, v in out.items()
                                          if isinstance(v, dict) and "fps" in v and k.endswith("@avx2")
                                          and not k.startswith("baseline_96_original_style@")}
    base1 = out.get("baseline_96_original_style@threads1", {}).get("fps")
    if base1:  # both sides with one torch thread
        out["ratios_vs_baseline_threads1"] = {k: round(v["fps"] / base1, 2) for k, v in out.items()
                                              if isinstance(v, dict) and "fps" in v and k.endswith("@threads1")
                                              and not k.startswith("baseline")}
    for size in (96, 384):
        p, o = out.get(f"plain_{size}_video", {}).get("fps"), out.get(f"ours_{size}_video", {}).get("fps")
        if p and o:
            out.setdefault("ratios_optimised_vs_plain", {})[f"{size}_video"] = round(o / p, 2)
    for n in list(peaks):  # again at the end (the machine may be quieter); keep the best
        torch.set_num_threads(n)
        peaks[n] = max(peaks[n], matmul_peak_gflops())
    torch.set_num_threads(before)
    out["matmul_peak_gflops"] = max(peaks.values())
    out["matmul_peak_gflops_by_threads"] = {str(k): v for k, v in peaks.items()}
    for entry in out.values():
        if isinstance(entry, dict) and "achieved_gflops" in entry:
            peak = peaks.get(entry.get("torch_threads"), out["matmul_peak_gflops"])  # same thread count
            entry["fraction_of_matmul_peak"] = round(entry["achieved_gflops"] / peak, 3)  # fp32 peak (the goal's)
            if entry.get("torch_threads") == before:  # the bf16 peak was measured at this thread count
                # only where bf16 is native (its peak >= fp32's); emulated bf16 (~0.1 GFLOP/s) makes no yardstick
                entry["fraction_of_bf16_matmul_peak"] = (
                    round(entry["achieved_gflops"] / out["matmul_peak_gflops_bf16"], 3)
                    if out["matmul_peak_gflops_bf16"] >= out["matmul_peak_gflops"] else None)
    out["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["machine"]["uptime_end"] = _uptime()
    out["notes"] = [
        "fps = output frames / wall time of one whole request (audio decode .. mux). ours_*: the avatar was prepared "
        "by an earlier request (frames, face boxes and crops cached, as in the app; video avatars also their face "
        "encoder features, see encoder_feature_cache_mb); fps_cold = that first request. "
        "The baseline uses a fixed box (no detection), like the issue's measurement of the original.",
        "Each entry ran in its own process; peak_rss_mb is that process's ru_maxrss (ffmpeg children excluded).",
        "Other processes share these 2 CPUs (see load_avg/uptime): compare figures within one run only.",
    ]
    return out


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # pragma: no cover
        return ""


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wav2lip384.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON (default: a short table)")
    p.add_argument("--quick", action="store_true", help="1.6 s of speech and no lever sweeps (a short run)")
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="video avatar (its first frame = the photo)")
    p.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="speech")
    p.add_argument("--seconds", type=float, default=None, help="seconds of speech (default: all; 1.6 with --quick)")
    p.add_argument("--entries", nargs="+", default=None, help=f"subset of {ENTRIES_FULL}")
    p.add_argument("--models", nargs="+", default=None, metavar="ID",
                   help="registry ids (or 96/384/256): run ours_<model>_video and ours_<model>_photo of each")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--with-compile", action="store_true", help="levers: also time torch.compile (minutes)")
    p.add_argument("--cpu-classes", nargs="+", choices=CPU_CLASSES, default=list(CPU_CLASSES),
                   help="native: this CPU; avx2: the same entries in processes capped to AVX2 (default: both)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one entry, print its JSON
    args = p.parse_args(argv)
    from common.settings import Settings

    settings = Settings.from_env()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    seconds = args.seconds if args.seconds is not None else (1.6 if args.quick else None)
    for f in (args.video, args.audio):
        if not f.is_file():
            raise UserFacingError(f"benchmark input {f} not found (pass --video/--audio)")
    if args.one:
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):  # progress bars (NNCF's) must not mix with the JSON line
            entry = run_one(args.one, args.video, args.audio, seconds, settings, args.with_compile)
        print(json.dumps(entry))
        return 0
    entries = list(args.entries or [])
    for m in args.models or []:
        token = model_token(model_id(str(m)))  # unknown ids: a clear error listing the known ones
        entries += [f"ours_{token}_video", f"ours_{token}_photo"]
    entries = entries or (ENTRIES_QUICK if args.quick else ENTRIES_FULL)
    result = run(args.video, args.audio, seconds, entries, args.threads, args.with_compile,
                 cpu_classes=tuple(args.cpu_classes))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'entry':<32}{'fps':>8}{'x base':>8}{'RSS MB':>9}{'GFLOP/s':>9}{'maxdiff':>8}")
        ratios = result.get("ratios_vs_baseline", {})
        for key, val in result.items():
            if isinstance(val, dict) and "fps" in val:
                print(f"{key:<32}{val['fps']:>8}{ratios.get(key, 1.0):>8}{val.get('peak_rss_mb', ''):>9}"
                      f"{val.get('achieved_gflops', ''):>9}{val.get('max_pixel_diff_vs_plain', ''):>8}")
            elif isinstance(val, dict) and "error" in val:
                print(f"{key:<32} error: {val['error'][-200:]}")
        print(f"matmul peak {result['matmul_peak_gflops']} GFLOP/s; {result['machine']['uptime_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
