"""Frozen configuration dataclasses for audio features and every lip-sync network.

Architectures are described as *data* (tuples of :class:`ConvSpec`), so one definition of each network
(`wav2lip384.models`) builds both the original 96x96 variant and the paper's 384x384 variant:

- ``GeneratorConfig.for_arch(name)`` -> every generator the product knows (``wav2lip384.models.registry`` names them):
  ``"wav2lip96"`` the public Wav2Lip generator (loads ``wav2lip_gan.pth`` key-for-key), ``"paper384"`` the paper's
  generator (appendices 2 and 3), ``"wav2lip_v2_256"`` the community 256x256 Wav2Lip-v2 and
  ``"livetalking384_sam"`` the community 384x384 generator with spatial attention (SAM) before every skip
  concatenation. ``GeneratorConfig.for_size(96 | 384)`` stays as an alias of the first two.
- ``SyncNetConfig.for_size(96 | 384)`` -> colour SyncNet / the paper's appendix 1
- ``DiscriminatorConfig.for_size(96 | 384)`` -> Wav2Lip's visual-quality discriminator

Every departure from the paper's appendices is listed, with the reason, next to the table it affects.
The configs round-trip through plain dicts (``to_dict`` / ``from_dict``) so our saved weights carry their
architecture in ``config.json``.
"""
# size-reason: the four networks' architectures as data, one table read top to bottom, a few lines over the
#   limit; the ConvSpec helpers and the audio encoders are shared by all four, so a split would scatter the table.

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

IntPair = int | tuple[int, int]


# ---------------------------------------------------------------------------------------------------------
# Audio: the original Wav2Lip ``hparams.py`` values. ``wav2lip384.media.audio`` is the only code that uses them.
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16000
    preemphasis: float = 0.97
    n_fft: int = 800
    hop_size: int = 200  # 12.5 ms -> 80 mel frames per second
    win_size: int = 800
    num_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    ref_level_db: float = 20.0
    min_level_db: float = -100.0
    max_abs_value: float = 4.0  # symmetric normalisation to [-4, 4], clipped
    mel_step_size: int = 16  # mel frames per video frame window (0.2 s)

    @property
    def mel_fps(self) -> float:
        """Mel frames per second (80.0 with the defaults)."""
        return self.sample_rate / self.hop_size


# ---------------------------------------------------------------------------------------------------------
# Layers as data
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvSpec:
    """One convolution layer with its normalisation/activation wrapper.

    kind:
      - ``"conv"``:   Conv2d + BatchNorm2d (+ input if ``residual``) -> ReLU   (Wav2Lip ``Conv2d``)
      - ``"deconv"``: ConvTranspose2d + BatchNorm2d -> ReLU                      (``Conv2dTranspose``)
      - ``"nonorm"``: Conv2d -> LeakyReLU(0.01), no BatchNorm                     (``nonorm_Conv2d``)
    """

    cin: int
    cout: int
    kernel: IntPair
    stride: IntPair = 1
    padding: IntPair = 0
    residual: bool = False
    kind: str = "conv"
    output_padding: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConvSpec:
        d = dict(d)
        for key in ("kernel", "stride", "padding"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


Block = tuple[ConvSpec, ...]


def conv(cin: int, cout: int, k: IntPair, s: IntPair = 1, p: IntPair = 0, *, residual: bool | None = None) -> ConvSpec:
    """Conv+BN+ReLU. Residual by the original Wav2Lip's rule unless given: every shape-preserving 3x3
    convolution (same channels, stride 1, padding 1) adds its input; nothing else does."""
    if residual is None:
        residual = cin == cout and k == 3 and s == 1 and p == 1
    return ConvSpec(cin, cout, k, s, p, residual=residual)


def deconv(cin: int, cout: int, k: int, s: int, p: int, op: int = 0) -> ConvSpec:
    return ConvSpec(cin, cout, k, s, p, kind="deconv", output_padding=op)


def nonorm(cin: int, cout: int, k: IntPair, s: IntPair = 1, p: IntPair = 0) -> ConvSpec:
    return ConvSpec(cin, cout, k, s, p, kind="nonorm")


def _blocks_from(data: Any) -> tuple[Block, ...]:
    return tuple(tuple(ConvSpec.from_dict(s) for s in block) for block in data)


def _specs_from(data: Any) -> Block:
    return tuple(ConvSpec.from_dict(s) for s in data)


# The audio encoders of the original Wav2Lip: mel window (B, 1, 80, 16) -> (B, 512, 1, 1).
# Spatial sizes: 80x16 -> stride (3,1) -> 27x16 -> stride 3 -> 9x6 -> stride (3,2) -> 3x3 -> 3x3/p0 -> 1x1.
# The paper keeps them unchanged (§2.1.1, §2.1.2). The generator's has 13 layers, SyncNet's 14 (one more
# residual 256-channel layer); both are kept exactly so the public checkpoints load.
def _audio_encoder(syncnet: bool) -> Block:
    layers = [
        conv(1, 32, 3, 1, 1), conv(32, 32, 3, 1, 1), conv(32, 32, 3, 1, 1),  # (B,32,80,16)
        conv(32, 64, 3, (3, 1), 1), conv(64, 64, 3, 1, 1), conv(64, 64, 3, 1, 1),  # (B,64,27,16)
        conv(64, 128, 3, 3, 1), conv(128, 128, 3, 1, 1), conv(128, 128, 3, 1, 1),  # (B,128,9,6)
        conv(128, 256, 3, (3, 2), 1), conv(256, 256, 3, 1, 1),  # (B,256,3,3)
    ]
    if syncnet:
        layers.append(conv(256, 256, 3, 1, 1))
    layers += [conv(256, 512, 3, 1, 0), conv(512, 512, 1, 1, 0)]  # (B,512,1,1)
    return tuple(layers)


AUDIO_ENCODER_GENERATOR = _audio_encoder(syncnet=False)
AUDIO_ENCODER_SYNCNET = _audio_encoder(syncnet=True)


# ---------------------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratorConfig:
    """Wav2Lip generator: face encoder blocks (with skip outputs), audio encoder, decoder blocks, output.

    Decoder block ``i`` consumes the previous decoder output concatenated (channels) with the encoder
    output of the mirrored level; the first decoder block consumes the audio embedding (B, 512, 1, 1).
    """

    img_size: int
    encoder_blocks: tuple[Block, ...]
    decoder_blocks: tuple[Block, ...]
    audio_encoder: Block = AUDIO_ENCODER_GENERATOR
    output_hidden: int = 32  # output block: conv(c, output_hidden, 3) -> 1x1 conv to RGB -> sigmoid
    face_channels: int = 6  # masked target frame (3) + reference frame (3)
    # Spatial attention (SAM) before every skip concatenation; 0 = none, else the kernel of its one shared
    # convolution (module ``sam.sa.conv1``, 2 -> 1 channels, no bias, padding kernel // 2). With decoder output x
    # (N, C, h, w) or (N, C, 1, 1) and skip s (N, C_s, H, W):
    #   a = sigmoid(conv([mean_c(s), max_c(s)]))   (N, 1, H, W), depends on the face only
    #   x = x * a + x                               (N, C, H, W), a 1x1 x is broadcast over the skip's grid
    # then x = cat(x, s). This is how a 1x1 decoder output meets a 4x4 bottleneck skip.
    sam_kernel: int = 0
    # Layers stored in a checkpoint but not used by the forward pass (keys ``audio_refine.N...``), kept so the
    # public file loads key-for-key.
    unused_audio_refine: Block = ()

    @classmethod
    def for_size(cls, size: int) -> GeneratorConfig:
        """The 96 (original) or 384 (paper) generator; aliases of ``for_arch("wav2lip96" | "paper384")``."""
        if size == 96:
            return _GENERATOR_96
        if size == 384:
            return _GENERATOR_384
        raise ValueError(f"no generator is defined for size {size}; use 96 or 384 (or GeneratorConfig.for_arch)")

    @classmethod
    def for_arch(cls, name: str) -> GeneratorConfig:
        """A named architecture: one of :data:`GENERATOR_ARCHS` (``wav2lip384.models.registry`` says which is which)."""
        try:
            return GENERATOR_ARCHS[name]
        except KeyError:
            raise ValueError(f"no generator architecture {name!r}; known: {', '.join(GENERATOR_ARCHS)}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        # sam_kernel / unused_audio_refine are absent from config.json files written before they existed
        return cls(img_size=int(d["img_size"]), encoder_blocks=_blocks_from(d["encoder_blocks"]),
                   decoder_blocks=_blocks_from(d["decoder_blocks"]), audio_encoder=_specs_from(d["audio_encoder"]),
                   output_hidden=int(d["output_hidden"]), face_channels=int(d["face_channels"]),
                   sam_kernel=int(d.get("sam_kernel", 0)),
                   unused_audio_refine=_specs_from(d.get("unused_audio_refine", ())))


# The original Wav2Lip generator, exactly as in the public checkpoint (see the reference shape table).
_GENERATOR_96 = GeneratorConfig(
    img_size=96,
    encoder_blocks=(
        (conv(6, 16, 7, 1, 3),),  # (B,16,96,96)
        (conv(16, 32, 3, 2, 1), conv(32, 32, 3, 1, 1), conv(32, 32, 3, 1, 1)),  # (B,32,48,48)
        (conv(32, 64, 3, 2, 1), conv(64, 64, 3, 1, 1), conv(64, 64, 3, 1, 1), conv(64, 64, 3, 1, 1)),  # 24x24
        (conv(64, 128, 3, 2, 1), conv(128, 128, 3, 1, 1), conv(128, 128, 3, 1, 1)),  # (B,128,12,12)
        (conv(128, 256, 3, 2, 1), conv(256, 256, 3, 1, 1), conv(256, 256, 3, 1, 1)),  # (B,256,6,6)
        (conv(256, 512, 3, 2, 1), conv(512, 512, 3, 1, 1)),  # (B,512,3,3)
        (conv(512, 512, 3, 1, 0), conv(512, 512, 1, 1, 0)),  # (B,512,1,1)
    ),
    decoder_blocks=(
        (conv(512, 512, 1, 1, 0),),  # audio (B,512,1,1) -> cat enc 1x1 -> (B,1024,1,1)
        (deconv(1024, 512, 3, 1, 0), conv(512, 512, 3, 1, 1)),  # 3x3, cat -> (B,1024,3,3)
        (deconv(1024, 512, 3, 2, 1, 1), conv(512, 512, 3, 1, 1), conv(512, 512, 3, 1, 1)),  # 6x6 -> (B,768,..)
        (deconv(768, 384, 3, 2, 1, 1), conv(384, 384, 3, 1, 1), conv(384, 384, 3, 1, 1)),  # 12x12 -> 512
        (deconv(512, 256, 3, 2, 1, 1), conv(256, 256, 3, 1, 1), conv(256, 256, 3, 1, 1)),  # 24x24 -> 320
        (deconv(320, 128, 3, 2, 1, 1), conv(128, 128, 3, 1, 1), conv(128, 128, 3, 1, 1)),  # 48x48 -> 160
        (deconv(160, 64, 3, 2, 1, 1), conv(64, 64, 3, 1, 1), conv(64, 64, 3, 1, 1)),  # 96x96 -> (B,80,96,96)
    ),
    output_hidden=32,
)

# The paper's generator (appendix 2 = encoder, appendix 3 = decoder).
#
# Resolved inconsistencies / gaps of the appendices (appendix item: what it says -> what we do, why):
#  A2 (9.2): "3x3 conv, stride 1, padding 0" applied to the 1x1 map left by (9.1) cannot run (kernel larger
#            than the padded input). -> a 1x1 convolution (512->512, stride 1, padding 0). This is what the
#            original Wav2Lip's last encoder block does (3x3/p0 then 1x1) and what appendix 1 (2.22) and
#            appendix 3 (1.1) use at the same place, so it is the most faithful reading.
#  A2 (9.1): "3x3, stride 2, padding 0" on the 3x3 map of block 8. The original uses stride 1 here; on a 3x3
#            input a 3x3/p0 kernel has exactly one position, so stride 1 and 2 give the same 1x1 output and
#            the same weights. -> kept as written (stride 2).
#  A2 (1.1): input channels are not stated. -> 6 (masked target frame + reference frame, RGB each), as in
#            the original and as §2.1.2 describes ("combine these ten images" = 5 masked + 5 references).
#  A2/A3:    BatchNorm, ReLU and residual connections are not mentioned. -> the original Wav2Lip ``Conv2d``
#            block (conv -> BN -> (+x) -> ReLU) everywhere, residual on every shape-preserving 3x3 conv
#            (the original's rule), deconvolutions as ``Conv2dTranspose`` (deconv -> BN -> ReLU).
#  A3:       skip connections are not spelled out. -> as the original: each decoder output is concatenated
#            with the encoder output of the same resolution, so each deconvolution's input channels are
#            (previous decoder channels + skip channels), e.g. block 2: 512+512 = 1024 -> 512.
#            Sizes check: encoder 384->192->96->48->24->12->6->3->1 (blocks 1..9), decoder 1 (1x1) -> 3
#            (deconv 3x3/s1/p0) -> 6 -> 12 -> 24 -> 48 -> 96 -> 192 -> 384 (deconv 3x3/s2/p1/op1 doubles),
#            each matching the skip it is concatenated with.
#  §2.1.2 vs A3: the text says each block has "one deconvolution layer and two convolutional layers", but
#            A3's block 1 is a single 1x1 conv and block 2 has one deconv + one conv (as in the original).
#            -> the appendix's tables are followed.
#  Output block: not in the appendix. -> like the original: conv 3x3 (16 -> 16 channels; the input is decoder
#            block 9's 8 channels + the 8-channel skip of encoder block 1) -> 1x1 conv to 3 channels ->
#            sigmoid. The hidden width 16 is our choice (the original narrows 80 -> 32; 8 would be too thin).
_GENERATOR_384 = GeneratorConfig(
    img_size=384,
    encoder_blocks=(
        (conv(6, 8, 7, 1, 3),),  # 1: (B,8,384,384)
        (conv(8, 16, 3, 2, 1), conv(16, 16, 3, 1, 1), conv(16, 16, 3, 1, 1)),  # 2: (B,16,192,192)
        (conv(16, 32, 3, 2, 1), conv(32, 32, 3, 1, 1), conv(32, 32, 3, 1, 1)),  # 3: (B,32,96,96)
        (conv(32, 64, 3, 2, 1), conv(64, 64, 3, 1, 1), conv(64, 64, 3, 1, 1)),  # 4: (B,64,48,48)
        (conv(64, 128, 3, 2, 1), conv(128, 128, 3, 1, 1), conv(128, 128, 3, 1, 1)),  # 5: (B,128,24,24)
        (conv(128, 256, 3, 2, 1), conv(256, 256, 3, 1, 1), conv(256, 256, 3, 1, 1)),  # 6: (B,256,12,12)
        (conv(256, 512, 3, 2, 1), conv(512, 512, 3, 1, 1), conv(512, 512, 3, 1, 1)),  # 7: (B,512,6,6)
        (conv(512, 512, 3, 2, 1), conv(512, 512, 3, 1, 1)),  # 8: (B,512,3,3)
        (conv(512, 512, 3, 2, 0), conv(512, 512, 1, 1, 0)),  # 9: (B,512,1,1)  [A2 9.2 fixed to 1x1]
    ),
    decoder_blocks=(
        (conv(512, 512, 1, 1, 0),),  # 1: audio (B,512,1,1); cat enc9 -> (B,1024,1,1)
        (deconv(1024, 512, 3, 1, 0), conv(512, 512, 3, 1, 1)),  # 2: (B,512,3,3); cat enc8 -> 1024
        (deconv(1024, 512, 3, 2, 1, 1), conv(512, 512, 3, 1, 1), conv(512, 512, 3, 1, 1)),  # 3: 6x6; +enc7 -> 1024
        (deconv(1024, 256, 3, 2, 1, 1), conv(256, 256, 3, 1, 1), conv(256, 256, 3, 1, 1)),  # 4: 12x12; +enc6 -> 512
        (deconv(512, 128, 3, 2, 1, 1), conv(128, 128, 3, 1, 1), conv(128, 128, 3, 1, 1)),  # 5: 24x24; +enc5 -> 256
        (deconv(256, 64, 3, 2, 1, 1), conv(64, 64, 3, 1, 1), conv(64, 64, 3, 1, 1)),  # 6: 48x48; +enc4 -> 128
        (deconv(128, 32, 3, 2, 1, 1), conv(32, 32, 3, 1, 1), conv(32, 32, 3, 1, 1)),  # 7: 96x96; +enc3 -> 64
        (deconv(64, 16, 3, 2, 1, 1), conv(16, 16, 3, 1, 1), conv(16, 16, 3, 1, 1)),  # 8: 192x192; +enc2 -> 32
        (deconv(32, 8, 3, 2, 1, 1), conv(8, 8, 3, 1, 1), conv(8, 8, 3, 1, 1)),  # 9: 384x384; +enc1 -> 16
    ),
    output_hidden=16,
)


# Community generators of the Wav2Lip family with public weights (tensor tables and sources:
# ../shared/reference/community_generators_state_dict_shapes.json). Layer lists follow the published code
# (lipku/LiveTalking); the residual flags follow the original's rule (every shape-preserving 3x3 conv), which is
# exactly where that code sets ``residual=True``. Golden outputs (tests/test_golden.py) prove the forward pass.
def _audio_encoder_1024() -> Block:
    """The 384+SAM model's audio encoder: the original's, one more 512-wide stage, ending at 1024 channels.
    (B,1,80,16) -> 27x16 -> 9x6 -> 3x3 -> 3x3 (512) -> (B,1024,1,1)."""
    return (
        conv(1, 32, 3, 1, 1), conv(32, 32, 3, 1, 1), conv(32, 32, 3, 1, 1),  # (B,32,80,16)
        conv(32, 64, 3, (3, 1), 1), conv(64, 64, 3, 1, 1), conv(64, 64, 3, 1, 1),  # (B,64,27,16)
        conv(64, 128, 3, 3, 1), conv(128, 128, 3, 1, 1), conv(128, 128, 3, 1, 1),  # (B,128,9,6)
        conv(128, 256, 3, (3, 2), 1), conv(256, 256, 3, 1, 1), conv(256, 256, 3, 1, 1),  # (B,256,3,3)
        conv(256, 512, 3, 1, 1), conv(512, 512, 3, 1, 1), conv(512, 512, 3, 1, 1),  # (B,512,3,3)
        conv(512, 1024, 3, 1, 0), conv(1024, 1024, 1, 1, 0),  # (B,1024,1,1)
    )


def _stage(cin: int, cout: int, n_same: int, stride: int = 2) -> Block:
    """One encoder stage: a 3x3 stride-2 conv (halves the side; with ``stride=1``: the input stage's 7x7/p3 conv
    at full resolution), then ``n_same`` residual 3x3 convs."""
    first = conv(cin, cout, 7, 1, 3) if stride == 1 else conv(cin, cout, 3, stride, 1)
    return (first,) + tuple(conv(cout, cout, 3, 1, 1) for _ in range(n_same))


def _up(cin: int, cout: int, n_same: int) -> Block:
    """Deconv 3x3/s2/p1/op1 (doubles the side) then ``n_same`` residual 3x3 convs."""
    return (deconv(cin, cout, 3, 2, 1, 1),) + tuple(conv(cout, cout, 3, 1, 1) for _ in range(n_same))


# Wav2Lip-v2 at 256x256 (no SAM): 6 stride-2 convs (256 -> 4) then a 4x4 valid conv to 1x1; the decoder mirrors
# it with a 4x4 transposed conv (1 -> 4). 53.6 M parameters.
_GENERATOR_V2_256 = GeneratorConfig(
    img_size=256,
    encoder_blocks=(
        _stage(6, 16, 0, stride=1),  # (B,16,256,256)
        _stage(16, 32, 2),  # (B,32,128,128)
        _stage(32, 64, 3),  # (B,64,64,64)
        _stage(64, 128, 2),  # (B,128,32,32)
        _stage(128, 256, 2),  # (B,256,16,16)
        _stage(256, 512, 1),  # (B,512,8,8)
        _stage(512, 512, 1),  # (B,512,4,4)
        (conv(512, 512, 4, 1, 0), conv(512, 512, 1, 1, 0)),  # (B,512,1,1)
    ),
    decoder_blocks=(
        (conv(512, 512, 1, 1, 0),),  # audio (B,512,1,1); cat enc 1x1 -> 1024
        (deconv(1024, 512, 4, 1, 0), conv(512, 512, 3, 1, 1)),  # (B,512,4,4); cat -> 1024
        _up(1024, 512, 1),  # 8x8; cat -> 1024
        _up(1024, 512, 2),  # 16x16; cat -> 768
        _up(768, 384, 2),  # 32x32; cat -> 512
        _up(512, 256, 2),  # 64x64; cat -> 320
        _up(320, 128, 2),  # 128x128; cat -> 160
        _up(160, 64, 2),  # 256x256; cat -> 80
    ),
    output_hidden=32,
)

# LiveTalking's wav2lip384 with spatial attention: 16..1024 channels, 4 layers per encoder stage, 6 stride-2
# convs (384 -> 6) then a 3x3 valid conv to a 4x4 bottleneck (not 1x1). The 1x1 audio path meets it through SAM
# (``sam_kernel`` above), which is applied before every skip concatenation. 172.7 M parameters.
_GENERATOR_384_SAM = GeneratorConfig(
    img_size=384,
    encoder_blocks=(
        _stage(6, 16, 3, stride=1),  # (B,16,384,384)
        _stage(16, 32, 3),  # (B,32,192,192)
        _stage(32, 64, 3),  # (B,64,96,96)
        _stage(64, 128, 3),  # (B,128,48,48)
        _stage(128, 256, 3),  # (B,256,24,24)
        _stage(256, 512, 3),  # (B,512,12,12)
        _stage(512, 1024, 3),  # (B,1024,6,6)
        (conv(1024, 1024, 3, 1, 0), conv(1024, 1024, 1, 1, 0), conv(1024, 1024, 1, 1, 0)),  # (B,1024,4,4)
    ),
    decoder_blocks=(
        (conv(1024, 1024, 1, 1, 0),),  # audio (B,1024,1,1); SAM broadcasts to 4x4; cat -> (B,2048,4,4)
        (deconv(2048, 1024, 3, 1, 0), conv(1024, 1024, 3, 1, 1)),  # (B,1024,6,6); cat -> 2048
        _up(2048, 1024, 2),  # 12x12; cat -> 1536
        _up(1536, 768, 2),  # 24x24; cat -> 1024
        _up(1024, 512, 2),  # 48x48; cat -> 640
        _up(640, 256, 2),  # 96x96; cat -> 320
        _up(320, 128, 2),  # 192x192; cat -> 160
        _up(160, 64, 2),  # 384x384; cat -> 80
    ),
    audio_encoder=_audio_encoder_1024(),
    output_hidden=32,
    sam_kernel=7,
    unused_audio_refine=(conv(1024, 1024, 1, 1, 0), conv(1024, 1024, 1, 1, 0)),
)

# Every generator architecture by name (the registry's ``arch``).
GENERATOR_ARCHS: dict[str, GeneratorConfig] = {
    "wav2lip96": _GENERATOR_96,
    "paper384": _GENERATOR_384,
    "wav2lip_v2_256": _GENERATOR_V2_256,
    "livetalking384_sam": _GENERATOR_384_SAM,
}


# ---------------------------------------------------------------------------------------------------------
# SyncNet (lip-sync expert)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyncNetConfig:
    """Face window = lower halves of ``n_frames`` consecutive frames stacked on channels:
    (B, 3*n_frames, img_size//2, img_size); audio = (B, 1, 80, 16). Both map to unit 512-d vectors."""

    img_size: int
    face_encoder: Block
    audio_encoder: Block = AUDIO_ENCODER_SYNCNET
    n_frames: int = 5
    embed_dim: int = 512

    @property
    def face_input_shape(self) -> tuple[int, int, int]:
        return (3 * self.n_frames, self.img_size // 2, self.img_size)

    @classmethod
    def for_size(cls, size: int) -> SyncNetConfig:
        if size == 96:
            return _SYNCNET_96
        if size == 384:
            return _SYNCNET_384
        raise ValueError(f"no SyncNet is defined for size {size}; use 96 or 384")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SyncNetConfig:
        return cls(img_size=int(d["img_size"]), face_encoder=_specs_from(d["face_encoder"]),
                   audio_encoder=_specs_from(d["audio_encoder"]), n_frames=int(d["n_frames"]),
                   embed_dim=int(d["embed_dim"]))


# Original colour SyncNet (``SyncNet_color``): face (B,15,48,96) -> (B,512,1,1).
_SYNCNET_96 = SyncNetConfig(
    img_size=96,
    face_encoder=(
        conv(15, 32, 7, 1, 3),  # (B,32,48,96)
        conv(32, 64, 5, (1, 2), 1), conv(64, 64, 3, 1, 1), conv(64, 64, 3, 1, 1),  # (B,64,46,47)
        conv(64, 128, 3, 2, 1), conv(128, 128, 3, 1, 1), conv(128, 128, 3, 1, 1), conv(128, 128, 3, 1, 1),  # 23x24
        conv(128, 256, 3, 2, 1), conv(256, 256, 3, 1, 1), conv(256, 256, 3, 1, 1),  # (B,256,12,12)
        conv(256, 512, 3, 2, 1), conv(512, 512, 3, 1, 1), conv(512, 512, 3, 1, 1),  # (B,512,6,6)
        conv(512, 512, 3, 2, 1), conv(512, 512, 3, 1, 0), conv(512, 512, 1, 1, 0),  # 3x3 -> (B,512,1,1)
    ),
)

# The paper's SyncNet face encoder (appendix 1), 22 convolutions.
#
# Resolved inconsistencies / gaps (appendix item: what it says -> what we do, why):
#  A1 (1):   "5 facial images, each with 3 channels and 384x384 pixels". SyncNet sees only the lower half of
#            each face (original Wav2Lip, and the generator is judged on the mouth). With a 384x384 input the
#            listed layers end at 4x1, not 1x1 (384 -> 382 -> 191 -> 96 -> 48 -> 24 -> 12 -> 6 -> 4), so no
#            512-d vector could come out; with the lower half (192x384) they end exactly at 1x1.
#            -> input (B, 15, 192, 384) = lower halves of 5 frames of 384x384.
#            Sizes: 192x384 -(2.2: 5x5, stride (1,2), p1)-> 190x191 -(2.5)-> 95x96 -(2.8)-> 48x48
#            -(2.11)-> 24 -(2.14)-> 12 -(2.17)-> 6 -(2.20)-> 3 -(2.21: 3x3/p0)-> 1 -(2.22: 1x1)-> 1.
#  §2.1.1 vs A1: the text says six layers were added; appendix 1 lists 22 convolutions, the original has 17
#            (5 more, and narrower: 16 instead of 32 channels first). -> the appendix (22) is followed.
#  A1:       BatchNorm/ReLU/residuals are not mentioned. -> the original ``Conv2d`` block, residual on every
#            shape-preserving 3x3 conv (the original's rule). Audio encoder unchanged (§2.1.1).
_SYNCNET_384 = SyncNetConfig(
    img_size=384,
    face_encoder=(
        conv(15, 16, 7, 1, 3),  # 2.1: (B,16,192,384)
        conv(16, 32, 5, (1, 2), 1), conv(32, 32, 3, 1, 1), conv(32, 32, 3, 1, 1),  # 2.2-2.4: (B,32,190,191)
        conv(32, 64, 3, 2, 1), conv(64, 64, 3, 1, 1), conv(64, 64, 3, 1, 1),  # 2.5-2.7: (B,64,95,96)
        conv(64, 128, 3, 2, 1), conv(128, 128, 3, 1, 1), conv(128, 128, 3, 1, 1),  # 2.8-2.10: (B,128,48,48)
        conv(128, 256, 3, 2, 1), conv(256, 256, 3, 1, 1), conv(256, 256, 3, 1, 1),  # 2.11-2.13: (B,256,24,24)
        conv(256, 256, 3, 2, 1), conv(256, 256, 3, 1, 1), conv(256, 256, 3, 1, 1),  # 2.14-2.16: (B,256,12,12)
        conv(256, 512, 3, 2, 1), conv(512, 512, 3, 1, 1), conv(512, 512, 3, 1, 1),  # 2.17-2.19: (B,512,6,6)
        conv(512, 512, 3, 2, 1), conv(512, 512, 3, 1, 0), conv(512, 512, 1, 1, 0),  # 2.20-2.22: 3x3 -> 1x1
    ),
)


# ---------------------------------------------------------------------------------------------------------
# Visual-quality discriminator (Wav2Lip_disc_qual): lower half of a face -> probability "real"
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscriminatorConfig:
    img_size: int
    blocks: tuple[Block, ...]

    @classmethod
    def for_size(cls, size: int) -> DiscriminatorConfig:
        if size == 96:
            return _DISC_96
        if size == 384:
            return _DISC_384
        raise ValueError(f"no discriminator is defined for size {size}; use 96 or 384")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiscriminatorConfig:
        return cls(img_size=int(d["img_size"]), blocks=_blocks_from(d["blocks"]))


# Original: lower half (B,3,48,96) -> (B,512,1,1) -> 1x1 conv -> sigmoid.
_DISC_96 = DiscriminatorConfig(
    img_size=96,
    blocks=(
        (nonorm(3, 32, 7, 1, 3),),  # (B,32,48,96)
        (nonorm(32, 64, 5, (1, 2), 2), nonorm(64, 64, 5, 1, 2)),  # (B,64,48,48)
        (nonorm(64, 128, 5, 2, 2), nonorm(128, 128, 5, 1, 2)),  # (B,128,24,24)
        (nonorm(128, 256, 5, 2, 2), nonorm(256, 256, 5, 1, 2)),  # (B,256,12,12)
        (nonorm(256, 512, 3, 2, 1), nonorm(512, 512, 3, 1, 1)),  # (B,512,6,6)
        (nonorm(512, 512, 3, 2, 1), nonorm(512, 512, 3, 1, 1)),  # (B,512,3,3)
        (nonorm(512, 512, 3, 1, 0), nonorm(512, 512, 1, 1, 0)),  # (B,512,1,1)
    ),
)

# 384 version (the paper does not describe one; it trains with Wav2Lip's GAN setup). Same block pattern,
# two more stride-2 blocks so the lower half (B,3,192,384) still reaches 3x3 then 1x1, and the first widths
# halved (16, 32, 64, ...) as the paper did for its 384 generator and SyncNet, which keeps the cost near
# 5x the 96 version instead of 16x.
_DISC_384 = DiscriminatorConfig(
    img_size=384,
    blocks=(
        (nonorm(3, 16, 7, 1, 3),),  # (B,16,192,384)
        (nonorm(16, 32, 5, (1, 2), 2), nonorm(32, 32, 5, 1, 2)),  # (B,32,192,192)
        (nonorm(32, 64, 5, 2, 2), nonorm(64, 64, 5, 1, 2)),  # (B,64,96,96)
        (nonorm(64, 128, 5, 2, 2), nonorm(128, 128, 5, 1, 2)),  # (B,128,48,48)
        (nonorm(128, 256, 5, 2, 2), nonorm(256, 256, 5, 1, 2)),  # (B,256,24,24)
        (nonorm(256, 512, 3, 2, 1), nonorm(512, 512, 3, 1, 1)),  # (B,512,12,12)
        (nonorm(512, 512, 3, 2, 1), nonorm(512, 512, 3, 1, 1)),  # (B,512,6,6)
        (nonorm(512, 512, 3, 2, 1), nonorm(512, 512, 3, 1, 1)),  # (B,512,3,3)
        (nonorm(512, 512, 3, 1, 0), nonorm(512, 512, 1, 1, 0)),  # (B,512,1,1)
    ),
)


# Registry used by wav2lip384.weights (config.json -> config class).
CONFIG_CLASSES: dict[str, type] = {
    "generator": GeneratorConfig,
    "syncnet": SyncNetConfig,
    "discriminator": DiscriminatorConfig,
}

__all__ = [
    "AudioConfig", "ConvSpec", "GeneratorConfig", "GENERATOR_ARCHS", "SyncNetConfig", "DiscriminatorConfig", "CONFIG_CLASSES",
    "AUDIO_ENCODER_GENERATOR", "AUDIO_ENCODER_SYNCNET", "conv", "deconv", "nonorm",
]
