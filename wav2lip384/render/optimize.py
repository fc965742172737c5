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
  - ``dtype="auto"``  (the default) bfloat16 weights/activations when the CPU computes bf16 natively
                     (avx512_bf16 or AMX: oneDNN then runs convolutions ~2-4x faster than fp32) AND, on the
                     weights actually loaded, a seeded calibration batch through the bf16 model stays within
                     ``bf16_max_diff`` (default 1.0) 8-bit grey levels of the fp32 model on every row the
                     paste-back shows, i.e. pasted frames differ by at most one rounding step. Otherwise
                     fp32. The choice and the measured difference are kept in ``model.precision``. bf16 keeps
                     ~3 significant digits; oneDNN accumulates in fp32. On random weights of the real 96/384
                     nets the difference is ~0.5 levels (the H.264 encoding at crf 18 changes pixels by more).
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
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from wav2lip384.models.generator import Wav2LipGenerator
from wav2lip384.models.rows import plan_rows

# Tolerance we promise for the exact transforms, on outputs in [0, 1] (fp32). BN folding changes the order
# of float operations only; 1e-4 is ~0.03 of one 8-bit grey level.
EXACT_ATOL = 1e-4
# "auto" precision: bf16 is kept only if it stays within this many 8-bit grey levels of fp32 (max over the
# shown rows of a calibration batch). 1.0 = the rounded frames differ by at most one step.
BF16_MAX_DIFF_LEVELS = 1.0
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
    dtype: str = "auto"  # "auto" (bf16 when native and verified, else fp32) | "fp32" | "bf16"
    bf16_max_diff: float = BF16_MAX_DIFF_LEVELS  # "auto": tolerance in 8-bit levels on the shown rows
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


def optimize_generator(gen: Wav2LipGenerator, config: OptimizeConfig = DEFAULT, *,
                       batch_size: int = 8) -> Wav2LipGenerator:
    """Return an optimised copy of ``gen`` (eval mode) per ``config``; ``gen`` itself is untouched.

    ``batch_size``: with ``compile``, the batch the graphs are compiled for (shorter batches are padded, so
    one compilation serves a whole request; longer ones would compile again). The returned module's
    ``precision`` dict says which dtype runs and why (see ``dtype="auto"`` in the module docstring).
    """
    apply_threads(config.num_threads, config.interop_threads)
    if config.dtype not in ("auto", "fp32", "bf16"):
        raise ValueError(f"dtype must be 'auto', 'fp32' or 'bf16', got {config.dtype!r}")
    if config.dtype == "auto":
        fast, precision = _auto_precision(gen, config)
    else:
        fast = _transform(gen, config, torch.bfloat16 if config.dtype == "bf16" else torch.float32)
        precision = {"dtype": config.dtype, "requested": config.dtype, "reason": "requested"}
    fast.precision = precision
    if config.compile:
        # one graph per entry point (forward = video avatars, decode = photo avatars), static shapes; compiling
        # the blocks one by one instead hits dynamo's recompile limit (they share Sequential.forward's code)
        fast.static_batch = int(batch_size)
        fast._compiled_forward = torch.compile(fast._forward, dynamic=False)
        fast._compiled_decode = torch.compile(fast._decode, dynamic=False)
    return fast


def _transform(gen: Wav2LipGenerator, config: OptimizeConfig, dtype: torch.dtype) -> Wav2LipGenerator:
    return transform_generator(gen, fold_bn=config.fold_bn, channels_last=config.channels_last,
                               lower_half=config.lower_half, dtype=dtype)


def native_bf16(device: torch.device) -> bool:
    """True when bf16 convolutions run natively here (CPU with avx512_bf16 or AMX and oneDNN).

    torch has no public query for these CPU features; ``torch.cpu._is_*_supported`` are the helpers torch's own
    tests use. Without them oneDNN emulates bf16, which is slower than fp32, so "auto" must stay fp32.
    """
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these helpers: do not guess
        return False


def calibration_batch(size: int, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded, image-like model input: (n, 1, 80, 16) mel in the normalised range [-4, 4] and (n, 6, S, S)
    faces (smooth random images, lower half masked in the first three channels, as the pipeline feeds them)."""
    g = torch.Generator().manual_seed(seed)
    mel = (torch.randn(n, 1, 80, 16, generator=g) * 2).clamp_(-4, 4)
    low = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g)  # (n, 3, S/8, S/8)
    ref = nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)  # (n, 3, S, S)
    masked = ref.clone()
    masked[:, :, size // 2:] = 0
    return mel, torch.cat([masked, ref], dim=1)


def _auto_precision(gen: Wav2LipGenerator, config: OptimizeConfig) -> tuple[Wav2LipGenerator, dict]:
    """bf16 when native and within ``config.bf16_max_diff`` levels of fp32 on the loaded weights, else fp32."""
    device = next(gen.parameters()).device
    fp32 = _transform(gen, config, torch.float32)
    if not native_bf16(device):
        why = "no native bf16 on this device" if device.type == "cpu" else f"bf16 check is CPU-only ({device.type})"
        return fp32, {"dtype": "fp32", "requested": "auto", "reason": why}
    bf16 = _transform(gen, config, torch.bfloat16)
    mel, faces = calibration_batch(gen.img_size)
    mel, faces = mel.to(device), faces.to(device)
    with torch.inference_mode():
        diff = (bf16(mel, faces).float() - fp32(mel, faces).float()).abs() * 255  # (n, 3, S, S), 8-bit levels
    shown = diff[:, :, fp32.first_row:]  # rows the paste-back can show (all of them without lower-half decoding)
    worst = float(shown.max())
    info = {"max_diff_levels": round(worst, 3), "mean_diff_levels": round(float(shown.mean()), 4),
            "tolerance_levels": config.bf16_max_diff}
    if worst <= config.bf16_max_diff:
        return bf16, {"dtype": "bf16", "requested": "auto", "reason": "native bf16, verified on these weights",
                      **info}
    return fp32, {"dtype": "fp32", "requested": "auto",
                  "reason": f"bf16 differed by {worst:.2f} levels > {config.bf16_max_diff} on these weights", **info}


def describe_precision(precision: dict) -> str:
    """One line for users: 'bf16 (within 0.52/255 of fp32 on these weights)', 'fp32 (no native bf16 on this
    device)', or just the dtype when it was requested explicitly."""
    if precision.get("dtype") == "bf16" and "max_diff_levels" in precision:
        return f"bf16 (within {precision['max_diff_levels']:.2f}/255 of fp32 on these weights)"
    reason = precision.get("reason", "")
    return f"{precision.get('dtype', 'fp32')}" + (f" ({reason})" if reason and reason != "requested" else "")
