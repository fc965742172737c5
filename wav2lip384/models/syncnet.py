"""Two SyncNets: the lip-sync expert models are trained with, and the one lip sync is measured with.

:class:`SyncNet`, the lip-sync expert (colour version of Wav2Lip; 96 or the paper's 384 face encoder):

  audio (B, 1, 80, 16)             -> audio_encoder -> (B, 512, 1, 1) -> unit vector (B, 512)
  faces (B, 3*T, S/2, S), T = 5    -> face_encoder  -> (B, 512, 1, 1) -> unit vector (B, 512)

The sync probability is the cosine similarity of the two (§2.1.1, Eq. 1); :meth:`sync_probability`
returns it clamped to [0, 1] as the original training code uses it with binary cross-entropy.

:class:`SyncNetS`, the evaluation network of the LSE-D / LSE-C protocol (joonson/syncnet_python's ``S``, whose
weights are the published ``syncnet_v2.model``): a different network, never trained here.

  MFCC (B, 1, 13, 20)              -> netcnnaud -> (B, 512, 1, 1) -> netfcaud -> (B, 1024)
  faces (B, 3, 5, 224, 224) BGR    -> netcnnlip -> (B, 512, 1, 1, 1) -> netfclip -> (B, 1024)

The layer order defines the state-dict keys (``netcnnaud.0.weight`` ...), which the published file uses;
``../shared/reference/syncnet_v2_state_dict_shapes.json`` lists every tensor and the golden test checks them
key for key, and the forward pass against syncnet_python's own outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wav2lip384.models.blocks import build_sequential
from wav2lip384.models.config import SyncNetConfig


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


def _conv_bn_relu(conv: type[nn.Module], cin: int, cout: int, kernel, stride=1, padding=0) -> list[nn.Module]:
    norm = nn.BatchNorm2d if conv is nn.Conv2d else nn.BatchNorm3d
    return [conv(cin, cout, kernel_size=kernel, stride=stride, padding=padding), norm(cout), nn.ReLU(inplace=True)]


def _mlp(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))


class SyncNetS(nn.Module):
    """syncnet_python's ``S`` network (what ``syncnet_v2.model`` holds), written from its layer table."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        c2, c3 = nn.Conv2d, nn.Conv3d
        self.netcnnaud = nn.Sequential(  # (B, 1, 13, 20)
            *_conv_bn_relu(c2, 1, 64, 3, 1, 1), nn.MaxPool2d(1, 1),  # 13 x 20
            *_conv_bn_relu(c2, 64, 192, 3, 1, 1), nn.MaxPool2d(3, (1, 2)),  # -> 11 x 9
            *_conv_bn_relu(c2, 192, 384, 3, 1, 1), *_conv_bn_relu(c2, 384, 256, 3, 1, 1),
            *_conv_bn_relu(c2, 256, 256, 3, 1, 1), nn.MaxPool2d(3, 2),  # -> 5 x 4
            *_conv_bn_relu(c2, 256, 512, (5, 4), 1, 0))  # -> 1 x 1
        self.netfcaud = _mlp(embed_dim)
        self.netfclip = _mlp(embed_dim)
        self.netcnnlip = nn.Sequential(  # (B, 3, 5, 224, 224)
            *_conv_bn_relu(c3, 3, 96, (5, 7, 7), (1, 2, 2), 0), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # -> 54
            *_conv_bn_relu(c3, 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # 26 -> 13
            *_conv_bn_relu(c3, 256, 256, (1, 3, 3), 1, (0, 1, 1)), *_conv_bn_relu(c3, 256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_conv_bn_relu(c3, 256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # 13 -> 6
            *_conv_bn_relu(c3, 256, 512, (1, 6, 6), 1, 0))  # -> 1 x 1

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCCs -> (B, 1024) (not normalised: the protocol measures Euclidean distances)."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR 0..255 -> (B, 1024)."""
        return self.netfclip(self.netcnnlip(x).flatten(1))
