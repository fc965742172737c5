"""Wav2Lip-family generators from one definition (layer tables in ``wav2lip384.config``: the original 96, the
paper's 384, the community 256 and 384+SAM).

Inputs, per frame:
  audio  (N, 1, 80, 16)   one mel window (16 mel frames = 0.2 s) centred on the frame
  faces  (N, 6, S, S)     in [0, 1]: target frame with its lower half zeroed, concatenated with a reference
                          frame of the same person (S = the model's ``img_size``)
Output: (N, 3, S, S) in [0, 1] (sigmoid).

Training layout (as the original): audio (B, T, 1, 80, 16), faces (B, 6, T, S, S) -> (B, 3, T, S, S).

For speed the forward pass is split in three reusable parts::

    emb   = model.encode_audio(mel)        # (N, C_a, 1, 1)
    feats = model.encode_faces(faces)      # list of skip features, one per encoder block
    out   = model.decode(emb, feats)       # (N, 3, S, S)

A photo avatar feeds the same face for every frame, so ``encode_faces`` can run once on a batch of 1 and
``decode`` broadcasts those features over any number of audio embeddings.

Inference options of the same model (``wav2lip384.optimize.optimize_generator`` sets them on a copy):
  - row-cropped decoding (:meth:`Wav2LipGenerator.set_first_row`): the last, high-resolution decoder blocks compute
    only the output rows ``>= first_row`` (plus the margin that keeps them exact, see :func:`plan_rows`); rows
    above are 0 in ``decode`` and the reference face in ``forward``.
  - precision / layout: inputs are cast to the parameters' dtype (``compute_dtype``) and, with ``channels_last``,
    to NHWC; ``decode`` returns float32 whenever rows are cropped or the model is not fp32.
  - ``precision``: a dict saying which dtype runs and why (filled by ``optimize_generator``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wav2lip384.config import ConvSpec, GeneratorConfig, conv
from wav2lip384.models.blocks import SkipAttention, build_layer, build_sequential


# ----------------------------------------------------------------------------------- row-cropped decoding
@dataclass(frozen=True)
class RowPlan:
    """Where the decoder is cut so that output rows ``>= first_row`` stay exact.

    ``cut_block``: index of the decoder block whose input is cut (``len(decoder_blocks)`` = the output block's);
    ``cut_offset``: rows dropped at the top of that input; ``skip_rows[i]``: first row (at that level) of decoder
    block ``i``'s output, i.e. of the skip concatenated after it (0 before the cut); ``kept_fraction``: MACs of the
    cut layers kept; ``sam_margin``: extra skip rows the attention convolution needs above ``skip_rows``.
    """

    first_row: int
    cut_block: int
    cut_offset: int
    skip_rows: tuple[int, ...]
    kept_fraction: float
    sam_margin: int = 0

    def skip_start(self, i: int) -> int:
        """First row of decoder level ``i``'s skip that must be kept (SAM margin included)."""
        return max(0, self.skip_rows[i] - self.sam_margin) if self.skip_rows[i] > 0 else 0


def _output_specs(config: GeneratorConfig) -> tuple[ConvSpec, ...]:
    last = config.decoder_blocks[-1][-1].cout + config.encoder_blocks[0][-1].cout  # channels after the last cat
    return (conv(last, config.output_hidden, 3, 1, 1, residual=False),
            ConvSpec(config.output_hidden, 3, 1, 1, 0, kind="nonorm"))


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_rows(spec: ConvSpec, h: int) -> int:
    k, s, p = _pair(spec.kernel)[0], _pair(spec.stride)[0], _pair(spec.padding)[0]
    if spec.kind == "deconv":
        return (h - 1) * s - 2 * p + k + spec.output_padding
    return (h + 2 * p - k) // s + 1


def _spoil(spec: ConvSpec, spoiled: int) -> tuple[int, int]:
    """(row scale, spoiled rows after the layer) for a map whose top ``spoiled`` rows are wrong because it was
    cut out of a taller map (zero padding, or nothing, where the real rows above were). Outputs stay bottom-
    aligned with the full map's.

    Transposed conv: output row o gets input rows i = (o + p - t) / s for taps t in [0, k); it is clean when the
    smallest, ceil((o + p - k + 1) / s), is >= spoiled, i.e. o >= s*spoiled - s + k - p (k3/s2/p1: 2*spoiled;
    the 4x4/s1/p0 and 3x3/s1/p0 bottleneck deconvs: spoiled + 3 / + 2).
    Conv (stride 1): output row o reads rows o - p .. o - p + k - 1: clean when o >= spoiled + p (a 3x3 valid
    conv adds nothing, a 3x3/p1 one row)."""
    k, s, p = _pair(spec.kernel)[0], _pair(spec.stride)[0], _pair(spec.padding)[0]
    if spec.kind == "deconv":
        return s, max(0, s * spoiled - s + k - p)
    if s != 1:
        raise ValueError("row-cropped decoding only crosses stride-1 convolutions and transposed convolutions")
    return 1, spoiled + p


def _macs(spec: ConvSpec, rows_out: int, width_out: int) -> float:
    kh, kw = _pair(spec.kernel)
    return float(rows_out) * width_out * spec.cin * spec.cout * kh * kw


def plan_rows(config: GeneratorConfig, first_row: int) -> RowPlan:
    """The cheapest decoder cut that keeps output rows ``>= first_row`` exact (from the layer tables only).

    Candidate cuts are the inputs of decoder blocks at >= 12x12 (low-resolution blocks are cheap and wide) and
    of the output block; the one with the fewest multiply-accumulates wins. SAM does not change the spoil
    count of the decoder path (``x * a + x`` is element-wise): its 7x7 attention convolution reads the skip, so
    the skip is cut ``sam_margin`` rows higher and the attention rows in that margin are dropped.
    """
    if first_row <= 0:
        raise ValueError("first_row must be > 0 (0 means: no row cropping)")
    blocks = list(config.decoder_blocks) + [_output_specs(config)]
    # side at the input of each decoder block: block 0 sees the 1x1 audio embedding, block i > 0 the grid of the
    # skip concatenated after block i - 1 (with SAM a 1x1 decoder output is broadcast over that grid)
    enc_sides = _encoder_sides(config)
    sizes_in = [1] + [enc_sides[-i] for i in range(1, len(config.decoder_blocks) + 1)]
    if sizes_in[-1] != config.img_size:
        raise ValueError(f"decoder ends at {sizes_in[-1]}, expected {config.img_size}")
    best = None
    for k in range(len(blocks)):
        if sizes_in[k] < 12:
            continue
        try:
            scale, spoiled = 1, 0
            for blk in blocks[k:]:
                for spec in blk:
                    s, spoiled = _spoil(spec, spoiled)
                    scale *= s
        except ValueError:
            continue
        offset = max(0, (first_row - spoiled) // scale)
        if offset == 0:
            continue
        full = kept = 0.0
        side, rows, off = sizes_in[k], sizes_in[k] - offset, offset
        skip_rows = [0] * len(config.decoder_blocks)
        for i, blk in enumerate(blocks[k:], start=k):
            for spec in blk:
                side_out = _out_rows(spec, side)
                if spec.kind == "deconv":
                    s = _pair(spec.stride)[0]
                    rows, off = side_out - s * off, s * off  # bottom-aligned
                else:
                    rows = side_out - off
                full += _macs(spec, side_out, side_out)
                kept += _macs(spec, rows, side_out)
                side = side_out
            if i < len(config.decoder_blocks):
                skip_rows[i] = off
        before = sum(_block_macs(b, sizes_in[i]) for i, b in enumerate(blocks[:k]))
        cost = before + kept
        if best is None or cost < best[0]:
            best = (cost, k, offset, tuple(skip_rows), kept / full)
    if best is None:
        raise ValueError(f"no decoder cut keeps rows >= {first_row} exact")
    _, k, offset, skip_rows, fraction = best
    return RowPlan(first_row=int(first_row), cut_block=k, cut_offset=offset, skip_rows=skip_rows,
                   kept_fraction=fraction, sam_margin=config.sam_kernel // 2)


def _encoder_sides(config: GeneratorConfig) -> list[int]:
    """Spatial side of each encoder block's output (= of the skip it provides)."""
    sides, h = [], config.img_size
    for blk in config.encoder_blocks:
        for spec in blk:
            h = _out_rows(spec, h)
        sides.append(h)
    return sides


def _block_macs(block, side: int) -> float:
    macs = 0.0
    for spec in block:
        side = _out_rows(spec, side)
        macs += _macs(spec, side, side)
    return macs


# ------------------------------------------------------------------------------------------------- model
class Wav2LipGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        # registration order = state-dict order of the public checkpoints (SAM first, refine after the audio)
        if config.sam_kernel:
            self.sam = SkipAttention(config.sam_kernel)
        self.face_encoder_blocks = nn.ModuleList(build_sequential(b) for b in config.encoder_blocks)
        self.audio_encoder = build_sequential(config.audio_encoder)
        if config.unused_audio_refine:
            self.audio_refine = build_sequential(config.unused_audio_refine)  # in the checkpoint, not in forward
        self.face_decoder_blocks = nn.ModuleList(build_sequential(b) for b in config.decoder_blocks)
        hidden = config.output_hidden
        last = _output_specs(config)[0].cin
        self.output_block = nn.Sequential(
            build_layer(conv(last, hidden, 3, 1, 1, residual=False)),  # (N, hidden, S, S)
            nn.Conv2d(hidden, 3, kernel_size=1, stride=1, padding=0),  # (N, 3, S, S)
            nn.Sigmoid(),
        )
        # inference options (see the module docstring); plain by default
        self.row_plan: RowPlan | None = None
        self.channels_last = False
        self.precision: dict = {"dtype": "fp32", "requested": "fp32", "reason": "requested"}
        # set by optimize_generator(compile=True): compiled entry points and the batch they are compiled for
        self.static_batch: int | None = None
        self._compiled_forward = None
        self._compiled_decode = None

    @property
    def img_size(self) -> int:
        return self.config.img_size

    @property
    def first_row(self) -> int:
        """First output row ``decode`` computes (0: all rows)."""
        return self.row_plan.first_row if self.row_plan else 0

    @property
    def compute_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def set_first_row(self, first_row: int) -> Wav2LipGenerator:
        """Compute only output rows ``>= first_row`` from now on (0: every row). Returns ``self``."""
        self.row_plan = plan_rows(self.config, first_row) if first_row > 0 else None
        return self

    # --- parts ---------------------------------------------------------------------------------------
    def _in(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.compute_dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(N, 1, 80, 16) -> (N, C_a, 1, 1) (512, or 1024 for the 384+SAM model)."""
        return self.audio_encoder(self._in(mel))

    def encode_faces(self, faces: torch.Tensor) -> list[torch.Tensor]:
        """(N, 6, S, S) -> skip features, one per encoder block, from full resolution down to the bottleneck."""
        feats = []
        x = self._in(faces)
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        return feats

    def decode(self, audio_embedding: torch.Tensor, feats: list[torch.Tensor],
               upper: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C_a, 1, 1) + skip features -> (N, 3, S, S).

        Features with batch 1 are broadcast to the audio batch N (photo avatar: encode the face once). With row
        cropping, rows above ``first_row``'s cut come from ``upper`` (N|1, 3, S, S) or are 0; ``feats`` may be
        full or cut by :meth:`trim_feats`.
        """
        if self._compiled_decode is not None and upper is None:
            n = audio_embedding.shape[0]  # one compiled graph: pad the last, shorter batch
            return self._compiled_decode(self._pad(audio_embedding, n), [self._pad(f, n) for f in feats])[:n]
        return self._decode(audio_embedding, feats, upper)

    def _decode(self, audio_embedding: torch.Tensor, feats: list[torch.Tensor],
                upper: torch.Tensor | None = None) -> torch.Tensor:
        plan = self.row_plan
        cut = plan.cut_block if plan else len(self.face_decoder_blocks) + 1
        n = audio_embedding.shape[0]
        x = audio_embedding
        for i, (block, skip) in enumerate(zip(self.face_decoder_blocks, reversed(feats), strict=True)):
            if i == cut:
                x = x[:, :, plan.cut_offset:]  # (N, C, h - off, w)
            x = block(x)  # after the cut, x holds the bottom rows [off_i, H_i) of its level
            # after the cut, full skips lose their top rows; skips from trim_feats have x's rows + the SAM margin
            top = skip.shape[2] - x.shape[2] if i >= cut else 0
            if self.config.sam_kernel:  # x * a + x, a = attention of the skip (N|1, 1, rows, W), face-only
                a = self.sam.sa(skip[:, :, max(0, top - plan.sam_margin):] if top else skip)
                a = a[:, :, a.shape[2] - skip.shape[2] + top:]
                # x + x * a in one pass (the reference's x * a + x); a 1x1 x is broadcast over the grid
                x = torch.addcmul(x, x, a) if x.shape[2] == a.shape[2] else x * a + x
            skip = skip[:, :, top:]
            if skip.shape[0] != n:
                if skip.shape[0] != 1:
                    raise ValueError(f"face features have batch {skip.shape[0]}, audio has {n}")
                skip = skip.expand(n, -1, -1, -1)
            if self.channels_last:  # a cat with an expanded (photo) skip would come out NCHW: copy later
                cat = torch.empty((n, x.shape[1] + skip.shape[1], *x.shape[2:]), dtype=x.dtype, device=x.device,
                                  memory_format=torch.channels_last)
                x = torch.cat((x, skip), dim=1, out=cat)  # (N, C_dec + C_skip, h, w)
            else:
                x = torch.cat((x, skip), dim=1)  # (N, C_dec + C_skip, h, w)
        if cut == len(self.face_decoder_blocks):  # cut at the output block's input
            x = x[:, :, plan.cut_offset:]
        y = self.output_block(x)  # (N, 3, S - off, S)
        if plan is None:
            return y if y.dtype == torch.float32 else y.float()
        size = self.img_size
        off = size - y.shape[2]
        out = torch.empty((n, 3, size, size), dtype=torch.float32, device=y.device)
        out[:, :, :off] = 0.0 if upper is None else upper[:, :, :off].to(torch.float32)
        out[:, :, off:] = y
        return out

    def trim_feats(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Skip features cut to the rows ``decode`` reads (copies, so the full maps can be freed): what a cache of
        a video avatar's encoder features needs to keep. Without row cropping they are returned unchanged."""
        plan = self.row_plan
        if plan is None:
            return feats
        skips = list(reversed(feats))  # decoder order: skips[i] is concatenated after decoder block i
        out = [s[:, :, plan.skip_start(i):].clone() if i >= plan.cut_block and plan.skip_start(i) > 0 else s
               for i, s in enumerate(skips)]
        return list(reversed(out))

    # --- full pass ------------------------------------------------------------------------------------
    def _pad(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """(n, ...) -> (static_batch, ...) by repeating the last item (batch-1 tensors broadcast: unchanged)."""
        if t.shape[0] != n or n >= self.static_batch:
            return t
        return torch.cat([t, t[-1:].expand(self.static_batch - n, *t.shape[1:])])

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """(N, 1, 80, 16), (N, 6, S, S) -> (N, 3, S, S); with row cropping the rows above the cut are copied from
        the reference face (channels 3..5). Training layout: (B, T, 1, 80, 16), (B, 6, T, S, S) -> (B, 3, T, S, S)."""
        if faces.dim() == 5:
            b, t = faces.shape[0], faces.shape[2]
            audio = audio.reshape(b * t, *audio.shape[2:])  # (B*T, 1, 80, 16), batch-major
            faces = faces.permute(0, 2, 1, 3, 4).reshape(b * t, faces.shape[1], *faces.shape[3:])  # (B*T,6,S,S)
            out = self.forward(audio, faces)  # (B*T, 3, S, S)
            return out.reshape(b, t, *out.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, 3, T, S, S)
        if self._compiled_forward is not None:
            n = audio.shape[0]
            return self._compiled_forward(self._pad(audio, n), self._pad(faces, n))[:n]
        return self._forward(audio, faces)

    def _forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        upper = faces[:, 3:6] if self.row_plan else None
        return self._decode(self.encode_audio(audio), self.encode_faces(faces), upper=upper)


__all__ = ["Wav2LipGenerator", "RowPlan", "plan_rows"]
