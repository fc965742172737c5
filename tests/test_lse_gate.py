"""The lip-sync check of precision levers (issue 25): "auto" precision takes a faster, verified candidate only if
its LSE-C on the example clip is not more than 0.1 below fp32's; the check runs only with published weights and
SyncNet weights, and a decision made without it is not reused once it can run.

Random weights everywhere (no Hub here): a random generator in the 96 layout, syncnet_python's network with
random weights saved in the published syncnet_v2.model layout. The decision logic is tested with an injected
scorer (exact LSE-C figures); one test runs the real SyncNet code end to end.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import pytest
import torch

import wav2lip384.render.optimize as O
from wav2lip384 import evaluate as ev
from wav2lip384.evaluate.gate import MAX_LSE_C_DROP, NO_SYNCNET, NOT_PUBLISHED, ExampleClip, LseGate, lse_gate_for
from wav2lip384.faces import HaarDetector
from wav2lip384.models import Wav2LipGenerator
from wav2lip384.models.config import GeneratorConfig
from wav2lip384.render.optimize import OptimizeConfig, optimize_generator
from wav2lip384.render.pipeline import LipSyncPipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CLIP = ExampleClip(EXAMPLES / "astronaut_512.jpg", EXAMPLES / "speech_en.ogg", 1.0)  # 25 frames: quick
# the tolerance is not what is tested here: bf16 of random weights may differ by more than 1 grey level
LOOSE = OptimizeConfig(int8="off", max_mean_diff=255.0, max_p99_diff=255.0)


@pytest.fixture(autouse=True)
def _own_decision_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def generator():
    """A 96 generator (the real layer pattern, channels / 8: renders 25 frames in well under a second)."""
    def narrow(s):
        c = lambda v: v if v in (1, 3, 6) else max(2, v // 8)  # noqa: E731
        return dataclasses.replace(s, cin=c(s.cin), cout=c(s.cout))

    real = GeneratorConfig.for_size(96)
    config = dataclasses.replace(
        real, encoder_blocks=tuple(tuple(narrow(s) for s in b) for b in real.encoder_blocks),
        decoder_blocks=tuple(tuple(narrow(s) for s in b) for b in real.decoder_blocks),
        audio_encoder=tuple(narrow(s) for s in real.audio_encoder),
        unused_audio_refine=tuple(narrow(s) for s in real.unused_audio_refine), output_hidden=max(2, real.output_hidden // 8))
    torch.manual_seed(0)
    return Wav2LipGenerator(config).eval()


@pytest.fixture(scope="module")
def published_syncnet(tmp_path_factory):
    """Random weights in the published syncnet_v2.model layout (a plain state dict, pre-1.6 serialisation)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("published") / "syncnet_v2.model"
    torch.save(collections.OrderedDict(ev.build_syncnet_s().state_dict()), path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture
def bf16_faster(monkeypatch):
    """bf16 timed 3x fp32 (the outputs are the real ones): the grey-level check and the gate decide."""
    real = O._steady_fps

    def fake(model, mel, faces, repeats):
        _, out = real(model, mel, faces, 1)
        return (30.0 if model.compute_dtype == torch.bfloat16 else 10.0), out

    monkeypatch.setattr(O, "_steady_fps", fake)


def scorer_with(lse_c_fp32: float, lse_c_candidate: float, calls: list):
    """LSE-C per generator, exact: what makes a drop deterministic."""
    def score(label, video):
        assert video.is_file() and video.stat().st_size > 0  # the clip was really rendered
        calls.append(label)
        return {"lse_c": lse_c_fp32 if label == "torch-fp32" else lse_c_candidate, "lse_d": 8.0}
    return score


def gate(scorer=None, **kw) -> LseGate:
    return LseGate([CLIP], weights_published=kw.pop("published", True), detector=HaarDetector(), model="wav2lip96",
                   scorer=scorer, **kw)


def test_a_candidate_that_lowers_lse_c_by_more_than_the_limit_is_not_chosen(generator, bf16_faster):
    calls: list = []
    fast = optimize_generator(generator, LOOSE, quality_gate=gate(scorer_with(6.0, 5.85, calls)))
    p = fast.precision
    verdict = p["candidates"]["torch-bf16"]["quality_gate"]
    assert p["chosen"] == "torch-fp32" and fast.compute_dtype == torch.float32
    assert verdict["ran"] and not verdict["accepted"] and verdict["verdict"].startswith("rejected")
    assert verdict["lse_c_fp32"] == 6.0 and verdict["lse_c"] == 5.85 and verdict["lse_c_drop"] == pytest.approx(0.15)
    assert "LSE-C lower by 0.150" in p["reason"] and p["quality_gate"]["ran"] and p["quality_gate"]["present"]
    assert calls == ["torch-fp32", "torch-bf16"]
    assert "quality_gate" in O.precision_status(fast)


def test_a_candidate_within_the_limit_is_chosen_with_its_scores_recorded(generator, bf16_faster):
    fast = optimize_generator(generator, LOOSE, quality_gate=gate(scorer_with(6.0, 6.0 - MAX_LSE_C_DROP + 0.01, [])))
    p = fast.precision
    assert p["chosen"] == "torch-bf16" and fast.compute_dtype == torch.bfloat16
    v = p["candidates"]["torch-bf16"]["quality_gate"]
    assert v["accepted"] and v["lse_c_fp32"] == 6.0 and v["lse_c"] == pytest.approx(5.91) and v["max_drop"] == 0.1
    assert "lip-sync check accepted" in p["reason"]
    # a higher score is no drop at all
    assert gate(scorer_with(6.0, 7.0, []))("torch-bf16", fast, optimize_generator(generator, OptimizeConfig(
        dtype="fp32")))["accepted"]


def test_not_run_cases_accept_and_say_why(generator, bf16_faster, tmp_path):
    calls: list = []
    unpublished = gate(scorer_with(6.0, 0.0, calls), published=False)
    p = optimize_generator(generator, LOOSE, quality_gate=unpublished).precision
    v = p["candidates"]["torch-bf16"]["quality_gate"]
    assert p["chosen"] == "torch-bf16" and v == {"ran": False, "accepted": True, "verdict": NOT_PUBLISHED}
    assert not calls and p["quality_gate"] == {"present": True, "ran": False, "key": unpublished.cache_key}
    for spec in ("", str(tmp_path / "absent" / "syncnet_v2.model")):  # turned off / not there
        no_syncnet = gate(syncnet=spec)
        p = optimize_generator(generator, LOOSE, quality_gate=no_syncnet).precision
        v = p["candidates"]["torch-bf16"]["quality_gate"]
        assert p["chosen"] == "torch-bf16" and v["accepted"] and not v["ran"] and v["verdict"].startswith(NO_SYNCNET)
        assert no_syncnet.cache_key == {"check": "lse_c", "runs": False, "why": NO_SYNCNET}
    # still subject to the grey-level tolerance
    strict = optimize_generator(generator, OptimizeConfig(int8="off", max_mean_diff=0.0, max_p99_diff=0.0),
                                quality_gate=gate(published=False)).precision
    assert strict["chosen"] == "torch-fp32" and "quality_gate" not in strict["candidates"]["torch-bf16"]


def test_a_decision_made_without_the_check_is_not_reused_once_it_runs(generator, bf16_faster, tmp_path):
    plain = optimize_generator(generator, LOOSE, cache_dir=tmp_path).precision
    assert plain["chosen"] == "torch-bf16" and not plain["cached"] and not plain["quality_gate"]["present"]
    # the weights are not published: the check cannot run, a decision of its own (it says so)
    skipped = optimize_generator(generator, LOOSE, cache_dir=tmp_path, quality_gate=gate(published=False)).precision
    assert not skipped["cached"] and not skipped["quality_gate"]["ran"]
    calls: list = []
    checked = optimize_generator(generator, LOOSE, cache_dir=tmp_path,
                                 quality_gate=gate(scorer_with(6.0, 5.0, calls))).precision
    assert not checked["cached"] and checked["quality_gate"]["ran"] and checked["chosen"] == "torch-fp32"
    assert calls == ["torch-fp32", "torch-bf16"]
    again = optimize_generator(generator, LOOSE, cache_dir=tmp_path, quality_gate=gate(scorer_with(6.0, 5.0, calls)))
    assert again.precision["cached"] and again.precision["chosen"] == "torch-fp32" and len(calls) == 2
    assert optimize_generator(generator, LOOSE, cache_dir=tmp_path).precision["cached"]  # and without: the first
    assert len(list((tmp_path / "precision").glob("*.json"))) == 3


def test_a_failing_check_keeps_fp32(generator, bf16_faster):
    def broken(name, candidate, fp32):
        raise RuntimeError("no face")

    p = optimize_generator(generator, LOOSE, quality_gate=broken).precision
    assert p["chosen"] == "torch-fp32"
    assert p["candidates"]["torch-bf16"]["quality_gate"]["verdict"].startswith("rejected: the check failed")
    # an example clip that is not there: loading still works, the lever is not taken
    missing = LseGate([ExampleClip(EXAMPLES / "absent.jpg", CLIP.speech)], weights_published=True,
                      detector=HaarDetector(), scorer=scorer_with(6.0, 6.0, []))
    p = optimize_generator(generator, LOOSE, quality_gate=missing).precision
    assert p["chosen"] == "torch-fp32" and "gate_error" in p["quality_gate"]["key"]


def test_pipeline_passes_the_gate_through(generator, bf16_faster):
    calls: list = []
    pipe = LipSyncPipeline(generator, model="wav2lip96", quality_gate=gate(scorer_with(6.0, 5.0, calls)),
                           show_progress=False)
    assert pipe.generator.precision["chosen"] == "torch-fp32" and calls == ["torch-fp32", "torch-bf16"]


@pytest.mark.slow
def test_end_to_end_with_syncnet_in_the_published_layout(generator, bf16_faster, published_syncnet, tmp_path):
    """The real check: both clips rendered, written as H.264 with their speech, scored by syncnet_python's network
    (random weights, so the figures mean nothing); the verdict follows the 0.1 rule on the recorded figures."""
    check = lse_gate_for("wav2lip96", weights_published=True, face=CLIP.face, speech=CLIP.speech, seconds=1.0,
                         syncnet=str(published_syncnet), detector=HaarDetector(), work_dir=tmp_path / "work")
    assert check.cache_key["runs"] and len(check.cache_key["syncnet"]) == 64  # the SyncNet file's sha256
    p = optimize_generator(generator, LOOSE, quality_gate=check).precision
    v = p["candidates"]["torch-bf16"]["quality_gate"]
    assert v["ran"], v
    assert v["lse_c_fp32"] >= 0 and v["lse_c"] >= 0 and v["lse_d_fp32"] > 0
    assert v["accepted"] == (v["lse_c_fp32"] - v["lse_c"] <= MAX_LSE_C_DROP)
    assert p["chosen"] == ("torch-bf16" if v["accepted"] else "torch-fp32")
    assert v["clips"][0]["face"] == "astronaut_512.jpg" and not list((tmp_path / "work").iterdir())  # cleaned up
    # the same generator twice: identical videos, identical scores, no drop
    fp32 = optimize_generator(generator, OptimizeConfig(dtype="fp32"))
    same = check("torch-fp32-again", fp32, fp32)
    assert same["accepted"] and same["lse_c_drop"] == 0.0
