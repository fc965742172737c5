"""The Status panel says which lip-sync weights each model uses: the published Hub file (repo, file, commit,
sha256) or the visitor's own (path, sha256), and flags a Hub file that is not the published default.

A fake Hugging Face cache in tmp (the layout huggingface_hub writes: ``models--owner--name/blobs/<etag>``,
``snapshots/<commit>/<file>`` linking to the blob, ``refs/main`` holding the commit) stands in for downloads.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
import torch

from common.settings import Settings
from presenters import details_markdown, status_markdown
from services import AppServices
from services.status import model_rows
from wav2lip384.models import registry
from wav2lip384.weights import FileHashes, hub_blob_sha256, hub_cached_file, weights_provenance

REV = "0123456789abcdef0123456789abcdef01234567"  # a commit id as the Hub gives it (40 hex)


def _public_checkpoint(seed: int) -> bytes:
    """A tiny random 'generator' in the public Wav2Lip layout ({"state_dict": module.-prefixed tensors, step})."""
    g = torch.Generator().manual_seed(seed)
    sd = {"module.conv.weight": torch.randn(4, 6, 3, 3, generator=g), "module.conv.bias": torch.randn(4, generator=g)}
    buf = io.BytesIO()
    torch.save({"state_dict": sd, "global_step": 1000}, buf)
    return buf.getvalue()


def _cache_hub_file(cache: Path, spec: str, data: bytes, *, lfs: bool = True, rev: str = REV) -> str:
    """Put ``data`` into the fake Hub cache as ``owner/name:path/file``; returns the blob's name (the Hub's etag:
    sha256 for an LFS file, the git blob id for a small file kept in git)."""
    repo, _, filename = spec.partition(":")
    root = cache / ("models--" + repo.replace("/", "--"))
    etag = (hashlib.sha256(data) if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data)).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / etag).write_bytes(data)
    link = root / "snapshots" / rev / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(root / "blobs" / etag, link.parent))  # relative, as huggingface_hub links
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    return etag


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """huggingface_hub's cache folder pointed at an empty tmp folder (read at call time by its functions)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _rows(tmp_path, **checkpoints) -> dict:
    # every model off unless a test names its weights variable (e.g. DH_WAV2LIP96_CHECKPOINT=...)
    settings = Settings(cache_dir=str(tmp_path / "cache")).with_weights(
        {**dict.fromkeys(registry.weights_variables(), ""), **checkpoints})
    svc = AppServices(settings, tmp_parent=tmp_path / "tmp")
    try:
        return {it.part: it for it in model_rows(svc)}
    finally:
        svc.close()


def test_status_names_the_published_hub_file_its_commit_and_sha256(hf_cache, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("status downloaded"))
    default = registry.get("wav2lip256").default_weights  # Kedreamix/Linly-Talker:checkpoints/wav2lipv2.pth
    data = _public_checkpoint(0)
    _cache_hub_file(hf_cache, default, data)
    row = _rows(tmp_path, DH_WAV2LIP256_CHECKPOINT=default)["Lip-sync: Wav2Lip 256 (community)"]
    sha = hashlib.sha256(data).hexdigest()
    assert row.ok and row.active == "ready" and row.fix == ""
    assert row.details.startswith(f"published weights: Kedreamix/Linly-Talker : checkpoints/wav2lipv2.pth "
                                  f"@ {REV[:7]} · sha256 {sha} · licence: MIT")
    assert "NOT the published default" not in row.details
    # the table stays short; the provenance is in the details text only
    table = status_markdown([row])
    assert sha not in table and "| Lip-sync: Wav2Lip 256 (community) | ✓ ready | — |" in table
    assert f"sha256 {sha}" in details_markdown([row])


def test_a_configured_hub_file_that_is_not_the_published_default_is_flagged(hf_cache, tmp_path):
    data = _public_checkpoint(1)
    _cache_hub_file(hf_cache, "someone/finetuned:wav2lip_gan_ft.pth", data)
    rows = _rows(tmp_path, DH_WAV2LIP96_CHECKPOINT="someone/finetuned:wav2lip_gan_ft.pth",
                 DH_WAV2LIP384_CHECKPOINT="someone/finetuned:wav2lip_gan_ft.pth")
    w96 = rows["Lip-sync: Wav2Lip 96"].details
    assert w96.startswith("Hub weights, NOT the published default (camenduru/Wav2Lip : checkpoints/wav2lip_gan.pth): "
                          f"someone/finetuned : wav2lip_gan_ft.pth @ {REV[:7]} · "
                          f"sha256 {hashlib.sha256(data).hexdigest()}")
    # paper384 has no published weights at all: any Hub file is the visitor's own, said so
    assert rows["Lip-sync: Paper 384 (your weights)"].details.startswith(
        "your Hub weights (none were published for this model): someone/finetuned : wav2lip_gan_ft.pth")


def test_status_gives_a_local_files_sha256_and_defers_a_large_one(tmp_path):
    data = _public_checkpoint(2)
    small = tmp_path / "mine.pth"
    small.write_bytes(data)
    row = _rows(tmp_path, DH_WAV2LIP96_CHECKPOINT=str(small))["Lip-sync: Wav2Lip 96"]
    sha = hashlib.sha256(data).hexdigest()
    assert row.ok and row.details.startswith(f"your local weights: {small} · sha256 {sha} · licence of the published "
                                             "weights (yours may differ): research/non-commercial")
    # a large file is not read on a Status refresh: its hash comes with its first load
    prov = weights_provenance("wav2lip96", small, hashes=FileHashes(), hash_now_bytes=10)
    assert prov.sha256 == "" and prov.describe() == f"your local weights: {small} · sha256 computed when first loaded"
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"not really tensors")
    prov = weights_provenance("paper384", folder, hashes=FileHashes())
    assert prov.path == str(folder / "model.safetensors")
    assert prov.sha256 == hashlib.sha256(b"not really tensors").hexdigest()


def test_unconfigured_missing_and_not_downloaded_weights_say_so(hf_cache, tmp_path):
    rows = _rows(tmp_path, DH_WAV2LIP96_CHECKPOINT=str(tmp_path / "gone.pth"),
                 DH_WAV2LIP256_CHECKPOINT=registry.get("wav2lip256").default_weights)
    assert rows["Lip-sync: Paper 384 (your weights)"].details.startswith("no weights configured")
    assert weights_provenance("wav2lip96", "not a/spec/at all").describe() == (
        "weights 'not a/spec/at all': neither a file nor a Hub repo")
    assert rows["Lip-sync: Wav2Lip 96"].details.startswith(f"your local weights: {tmp_path / 'gone.pth'} · nothing there")
    assert rows["Lip-sync: Wav2Lip 256 (community)"].details.startswith(
        "published weights: Kedreamix/Linly-Talker : checkpoints/wav2lipv2.pth · not downloaded yet")


def test_a_small_non_lfs_hub_file_gives_its_git_blob_id_and_its_sha256(hf_cache):
    data = b'{"not": "an LFS file"}'
    etag = _cache_hub_file(hf_cache, "someone/small:w.pth", data, lfs=False)
    prov = weights_provenance("wav2lip96", "someone/small:w.pth", hashes=FileHashes())
    assert prov.git_sha1 == etag and prov.sha256 == hashlib.sha256(data).hexdigest() and prov.revision == REV
    assert f"git blob sha1 {etag}" in prov.describe() and f"sha256 {prov.sha256}" in prov.describe()


def test_hub_cache_is_read_without_reading_the_file(hf_cache, monkeypatch):
    data = _public_checkpoint(3)
    sha = _cache_hub_file(hf_cache, "owner/name:checkpoints/deep/gen.pth", data)
    cached = hub_cached_file("owner/name", "checkpoints/deep/gen.pth")
    assert cached is not None and cached.revision == REV and cached.sha256 == sha and cached.git_sha1 == ""
    assert hub_blob_sha256(cached.path) == sha and hub_blob_sha256(hf_cache) == ""  # what a load records
    monkeypatch.setattr("wav2lip384.weights.provenance.file_sha256", lambda p: pytest.fail("hashed a Hub LFS file"))
    prov = weights_provenance("wav2lip96", "owner/name:checkpoints/deep/gen.pth", hashes=FileHashes())
    assert prov.sha256 == sha and prov.path == str(cached.path)
    assert hub_cached_file("owner/name", "absent.pth") is None and hub_cached_file("owner/other", "x.pth") is None


def test_file_hashes_hash_once_per_unchanged_file_and_stay_bounded(tmp_path, monkeypatch):
    import wav2lip384.weights.provenance as w

    calls = []
    real = w.file_sha256
    monkeypatch.setattr(w, "file_sha256", lambda p: calls.append(p) or real(p))
    hashes = FileHashes(max_entries=2)
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.bin")
        files[-1].write_bytes(bytes([i]) * 100)
    assert hashes.sha256(files[0]) == hashlib.sha256(bytes([0]) * 100).hexdigest()
    assert hashes.sha256(files[0]) == hashes.get(files[0]) and len(calls) == 1  # remembered
    files[0].write_bytes(b"changed")
    os.utime(files[0], ns=(1, 1))  # a new size and mtime: a new key
    assert hashes.get(files[0]) == "" and hashes.sha256(files[0]) == hashlib.sha256(b"changed").hexdigest()
    hashes.sha256(files[1])
    hashes.sha256(files[2])
    assert hashes.get(files[0]) == "" and hashes.get(files[2])  # least recently used dropped: at most 2 kept


def test_a_large_local_file_is_hashed_once_when_its_model_first_loads(tmp_path, monkeypatch):
    """Status never reads a large file; the catalogue hashes it when the model loads (a .safetensors source has
    no converted copy to carry the hash), and Status shows it from then on."""
    from types import SimpleNamespace

    import wav2lip384.render.pipeline
    from wav2lip384.weights import LoadInfo

    big = tmp_path / "big.safetensors"
    with open(big, "wb") as f:  # sparse: 65 MB on the page, nothing on the disk
        f.truncate(65 * 2**20)
    settings = Settings(cache_dir=str(tmp_path / "cache")).with_weights({"DH_WAV2LIP96_CHECKPOINT": str(big)})
    svc = AppServices(settings, tmp_parent=tmp_path / "tmp")
    try:
        assert model_rows(svc)[0].details.startswith(f"your local weights: {big} · sha256 computed when first loaded")
        loaded = SimpleNamespace(load_info=LoadInfo("wav2lip96", str(big), str(big), "safetensors", 65 * 2**20))
        monkeypatch.setattr(wav2lip384.render.pipeline.LipSyncPipeline, "from_pretrained", lambda **kw: loaded)
        monkeypatch.setattr(svc.models, "detector", lambda: None)
        monkeypatch.setattr(svc.models, "avatar_store", lambda: None)
        assert svc.models.pipeline("wav2lip96") is loaded
        sha = hashlib.sha256(bytes(65 * 2**20)).hexdigest()
        row = model_rows(svc)[0]
        assert row.active == "loaded" and row.details.startswith(f"your local weights: {big} · sha256 {sha}")
    finally:
        svc.close()


def test_lip_sync_scores_row_says_what_compare_can_score_without_loading_anything(tmp_path):
    from services.status import scores_row

    default = AppServices(Settings(cache_dir=str(tmp_path / "c1")), tmp_parent=tmp_path / "t1")
    off = AppServices(Settings(cache_dir=str(tmp_path / "c2"), syncnet_checkpoint=""), tmp_parent=tmp_path / "t2")
    try:
        row = scores_row(default)  # tests run offline (conftest): the Hub file is neither cached nor reachable
        assert not row.ok and row.active == "unavailable" and "Hub is not reachable" in row.details
        assert Settings().syncnet_checkpoint in row.details and "DH_" not in row.fix
        local = tmp_path / "syncnet_v2.model"
        local.write_bytes(b"x")
        default.scores.settings = Settings(syncnet_checkpoint=str(local))
        row = scores_row(default)
        assert row.ok and row.active == "loads at the first comparison" and str(local) in row.details
        row = scores_row(off)
        assert not row.ok and row.active == "unavailable" and "DH_SYNCNET_CHECKPOINT" in row.details
        assert "DH_" not in row.fix and "still show the videos" in row.fix
        assert any(r.part.startswith("Lip-sync scores") for r in default.status())
    finally:
        default.close()
        off.close()


def test_a_loaded_models_details_say_how_it_computes(tmp_path, monkeypatch):
    """Status -> Details names the precision and runtime chosen by measurement, once the model is loaded."""
    svc = AppServices(Settings(cache_dir=str(tmp_path / "c")), tmp_parent=tmp_path / "t")
    try:
        assert svc.models.precision("wav2lip96") == ""  # not loaded: nothing measured, nothing loaded to say so

        class Gen:
            precision = {"dtype": "fp32", "reason": "fp32 measured fastest within tolerance"}

        class Pipe:
            generator = Gen()

        monkeypatch.setitem(svc.models._pipes, "wav2lip96", Pipe())
        assert svc.models.precision("wav2lip96").startswith("fp32 (fp32 measured fastest")
        row = next(r for r in model_rows(svc) if "96" in r.part)
        assert "computes in fp32" in row.details
    finally:
        svc.close()


def test_start_up_log_names_a_weights_variable_no_model_reads(tmp_path):
    """A typo such as DH_WAV2LIP_96_CHECKPOINT is said once at start-up instead of being ignored silently."""
    from services.status import missing_parts

    settings = Settings(cache_dir=str(tmp_path / "c")).with_weights({"DH_WAV2LIP_96_CHECKPOINT": "/w/96"})
    svc = AppServices(settings, tmp_parent=tmp_path / "t")
    try:
        lines = missing_parts(svc)
        assert any(line.startswith("DH_WAV2LIP_96_CHECKPOINT is set but no lip-sync model reads it") and
                   "DH_WAV2LIP96_CHECKPOINT" in line for line in lines), lines
    finally:
        svc.close()
