"""Training: tiny-config steps on CPU for both trainers, exact resume, and a 2-process DDP (gloo) run.

Tiny 32px architectures of the project's own model classes (``wav2lip384.train.tiny``) on synthetic clips in
the preprocessing layout; the real 96/384 models use the same code paths, only bigger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wav2lip384.train import tiny
from wav2lip384.train.generator import GeneratorTask, GeneratorTrainConfig
from wav2lip384.train.loop import TrainConfig, Trainer, collate, load_checkpoint, to_device
from wav2lip384.train.syncnet import SyncNetTask, SyncNetTrainConfig

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return tiny.write_synthetic_clips(tmp_path_factory.mktemp("clips"), n_train=3, n_val=1, n_frames=40)


@pytest.fixture(scope="module")
def expert(clips, tmp_path_factory) -> Path:
    """A (barely) trained tiny SyncNet checkpoint for the generator's sync loss."""
    out = tmp_path_factory.mktemp("expert")
    torch.manual_seed(0)
    Trainer(_sync_task(clips), TrainConfig(out_dir=str(out), max_steps=2, batch_size=4, eval_every=0,
                                           val_samples=0), log=lambda m: None).fit()
    return out / "last.pt"


def _sync_task(clips, lr=1e-4) -> SyncNetTask:
    return SyncNetTask(SyncNetTrainConfig(data=str(clips), size=32, lr=lr, model=tiny.tiny_syncnet_config().to_dict()))


def _gen_task(clips, expert, gan=False, lr=1e-4) -> GeneratorTask:
    return GeneratorTask(GeneratorTrainConfig(
        data=str(clips), syncnet=str(expert), size=32, gan=gan, lr=lr, model=tiny.tiny_generator_config().to_dict(),
        disc_model=tiny.tiny_discriminator_config().to_dict()))


def _losses_on_fixed_batch(task, n_steps: int, key: str) -> list[float]:
    torch.manual_seed(0)
    models = task.build_models(torch.device("cpu"))
    opts = task.build_optimizers(models)
    for name, m in models.items():
        m.train(name in opts)
    ds = task.train_dataset()
    batch = to_device(collate([ds[i] for i in range(8)]), torch.device("cpu"))
    out = []
    for step in range(n_steps):
        logs = {}
        for opt_name, closure in task.losses(models, batch, step):
            opts[opt_name].zero_grad()
            loss, part = closure()
            loss.backward()
            opts[opt_name].step()
            logs.update(part)
        out.append(logs[key])
    return out


@pytest.mark.slow  # first mel computation loads librosa/numba (several seconds)
def test_syncnet_loss_goes_down_on_a_fixed_batch(clips, seeded):
    losses = _losses_on_fixed_batch(_sync_task(clips, lr=1e-3), 15, "loss")
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-5:]) < 0.6 * losses[0], losses


@pytest.mark.slow
def test_generator_l1_goes_down_on_a_fixed_batch(clips, expert, seeded):
    losses = _losses_on_fixed_batch(_gen_task(clips, expert, gan=True, lr=1e-3), 15, "l1")
    assert losses[-1] < 0.85 * losses[0], losses


def test_syncnet_samples_have_the_paper_shapes(clips):
    ds = _sync_task(clips).train_dataset()
    labels = set()
    for i in range(40):
        s = ds[i]
        assert s["faces"].shape == (15, 16, 32)  # lower halves of 5 frames of 32x32
        assert s["mel"].shape == (1, 80, 16)
        labels.add(float(s["label"]))
        assert (ds[i]["faces"] == s["faces"]).all()  # a sample is a pure function of its index
    assert labels == {0.0, 1.0}


def test_generator_samples_have_the_paper_inputs(clips, expert):
    s = _gen_task(clips, expert).train_dataset()[3]
    assert s["x"].shape == (6, 5, 32, 32) and s["gt"].shape == (3, 5, 32, 32)
    assert s["x"].dtype == np.uint8 and s["gt"].dtype == np.uint8  # floats are made on the device
    batch = to_device(collate([s]), torch.device("cpu"))
    assert batch["gt"].dtype == torch.float32 and 0.0 <= batch["gt"].min() and batch["gt"].max() <= 1.0
    assert batch["indiv_mels"].dtype == torch.float32 and batch["indiv_mels"].min() < 0  # mels untouched
    assert s["indiv_mels"].shape == (5, 1, 80, 16) and s["mel"].shape == (1, 80, 16)
    assert (s["x"][:3, :, 16:] == 0).all()  # lower half of the target frames zeroed
    assert (s["x"][:3, :, :16] == s["gt"][:, :, :16]).all()  # upper half kept
    assert s["x"][3:].any()  # reference frames present


def test_syncnet_negatives_are_same_clip_shifts_with_near_misses_as_the_original(clips):
    ds = _sync_task(clips).train_dataset()
    draws = [ds.draw(i) for i in range(600)]
    pos = [d for d in draws if d.label == 1.0]
    neg = [d for d in draws if d.label == 0.0]
    assert 0.4 < len(pos) / len(draws) < 0.6  # random.choice([True, False])
    assert all(d.face_start == d.audio_start for d in pos)
    assert all(d.audio_clip == d.clip and d.face_start != d.audio_start for d in neg)  # same clip, faces moved
    shifts = {abs(d.face_start - d.audio_start) for d in neg}
    assert {1, 2, 3, 4} <= shifts and max(shifts) > 20  # near misses and far ones
    s = ds[0]
    assert s["mel"].shape == (1, 80, 16) and s["faces"].shape == (15, 16, 32)


def test_generator_mels_use_the_original_alignment_and_the_inference_rule(clips, expert):
    from wav2lip384.media import audio
    from wav2lip384.train.data import INDIV_MEL_OFFSET, inference_window_start

    assert INDIV_MEL_OFFSET == -1
    ds = _gen_task(clips, expert).train_dataset()
    for index in range(6):
        k, start, _ = ds.draw(index)
        assert start >= 1  # the original rejects windows whose first frame has no previous frame
        s = ds[index]
        mel = audio.melspectrogram(audio.load_audio(ds.clips[k].dir / "audio.wav"))  # (80, T)
        today = audio.mel_windows(mel, 25.0)  # what inference feeds frame i today: (N, 80, 16)
        assert np.array_equal(s["mel"][0], today[start])  # expert window: starts at the first frame
        for j in range(5):
            frame = start + j
            b = inference_window_start(frame, 25.0)
            assert np.array_equal(s["indiv_mels"][j, 0], mel[:, b:b + 16])  # the rule inference should use
            assert np.array_equal(s["indiv_mels"][j, 0], today[frame - 1])  # = today's window of the frame before
    assert inference_window_start(0, 25.0) == 0 and inference_window_start(10, 25.0) == 28  # clamped; int(80*0.36)
    assert inference_window_start(10, 30.0) == int(80 * (10 / 30 - 0.04) + 1e-6)  # 40 ms earlier at any frame rate


def _train(task, out, steps, resume=None):
    cfg = TrainConfig(out_dir=str(out), max_steps=steps, batch_size=4, eval_every=3, checkpoint_every=3,
                      log_every=1, val_samples=4, seed=7)
    return Trainer(task, cfg, log=lambda m: None).fit(resume=resume)


def _train_rows(history):
    return {r["step"]: r for r in history if r["split"] == "train"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["syncnet", "generator"])
def test_resume_continues_step_and_gives_the_same_next_loss(kind, clips, expert, tmp_path):
    make = (lambda: _sync_task(clips)) if kind == "syncnet" else (lambda: _gen_task(clips, expert, gan=True))
    key = "loss"
    full = _train_rows(_train(make(), tmp_path / "full", 5).history)
    first = _train(make(), tmp_path / "part", 3)
    assert first.step == 3
    ckpt = load_checkpoint(tmp_path / "part" / "last.pt")
    assert ckpt["step"] == 3 and ckpt["optimizers"]  # optimizer state and step are saved
    resumed = _train(make(), tmp_path / "part", 5, resume=tmp_path / "part" / "last.pt")
    assert resumed.step == 5
    rows = _train_rows(resumed.history)
    assert sorted(k for k in rows if k > 3) == [4, 5]  # the step counter continued
    for step in (4, 5):
        assert rows[step][key] == pytest.approx(full[step][key], rel=1e-5, abs=1e-6), (step, rows[step], full[step])
    if kind == "generator":
        assert rows[4]["disc"] == pytest.approx(full[4]["disc"], rel=1e-5)


def test_generator_sync_weight_switches_on_and_is_checkpointed(clips, expert, tmp_path):
    task = GeneratorTask(GeneratorTrainConfig(
        data=str(clips), syncnet=str(expert), size=32, sync_enable_below=100.0,  # any loss is "low enough"
        model=tiny.tiny_generator_config().to_dict()))
    assert task.sync_weight == 0.0
    res = _train(task, tmp_path, 3)
    assert task.sync_enabled and task.sync_weight == 0.03
    assert load_checkpoint(res.last_checkpoint)["task_state"]["sync_enabled"] is True


def test_a_run_without_validation_clips_refuses_to_start_and_says_what_to_do(clips, expert, tmp_path):
    from common.errors import UserFacingError

    no_val = tiny.write_synthetic_clips(tmp_path / "noval", n_train=2, n_val=0, n_frames=40)
    task = _gen_task(no_val, expert)
    with pytest.raises(UserFacingError, match="--val-samples 0"):
        task.val_dataset()  # not swallowed into "no validation"
    with pytest.raises(UserFacingError, match="no usable val clips"):
        _train(task, tmp_path / "run", 2)
    assert not (tmp_path / "run" / "last.pt").exists()  # refused before training


def _gen_sched_task(clips, expert, **kw) -> GeneratorTask:
    return GeneratorTask(GeneratorTrainConfig(data=str(clips), syncnet=str(expert), size=32,
                                              model=tiny.tiny_generator_config().to_dict(), **kw))


def _run_logged(task, out, steps, val_samples=4):
    lines = []
    cfg = TrainConfig(out_dir=str(out), max_steps=steps, batch_size=4, eval_every=2, checkpoint_every=0,
                      log_every=1, val_samples=val_samples, seed=7)
    res = Trainer(task, cfg, log=lines.append).fit()
    return res, lines


def test_schedule_and_validation_split_are_logged(clips, expert, tmp_path):
    task = _gen_sched_task(clips, expert, sync_enable_below=100.0)
    res, lines = _run_logged(task, tmp_path, 2)
    assert any(ln.startswith("data: validation 1 clips") for ln in lines), lines
    assert any(ln.startswith("schedule: sync-loss weight 0.0 until the expert's loss on generated validation")
               for ln in lines), lines
    assert any("schedule at step 2: sync loss on" in ln and "validation frames" in ln for ln in lines), lines
    assert task.sync_enabled and res.warnings == []


def test_without_validation_the_sync_loss_follows_the_training_batches_with_a_warning(clips, expert, tmp_path):
    task = _gen_sched_task(clips, expert, sync_enable_below=100.0)
    res, lines = _run_logged(task, tmp_path, 2, val_samples=0)
    assert task.sync_enabled and "training frames" in task.sync_reason
    assert any("validation is off" in w for w in res.warnings)
    assert any("decided on training batches" in w for w in res.warnings)


def test_a_sync_loss_that_never_turns_on_is_a_warning_not_silence(clips, expert, tmp_path):
    task = _gen_sched_task(clips, expert, sync_enable_below=0.0)  # unreachable
    res, lines = _run_logged(task, tmp_path, 2)
    assert not task.sync_enabled
    assert any("never turned on" in w for w in res.warnings) and any("never turned on" in ln for ln in lines)
    info = json.loads((res.exported / "training.json").read_text())
    assert any("never turned on" in w for w in info["warnings"]) and info["sync_enabled"] is False


def test_a_step_limit_forces_the_sync_loss_on_with_a_warning(clips, expert, tmp_path):
    task = _gen_sched_task(clips, expert, sync_enable_below=0.0, sync_enable_after=2)
    res, _ = _run_logged(task, tmp_path, 4)
    assert task.sync_enabled and task.sync_weight == 0.03 and "FORCED on at step 2" in task.sync_reason
    assert any("FORCED" in w for w in res.warnings)


def test_export_is_loadable_by_the_inference_side(clips, tmp_path):
    from wav2lip384 import weights

    res = Trainer(_sync_task(clips), TrainConfig(out_dir=str(tmp_path), max_steps=1, batch_size=2, val_samples=2),
                  log=lambda m: None).fit()
    model = weights.from_pretrained(res.exported)
    assert type(model).__name__ == "SyncNet" and model.config.img_size == 32
    info = json.loads((res.exported / "training.json").read_text())
    assert info["steps"] == 1 and info["data_summary"]["val"]["sources"] == ["src3"]


@pytest.mark.slow
def test_cli_reports_a_missing_expert_clearly(clips, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wav2lip384.train", "generator", "--tiny", "--data", str(clips),
                           "--syncnet", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o"), "--steps", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "nope.pt" in proc.stderr


@pytest.mark.slow
def test_ddp_two_processes_gloo_cpu(clips, tmp_path):
    """torchrun, 2 CPU processes, gloo: both ranks step together and end with identical weights."""
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",  # free port
           "-m", "wav2lip384.train", "syncnet", "--tiny", "--data", str(clips), "--out", str(out),
           "--steps", "3", "--batch-size", "4", "--eval-every", "3", "--log-every", "1", "--val-samples", "4",
           "--threads", "1", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)  # slow under load
    assert proc.returncode == 0, [ln for ln in proc.stderr.splitlines() if "Error" in ln or "error" in ln][-10:]
    result = json.loads(proc.stdout)
    assert result["world_size"] == 2 and result["step"] == 3
    assert result["ranks_in_sync"] is True
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3
    assert not any(k.startswith("module.") for k in ckpt["models"]["syncnet"])  # saved unwrapped


# ------------------------------------------------------------------------------------------ dry run / GPU
def test_dry_run_plans_hours_steps_memory_and_time_from_counted_flops(clips, expert):
    from wav2lip384.train import plan

    p = plan.make_plan(_gen_task(clips, expert, gan=True), data_dir=str(clips), batch_size=4, gpus=2,
                       gpu="L4-24GB", steps=30)
    assert p["data"]["train_frames"] == 120 and p["data"]["val_clips"] == 1
    assert p["steps_per_epoch"] == 15  # ceil(120 frames / (4 x 2))
    assert p["cost"]["flops_per_sample"] > 1e6 and p["cost"]["frozen_params"] > 0  # the expert is counted
    assert p["memory_per_gpu_gib"] > 1.0 and p["cpu_seconds_per_sample"] > 0
    rows = {r["gpu"]: r for r in p["gpu_table"]}
    # time follows the peak: the same step on an H100 is 989/121 times faster than on an L4
    assert rows["L4-24GB"]["step_s"] / rows["H100-SXM-80GB"]["step_s"] == pytest.approx(989 / 121)
    assert p["epoch_hours"] == pytest.approx(15 * rows["L4-24GB"]["step_s"] / 3600)
    assert p["epochs"] == pytest.approx(2.0)
    text = plan.format_plan(p)
    assert "steps per epoch" in text and "memory per GPU" in text and "*L4-24GB" in text


def test_dry_run_cli_plans_the_papers_300_minutes_without_data(capsys):
    from wav2lip384.train.__main__ import main

    assert main(["syncnet", "--tiny", "--hours", "5", "--dry-run", "--gpus", "8", "--batch-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "5.00 h assumed" in out and "450,000 frames" in out
    assert "steps per epoch (one sample per training frame): 879" in out  # ceil(450000 / 512)
    assert main(["generator", "--tiny", "--dry-run", "--gpu", "nope", "--hours", "1"]) == 2
    assert "unknown GPU class" in capsys.readouterr().err


def test_training_needs_data_and_an_expert_unless_only_planning(capsys, clips):
    from wav2lip384.train.__main__ import main

    assert main(["generator", "--tiny", "--data", str(clips), "--out", "x"]) == 2
    assert "--syncnet is required" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here: the GPU path (AMP, pinned memory) "
                                                           "runs only where one is present")
def test_gpu_path_trains_with_amp(clips, expert, tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=3, batch_size=4, eval_every=3, val_samples=4, device="cuda")
    trainer = Trainer(_gen_task(clips, expert, gan=True), cfg, log=lambda m: None)
    res = trainer.fit()
    assert trainer.use_amp and res.step == 3 and res.last_checkpoint.is_file()
