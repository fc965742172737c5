"""Tiny architectures and synthetic clips for CPU smoke runs and tests (``--tiny`` on the trainer CLI).

The networks are the project's own classes (``wav2lip384.models``) built from small configs of the same
dataclasses, for 32x32 faces: the same code paths as the real 96/384 models at a fraction of the cost.
Synthetic clips use the exact on-disk layout of ``preprocess.py`` so the datasets and the loop are exercised
end to end. They carry no lip-sync signal beyond a deliberate correlation (mouth brightness follows the
audio loudness) that lets a tiny SyncNet reduce its loss in a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wav2lip384.models.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    SyncNetConfig,
    conv,
    deconv,
    nonorm,
)

TINY_SIZE = 32


def tiny_audio_encoder(width: int = 32):
    """(B,1,80,16) -> 27x16 -> 9x6 -> 3x3 -> (B,width,1,1)."""
    return (conv(1, 8, 3, (3, 1), 1), conv(8, 16, 3, 3, 1), conv(16, width, 3, (3, 2), 1), conv(width, width, 3, 1, 0))


def tiny_syncnet_config() -> SyncNetConfig:
    # lower half (B,15,16,32) -> 16x32 -> 16x16 -> 8 -> 4 -> 2 -> 1
    face = (conv(15, 8, 3, 1, 1), conv(8, 16, 3, (1, 2), 1), conv(16, 16, 3, 2, 1), conv(16, 32, 3, 2, 1),
            conv(32, 32, 3, 2, 1), conv(32, 32, 2, 1, 0))
    return SyncNetConfig(img_size=TINY_SIZE, face_encoder=face, audio_encoder=tiny_audio_encoder(32), embed_dim=32)


def tiny_generator_config() -> GeneratorConfig:
    enc = ((conv(6, 8, 3, 1, 1),), (conv(8, 16, 3, 2, 1),), (conv(16, 32, 3, 2, 1),), (conv(32, 32, 3, 2, 1),),
           (conv(32, 32, 3, 2, 1),), (conv(32, 32, 2, 1, 0),))  # 32 -> 32,16,8,4,2,1
    dec = ((conv(32, 32, 1, 1, 0),),  # audio (B,32,1,1); cat enc6 -> 64
           (deconv(64, 32, 2, 1, 0),),  # 2x2; cat enc5 -> 64
           (deconv(64, 32, 3, 2, 1, 1),),  # 4x4; cat enc4 -> 64
           (deconv(64, 16, 3, 2, 1, 1),),  # 8x8; cat enc3 -> 48
           (deconv(48, 16, 3, 2, 1, 1),),  # 16x16; cat enc2 -> 32
           (deconv(32, 8, 3, 2, 1, 1),))  # 32x32; cat enc1 -> 16
    return GeneratorConfig(img_size=TINY_SIZE, encoder_blocks=enc, decoder_blocks=dec,
                           audio_encoder=tiny_audio_encoder(32), output_hidden=8)


def tiny_discriminator_config() -> DiscriminatorConfig:
    blocks = ((nonorm(3, 8, 3, 1, 1),), (nonorm(8, 16, 3, (1, 2), 1),), (nonorm(16, 16, 3, 2, 1),),
              (nonorm(16, 32, 3, 2, 1),), (nonorm(32, 32, 3, 2, 1),), (nonorm(32, 32, 2, 1, 0),))
    return DiscriminatorConfig(img_size=TINY_SIZE, blocks=blocks)


def write_synthetic_clips(out: str | Path, *, size: int = TINY_SIZE, n_train: int = 3, n_val: int = 1,
                          n_frames: int = 40, seed: int = 0) -> Path:
    """Write clips in ``preprocess.py``'s layout: frames whose lower half brightens with the audio's loudness.

    Audio: a 220 Hz tone whose amplitude follows a random per-frame envelope (16 kHz, 640 samples/frame).
    """
    import cv2
    import soundfile as sf

    out = Path(out)
    rng = np.random.default_rng(seed)
    clips = []
    for k in range(n_train + n_val):
        split = "train" if k < n_train else "val"
        cdir = out / f"src{k}" / "clip000"
        cdir.mkdir(parents=True, exist_ok=True)
        env = rng.random(n_frames) ** 2  # per-frame loudness in [0, 1]
        base = rng.integers(40, 200, size=3)
        for i in range(n_frames):
            img = np.empty((size, size, 3), np.uint8)
            img[:] = base
            img[size // 2:, size // 4: 3 * size // 4] = int(255 * env[i])  # "mouth"
            img = np.clip(img.astype(np.int16) + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(cdir / f"{i:05d}.jpg"), img)
        t = np.arange(n_frames * 640) / 16000.0
        wav = 0.5 * np.repeat(env, 640) * np.sin(2 * np.pi * 220 * t)
        sf.write(cdir / "audio.wav", wav.astype(np.float32), 16000, subtype="PCM_16")
        clips.append({"id": f"src{k}/clip000", "source": f"src{k}", "split": split, "dir": f"src{k}/clip000",
                      "n_frames": n_frames, "duration_s": n_frames / 25.0})
    manifest = {"format": "wav2lip384-clips/1", "size": size, "fps": 25, "sample_rate": 16000, "clips": clips,
                "note": "synthetic clips for smoke tests (wav2lip384.train.tiny)"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out
