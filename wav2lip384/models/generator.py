"""Wav2Lip generator (96 and 384 from one definition; the layer tables are in ``wav2lip384.config``).

Inputs, per frame:
  audio  (N, 1, 80, 16)   one mel window (16 mel frames = 0.2 s) centred on the frame
  faces  (N, 6, S, S)     in [0, 1]: target frame with its lower half zeroed, concatenated with a reference
                          frame of the same person (S = 96 or 384)
Output: (N, 3, S, S) in [0, 1] (sigmoid).

Training layout (as the original): audio (B, T, 1, 80, 16), faces (B, 6, T, S, S) -> (B, 3, T, S, S).

For speed the forward pass is split in three reusable parts::

    emb   = model.encode_audio(mel)        # (N, 512, 1, 1)
    feats = model.encode_faces(faces)      # list of skip features, one per encoder block
    out   = model.decode(emb, feats)       # (N, 3, S, S)

A photo avatar feeds the same face for every frame, so ``encode_faces`` can run once on a batch of 1 and
``decode`` broadcasts those features over any number of audio embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from wav2lip384.config import GeneratorConfig, conv
from wav2lip384.models.blocks import build_layer, build_sequential


class Wav2LipGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.face_encoder_blocks = nn.ModuleList(build_sequential(b) for b in config.encoder_blocks)
        self.audio_encoder = build_sequential(config.audio_encoder)
        self.face_decoder_blocks = nn.ModuleList(build_sequential(b) for b in config.decoder_blocks)
        last = config.decoder_blocks[-1][-1].cout + config.encoder_blocks[0][-1].cout  # channels after last cat
        hidden = config.output_hidden
        self.output_block = nn.Sequential(
            build_layer(conv(last, hidden, 3, 1, 1, residual=False)),  # (N, hidden, S, S)
            nn.Conv2d(hidden, 3, kernel_size=1, stride=1, padding=0),  # (N, 3, S, S)
            nn.Sigmoid(),
        )

    @property
    def img_size(self) -> int:
        return self.config.img_size

    # --- parts ---------------------------------------------------------------------------------------
    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(N, 1, 80, 16) -> (N, 512, 1, 1)."""
        return self.audio_encoder(mel)

    def encode_faces(self, faces: torch.Tensor) -> list[torch.Tensor]:
        """(N, 6, S, S) -> skip features, one per encoder block, from full resolution down to (N, 512, 1, 1)."""
        feats = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        return feats

    def decode(self, audio_embedding: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """(N, 512, 1, 1) + skip features -> (N, 3, S, S).

        Features with batch 1 are broadcast to the audio batch N (photo avatar: encode the face once).
        """
        n = audio_embedding.shape[0]
        x = audio_embedding
        for block, skip in zip(self.face_decoder_blocks, reversed(feats), strict=True):
            x = block(x)  # (N, C_dec, h, w)
            if skip.shape[0] != n:
                if skip.shape[0] != 1:
                    raise ValueError(f"face features have batch {skip.shape[0]}, audio has {n}")
                skip = skip.expand(n, -1, -1, -1)
            x = torch.cat((x, skip), dim=1)  # (N, C_dec + C_skip, h, w)
        return self.output_block(x)

    # --- full pass ------------------------------------------------------------------------------------
    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        if faces.dim() == 5:  # training layout: audio (B,T,1,80,16), faces (B,6,T,S,S)
            b, t = faces.shape[0], faces.shape[2]
            audio = audio.reshape(b * t, *audio.shape[2:])  # (B*T, 1, 80, 16), batch-major
            faces = faces.permute(0, 2, 1, 3, 4).reshape(b * t, faces.shape[1], *faces.shape[3:])  # (B*T,6,S,S)
            out = self.decode(self.encode_audio(audio), self.encode_faces(faces))  # (B*T, 3, S, S)
            return out.reshape(b, t, *out.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, 3, T, S, S)
        return self.decode(self.encode_audio(audio), self.encode_faces(faces))
