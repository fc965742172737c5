"""Wav2Lip-family generators from one definition (layer tables in ``wav2lip384.models.config``: the original 96, the
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

Inference options of the same model (``wav2lip384.render.optimize.optimize_generator`` sets them on a copy):
  - row-cropped decoding (:meth:`Wav2LipGenerator.set_first_row`): the last, high-resolution decoder blocks compute
    only the output rows ``>= first_row`` (plus the margin that keeps them exact, see :func:`plan_rows`); rows
    above are 0 in ``decode`` and the reference face in ``forward``.
  - precision / layout: inputs are cast to the parameters' dtype (``compute_dtype``) and, with ``channels_last``,
    to NHWC; ``decode`` returns float32 whenever rows are cropped or the model is not fp32.
  - ``precision``: a dict saying which dtype runs and why (filled by ``optimize_generator``).
"""

from __future__ import annotations

import torch
from torch import nn

from wav2lip384.models.config import GeneratorConfig, conv
from wav2lip384.models.blocks import SkipAttention, build_layer, build_sequential
from wav2lip384.models.rows import RowPlan, _output_specs, plan_rows


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
