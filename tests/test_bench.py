"""``python -m wav2lip384.bench``: entries by model id, the pipeline's public API only, one real entry (slow)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from common.errors import UserFacingError
from wav2lip384.bench import suite as bench


def test_entry_names_map_to_registry_ids():
    assert [bench.model_id(t) for t in ("96", "384", "256", "livetalking384", "wav2lip256")] == [
        "wav2lip96", "paper384", "wav2lip256", "livetalking384", "wav2lip256"]
    for model in ("wav2lip96", "paper384", "wav2lip256", "livetalking384"):
        assert bench.model_id(bench.model_token(model)) == model
    with pytest.raises(UserFacingError, match="Unknown lip-sync model"):
        bench.model_id("wav2lip512")
    for name in ("ours_256_video", "ours_livetalking384_video", "ours_livetalking384_photo"):
        assert name in bench.ENTRIES_QUICK and name in bench.ENTRIES_FULL


def test_models_option_selects_both_entries_of_each_model(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run(video, audio, seconds, entries, threads, with_compile=False, cpu_classes=()):
        seen["entries"], seen["cpu_classes"] = entries, cpu_classes
        return {"machine": {"uptime_end": ""}, "matmul_peak_gflops": 1.0}

    monkeypatch.setattr(bench, "run", fake_run)
    video, audio = tmp_path / "v.mp4", tmp_path / "a.wav"
    video.write_bytes(b"x")
    audio.write_bytes(b"x")
    code = bench.main(["--json", "--video", str(video), "--audio", str(audio), "--models", "livetalking384", "256"])
    assert code == 0 and json.loads(capsys.readouterr().out)["matmul_peak_gflops"] == 1.0
    assert seen["entries"] == ["ours_livetalking384_video", "ours_livetalking384_photo", "ours_256_video",
                               "ours_256_photo"]
    assert seen["cpu_classes"] == ("native", "avx2")  # both CPU classes by default
    assert bench.main(["--video", str(video), "--audio", str(audio), "--models", "nope"]) == 2


def test_avx2_class_runs_in_child_processes_with_the_two_variables(monkeypatch, tmp_path):
    """One run, both classes: the AVX2 entries' processes get ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY, the JSON
    says so, and each class is compared with the baseline measured in that class."""
    import subprocess
    import types

    calls = []

    def fake_subprocess_run(cmd, capture_output, text, env=None):
        calls.append((cmd[cmd.index("--one") + 1], (env or {}).get("ONEDNN_MAX_CPU_ISA"),
                      (env or {}).get("ATEN_CPU_CAPABILITY")))
        fps = 10.0 if "baseline" in cmd[cmd.index("--one") + 1] else 30.0
        return types.SimpleNamespace(returncode=0, stdout=json.dumps({"fps": fps / (2 if env else 1)}), stderr="")

    monkeypatch.setattr(subprocess, "run", fake_subprocess_run)
    monkeypatch.setattr(bench, "matmul_peak_gflops", lambda *a, **k: 1.0)
    monkeypatch.setattr(bench, "_uptime", lambda: "")
    out = bench.run(tmp_path / "v.mp4", tmp_path / "a.wav", 1.0, ["baseline_96_original_style", "ours_96_video"], None)
    assert calls == [("baseline_96_original_style", None, None), ("ours_96_video", None, None),
                     ("baseline_96_original_style", "AVX2", "avx2"), ("ours_96_video", "AVX2", "avx2")]
    assert out["ours_96_video@avx2"]["cpu_class"] == "avx2" and "ONEDNN_MAX_CPU_ISA=AVX2" in out["cpu_classes"]["avx2"]
    assert out["ratios_vs_baseline"] == {"ours_96_video": 3.0}
    assert out["ratios_vs_baseline@avx2"] == {"ours_96_video@avx2": 3.0}


def test_weights_label_names_a_local_file_by_sha256_and_never_calls_it_real(tmp_path):
    import hashlib

    f = tmp_path / "wav2lip.pth"
    f.write_bytes(b"random weights, not the published file")
    label = bench.weights_label("wav2lip96", str(f))
    assert hashlib.sha256(f.read_bytes()).hexdigest() in label and str(f) in label
    assert "real" not in label.lower() and "published weights" not in label


def test_bench_uses_only_the_pipelines_public_api():
    """Issue 13: the bench must not reach into the pipeline's private methods or the avatar's internals."""
    tree = ast.parse(Path(bench.__file__).read_text())
    private = sorted({node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                      and node.attr.startswith("_") and not node.attr.startswith("__")
                      and not (isinstance(node.value, ast.Name) and node.value.id in ("torch", "os", "sys"))})
    assert private == [], private
    assert "extras" not in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


@pytest.mark.slow
def test_one_new_entry_reports_the_figures(shared_data, tmp_path, monkeypatch, one_torch_thread):
    from common.settings import Settings

    entry = bench.run_one("ours_256_photo", bench.DEFAULT_VIDEO, bench.DEFAULT_AUDIO, 0.2, Settings())
    assert entry["model"] == "wav2lip256" and entry["crop_policy"] == "stretch"
    assert entry["weights"].startswith("random")  # offline: random weights of the same architecture, said so
    assert entry["n_frames"] == 5 and entry["fps"] > 0 and entry["model_ms_per_frame"] > 0
    assert entry["achieved_gflops"] > 0 and entry["peak_rss_mb"] > 0
    assert 0 < entry["gflops_per_frame_executed"] <= entry["gflops_per_frame_nominal"]
    assert entry["max_pixel_diff_vs_plain"] <= 2
