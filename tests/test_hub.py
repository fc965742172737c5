"""Publishing trained weights: the folder `push` uploads is what the inference side's from_pretrained loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import UserFacingError
from wav2lip384 import weights
from wav2lip384.train import publish as hub
from wav2lip384.train import tiny
from wav2lip384.train.loop import TrainConfig, Trainer
from wav2lip384.train.syncnet import SyncNetTask, SyncNetTrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SyncNet trained for 2 steps on synthetic clips: (run folder, result)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    clips = tiny.write_synthetic_clips(tmp_path_factory.mktemp("clips"), n_frames=30)
    out = tmp_path_factory.mktemp("run")
    task = SyncNetTask(SyncNetTrainConfig(data=str(clips), size=32, model=tiny.tiny_syncnet_config().to_dict()))
    res = Trainer(task, TrainConfig(out_dir=str(out), max_steps=2, batch_size=4, eval_every=2, val_samples=4),
                  log=lambda m: None).fit()
    torch.set_num_threads(old)
    return out, res


def _check_folder(folder: Path, steps: int):
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "training.json", "README.md"}
    model = weights.from_pretrained(folder)  # what the inference side does with the pushed repo
    assert type(model).__name__ == "SyncNet"
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "lip-sync" in card
    assert f"Optimizer steps: {steps}" in card
    assert "Train: 3 clips, 90 frames" in card and "Validation (other source videos): 1 clips" in card
    assert "Last validation metrics" in card and "| step | loss | acc | chance_loss |" in card
    assert "chance" in card  # the card says whether validation beat chance
    return model


def test_stage_from_training_checkpoint_loads_with_from_pretrained(trained, tmp_path):
    run, res = trained
    folder = hub.stage(run / "last.pt", tmp_path / "stage", "me/syncnet-test")
    model = _check_folder(folder, 2)
    ref = torch.load(run / "last.pt", weights_only=True)["models"]["syncnet"]
    assert all(torch.equal(model.state_dict()[k], ref[k]) for k in ref)  # the trained weights, unchanged
    assert 'from_pretrained("me/syncnet-test")' in (folder / "README.md").read_text()


def test_stage_from_export_folder(trained, tmp_path):
    run, res = trained
    _check_folder(hub.stage(res.exported, tmp_path / "stage"), 2)


def test_push_offline_fails_clearly_and_keeps_the_folder(trained, tmp_path):
    run, _ = trained
    with pytest.raises(UserFacingError, match="not reachable") as err:
        hub.push(run / "last.pt", "me/syncnet-test", staging_parent=tmp_path)
    staged = Path(str(err.value).split("ready at ")[1].split(";")[0])
    assert (staged / "model.safetensors").is_file()


def test_push_uses_hfapi_create_repo_and_upload_folder(trained, tmp_path, monkeypatch):
    """The upload path with HfApi's network calls replaced by a recorder (the Hub is unreachable here)."""
    import huggingface_hub

    import common.hub

    calls = []

    class Recorder:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw["repo_id"], sorted(p.name for p in Path(kw["folder_path"]).iterdir())))
            return type("CommitInfo", (), {"oid": "abc123"})()

    monkeypatch.setattr(common.hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    run, _ = trained
    out = hub.push(run / "last.pt", "me/syncnet-test", staging_parent=tmp_path)
    assert out["commit"] == "abc123"
    assert calls[0] == ("create_repo", "me/syncnet-test", {"private": False, "exist_ok": True})
    assert calls[1] == ("upload_folder", "me/syncnet-test", ["README.md", "config.json", "model.safetensors",
                                                               "training.json"])


@pytest.mark.slow
def test_cli_push_offline_exits_2(trained, tmp_path):
    run, _ = trained
    proc = subprocess.run([sys.executable, "-m", "wav2lip384.train.publish", "push", "--checkpoint", str(run / "last.pt"),
                           "--repo", "me/x"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)})
    assert proc.returncode == 2 and "not reachable" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "wav2lip384.train.publish", "stage", "--checkpoint", str(run / "last.pt"),
                           "--out", str(tmp_path / "s")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "model.safetensors" in json.loads(proc.stdout)["files"]


def test_hub_reachability_is_probed_again_after_a_failure(monkeypatch):
    from common import hub

    answers = iter([False, True])
    calls = []

    def fake_probe(timeout_s):
        calls.append(timeout_s)
        return next(answers)

    monkeypatch.setattr(hub, "_probe_dns", fake_probe)
    probe = hub._Reachability(retry_after_s=0.05)
    assert probe() is False and probe() is False and len(calls) == 1  # a failure is kept a little while...
    import time

    time.sleep(0.06)
    assert probe() is True and probe() is True and len(calls) == 2  # ...then probed again; success is kept
