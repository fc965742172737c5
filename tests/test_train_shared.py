"""One real video -> preprocessing -> SyncNet -> generator (issue 16's "done when", at tiny scale).

A single recording gets a validation split by clip (its last clip in time), the trainer logs that split, and
the generator's sync-loss schedule says at every evaluation whether the loss is on and why; if it never
turned on, the run ends with a warning instead of silence. Tiny 32 px models keep it to about a minute.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import missing_shared

from wav2lip384.train import preprocess as pp
from wav2lip384.train import tiny
from wav2lip384.train.generator import GeneratorTask, GeneratorTrainConfig
from wav2lip384.train.loop import TrainConfig, Trainer
from wav2lip384.train.syncnet import SyncNetTask, SyncNetTrainConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_one_video_run_logs_its_validation_split_and_the_sync_schedule(shared_data, tmp_path):
    from wav2lip384 import faces

    video = shared_data / "video" / "sadtalker_WDA_KatieHill_000.mp4"
    if not video.is_file():
        missing_shared(video)
    data = tmp_path / "data"
    report = pp.preprocess([video], data, pp.PreprocessConfig(size=tiny.TINY_SIZE, max_clip_s=3.0,
                                                              detect_max_side=320), faces.build_detector())
    assert report["split"]["by"] == "clip" and report["split"]["val"]["clips"] >= 1
    assert report["split"]["train"]["clips"] >= 1
    manifest = json.loads((data / "manifest.json").read_text())
    val_starts = [c["start_s"] for c in manifest["clips"] if c["split"] == "val"]
    train_starts = [c["start_s"] for c in manifest["clips"] if c["split"] == "train"]
    assert min(val_starts) > max(train_starts)  # validation = the later speech

    torch.manual_seed(0)
    sync = SyncNetTask(SyncNetTrainConfig(data=str(data), size=tiny.TINY_SIZE, lr=1e-3,
                                          model=tiny.tiny_syncnet_config().to_dict()))
    Trainer(sync, TrainConfig(out_dir=str(tmp_path / "sync"), max_steps=20, batch_size=8, eval_every=10,
                              val_samples=8), log=lambda m: None).fit()

    lines: list[str] = []
    gen = GeneratorTask(GeneratorTrainConfig(data=str(data), syncnet=str(tmp_path / "sync" / "last.pt"),
                                             size=tiny.TINY_SIZE, model=tiny.tiny_generator_config().to_dict()))
    res = Trainer(gen, TrainConfig(out_dir=str(tmp_path / "gen"), max_steps=10, batch_size=4, eval_every=5,
                                   val_samples=8, log_every=5), log=lines.append).fit()
    assert any(ln.startswith("data: validation 1 clips") and "split by clip" in ln for ln in lines), lines
    assert any(ln.startswith("schedule: sync-loss weight 0.0 until") for ln in lines), lines
    decisions = [ln for ln in lines if ln.startswith("schedule at step")]
    assert len(decisions) == 2  # steps 5 and 10
    if gen.sync_enabled:
        assert "turned on at step" in gen.sync_reason
    else:  # says why not, and warns
        assert ">= 0.75" in decisions[-1]
        assert any("never turned on" in w for w in res.warnings)
