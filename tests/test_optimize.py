"""Each optimised path of wav2lip384.render.optimize matches the plain eager generator within the stated tolerance.

Random weights on narrow copies of the real 96 and 384 layer tables (channels / 8, same resolutions, same
layer pattern), with random BatchNorm statistics so that folding is really exercised.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from wav2lip384 import faces as F
from wav2lip384.models.config import GeneratorConfig
from wav2lip384.models import Wav2LipGenerator
from wav2lip384.render.optimize import (
    BF16_MAX_DIFF_LEVELS,
    EXACT_ATOL,
    PLAIN,
    OptimizeConfig,
    fold_batchnorm,
    optimize_generator,
    paste_first_row,
    plan_lower_half,
)


def _narrow(spec, div=8):
    keep = {1, 3, 6}  # mel, RGB, 6-channel face input
    c = lambda v: v if v in keep else max(2, v // div)  # noqa: E731
    return dataclasses.replace(spec, cin=c(spec.cin), cout=c(spec.cout))


def tiny_config(size: int | str) -> GeneratorConfig:
    """Channels / 8 of a real generator (a size 96 | 384 or an architecture name), same resolutions and layers."""
    real = GeneratorConfig.for_arch(size) if isinstance(size, str) else GeneratorConfig.for_size(size)
    return dataclasses.replace(
        real,
        encoder_blocks=tuple(tuple(_narrow(s) for s in b) for b in real.encoder_blocks),
        decoder_blocks=tuple(tuple(_narrow(s) for s in b) for b in real.decoder_blocks),
        audio_encoder=tuple(_narrow(s) for s in real.audio_encoder),
        unused_audio_refine=tuple(_narrow(s) for s in real.unused_audio_refine),
        output_hidden=max(2, real.output_hidden // 8),
    )


def tiny_generator(size: int | str, seed: int = 0) -> Wav2LipGenerator:
    torch.manual_seed(seed)
    g = Wav2LipGenerator(tiny_config(size)).eval()
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return g


def _inputs(size: int, n: int = 2, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    mel = torch.randn(n, 1, 80, 16, generator=gen)
    face = torch.rand(n, 3, size, size, generator=gen)
    masked = face.clone()
    masked[:, :, size // 2:] = 0
    return mel, torch.cat([masked, face], dim=1)  # (n, 6, S, S)


# the paper's two sizes and the community 256 (4x4 valid bottleneck) and 384+SAM (attention before every skip)
@pytest.fixture(scope="module", params=[96, 384, "wav2lip_v2_256", "livetalking384_sam"])
def case(request):
    g = tiny_generator(request.param)
    size = g.img_size
    mel, faces = _inputs(size)
    with torch.inference_mode():
        ref = g(mel, faces)
    return size, g, mel, faces, ref


def _run(model, mel, faces):
    with torch.inference_mode():
        return model(mel, faces).float()


def test_fold_batchnorm_is_exact_and_leaves_the_original_untouched(case):
    size, g, mel, faces, ref = case
    folded = fold_batchnorm(g)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())
    assert (_run(folded, mel, faces) - ref).abs().max().item() <= EXACT_ATOL
    assert torch.equal(_run(g, mel, faces), ref)


def test_lower_half_rows_are_exact_and_upper_rows_come_from_the_reference(case):
    size, g, mel, faces, ref = case
    fast = optimize_generator(g, OptimizeConfig(fold_bn=False, lower_half=True, dtype="fp32"))
    r = paste_first_row(size)
    assert 0 < r < size // 2 and fast.first_row == r
    out = _run(fast, mel, faces)
    assert out.shape == ref.shape
    assert (out[:, :, r:] - ref[:, :, r:]).abs().max().item() <= EXACT_ATOL
    # rows above the cut: the reference (unmasked) face, i.e. what the paste-back keeps anyway
    assert torch.equal(out[:, :, :1], faces[:, 3:6, :1])  # row 0 is always above the cut


def test_default_config_keeps_pasted_frames_identical(case):
    size, g, mel, faces, ref = case
    fast = optimize_generator(g, OptimizeConfig(dtype="fp32"))  # fold BN + lower half + channels_last, fp32
    out = _run(fast, mel, faces)
    to_img = lambda t: (t.clamp(0, 1).mul(255).add(0.5).permute(0, 2, 3, 1).to(torch.uint8).numpy())  # noqa: E731
    a, b = to_img(ref), to_img(out)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)
    for side in (size // 2 + 7, size, 2 * size + 3):  # downscaled (INTER_AREA) and upscaled (LINEAR) pastes
        box = (20, 30, 20 + side, 30 + side)
        if box[3] > frame.shape[0] or box[2] > frame.shape[1]:
            frame = np.pad(frame, ((0, box[3]), (0, box[2]), (0, 0)))
        pa = F.paste_back(frame, a[0], box)
        pb = F.paste_back(frame, b[0], box)
        assert np.abs(pa.astype(int) - pb.astype(int)).max() <= 1  # 1 = an 8-bit rounding tie at most


def test_photo_path_broadcasts_the_face_features_once(case):
    size, g, mel, faces, ref = case
    fast = optimize_generator(g, OptimizeConfig(dtype="fp32"))
    one_face = faces[:1].expand(len(mel), -1, -1, -1)
    with torch.inference_mode():
        ref1 = g(mel, one_face)
        feats = fast.encode_faces(faces[:1])  # batch 1
        out = fast.decode(fast.encode_audio(mel), feats).float()
    r = fast.first_row
    assert (out[:, :, r:] - ref1[:, :, r:]).abs().max().item() <= EXACT_ATOL


def test_channels_last_is_exact(case):
    size, g, mel, faces, ref = case
    fast = optimize_generator(g, OptimizeConfig(channels_last=True, dtype="fp32"))
    r = fast.first_row
    assert (_run(fast, mel, faces)[:, :, r:] - ref[:, :, r:]).abs().max().item() <= EXACT_ATOL


def test_bf16_is_close_but_not_exact(case):
    """Forced bf16 (no check): close to fp32, within a few 8-bit grey levels here."""
    size, g, mel, faces, ref = case
    fast = optimize_generator(g, OptimizeConfig(dtype="bf16"))
    assert fast.precision["dtype"] == "bf16" and fast.compute_dtype == torch.bfloat16
    r = fast.first_row
    diff = (_run(fast, mel, faces)[:, :, r:] - ref[:, :, r:]).abs()
    assert diff.mean().item() < 2 / 255 and diff.max().item() < 0.1


def test_auto_precision_keeps_bf16_only_within_the_stated_tolerance(case, monkeypatch):
    """dtype="auto": bf16 where native and within bf16_max_diff levels of fp32 on these weights, else fp32."""
    import wav2lip384.render.optimize as O

    size, g, mel, faces, ref = case
    monkeypatch.setattr(O, "native_bf16", lambda device: True)  # the branch taken on avx512_bf16/AMX CPUs
    loose = optimize_generator(g, OptimizeConfig(bf16_max_diff=255.0))
    assert loose.precision["dtype"] == "bf16" and loose.compute_dtype == torch.bfloat16
    worst = loose.precision["max_diff_levels"]
    # what the check measured is what the model does: a calibration batch through the chosen model
    cal_mel, cal_faces = O.calibration_batch(size)
    exact = optimize_generator(g, OptimizeConfig(dtype="fp32"))
    measured = (_run(loose, cal_mel, cal_faces) - _run(exact, cal_mel, cal_faces))[:, :, exact.first_row:]
    assert measured.abs().max().item() * 255 == pytest.approx(worst, abs=1e-3)
    strict = optimize_generator(g, OptimizeConfig(bf16_max_diff=worst / 2))
    assert strict.precision["dtype"] == "fp32" and "differed" in strict.precision["reason"]
    assert (_run(strict, mel, faces) - _run(exact, mel, faces)).abs().max().item() == 0.0
    monkeypatch.setattr(O, "native_bf16", lambda device: False)
    none = optimize_generator(g)
    assert none.precision == {"dtype": "fp32", "requested": "auto", "reason": "no native bf16 on this device"}
    assert "within" in O.describe_precision(loose.precision) and "fp32" in O.describe_precision(none.precision)


@pytest.mark.skipif(not __import__("wav2lip384.render.optimize", fromlist=["x"]).native_bf16(torch.device("cpu")),
                    reason="this CPU has no native bf16 (avx512_bf16/AMX): auto stays fp32")
def test_auto_precision_on_the_real_architectures_is_bf16_within_one_level():
    """On this CPU, the real 96 generator (random weights) passes the check: pasted frames stay within 1 level."""
    from wav2lip384.models import build_model

    torch.manual_seed(0)
    fast = optimize_generator(build_model("generator", 96).eval())
    assert fast.precision["dtype"] == "bf16" and fast.precision["max_diff_levels"] <= 1.0


def test_default_config_stays_within_one_grey_level_of_plain_eager(case):
    """The default (exact transforms + auto precision), on inputs other than the calibration batch: every shown
    row within the stated tolerance of plain eager fp32, whichever precision the check chose on this CPU."""
    size, g, mel, faces, ref = case
    fast = optimize_generator(g)
    r = fast.first_row
    assert (_run(fast, mel, faces)[:, :, r:] - ref[:, :, r:]).abs().max().item() * 255 <= BF16_MAX_DIFF_LEVELS


def test_unknown_dtype_is_refused(case):
    with pytest.raises(ValueError, match="dtype"):
        optimize_generator(case[1], OptimizeConfig(dtype="fp16"))


def test_plain_config_is_the_eager_model(case):
    size, g, mel, faces, ref = case
    assert torch.equal(_run(optimize_generator(g, PLAIN), mel, faces), ref)


def test_plan_cuts_the_real_decoders_and_keeps_less_than_all_work():
    for arch in ("wav2lip96", "paper384", "wav2lip_v2_256", "livetalking384_sam"):
        config = GeneratorConfig.for_arch(arch)
        block, offset, kept = plan_lower_half(config, paste_first_row(config.img_size))
        assert offset > 0 and 0 < kept < 1


def test_sam_cut_keeps_the_attention_margin_in_cached_features():
    """The 384+SAM decoder: trimmed skips keep 3 rows (the 7x7 attention's padding) above the rows decoded."""
    from wav2lip384.models.rows import plan_rows

    plan = plan_rows(GeneratorConfig.for_arch("livetalking384_sam"), paste_first_row(384))
    assert plan.sam_margin == 3
    for i in range(plan.cut_block, len(plan.skip_rows)):
        assert plan.skip_start(i) == max(0, plan.skip_rows[i] - 3)


def test_decode_is_the_one_implementation_and_options_live_on_the_model(case):
    """optimize_generator returns the same class with options set; the input model keeps its own."""
    size, g, mel, faces, ref = case
    fast = optimize_generator(g, OptimizeConfig(fold_bn=False, channels_last=False, dtype="fp32"))
    assert type(fast) is Wav2LipGenerator and fast is not g
    assert fast.first_row == paste_first_row(size) and g.first_row == 0 and g.row_plan is None
    assert all(a is b for a, b in zip(fast.parameters(), g.parameters(), strict=True))  # shallow: shared weights
    assert torch.equal(_run(g, mel, faces), ref)


# ------------------------------------------------------------------------------ original-style baseline
def test_original_smoothing_is_the_forward_mean_of_five():
    from wav2lip384.bench.baseline import _original_smoothing

    boxes = np.arange(7, dtype=np.float32)[:, None].repeat(4, axis=1)  # box i = (i, i, i, i)
    out = _original_smoothing(boxes)
    assert out[0, 0] == pytest.approx(2.0)  # mean of 0..4
    assert out[6, 0] == pytest.approx(4.0)  # last window = boxes[-5:] = 2..6


@pytest.mark.slow
def test_baseline_runs_the_original_strategy_end_to_end(tmp_path):
    import soundfile as sf

    from wav2lip384.bench.baseline import run_original_style
    from wav2lip384.media.video import VideoWriter, probe

    rng = np.random.default_rng(0)
    video = tmp_path / "face.mp4"
    with VideoWriter(video, 128, 112, 25.0) as w:
        for _ in range(10):
            w.write(rng.integers(0, 255, (112, 128, 3), dtype=np.uint8))
    wav = tmp_path / "speech.wav"
    sf.write(str(wav), (0.1 * np.sin(np.arange(12000) / 16000 * 2 * np.pi * 220)).astype(np.float32), 16000)
    g = Wav2LipGenerator(tiny_config(96)).eval()
    out = tmp_path / "out.mp4"
    r = run_original_style(video, wav, out, g, box=(10, 90, 20, 100), batch_size=8)
    assert r["n_frames"] == 16  # 61 mel frames: windows at int(i*3.2) while they fit (15) + the right-aligned one
    info = probe(out)
    assert info.video and info.audio
    assert set(r["timings"]) >= {"read_frames", "mel", "model", "paste_write_avi", "mux", "total"}


@pytest.mark.slow
def test_compiled_model_is_exact_and_pads_short_batches():
    """torch.compile (opt-in): same output; a last, shorter batch is padded to the compiled batch size."""
    size = 96
    g = tiny_generator(size)
    mel, faces = _inputs(size, n=3)
    fast = optimize_generator(g, OptimizeConfig(compile=True, dtype="fp32"), batch_size=3)
    r = fast.first_row
    with torch.inference_mode():
        ref = g(mel, faces)
        out = fast(mel, faces)
        short = fast(mel[:2], faces[:2])  # padded to 3, sliced back to 2
    assert short.shape[0] == 2
    assert (out[:, :, r:] - ref[:, :, r:]).abs().max().item() <= EXACT_ATOL
    assert (short[:, :, r:] - ref[:2, :, r:]).abs().max().item() <= EXACT_ATOL


def test_trimmed_features_decode_like_full_ones(case):
    """A video avatar's cached encoder features keep only the rows the cut decoder reads."""
    size, g, mel, faces, ref = case
    fast = optimize_generator(g)
    with torch.inference_mode():
        feats = fast.encode_faces(faces)
        trimmed = fast.trim_feats(feats)
        full = fast.decode(fast.encode_audio(mel), feats)
        short = fast.decode(fast.encode_audio(mel), trimmed)
    assert sum(t.numel() for t in trimmed) < sum(f.numel() for f in feats)
    assert torch.equal(full, short)


class _FixedBox(F.FaceDetector):
    name = "fixed-box"

    def detect_batch(self, frames):
        h, w = frames[0].shape[:2]
        return [np.array([[w * 0.3, h * 0.25, w * 0.7, h * 0.7, 1.0]], np.float32) for _ in frames]


@pytest.mark.slow
def test_video_avatar_reuses_cached_encoder_features(tmp_path, monkeypatch):
    """Second request with the same video avatar: no face encoder call, and the same frames as without cache."""
    from wav2lip384.render.pipeline import LipSyncPipeline
    from wav2lip384.media.video import VideoWriter, open_video

    rng = np.random.default_rng(0)
    video = tmp_path / "face.mp4"
    with VideoWriter(video, 128, 128, 25.0) as w:
        for _ in range(6):
            w.write(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    speech = (0.2 * np.sin(np.arange(6400) / 16000 * 2 * np.pi * 180).astype(np.float32), 16000)  # 0.4 s = 10 frames
    g = tiny_generator(96)
    pipe = LipSyncPipeline(g, detector=_FixedBox(), show_progress=False, batch_size=4)
    nocache = LipSyncPipeline(g, detector=_FixedBox(), show_progress=False, batch_size=4, feature_cache_mb=0)
    first = pipe(video, speech, tmp_path / "a.mp4")
    calls = []
    real = pipe.generator.encode_faces
    monkeypatch.setattr(pipe.generator, "encode_faces", lambda x: calls.append(x.shape) or real(x))
    second = pipe(video, speech, tmp_path / "b.mp4")
    ref = nocache(video, speech, tmp_path / "c.mp4")
    assert calls == [] and first.n_frames == second.n_frames == ref.n_frames == 10
    frames = lambda p: np.stack(list(open_video(p).frames)).astype(int)  # noqa: E731
    assert np.abs(frames(second.output_path) - frames(ref.output_path)).max() <= 2  # same input frames -> codec noise
