"""Shapes and structure of the lip-sync networks (random weights; no checkpoint needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import missing_shared

from wav2lip384.models import build_model
from wav2lip384.models.config import DiscriminatorConfig, GeneratorConfig, SyncNetConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models():
    """Models built once per module (seeded), in eval mode: models[(kind, size)]."""
    cache = {}

    def get(kind: str, size: int):
        if (kind, size) not in cache:
            torch.manual_seed(size)
            cache[kind, size] = build_model(kind, size).eval()
        return cache[kind, size]

    return get


@pytest.mark.parametrize("kind,key", [("generator", "wav2lip96_generator"), ("syncnet", "syncnet96_color")])
def test_96_models_match_public_checkpoint_key_for_key(reference_shapes, kind, key):
    ours = {k: list(v.shape) for k, v in build_model(kind, 96).state_dict().items()}
    assert list(ours) == list(reference_shapes[key])  # same names, same order
    assert ours == reference_shapes[key]  # same shapes


COMMUNITY = {"wav2lip_v2_256": "wav2lip_v2_256", "livetalking384_sam": "livetalking_wav2lip384_sam"}


@pytest.fixture(scope="module")
def community_shapes(shared_dir):
    """Tensor names/shapes (in order), parameters and GFLOP/frame of the public 256 and 384+SAM generators."""
    ref = shared_dir / "reference" / "community_generators_state_dict_shapes.json"
    if not ref.is_file():
        missing_shared(ref)
    return json.loads(ref.read_text())


@pytest.mark.parametrize("arch", sorted(COMMUNITY))
def test_community_generators_match_public_checkpoints_key_for_key(community_shapes, arch):
    ref = community_shapes[COMMUNITY[arch]]
    model = build_model("generator", arch)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(ref["tensors"])  # same names, same order (sam.* first, audio_refine.* kept)
    assert ours == ref["tensors"]  # same shapes
    assert sum(p.numel() for p in model.parameters()) == ref["n_params"]


def test_for_arch_names_every_generator_and_for_size_stays_an_alias():
    assert GeneratorConfig.for_size(96) == GeneratorConfig.for_arch("wav2lip96")
    assert GeneratorConfig.for_size(384) == GeneratorConfig.for_arch("paper384")
    sam = GeneratorConfig.for_arch("livetalking384_sam")
    assert sam.sam_kernel == 7 and len(sam.unused_audio_refine) == 2 and sam.img_size == 384
    assert GeneratorConfig.for_arch("wav2lip_v2_256").sam_kernel == 0
    with pytest.raises(ValueError, match="livetalking384_sam"):
        GeneratorConfig.for_arch("wav2lip512")


def test_config_json_written_before_sam_existed_still_loads():
    d = GeneratorConfig.for_size(96).to_dict()
    del d["sam_kernel"], d["unused_audio_refine"]
    assert GeneratorConfig.from_dict(d) == GeneratorConfig.for_size(96)


@pytest.mark.parametrize("size", [96, 384])
def test_generator_shapes_per_frame_and_training_layout(models, seeded, size):
    g = models("generator", size)
    with torch.no_grad():
        out = g(torch.randn(1, 1, 80, 16), torch.rand(1, 6, size, size))
        assert out.shape == (1, 3, size, size)
        assert 0.0 <= out.min() and out.max() <= 1.0  # sigmoid
        if size == 96:  # training layout (B, T, ...) like the original; the 384 one is the same code path
            audio, faces = torch.randn(1, 2, 1, 80, 16), torch.rand(1, 6, 2, size, size)
            out5 = g(audio, faces)
            assert out5.shape == (1, 3, 2, size, size)
            torch.testing.assert_close(out5[:, :, 1], g(audio[:, 1], faces[:, :, 1]), rtol=1e-5, atol=1e-6)


def test_generator_384_skip_sizes_follow_the_paper(models, seeded):
    g = models("generator", 384)
    with torch.no_grad():
        feats = g.encode_faces(torch.rand(1, 6, 384, 384))
    assert [f.shape[-1] for f in feats] == [384, 192, 96, 48, 24, 12, 6, 3, 1]  # 9 encoder blocks
    assert [f.shape[1] for f in feats] == [8, 16, 32, 64, 128, 256, 512, 512, 512]
    assert len(g.face_decoder_blocks) == 9
    assert g.encode_audio(torch.zeros(1, 1, 80, 16)).shape == (1, 512, 1, 1)


def test_encode_faces_then_decode_equals_forward_and_broadcasts_one_face(models, seeded):
    g = models("generator", 96)
    mel = torch.randn(3, 1, 80, 16)
    face = torch.rand(1, 6, 96, 96)
    with torch.no_grad():
        full = g(mel, face.expand(3, -1, -1, -1))
        parts = g.decode(g.encode_audio(mel), g.encode_faces(face))  # face encoded once, batch 1
    assert parts.shape == (3, 3, 96, 96)
    torch.testing.assert_close(parts, full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [96, 384])
def test_syncnet_shapes_and_unit_embeddings(models, seeded, size):
    s = models("syncnet", size)
    assert SyncNetConfig.for_size(size).face_input_shape == (15, size // 2, size)
    with torch.no_grad():
        a, f = s(torch.randn(2, 1, 80, 16), torch.rand(2, 15, size // 2, size))
    assert a.shape == f.shape == (2, 512)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2))
    p = s.sync_probability(a, f)
    assert p.shape == (2,) and bool(((p >= 0) & (p <= 1)).all())


def test_syncnet_384_has_the_appendix_22_convolutions():
    cfg = SyncNetConfig.for_size(384)
    assert len(cfg.face_encoder) == 22
    assert [s.cout for s in cfg.face_encoder][:2] == [16, 32]


@pytest.mark.parametrize("size", [96, 384])
def test_discriminator_shapes(models, seeded, size):
    d = models("discriminator", size)
    with torch.no_grad():
        p = d(torch.rand(1, 3, size, size))
        p5 = d(torch.rand(1, 3, 2, size, size))  # training layout (B, 3, T, S, S)
    assert p.shape == (1, 1) and p5.shape == (2, 1)
    assert bool(((p >= 0) & (p <= 1)).all())


@pytest.mark.parametrize("cls", [GeneratorConfig, SyncNetConfig, DiscriminatorConfig])
def test_configs_round_trip_through_dicts(cls):
    for size in (96, 384):
        cfg = cls.for_size(size)
        assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    if cls is GeneratorConfig:  # every named architecture, SAM and the stored-but-unused layers included
        for name in ("wav2lip_v2_256", "livetalking384_sam"):
            cfg = cls.for_arch(name)
            assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_unknown_size_is_rejected():
    with pytest.raises(ValueError, match="96 or 384"):
        GeneratorConfig.for_size(256)


@pytest.mark.slow
def test_summary_cli_prints_params_flops_and_tensors():
    proc = subprocess.run([sys.executable, "-m", "wav2lip384.models", "--summary"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300, check=True)
    out = json.loads(proc.stdout)
    report = out["models"]
    generators = {f"generator_{m}" for m in ("wav2lip96", "wav2lip256", "livetalking384", "paper384")}
    assert set(report) == generators | {f"{k}_{s}" for k in ("syncnet", "discriminator") for s in (96, 384)}
    assert [r["id"] for r in out["generators"]] == ["wav2lip96", "wav2lip256", "livetalking384", "paper384"]
    g96, g384 = report["generator_wav2lip96"], report["generator_paper384"]
    assert g96["parameters"] == sum(torch.Size(s).numel() for k, s in g96["state_dict"].items()
                                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    # both of the paper's sizes cost roughly the same per frame (the paper's real-time claim): 7-9 GFLOPs
    assert 7.0 < g96["gflops_per_frame"] < 9.0 and 7.0 < g384["gflops_per_frame"] < 9.0
    assert g384["gflops_per_frame_cached_face"] < g384["gflops_per_frame"]
    table = {r["id"]: r for r in out["generators"]}
    assert table["livetalking384"]["params_m"] == 172.7 and table["wav2lip256"]["params_m"] == 53.6


def test_registry_numbers_are_those_of_the_built_models():
    """Every registry entry's architecture builds, at its input size, with the parameters and GFLOP/frame it
    states (counted on the meta device: nothing is allocated)."""
    from wav2lip384.models import registry
    from wav2lip384.models.__main__ import summarize

    for mid in registry.ids():
        spec = registry.get(mid)
        entry = summarize("generator", spec.arch, with_tensors=False)
        assert entry["size"] == spec.img_size == spec.config().img_size, mid
        assert round(entry["parameters"] / 1e6, 1) == spec.params_m, mid
        assert entry["gflops_per_frame"] == pytest.approx(spec.gflops, rel=0.01), mid


def test_importing_the_package_stays_light():
    code = ("import sys, wav2lip384; assert 'torch' not in sys.modules and 'librosa' not in sys.modules; "
            "assert callable(wav2lip384.mel_windows)")
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True, timeout=60)


def test_residual_layers_are_those_of_the_original():
    """Residual flags are invisible in a state dict, so pin them: the original Wav2Lip has 10 residual
    face-encoder layers, 7 in the generator's audio encoder, 11 in the decoder; SyncNet 9 + 8."""
    g, s = GeneratorConfig.for_size(96), SyncNetConfig.for_size(96)
    count = lambda specs: sum(x.residual for x in specs)  # noqa: E731
    assert [count(b) for b in g.encoder_blocks] == [0, 2, 3, 2, 2, 1, 0]
    assert count(g.audio_encoder) == 7
    assert [count(b) for b in g.decoder_blocks] == [0, 1, 2, 2, 2, 2, 2]
    assert count(s.face_encoder) == 9 and count(s.audio_encoder) == 8
