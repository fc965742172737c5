"""Loading the original checkpoint format, our safetensors format, and clear errors when weights are missing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from common.errors import UserFacingError
from wav2lip384.models import build_model
from wav2lip384.models.config import GeneratorConfig, conv, deconv
from wav2lip384.weights import (
    from_pretrained,
    generator_status,
    how_to_get,
    load_generator,
    load_state_dict_file,
    load_syncnet,
    save_pretrained,
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
    model = load_generator("wav2lip96", str(path)) if kind == "generator" else load_syncnet(str(path), size=96)
    assert not model.training
    own = model.state_dict()
    for name in ("audio_encoder.0.conv_block.0.weight", "audio_encoder.0.conv_block.1.running_var"):
        torch.testing.assert_close(own[name], sd[name])
    assert set(load_state_dict_file(path)) == set(reference_shapes[key])  # prefixes stripped


def test_checkpoint_of_the_wrong_size_is_reported_clearly(tmp_path, reference_shapes):
    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": _fake_checkpoint(reference_shapes["wav2lip96_generator"])}, path)
    with pytest.raises(UserFacingError, match="missing.*unexpected.*shape mismatch.*96 vs 384"):
        load_generator("paper384", str(path))


def test_not_a_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not a pickle")
    with pytest.raises(UserFacingError, match="bad.pth.*DH_WAV2LIP96_CHECKPOINT"):
        load_generator("wav2lip96", str(bad))


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
        load_generator("wav2lip96", str(d))


def test_384_without_weights_says_so_plainly():
    for model, spec in (("paper384", None), ("384", ""), (384, None)):
        with pytest.raises(UserFacingError) as err:
            load_generator(model, spec)
        assert "no public weights" in str(err.value) and "DH_WAV2LIP384_CHECKPOINT" in str(err.value)
        assert "python -m wav2lip384.train generator --size 384" in str(err.value)
    st = generator_status("384")
    assert not st.available and st.message == how_to_get("paper384")


def test_offline_hub_fails_fast_and_clearly():
    start = time.monotonic()
    with pytest.raises(UserFacingError, match="not reachable") as err:
        load_generator("paper384", "someone/wav2lip384-weights")  # HF_HUB_OFFLINE=1 in tests
    assert "no public weights" in str(err.value)
    with pytest.raises(UserFacingError, match="not reachable.*wav2lip_gan.pth.*DH_WAV2LIP96_CHECKPOINT"):
        load_generator("wav2lip96")  # the default camenduru/Wav2Lip file
    assert time.monotonic() - start < 5.0
    st = generator_status(96)
    assert not st.available and "not reachable" in st.message


def test_generator_status_sees_local_files_without_loading(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    st = generator_status(96, str(f))
    assert st.available and st.where == "local" and st.message == f"Wav2Lip 96 weights (wav2lip96): local {f}"
    for missing in (str(tmp_path / "nope.pth"), "checkpoints/nope.pth"):
        st = generator_status(384, missing)
        assert not st.available and "nothing usable" in st.message


# ------------------------------------------------------------------------------------------------------------
# Loading by registry id: public .pth formats, the safetensors copy, downloads, status
# ------------------------------------------------------------------------------------------------------------
def _public_objects(sd: dict) -> dict:
    """The layouts public Wav2Lip-family checkpoints come in, built from one state dict."""
    prefixed = {"module." + k: v for k, v in sd.items()}
    return {
        "top_level": sd,
        "state_dict_module": {"state_dict": prefixed},
        "with_optimizer": {"state_dict": prefixed, "global_step": 123456, "global_epoch": 7,
                           "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}},
                                         "param_groups": [{"lr": 1e-4, "params": [0]}]}},
    }


def test_state_dict_from_every_public_layout_tiny():
    """The format logic on a few tiny tensors: same tensors out of each layout, non-tensors ignored."""
    from wav2lip384.weights import state_dict_from_object

    sd = {"a.weight": torch.ones(2, 3), "a.bias": torch.zeros(2), "bn.num_batches_tracked": torch.tensor(5)}
    for name, obj in _public_objects(sd).items():
        got = state_dict_from_object(obj, name)
        assert set(got) == set(sd), name
        assert all(torch.equal(got[k], sd[k]) for k in sd), name
    with pytest.raises(UserFacingError, match="no tensors"):
        state_dict_from_object({"global_step": 3}, "steps.pth")
    with pytest.raises(UserFacingError, match="training checkpoint"):
        state_dict_from_object({"models": {}, "task": "generator"}, "last.pt")


@pytest.fixture(scope="module")
def gen96_and_files(tmp_path_factory):
    """Random wav2lip96 weights saved in each public layout (.pth), once for the module."""
    torch.manual_seed(3)
    gen = build_model("generator", 96).eval()
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    d = tmp_path_factory.mktemp("public96")
    files = {}
    for name, obj in _public_objects(gen.state_dict()).items():
        files[name] = d / f"{name}.pth"
        torch.save(obj, files[name])
    return gen, files


def _same_output(a, b, size=96):
    g = torch.Generator().manual_seed(0)
    mel, faces = torch.randn(2, 1, 80, 16, generator=g), torch.rand(2, 6, size, size, generator=g)
    with torch.inference_mode():
        return float((a(mel, faces) - b(mel, faces)).abs().max())


@pytest.mark.parametrize("layout", ["top_level", "state_dict_module", "with_optimizer"])
def test_public_pth_layouts_load_by_model_id(gen96_and_files, layout, one_torch_thread):
    gen, files = gen96_and_files
    loaded = load_generator("96", files[layout])  # alias of wav2lip96
    assert not loaded.training and loaded.config == gen.config
    assert _same_output(gen, loaded) < 1e-5
    info = loaded.load_info
    assert info.model == "wav2lip96" and info.source_format == "pth" and not info.cache_path  # no cache_dir given
    assert info.source_bytes == files[layout].stat().st_size and info.total_s >= info.read_s >= 0


def test_first_load_writes_a_safetensors_copy_later_loads_read_it(gen96_and_files, tmp_path, one_torch_thread):
    from safetensors.torch import load_file

    gen, files = gen96_and_files
    src = tmp_path / "wav2lip_gan.pth"
    src.write_bytes(files["with_optimizer"].read_bytes())
    cache = tmp_path / "weights-cache"
    first = load_generator("wav2lip96", src, cache_dir=cache)
    a = first.load_info
    assert a.wrote_cache and not a.from_cache and a.convert_s > 0
    copy = Path(a.cache_path)
    assert copy.parent == cache and copy.suffix == ".safetensors" and a.cache_bytes == copy.stat().st_size
    assert set(load_file(str(copy))) == set(gen.state_dict())  # weights only: no optimizer, no step
    second = load_generator("wav2lip96", src, cache_dir=cache)
    b = second.load_info
    assert b.from_cache and not b.wrote_cache and b.cache_path == a.cache_path
    assert _same_output(gen, second) < 1e-5
    # a changed source (same name) is converted again and its old copy removed
    torch.manual_seed(9)
    other = build_model("generator", 96).eval()
    time.sleep(0.01)
    torch.save({"state_dict": other.state_dict(), "global_step": 1}, src)
    third = load_generator("wav2lip96", src, cache_dir=cache)
    assert third.load_info.wrote_cache and third.load_info.cache_path != a.cache_path
    assert not copy.exists() and len(list(cache.glob("*.safetensors"))) == 1
    assert _same_output(other, third) < 1e-5 and _same_output(gen, third) > 1e-3
    assert not list(cache.glob(".*.tmp"))  # no temporary files left


def test_a_misfit_names_the_model_and_the_variable(gen96_and_files, tmp_path):
    _, files = gen96_and_files
    with pytest.raises(UserFacingError) as err:
        load_generator("wav2lip256", files["top_level"], cache_dir=tmp_path / "c")
    msg = str(err.value)
    assert "wav2lip256" in msg and "missing" in msg and "DH_WAV2LIP256_CHECKPOINT" in msg
    assert not list((tmp_path / "c").glob("*")) if (tmp_path / "c").exists() else True  # nothing cached


def _fake_hub(monkeypatch, tmp_path, files: dict, fail: Exception | None = None):
    """huggingface_hub.hf_hub_download replaced: nothing cached; a "download" drives the given tqdm class."""
    import huggingface_hub

    from common import hub

    calls = []

    def fake(repo_id, filename, *, revision=None, local_files_only=False, tqdm_class=None, **kw):
        calls.append((repo_id, filename, local_files_only))
        if local_files_only:
            raise FileNotFoundError("not cached")
        if fail is not None:
            raise fail
        src = files[(repo_id, filename)]
        total = src.stat().st_size
        if tqdm_class is not None:
            with tqdm_class(total=total, desc=filename) as bar:
                for _ in range(4):
                    bar.update(total // 4)
                bar.update(total - 4 * (total // 4))
        return str(src)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setattr("wav2lip384.weights.cache.hub_reachable", lambda: True)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    return calls


def test_download_reports_progress_and_loads(gen96_and_files, monkeypatch, tmp_path, one_torch_thread):
    gen, files = gen96_and_files
    _fake_hub(monkeypatch, tmp_path, {("camenduru/Wav2Lip", "checkpoints/wav2lip_gan.pth"): files["with_optimizer"]})
    seen = []
    loaded = load_generator("wav2lip96", None, progress=lambda done, total: seen.append((done, total)))
    total = files["with_optimizer"].stat().st_size
    assert seen[0] == (0, total) and seen[-1] == (total, total) and len(seen) >= 5
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # monotone
    assert _same_output(gen, loaded) < 1e-5


def test_download_failure_is_one_clear_message(monkeypatch, tmp_path):
    _fake_hub(monkeypatch, tmp_path, {}, fail=ConnectionError("connection reset by peer"))
    with pytest.raises(UserFacingError) as err:
        load_generator("livetalking384")
    msg = str(err.value)
    for part in ("Pypa/wav2lip384", "wav2lip384.pth", "DH_LIVETALKING384_CHECKPOINT", "ConnectionError"):
        assert part in msg
    assert err.value.__cause__ is not None


def test_generator_status_never_downloads(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("status downloaded"))
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    st = generator_status("wav2lip256", f)
    assert st.available and st.where == "local" and st.env_var == "DH_WAV2LIP256_CHECKPOINT"
    st = generator_status("livetalking384")  # offline (tests): default Hub file not cached
    assert not st.available and st.where == "missing"
    assert "Pypa/wav2lip384" in st.message and "DH_LIVETALKING384_CHECKPOINT" in st.message
    st = generator_status("384")
    assert not st.available and st.model == "paper384" and "DH_WAV2LIP384_CHECKPOINT" in st.message
    st = generator_status("wav2lip96", tmp_path / "absent.pth")
    assert not st.available and "nothing usable" in st.message
    monkeypatch.setattr("wav2lip384.weights.load.hub_reachable", lambda: True)
    st = generator_status("wav2lip256")
    assert st.available and st.where == "hub" and "first use" in st.message
    with pytest.raises(UserFacingError, match="Unknown lip-sync model"):
        generator_status("wav2lip512")


def _check_against_reference(model, tensors: dict):
    own = model.state_dict()
    assert list(own) == list(tensors)  # key for key, in the public order
    assert all(list(own[k].shape) == list(v) for k, v in tensors.items())


@pytest.mark.parametrize("model_id,key", [
    ("wav2lip256", "wav2lip_v2_256"),
    pytest.param("livetalking384", "livetalking_wav2lip384_sam", marks=pytest.mark.slow),  # 0.7 GB file
])
def test_public_family_in_its_published_layout(shared_dir, tmp_path, model_id, key, one_torch_thread):
    """Random weights with the public tensor table, saved as the public file is ({"state_dict" with `module.`
    prefixes, "optimizer", "global_step"}): loaded key for key, copied to safetensors, read back."""
    import json

    ref = json.loads((shared_dir / "reference" / "community_generators_state_dict_shapes.json").read_text())[key]
    sd = _fake_checkpoint(ref["tensors"])
    obj = _public_objects(sd)["with_optimizer"]
    path = tmp_path / Path(ref["hub"]["file"]).name
    torch.save(obj, path)
    gen = load_generator(model_id, path, cache_dir=tmp_path / "cache")
    _check_against_reference(gen, ref["tensors"])
    assert sum(p.numel() for p in gen.parameters()) == ref["n_params"]
    assert gen.load_info.wrote_cache and gen.load_info.cache_bytes < path.stat().st_size
    again = load_generator(model_id, path, cache_dir=tmp_path / "cache")
    assert again.load_info.from_cache
    for name in list(sd)[:3] + list(sd)[-3:]:
        torch.testing.assert_close(again.state_dict()[name], sd[name])


def test_inference_modules_do_not_import_the_trainers():
    import subprocess
    import sys

    code = ("import sys, wav2lip384.weights, wav2lip384.evaluate, wav2lip384.render.pipeline, "
            "wav2lip384.infer, wav2lip384.bench.suite; bad = [m for m in sys.modules if m.startswith('wav2lip384.train')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_training_checkpoint_conversion_lives_in_weights():
    from wav2lip384 import weights
    from wav2lip384.train import export

    assert export.load_expert is weights.load_expert
    assert export.model_from_checkpoint is weights.model_from_checkpoint


def test_first_load_keeps_the_sources_sha256_in_the_copy_so_later_starts_need_not_read_it(tmp_path, monkeypatch,
                                                                                       seeded):
    """A .pth is hashed once, at its first load (when its safetensors copy is written); the copy's metadata then
    gives the hash to the Status panel and to later loads without reading the file again."""
    import hashlib

    from wav2lip384 import weights as w

    monkeypatch.setattr(w.load, "generator_config", lambda model: tiny_generator_config())  # a 12x12 "wav2lip96"
    gen = build_model("generator", tiny_generator_config()).eval()
    src = tmp_path / "mine.pth"
    torch.save(_public_objects(gen.state_dict())["with_optimizer"], src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    copies = tmp_path / "weights"
    before = w.weights_provenance("wav2lip96", src, hashes=w.FileHashes(), cache_dir=copies, hash_now_bytes=0)
    assert before.sha256 == "" and before.pending == "sha256 computed when first loaded"
    first = load_generator("wav2lip96", src, cache_dir=copies).load_info
    assert first.wrote_cache and first.source_sha256 == sha
    monkeypatch.setattr(w.load, "file_sha256", lambda p: pytest.fail("hashed the source again"))
    again = load_generator("wav2lip96", src, cache_dir=copies).load_info
    assert again.from_cache and again.source_sha256 == sha and again.hash_s == 0
    after = w.weights_provenance("wav2lip96", src, hashes=w.FileHashes(), cache_dir=copies, hash_now_bytes=0)
    assert after.sha256 == sha and after.describe() == f"your local weights: {src} · sha256 {sha}"
