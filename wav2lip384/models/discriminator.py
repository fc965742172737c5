"""Visual-quality discriminator of Wav2Lip (``Wav2Lip_disc_qual``) at 96 or 384.

  faces (N, 3, S, S) or training layout (B, 3, T, S, S), in [0, 1]
    -> lower half (N, 3, S/2, S) -> blocks -> (N, 512, 1, 1) -> 1x1 conv -> sigmoid -> (N, 1) P(real)

The GAN losses (binary cross-entropy on these probabilities) live with the training code.
"""

from __future__ import annotations

import torch
from torch import nn

from wav2lip384.models.config import DiscriminatorConfig
from wav2lip384.models.blocks import build_sequential


class QualityDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        self.face_encoder_blocks = nn.ModuleList(build_sequential(b) for b in config.blocks)
        width = config.blocks[-1][-1].cout
        self.binary_pred = nn.Sequential(nn.Conv2d(width, 1, kernel_size=1, stride=1, padding=0), nn.Sigmoid())

    @staticmethod
    def to_2d(faces: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, S, S) -> (B*T, 3, S, S); 4-D input is returned unchanged."""
        if faces.dim() == 5:
            b, c, t, h, w = faces.shape
            return faces.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        return faces

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = self.to_2d(faces)
        x = x[:, :, x.shape[2] // 2:]  # lower half: (N, 3, S/2, S)
        for block in self.face_encoder_blocks:
            x = block(x)
        return self.binary_pred(x).flatten(1)  # (N, 1)
