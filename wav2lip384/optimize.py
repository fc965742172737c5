"""Inference-time transforms of a loaded Wav2Lip generator (96 or 384), each switchable.

Exact within a stated tolerance (on by default, see :class:`OptimizeConfig`):
  - ``fold_bn``      BatchNorm (eval statistics) folded into the preceding Conv2d / ConvTranspose2d:
                     one pass over each feature map instead of two. Float re-association only:
                     |diff| <= ~1e-5 on the [0, 1] output (tests: ``EXACT_ATOL``).
  - ``lower_half``   the last, high-resolution decoder blocks compute only the rows that the feathered
                     paste-back uses (the mask of ``faces.lower_face_mask`` is 0 above 45 % of the box
                     height), with a margin of rows so that every kept row is exact: each 3x3 convolution
                     (padding 1) spoils one row at the top of a cropped map, a stride-2 transposed
                     convolution (k3, p1, op1) doubles the spoiled rows. The rows above the cut are filled
                     with 0 (or with a given image) and are never shown by the feathered paste.
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

Everything here takes a generator and returns a new module with the same API
(``img_size``, ``config``, ``encode_audio``, ``encode_faces``, ``decode``, ``forward``); the input model is
not modified.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from wav2lip384.models.generator import Wav2LipGenerator

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
def _layers(block: nn.Module) -> list[nn.Module]:
    """Convolution modules of one decoder block / the output block, in order."""
    return [m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def _row_effect(layer: nn.Module, spoiled: int) -> tuple[int, int]:
    """(row scale, spoiled rows after ``layer``) for a map whose top ``spoiled`` rows are wrong because it
    was cut out of a taller map (zero padding where the real rows above were)."""
    kh, sh, ph = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    if isinstance(layer, nn.ConvTranspose2d):
        # output row o gets input rows i = (o + p - kh) / s for kh in [0, k); it is clean when the smallest,
        # ceil((o + p - k + 1) / s), is >= spoiled, i.e. o >= s*spoiled - (s - 1) + (k - 1 - p).
        # The decoder's k3/s2/p1 gives 2*spoiled (0 stays 0: the cut itself spoils nothing).
        return sh, max(0, sh * spoiled - (sh - 1) + (kh - 1 - ph))
    if sh != 1:
        raise ValueError("lower-half decoding only crosses stride-1 convolutions and transposed convolutions")
    return 1, spoiled + ph


def plan_lower_half(config, first_row: int) -> tuple[int, int, int]:
    """Choose where to cut for output rows >= ``first_row`` to be exact.

    Returns (decoder block index k, row offset at the input of block k, estimated MAC fraction kept in the
    cut layers). Candidate cuts are the inputs of the high-resolution decoder blocks; the one with the
    fewest multiply-accumulates (rows x width x cin x cout x k^2) wins.
    """
    gen = Wav2LipGenerator(config)  # cheap at 96/384 (random init), only used to read layer shapes
    return _plan(gen, first_row)


def _plan(gen: Wav2LipGenerator, first_row: int):
    size = gen.img_size
    blocks = list(gen.face_decoder_blocks) + [gen.output_block]
    # spatial size at the input of each decoder block (block 0 sees 1x1)
    sizes_in, h = [], 1
    for blk in gen.face_decoder_blocks:
        sizes_in.append(h)
        for layer in _layers(blk):
            if isinstance(layer, nn.ConvTranspose2d):
                h = (h - 1) * layer.stride[0] - 2 * layer.padding[0] + layer.kernel_size[0] + layer.output_padding[0]
            else:
                h = (h + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
    sizes_in.append(h)  # output block input
    if h != size:
        raise ValueError(f"decoder ends at {h}, expected {size}")
    best = None
    for k in range(len(blocks)):
        if sizes_in[k] < 12:  # low-resolution blocks are cheap and wide: not worth cutting
            continue
        try:
            scale, spoiled = 1, 0
            for blk in blocks[k:]:
                for layer in _layers(blk):
                    s, spoiled = _row_effect(layer, spoiled)
                    scale *= s
        except ValueError:
            continue
        offset = max(0, (first_row - spoiled) // scale)
        if offset == 0:
            continue
        # MACs kept vs full in the cut layers
        full = kept = 0.0
        hin, rows_in = sizes_in[k], sizes_in[k] - offset
        for blk in blocks[k:]:
            for layer in _layers(blk):
                cin, cout = layer.in_channels, layer.out_channels
                kk = layer.kernel_size[0] * layer.kernel_size[1]
                if isinstance(layer, nn.ConvTranspose2d):
                    hin, rows_in = hin * layer.stride[0], rows_in * layer.stride[0]
                full += hin * hin * cin * cout * kk
                kept += rows_in * hin * cin * cout * kk
        total_before = sum(_block_macs(b, sizes_in[i]) for i, b in enumerate(blocks[:k]))
        cost = total_before + kept
        if best is None or cost < best[3]:
            best = (k, offset, kept / full, cost)
    if best is None:
        raise ValueError(f"no decoder cut keeps rows >= {first_row} exact")
    return best[0], best[1], best[2]


def _block_macs(block: nn.Module, h: int) -> float:
    macs = 0.0
    for layer in _layers(block):
        if isinstance(layer, nn.ConvTranspose2d):
            h = h * layer.stride[0]
        macs += h * h * layer.in_channels * layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1]
    return macs


def paste_first_row(size: int) -> int:
    """First row (at model resolution) that the feathered paste-back can show, minus a resize margin."""
    return max(0, int(math.floor(PASTE_MASK_TOP * size)) - RESIZE_MARGIN_ROWS)


class FastGenerator(nn.Module):
    """A (possibly BN-folded) generator whose decoder may compute only the rows ``>= first_row``.

    Same API as :class:`Wav2LipGenerator`. With ``first_row > 0`` the rows above it in ``decode``'s output
    are 0 (or copied from ``upper`` when given); every row from ``first_row`` down equals the plain
    generator's within float tolerance.
    """

    def __init__(self, gen: Wav2LipGenerator, first_row: int = 0, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False):
        super().__init__()
        self.inner = gen
        self.config = gen.config
        self.first_row = int(first_row)
        self.compute_dtype = dtype
        self.channels_last = channels_last
        # set by optimize_generator(compile=True): compiled entry points and the batch they are compiled for
        self.static_batch: int | None = None
        self._compiled_forward = None
        self._compiled_decode = None
        if self.first_row > 0:
            self.cut_block, self.cut_offset, self.kept_fraction = _plan(gen, self.first_row)
        else:
            self.cut_block, self.cut_offset, self.kept_fraction = len(gen.face_decoder_blocks) + 1, 0, 1.0

    @property
    def img_size(self) -> int:
        return self.inner.img_size

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.compute_dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(N, 1, 80, 16) -> (N, 512, 1, 1)."""
        return self.inner.encode_audio(self._in(mel))

    def encode_faces(self, faces: torch.Tensor) -> list[torch.Tensor]:
        """(N, 6, S, S) -> skip features (full resolution first)."""
        return self.inner.encode_faces(self._in(faces))

    def _pad(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """(n, ...) -> (static_batch, ...) by repeating the last item (batch-1 tensors broadcast: unchanged)."""
        if t.shape[0] != n or n >= self.static_batch:
            return t
        return torch.cat([t, t[-1:].expand(self.static_batch - n, *t.shape[1:])])

    def decode(self, audio_embedding: torch.Tensor, feats: list[torch.Tensor],
               upper: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 512, 1, 1) + skips -> (N, 3, S, S) float32; rows < first_row from ``upper`` (N|1, 3, S, S) or 0."""
        if self._compiled_decode is not None and upper is None:
            n = audio_embedding.shape[0]  # one compiled graph: pad the last, shorter batch
            return self._compiled_decode(self._pad(audio_embedding, n), [self._pad(f, n) for f in feats])[:n]
        return self._decode_eager(audio_embedding, feats, upper)

    def _decode_eager(self, audio_embedding: torch.Tensor, feats: list[torch.Tensor],
                      upper: torch.Tensor | None = None) -> torch.Tensor:
        g = self.inner
        n = audio_embedding.shape[0]
        x = audio_embedding
        blocks = list(g.face_decoder_blocks)
        skips = list(reversed(feats))
        for i, (block, skip) in enumerate(zip(blocks, skips, strict=True)):
            if i == self.cut_block:
                x = x[:, :, self.cut_offset:]  # (N, C, h - off, w)
            x = block(x)  # below the cut: deconvs keep the bottom aligned, x holds rows [off, H) of its level
            if skip.shape[0] != n:
                if skip.shape[0] != 1:
                    raise ValueError(f"face features have batch {skip.shape[0]}, audio has {n}")
                skip = skip.expand(n, -1, -1, -1)
            # full skips lose their top rows here; skips from trim_feats already have exactly x's rows
            x = torch.cat((x, skip[:, :, skip.shape[2] - x.shape[2]:]), dim=1)  # (N, C_dec + C_skip, h - off, w)
        if self.cut_block == len(blocks):  # cut at the output block's input
            x = x[:, :, self.cut_offset:]
        y = g.output_block(x).float()  # (N, 3, S - off, S)
        size = g.img_size
        off = size - y.shape[2]
        if off == 0:
            return y
        out = torch.empty((n, 3, size, size), dtype=torch.float32, device=y.device)
        if upper is not None:
            out[:, :, :off] = upper[:, :, :off].to(torch.float32)
        else:
            out[:, :, :off] = 0.0
        out[:, :, off:] = y
        return out

    def trim_feats(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Skip features cut to the rows ``decode`` uses (copies, so the full maps can be freed): what a cache of
        a video avatar's encoder features needs to keep. Without a cut the features are returned unchanged."""
        if self.first_row == 0 or self.cut_block >= len(feats):
            return feats
        skips = list(reversed(feats))  # decoder order: skips[i] is concatenated after decoder block i
        h0 = skips[self.cut_block - 1].shape[2]  # rows of the map entering the first cut block
        out = [s if i < self.cut_block else s[:, :, self.cut_offset * (s.shape[2] // h0):].clone()
               for i, s in enumerate(skips)]
        return list(reversed(out))

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """(N, 1, 80, 16), (N, 6, S, S) -> (N, 3, S, S); rows above the cut copied from the reference face."""
        if self._compiled_forward is not None:
            n = audio.shape[0]
            return self._compiled_forward(self._pad(audio, n), self._pad(faces, n))[:n]
        return self._forward_eager(audio, faces)

    def _forward_eager(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        return self._decode_eager(self.encode_audio(audio), self.encode_faces(faces), upper=faces[:, 3:6])


def optimize_generator(gen: Wav2LipGenerator, config: OptimizeConfig = DEFAULT, *,
                       batch_size: int = 8) -> nn.Module:
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
        dtype = torch.bfloat16 if config.dtype == "bf16" else torch.float32
        fast = _transform(gen, config, dtype)
        precision = {"dtype": config.dtype, "requested": config.dtype, "reason": "requested"}
    fast.precision = precision
    if config.compile:
        # one graph per entry point (forward = video avatars, decode = photo avatars), static shapes; compiling
        # the blocks one by one instead hits dynamo's recompile limit (they share Sequential.forward's code)
        fast.static_batch = int(batch_size)
        fast._compiled_forward = torch.compile(fast._forward_eager, dynamic=False)
        fast._compiled_decode = torch.compile(fast._decode_eager, dynamic=False)
    return fast


def _transform(gen: Wav2LipGenerator, config: OptimizeConfig, dtype: torch.dtype) -> FastGenerator:
    """The exact transforms of ``config`` (BN folding, channels_last, lower-half decoding) at ``dtype``."""
    if config.fold_bn:
        model = fold_batchnorm(gen)  # a copy
    elif dtype != torch.float32 or config.channels_last or config.compile:
        model = copy.deepcopy(gen).eval()  # the steps below change modules in place
    else:
        model = gen.eval()  # plain: shared, not copied (no extra memory)
    model = model.to(dtype)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    first_row = paste_first_row(model.img_size) if config.lower_half else 0
    fast = FastGenerator(model, first_row, dtype=dtype, channels_last=config.channels_last).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast


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


def _auto_precision(gen: Wav2LipGenerator, config: OptimizeConfig) -> tuple[FastGenerator, dict]:
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
