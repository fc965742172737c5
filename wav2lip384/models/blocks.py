"""The three layer wrappers of Wav2Lip, built from :class:`~wav2lip384.models.config.ConvSpec`, and the SAM step.

Without autograd (inference) the residual addition and the ReLU run in place on the convolution's fresh output:
same arithmetic, but no new full-size tensor per layer (at 384x384 each one is a fresh, page-faulted buffer).

Attribute names (``conv_block``, ``act``) are those of the original code, so the public checkpoints'
keys (``...conv_block.0.weight``, ``...conv_block.1.running_mean``) map onto ours one-to-one.
"""

from __future__ import annotations

import torch
from torch import nn

from wav2lip384.models.config import ConvSpec


class ConvBNReLU(nn.Module):
    """conv -> BatchNorm -> (+ input when residual) -> ReLU. Shape: (B,cin,H,W) -> (B,cout,H',W')."""

    def __init__(self, spec: ConvSpec):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding),
            nn.BatchNorm2d(spec.cout),
        )
        self.act = nn.ReLU()
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if not torch.is_grad_enabled():  # inference: reuse the fresh output, no new full-size tensors
            return torch.relu_(out.add_(x) if self.residual else out)
        if self.residual:
            out = out + x
        return self.act(out)


class DeconvBNReLU(nn.Module):
    """transposed conv -> BatchNorm -> ReLU (upsampling). (B,cin,H,W) -> (B,cout,H*s,W*s) for s2/p1/op1."""

    def __init__(self, spec: ConvSpec):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding, spec.output_padding),
            nn.BatchNorm2d(spec.cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        return torch.relu_(out) if not torch.is_grad_enabled() else self.act(out)


class ConvLeaky(nn.Module):
    """conv -> LeakyReLU(0.01), no normalisation (the quality discriminator's ``nonorm_Conv2d``)."""

    def __init__(self, spec: ConvSpec):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding))
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


_KINDS = {"conv": ConvBNReLU, "deconv": DeconvBNReLU, "nonorm": ConvLeaky}


def build_layer(spec: ConvSpec) -> nn.Module:
    try:
        return _KINDS[spec.kind](spec)
    except KeyError:
        raise ValueError(f"unknown layer kind {spec.kind!r}; expected one of {sorted(_KINDS)}") from None


def build_sequential(specs) -> nn.Sequential:
    """A tuple of specs -> ``nn.Sequential`` (keys ``0.conv_block...``, ``1.conv_block...``, ...)."""
    return nn.Sequential(*(build_layer(s) for s in specs))


class SpatialAttention(nn.Module):
    """Attention map of a skip feature: (N, C, H, W) -> channel mean and max (N, 2, H, W) -> k x k conv (no bias)
    -> sigmoid -> (N, 1, H, W). Attribute name ``conv1`` as in the public 384+SAM checkpoint."""

    def __init__(self, kernel: int):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, skip: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((skip.mean(dim=1, keepdim=True), skip.amax(dim=1, keepdim=True)), dim=1)  # (N,2,H,W)
        return torch.sigmoid(self.conv1(pooled))  # (N, 1, H, W)


class SkipAttention(nn.Module):
    """SAM: ``x * a + x`` with ``a`` the spatial attention of the skip it is about to be concatenated with.
    One module is shared by every decoder level (checkpoint key ``sam.sa.conv1.weight``)."""

    def __init__(self, kernel: int):
        super().__init__()
        self.sa = SpatialAttention(kernel)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """skip (N|1, C_s, H, W), x (N, C, H, W) or (N, C, 1, 1) -> (N, C, H, W) (a 1x1 x is broadcast)."""
        return x * self.sa(skip) + x
