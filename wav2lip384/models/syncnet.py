"""SyncNet lip-sync expert (colour version of Wav2Lip; 96 or the paper's 384 face encoder).

  audio (B, 1, 80, 16)             -> audio_encoder -> (B, 512, 1, 1) -> unit vector (B, 512)
  faces (B, 3*T, S/2, S), T = 5    -> face_encoder  -> (B, 512, 1, 1) -> unit vector (B, 512)

The sync probability is the cosine similarity of the two (§2.1.1, Eq. 1); :meth:`sync_probability`
returns it clamped to [0, 1] as the original training code uses it with binary cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wav2lip384.models.config import SyncNetConfig
from wav2lip384.models.blocks import build_sequential


class SyncNet(nn.Module):
    def __init__(self, config: SyncNetConfig):
        super().__init__()
        self.config = config
        self.face_encoder = build_sequential(config.face_encoder)
        self.audio_encoder = build_sequential(config.audio_encoder)

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1, 80, 16) -> (B, 512), L2-normalised."""
        return F.normalize(self.audio_encoder(mel).flatten(1), p=2, dim=1)

    def embed_faces(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, 15, S/2, S) -> (B, 512), L2-normalised."""
        return F.normalize(self.face_encoder(faces).flatten(1), p=2, dim=1)

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (audio_embedding, face_embedding), each (B, 512) with unit norm (original order)."""
        return self.embed_audio(audio), self.embed_faces(faces)

    @staticmethod
    def sync_probability(audio_emb: torch.Tensor, face_emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of unit vectors, clamped to [0, 1]: (B, 512) x2 -> (B,)."""
        return (audio_emb * face_emb).sum(dim=1).clamp(0.0, 1.0)
