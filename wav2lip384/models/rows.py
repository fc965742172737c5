"""Row planning for lower-half decoding: where the generator's decoder is cut so that the output rows
``>= first_row`` (the pasted lower face) stay exact, and what that saves (:func:`plan_rows`, :class:`RowPlan`).
Used by :meth:`wav2lip384.models.generator.Wav2LipGenerator.set_first_row` and ``wav2lip384.render.optimize``."""

from __future__ import annotations

from dataclasses import dataclass

from wav2lip384.models.config import ConvSpec, GeneratorConfig, conv


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


__all__ = ["RowPlan", "plan_rows"]
