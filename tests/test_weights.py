"""Loading the original checkpoint format, our safetensors format, and clear errors when weights are missing."""

from __future__ import annotations

import time

import pytest
import torch

from common.errors import UserFacingError
from wav2lip384.config import GeneratorConfig, conv, deconv
from wav2lip384.models import build_model
from wav2lip384.weights import (
    NO_384_WEIGHTS,
    from_pretrained,
    load_generator,
    load_state_dict_file,
    load_syncnet,
    save_pretrained,
    weights_status,
)


def _fake_checkpoint(shapes: dict, seed: int = 0) -> dict:
    """Random tensors with the public checkpoint's names and shapes (BN counters are int64 scalars)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(1000, dtype=torch.long)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.05
    return sd


@pytest.mark.parametrize("kind,key,module_prefix,wrapped", [
    ("generator", "wav2lip96_generator", False, True),  # as wav2lip_gan.pth: {"state_dict": ...}
    ("generator", "wav2lip96_generator", True, False),  # DataParallel prefixes, bare dict
    ("syncnet", "syncnet96_color", True, True),
    ("syncnet", "syncnet96_color", False, False),
])
def test_original_checkpoints_load_key_for_key(tmp_path, reference_shapes, kind, key, module_prefix, wrapped):
    sd = _fake_checkpoint(reference_shapes[key])
    saved = {("module." + k if module_prefix else k): v for k, v in sd.items()}
    obj = {"state_dict": saved, "global_step": 1, "global_epoch": 0} if wrapped else saved
    path = tmp_path / "ckpt.pth"
    # the public 2020 checkpoints predate torch's zip format: write one case in the legacy format
    torch.save(obj, path, _use_new_zipfile_serialization=not (wrapped and not module_prefix))
    loader = load_generator if kind == "generator" else load_syncnet
    model = loader(str(path), size=96)
    assert not model.training
    own = model.state_dict()
    for name in ("audio_encoder.0.conv_block.0.weight", "audio_encoder.0.conv_block.1.running_var"):
        torch.testing.assert_close(own[name], sd[name])
    assert set(load_state_dict_file(path)) == set(reference_shapes[key])  # prefixes stripped


def test_checkpoint_of_the_wrong_size_is_reported_clearly(tmp_path, reference_shapes):
    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": _fake_checkpoint(reference_shapes["wav2lip96_generator"])}, path)
    with pytest.raises(UserFacingError, match="missing.*unexpected.*shape mismatch.*96 vs 384"):
        load_generator(str(path), size=384)


def test_not_a_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not a pickle")
    with pytest.raises(UserFacingError, match="bad.pth"):
        load_generator(str(bad), size=96)


def tiny_generator_config() -> GeneratorConfig:
    """A 12x12 generator with the same structure (skips, 1x1 bottleneck, audio encoder to 1x1)."""
    return GeneratorConfig(
        img_size=12,
        encoder_blocks=((conv(6, 4, 3, 1, 1),), (conv(4, 8, 3, 2, 1), conv(8, 8, 3, 1, 1)),  # 12, 6
                        (conv(8, 8, 3, 2, 1),), (conv(8, 16, 3, 1, 0),)),  # 3, 1
        decoder_blocks=((conv(16, 16, 1, 1, 0),), (deconv(32, 8, 3, 1, 0),),  # 1 -> 3
                        (deconv(16, 8, 3, 2, 1, 1), conv(8, 8, 3, 1, 1)), (deconv(16, 4, 3, 2, 1, 1),)),  # 6, 12
        audio_encoder=(conv(1, 8, 3, (3, 1), 1), conv(8, 8, 3, 3, 1), conv(8, 8, 3, (3, 2), 1),  # 27x16, 9x6, 3x3
                       conv(8, 16, 3, 1, 0)),  # 1x1
        output_hidden=4,
    )


@pytest.mark.parametrize("kind", ["generator", "syncnet", "discriminator"])
def test_safetensors_round_trip_gives_identical_outputs(tmp_path, seeded, kind):
    # the generator is a tiny custom config: also proves config.json rebuilds a non-built-in architecture
    model = build_model(kind, tiny_generator_config() if kind == "generator" else 96).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics so the buffers matter
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    d = save_pretrained(model, tmp_path / "ours")
    assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()
    loaded = from_pretrained(d)
    assert type(loaded) is type(model) and loaded.config == model.config
    mel, face = torch.randn(2, 1, 80, 16), torch.rand(2, 6, 96, 96)
    with torch.no_grad():
        if kind == "generator":
            small = torch.rand(2, 6, 12, 12)
            a, b = model(mel, small), loaded(mel, small)
            assert a.shape == (2, 3, 12, 12)
        elif kind == "syncnet":
            window = torch.rand(2, 15, 48, 96)
            a, b = torch.cat(model(mel, window), 1), torch.cat(loaded(mel, window), 1)
        else:
            a, b = model(face[:, :3]), loaded(face[:, :3])
    assert torch.equal(a, b)


def test_our_format_through_load_generator_checks_kind_and_size(tmp_path, seeded):
    d = save_pretrained(build_model("syncnet", 96), tmp_path / "sync")
    assert load_syncnet(str(d), size=96).config.img_size == 96
    with pytest.raises(UserFacingError, match="holds a syncnet"):
        load_generator(str(d), size=96)


def test_384_without_weights_says_so_plainly():
    for spec in (None, ""):
        with pytest.raises(UserFacingError) as err:
            load_generator(spec, size=384)
        assert "no public weights" in str(err.value) and "DH_WAV2LIP384_CHECKPOINT" in str(err.value)
        assert "python -m wav2lip384.train generator --size 384" in str(err.value)
    ok, message = weights_status(None, 384)
    assert not ok and message == NO_384_WEIGHTS


def test_offline_hub_fails_fast_and_clearly():
    start = time.monotonic()
    with pytest.raises(UserFacingError, match="not reachable") as err:
        load_generator("someone/wav2lip384-weights", size=384)  # HF_HUB_OFFLINE=1 in tests
    assert "no public weights" in str(err.value)
    with pytest.raises(UserFacingError, match="not reachable.*wav2lip_gan.pth"):
        load_generator(None, size=96)  # the default camenduru/Wav2Lip file
    assert time.monotonic() - start < 5.0
    ok, message = weights_status(None, 96)
    assert not ok and "not reachable" in message


def test_weights_status_sees_local_files_without_loading(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert weights_status(str(f), 96) == (True, f"Wav2Lip-96 generator weights: local {f}")
    for missing in (str(tmp_path / "nope.pth"), "checkpoints/nope.pth"):
        ok, message = weights_status(missing, 384)
        assert not ok and "nothing usable" in message
