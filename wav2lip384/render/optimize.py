"""Inference-time transforms of a loaded Wav2Lip-family generator (any registry model), each switchable.

Exact within a stated tolerance (on by default, see :class:`OptimizeConfig`):
  - ``fold_bn``      BatchNorm (eval statistics) folded into the preceding Conv2d / ConvTranspose2d:
                     one pass over each feature map instead of two. Float re-association only:
                     |diff| <= ~1e-5 on the [0, 1] output (tests: ``EXACT_ATOL``).
  - ``lower_half``   the last, high-resolution decoder blocks compute only the rows that the feathered
                     paste-back uses (the mask of ``faces.lower_face_mask`` is 0 above 45 % of the box
                     height), with a margin of rows so that every kept row is exact: each 3x3 convolution
                     (padding 1) spoils one row at the top of a cropped map, a stride-2 transposed
                     convolution (k3, p1, op1) doubles the spoiled rows. The rows above the cut are filled
                     with 0 (or with a given image) and are never shown by the feathered paste. With SAM
                     (the community 384) the attention's 7x7 convolution reads 3 more skip rows above the
                     cut, which cached (trimmed) features keep; the 4x4 / 3x3 valid bottleneck layers sit
                     below 12x12, where no cut is made (``models.rows.plan_rows``).
  - threads          ``torch.set_num_threads`` / interop threads (``apply_threads``).
  - ``channels_last``  NHWC memory format (oneDNN's preferred layout for convolutions); same arithmetic.
  - ``inference_mode``  the pipeline runs the model under ``torch.inference_mode`` (already the case).
  - ``dtype="auto"``  (the default) chosen by MEASUREMENT on this machine and these weights, never by CPUID flags:
                     each candidate (CPU: PyTorch fp32 and bf16, and OpenVINO int8 when calibration frames of the
                     avatar are given or ``int8="on"``; CUDA: fp32, fp16, bf16) runs a calibration batch as a
                     request runs it (audio encoder + decoder on cached face features), is timed, and is compared
                     with fp32 on the rows the paste-back shows. A candidate is taken only if it is faster than the
                     best so far by ``min_speedup`` AND within tolerance: mean |diff| <= ``max_mean_diff`` (1) and
                     99th percentile <= ``max_p99_diff`` (4) 8-bit grey levels; otherwise fp32. So where bf16 is
                     emulated (e.g. ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` on a bf16 CPU, ~10x slower)
                     it loses the timing and fp32 runs. A ``quality_gate`` (``optimize_generator``) has the last
                     word on a candidate that passed both: with published weights the lip-sync check
                     (:mod:`wav2lip384.evaluate.gate`) refuses one that lowers LSE-C on the example clip by more
                     than 0.1; its verdict is kept with the candidate. The decision is cached per machine (CPU
                     model, the ISA variables, torch / OpenVINO versions, threads), weights (source sha256 or a
                     sha256 of the parameters), transforms, calibration and gate (:func:`gate_key`) in
                     ``<DH_CACHE_DIR>/precision/``; ``model.precision``
                     holds it (:func:`precision_status` for Status: chosen precision/runtime, each candidate's fps
                     and differences). int8 is OpenVINO + NNCF static quantisation (``render/runtime.py``).
                     ``dtype="fp32"`` forces the exact path (bench ``+fp32`` entries).
Measured trades (off by default; ``python -m wav2lip384.bench`` prints the figures in ``levers_*``):
  - ``dtype="bf16"``   bf16 without the check (bench ``+bf16`` entries).
  - ``compile``        ``torch.compile`` (inductor, C++ codegen): exact, fuses the thin high-resolution layers'
                     element-wise work, but compiling takes minutes on 2 cores (per entry point and batch size),
                     so it is opt-in (a long-running server can pay it once).
  - dynamic int8       not applicable: ``torch.ao.quantization.quantize_dynamic`` only converts
                     ``nn.Linear``/RNN layers and the generator is all convolutions (reported as such).

Everything here takes a generator and returns a transformed copy of the same class
(:class:`wav2lip384.models.generator.Wav2LipGenerator`: ``img_size``, ``config``, ``encode_audio``,
``encode_faces``, ``decode``, ``trim_feats``, ``forward``, ``precision``); the input model is not modified.
Row-cropped decoding, the compute dtype and the memory layout are options of that one model; this module only
decides and applies them (:func:`transform_generator`, :func:`optimize_generator`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wav2lip384.models.generator import Wav2LipGenerator
from wav2lip384.models.rows import plan_rows

# Tolerance we promise for the exact transforms, on outputs in [0, 1] (fp32). BN folding changes the order
# of float operations only; 1e-4 is ~0.03 of one 8-bit grey level.
EXACT_ATOL = 1e-4
# "auto" precision: a faster path is kept only if, on the shown rows of the calibration batch, it stays within
# these many 8-bit grey levels of fp32: the mean |diff| and its 99th percentile.
MAX_MEAN_DIFF_LEVELS = 1.0
MAX_P99_DIFF_LEVELS = 4.0
# Fraction of the face height above which the feathered paste-back mask is 0 (faces.lower_face_mask's
# default ``top``); rows above it are never shown.
PASTE_MASK_TOP = 0.45
# Extra rows kept above the mask's first row: the resize from model size to box size interpolates
# between neighbouring rows (bilinear / area), so one or two rows above can leak into the first shown row.
RESIZE_MARGIN_ROWS = 2


@dataclass(frozen=True)
class OptimizeConfig:
    fold_bn: bool = True
    lower_half: bool = True  # only valid with a feathered paste-back (the pipeline's default)
    channels_last: bool = True
    dtype: str = "auto"  # "auto" (measured: fastest verified candidate) | "fp32" | "bf16" | "fp16" (CUDA)
    max_mean_diff: float = MAX_MEAN_DIFF_LEVELS  # "auto": tolerance in 8-bit levels on the shown rows
    max_p99_diff: float = MAX_P99_DIFF_LEVELS
    int8: str = "auto"  # "auto": OpenVINO int8 is a candidate when avatar calibration frames are given | "on" | "off"
    timing_repeats: int = 2  # "auto": best of this many timed calibration batches per candidate
    min_speedup: float = 0.05  # "auto": a candidate must be this much faster (timings jitter on shared machines)
    compile: bool = False
    num_threads: int | None = None  # None: leave torch's setting
    interop_threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


PLAIN = OptimizeConfig(fold_bn=False, lower_half=False, channels_last=False, dtype="fp32")  # plain eager fp32 (the input model)
DEFAULT = OptimizeConfig()


# ------------------------------------------------------------------------------------------------ threads
def apply_threads(num_threads: int | None, interop_threads: int | None = None) -> dict:
    """Set torch's intra-op (and, if not yet used, inter-op) thread counts; returns what is in effect."""
    if num_threads:
        torch.set_num_threads(int(num_threads))
    if interop_threads:
        try:
            torch.set_num_interop_threads(int(interop_threads))
        except RuntimeError:  # can only be set once, before any inter-op work started
            pass
    return {"num_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


# -------------------------------------------------------------------------------------------- BN folding
def _fold_into(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """conv then bn (eval) -> conv with scaled weights and shifted bias; ``conv`` is modified in place."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)  # (cout,)
    shift = bn.bias.detach() - bn.running_mean * scale  # (cout,)
    w = conv.weight.detach()
    if isinstance(conv, nn.ConvTranspose2d):  # weight (cin, cout/groups, kh, kw)
        new_w = w * scale.view(1, -1, 1, 1)
    else:  # Conv2d weight (cout, cin/groups, kh, kw)
        new_w = w * scale.view(-1, 1, 1, 1)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    conv.weight = nn.Parameter(new_w, requires_grad=False)
    conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval) in which every ``conv_block = Sequential(conv, BatchNorm2d)`` of our layer
    wrappers becomes ``Sequential(conv', Identity)``. Keeps module names, so it stays printable/diffable."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        block = getattr(module, "conv_block", None)
        if isinstance(block, nn.Sequential) and len(block) == 2 and isinstance(block[1], nn.BatchNorm2d):
            _fold_into(block[0], block[1])
            block[1] = nn.Identity()
    return model


# --------------------------------------------------------------------------------- lower-half decoding
def plan_lower_half(config, first_row: int) -> tuple[int, int, float]:
    """Where the decoder is cut for output rows >= ``first_row`` to be exact: (decoder block index, rows dropped
    at that block's input, MAC fraction kept in the cut layers). From the layer tables only
    (:func:`wav2lip384.models.rows.plan_rows`, which also accounts for SAM's attention convolution)."""
    plan = plan_rows(config, first_row)
    return plan.cut_block, plan.cut_offset, plan.kept_fraction


def paste_first_row(size: int) -> int:
    """First row (at model resolution) that the feathered paste-back can show, minus a resize margin."""
    return max(0, int(math.floor(PASTE_MASK_TOP * size)) - RESIZE_MARGIN_ROWS)


# ------------------------------------------------------------------------------------------ transforms
def transform_generator(gen: Wav2LipGenerator, *, fold_bn: bool = True, channels_last: bool = True,
                        lower_half: bool = True, dtype: torch.dtype = torch.float32) -> Wav2LipGenerator:
    """The exact transforms (and a dtype) applied to a copy of ``gen``; ``gen`` itself is untouched.

    The result is the same class: BN folding and the dtype/layout change its parameters, lower-half decoding and
    channels_last set its inference options (``set_first_row``, ``channels_last``). When nothing touches the
    parameters, the copy is shallow: it shares them with ``gen`` (no extra memory for a 0.7 GB model), and only
    its own option attributes differ.
    """
    if fold_bn:
        model = fold_batchnorm(gen)  # a deep copy
    elif dtype != torch.float32 or channels_last:
        model = copy.deepcopy(gen).eval()  # the steps below change parameters in place
    else:
        model = copy.copy(gen).eval()  # shallow: same parameters and submodules, own plain attributes
    if model.compute_dtype != dtype:
        model = model.to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.channels_last = channels_last
    model.set_first_row(paste_first_row(model.img_size) if lower_half else 0)
    model.static_batch = model._compiled_forward = model._compiled_decode = None
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def optimize_generator(gen: Wav2LipGenerator, config: OptimizeConfig = DEFAULT, *, batch_size: int = 8,
                       calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
                       cache_dir: str | os.PathLike | None = None, quality_gate=None) -> Wav2LipGenerator:
    """Return an optimised copy of ``gen`` (eval mode) per ``config``; ``gen`` itself is untouched.

    ``batch_size``: with ``compile``, the batch the graphs are compiled for (shorter batches are padded, so
    one compilation serves a whole request; longer ones would compile again). The returned module's
    ``precision`` dict says which dtype and runtime run and why (see ``dtype="auto"`` in the module docstring).
    ``calibration``: (mel (n, 1, 80, 16), faces (n, 6, S, S)) of the avatar (:func:`calibration_from_crops`),
    for "auto"'s timing and verification and int8's calibration; ``cache_dir``: where decisions are kept
    (default: DH_CACHE_DIR's). With OpenVINO chosen the result is a :class:`render.runtime.RuntimeGenerator`.
    ``quality_gate``: "auto" takes a verified, faster candidate only if ``quality_gate(name, candidate, fp32)``
    accepts it (:func:`gate_verdict`; the lip-sync check :mod:`wav2lip384.evaluate.gate` is one).
    """
    apply_threads(config.num_threads, config.interop_threads)
    device = next(gen.parameters()).device
    allowed = ("auto", "fp32", "bf16", "fp16") if device.type == "cuda" else ("auto", "fp32", "bf16")
    if config.dtype not in allowed:
        raise ValueError(f"dtype must be one of {allowed} on {device.type}, got {config.dtype!r}")
    if config.int8 not in ("auto", "on", "off"):
        raise ValueError(f"int8 must be 'auto', 'on' or 'off', got {config.int8!r}")
    if config.dtype == "auto":
        fast, precision = _auto_precision(gen, config, calibration, cache_dir, batch_size, quality_gate)
    else:
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
        fast = _transform(gen, config, dtypes[config.dtype])
        precision = {"dtype": config.dtype, "runtime": "torch", "requested": config.dtype, "reason": "requested"}
    fast.precision = precision
    if config.compile and precision.get("runtime", "torch") == "torch":
        # one graph per entry point (forward = video avatars, decode = photo avatars), static shapes; compiling
        # the blocks one by one instead hits dynamo's recompile limit (they share Sequential.forward's code)
        fast.static_batch = int(batch_size)
        fast._compiled_forward = torch.compile(fast._forward, dynamic=False)
        fast._compiled_decode = torch.compile(fast._decode, dynamic=False)
    return fast


def _transform(gen: Wav2LipGenerator, config: OptimizeConfig, dtype: torch.dtype) -> Wav2LipGenerator:
    return transform_generator(gen, fold_bn=config.fold_bn, channels_last=config.channels_last,
                               lower_half=config.lower_half, dtype=dtype)


def calibration_batch(size: int, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded, image-like model input: (n, 1, 80, 16) mel in the normalised range [-4, 4] and (n, 6, S, S)
    faces (smooth random images, lower half masked in the first three channels, as the pipeline feeds them).
    Used when no avatar frames are given (:func:`calibration_from_crops` builds the avatar's own)."""
    g = torch.Generator().manual_seed(seed)
    mel = (torch.randn(n, 1, 80, 16, generator=g) * 2).clamp_(-4, 4)
    low = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g)  # (n, 3, S/8, S/8)
    ref = nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)  # (n, 3, S, S)
    masked = ref.clone()
    masked[:, :, size // 2:] = 0
    return mel, torch.cat([masked, ref], dim=1)


def calibration_from_crops(crops, windows, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The avatar's own model inputs: ``crops`` (k, S, S, 3) RGB uint8 face crops (a prepared avatar's
    ``crops.crops``) and ``windows`` (m, 80, 16) speech mel windows -> (mel (n, 1, 80, 16), faces (n, 6, S, S)),
    spread evenly, fed as the pipeline feeds them (BGR in [0, 1], lower half of the target masked)."""
    crops, windows = np.asarray(crops), np.asarray(windows)
    ci = np.linspace(0, len(crops) - 1, n).round().astype(int)
    wi = np.linspace(0, len(windows) - 1, n).round().astype(int)
    x = torch.from_numpy(np.ascontiguousarray(crops[ci][..., ::-1])).permute(0, 3, 1, 2).float() / 255.0  # BGR
    masked = x.clone()
    masked[:, :, x.shape[2] // 2:] = 0
    return torch.from_numpy(windows[wi]).float()[:, None], torch.cat([masked, x], dim=1)


# ------------------------------------------------------------------------------- measured precision
def machine_id(device: torch.device) -> dict:
    """What a precision decision depends on besides the weights: the processor (or GPU), the variables that cap
    oneDNN's / ATen's instruction set, and the library versions."""
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        import platform

        cpu = platform.processor()
    out = {"cpu": cpu, "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
           "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", ""), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "device": device.type}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    from wav2lip384.render import runtime

    if device.type == "cpu" and runtime.available():
        out["openvino"] = runtime.version()
    return out


def weights_id(gen: nn.Module) -> str:
    """The loaded weights' identity: the source file's sha256 when the loader knew it, else a sha256 of the
    parameters and buffers themselves."""
    info = getattr(gen, "load_info", None)
    if getattr(info, "source_sha256", ""):
        return "sha256:" + info.source_sha256
    h = hashlib.sha256()
    for name, t in gen.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "params-sha256:" + h.hexdigest()


def decision_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where decisions (and int8 IR files) are kept: ``cache_dir``, else DH_CACHE_DIR's (the settings' default)."""
    if cache_dir is None:
        from common.settings import Settings

        cache_dir = Settings.from_env().cache_dir
    return Path(cache_dir).expanduser()


def within_tolerance(diff_levels: dict, config: OptimizeConfig) -> bool:
    return (diff_levels["mean_diff_levels"] <= config.max_mean_diff
            and diff_levels["p99_diff_levels"] <= config.max_p99_diff)


def diff_levels(out: torch.Tensor, ref: torch.Tensor, first_row: int) -> dict:
    """|out - ref| in 8-bit grey levels on the rows the paste-back shows: mean, 99th percentile, max."""
    d = ((out.float() - ref.float()).abs() * 255)[:, :, first_row:].flatten()
    p99 = float(torch.kthvalue(d.cpu(), max(1, int(math.ceil(0.99 * d.numel())))).values) if d.numel() else 0.0
    return {"mean_diff_levels": round(float(d.mean()), 4), "p99_diff_levels": round(p99, 3),
            "max_diff_levels": round(float(d.max()), 3)}


def _steady_fps(model, mel: torch.Tensor, faces: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """Frames/s of what a request runs per batch (audio encoder + decoder on cached, trimmed face features; the
    face encoder runs once per source frame) and that output: best of ``repeats`` after a warm-up."""
    with torch.inference_mode():
        feats = model.trim_feats(model.encode_faces(faces))
        run = lambda: model.decode(model.encode_audio(mel), feats)  # noqa: E731
        out = run().float()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            if mel.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
    return len(mel) / best, out


def _candidates(device: torch.device, config: OptimizeConfig, calibrated: bool) -> list[str]:
    """Candidates in the order tried; fp32 (torch) first, the reference every other one is checked against."""
    if device.type == "cuda":
        out = ["torch-fp32", "torch-fp16"]
        if torch.cuda.is_bf16_supported():
            out.append("torch-bf16")
        return out
    out = ["torch-fp32", "torch-bf16"]
    from wav2lip384.render import runtime

    if config.int8 == "on" or (config.int8 == "auto" and calibrated):
        out.append("openvino-int8" if runtime.available() else "openvino-int8 (not installed)")
    return out


def _build(name: str, gen, config: OptimizeConfig, calibration, cache_dir: Path, cache_key: str):
    backend, _, prec = name.partition("-")
    if backend == "torch":
        return _transform(gen, config, {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[prec])
    from wav2lip384.render import runtime

    base = _transform(gen, replace(config, channels_last=False), torch.float32)
    return runtime.build(base, prec, calibration=calibration, cache_dir=cache_dir, cache_key=cache_key)


def gate_verdict(quality_gate, name: str, candidate, fp32) -> dict:
    """``quality_gate(name, candidate, fp32)`` as a verdict dict with ``accepted`` (bool) and ``verdict`` (one
    line: "accepted", "rejected: ..." or "not run: <why>", the gate's own figures beside). A gate that fails
    (raises) rejects the candidate: a lever that could not be checked is not taken."""
    try:
        out = quality_gate(name, candidate, fp32)
    except Exception as e:  # noqa: BLE001 - any failure of the check keeps the checked path out
        return {"accepted": False, "ran": False, "verdict": f"rejected: the check failed ({type(e).__name__}: {e})"}
    out = dict(out) if isinstance(out, dict) else {"accepted": bool(out)}
    out["accepted"] = bool(out.get("accepted"))
    out.setdefault("verdict", "accepted" if out["accepted"] else "rejected")
    return out


def gate_key(quality_gate):
    """What a precision decision depends on of the gate: None without one, else its ``cache_key`` (e.g. whether
    it can run: published weights, which SyncNet file), else its name. A decision made without the gate (or
    with one that could not run) is never reused once one that runs is present."""
    if quality_gate is None:
        return None
    try:
        key = getattr(quality_gate, "cache_key", None)
    except Exception as e:  # noqa: BLE001 - a gate that cannot even say what it is fails its checks (fp32 stays)
        return {"gate_error": f"{type(e).__name__}: {e}"}
    return key if key is not None else getattr(quality_gate, "__qualname__", type(quality_gate).__qualname__)


def _auto_precision(gen: Wav2LipGenerator, config: OptimizeConfig, calibration=None, cache_dir=None,
                    batch_size: int = 8, quality_gate=None) -> tuple[object, dict]:
    """The fastest candidate that stays within tolerance of fp32 on the shown rows (module docstring) and that
    ``quality_gate`` (when given) accepts.

    Decided once per machine, weights, transforms, calibration and gate, then read from the cache."""
    device = next(gen.parameters()).device
    root = decision_cache_dir(cache_dir)
    calibrated = calibration is not None
    if calibration is None:
        # a short batch: the large models cost ~0.1-1 s per frame per candidate on 2 cores (decided once, cached)
        calibration = calibration_batch(gen.img_size, n=min(8 if gen.img_size <= 96 else 4, max(2, batch_size)))
    mel, faces = (t.to(device) for t in calibration)
    half = max(1, len(mel) // 2)  # int8 is calibrated on the first half, verified on all (incl. unseen frames)
    cal_digest = hashlib.sha256(mel.cpu().numpy().tobytes() + faces.cpu().numpy().tobytes()).hexdigest()[:16]
    key_doc = {"machine": machine_id(device), "weights": weights_id(gen), "arch": gen.config.name
               if hasattr(gen.config, "name") else gen.img_size,
               "transforms": {k: v for k, v in config.to_dict().items() if k in ("fold_bn", "lower_half", "channels_last")},
               "tolerance": [config.max_mean_diff, config.max_p99_diff], "int8": config.int8, "calibration": cal_digest,
               "quality_gate": gate_key(quality_gate)}
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = root / "precision" / f"{key}.json"
    cal_key = f"{key}|{cal_digest}"
    try:
        cached = json.loads(path.read_text())
        model = _build(cached["chosen"], gen, config, (mel[:half].cpu(), faces[:half].cpu()), root, cal_key)
        return model, {**cached, "cached": True}
    except (OSError, ValueError, KeyError):
        pass
    repeats = max(1, config.timing_repeats)
    fp32 = _transform(gen, config, torch.float32)
    ref_fps, ref = _steady_fps(fp32, mel, faces, repeats)
    measured = {"torch-fp32": {"fps": round(ref_fps, 2), "verified": True, "mean_diff_levels": 0.0,
                               "p99_diff_levels": 0.0, "max_diff_levels": 0.0}}
    best_name, best_model, best_fps = "torch-fp32", fp32, ref_fps
    for name in _candidates(device, config, calibrated)[1:]:
        if "not installed" in name:
            measured[name.split()[0]] = {"error": "openvino/nncf not installed"}
            continue
        try:
            model = _build(name, gen, config, (mel[:half].cpu(), faces[:half].cpu()), root, cal_key)
            fps, out = _steady_fps(model, mel, faces, repeats)
        except Exception as e:  # a runtime that cannot compile here (e.g. OpenVINO's deconvolutions on AVX2 caps)
            measured[name] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"}
            continue
        d = diff_levels(out, ref, fp32.first_row)
        ok = within_tolerance(d, config)
        # faster by a margin (timings on a shared machine jitter) and verified, or it is not taken
        faster = fps > best_fps * (1 + config.min_speedup)
        measured[name] = {"fps": round(fps, 2), "verified": ok, **d, "faster_than_fp32": fps > ref_fps * (1 + config.min_speedup)}
        if ok and faster and quality_gate is not None:  # checked only where it would be taken
            measured[name]["quality_gate"] = verdict = gate_verdict(quality_gate, name, model, fp32)
            ok = verdict["accepted"]
        if ok and faster:
            best_name, best_model, best_fps = name, model, fps
    decision = {"dtype": best_name.split("-")[1], "runtime": best_name.split("-")[0], "chosen": best_name,
                "requested": "auto", "candidates": measured,
                "tolerance_levels": {"mean": config.max_mean_diff, "p99": config.max_p99_diff},
                "speedup_vs_fp32": round(best_fps / ref_fps, 2), "calibration": "avatar frames" if calibrated
                else "synthetic faces", "machine": key_doc["machine"], "weights": key_doc["weights"],
                "quality_gate": {"present": quality_gate is not None, "key": key_doc["quality_gate"],
                                 "ran": any(v.get("quality_gate", {}).get("ran", False) for v in measured.values())},
                "decided": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    decision["reason"] = _reason(decision)
    decision.update({k: v for k, v in measured[best_name].items() if k.endswith("_diff_levels")})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(decision, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache: decide again next time
    return best_model, {**decision, "cached": False}


def _reason(decision: dict) -> str:
    cands = decision["candidates"]
    if decision["chosen"] == "torch-fp32":
        others = [f"{k} {_why_not(v)}" if "fps" in v else f"{k} unavailable"
                  for k, v in cands.items() if k != "torch-fp32"]
        return "fp32 measured fastest within tolerance" + (f" ({', '.join(others)})" if others else "")
    gate = cands[decision["chosen"]].get("quality_gate")
    return (f"{decision['chosen']} measured {decision['speedup_vs_fp32']}x fp32 and within tolerance"
            + (f"; lip-sync check {gate['verdict']}" if gate else ""))


def _why_not(candidate: dict) -> str:
    if not candidate.get("verified", True):
        return "unverified"
    gate = candidate.get("quality_gate")
    if gate and not gate["accepted"]:
        return gate["verdict"]
    return "not faster"


def precision_status(model) -> dict:
    """For Status -> Details: the chosen precision and runtime, each candidate's measured fps and differences."""
    p = dict(getattr(model, "precision", {}) or {})
    keep = ("chosen", "dtype", "runtime", "requested", "reason", "candidates", "tolerance_levels",
            "speedup_vs_fp32", "calibration", "cached", "mean_diff_levels", "p99_diff_levels", "max_diff_levels",
            "quality_gate")
    return {k: p[k] for k in keep if k in p}


def describe_precision(precision: dict) -> str:
    """One line for Status -> Details: 'int8 via openvino (measured 3.1x fp32; mean 0.21/255, p99 0.9/255 from
    fp32)', 'fp32 (fp32 measured fastest within tolerance ...)', or just the dtype when it was requested."""
    if precision.get("dtype") != "fp32" and "mean_diff_levels" in precision:
        return (f"{precision['dtype']} via {precision.get('runtime', 'torch')} (measured "
                f"{precision.get('speedup_vs_fp32', '?')}x fp32; mean {precision['mean_diff_levels']:.2f}/255, "
                f"p99 {precision['p99_diff_levels']:.1f}/255 from fp32)")
    reason = precision.get("reason", "")
    return f"{precision.get('dtype', 'fp32')}" + (f" ({reason})" if reason and reason != "requested" else "")
