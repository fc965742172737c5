"""``python -m services memory``: the app's resident memory with models loaded and used (issue 20's ≤ 4 GB goal is
measured by it, not by a test); here only that it measures what it says, on the 96 model's random weights."""
from __future__ import annotations

from common.settings import Settings
from services.bench import bench_memory
from services.served import with_random_generators


def test_memory_bench_reports_rss_after_warm_up_each_model_and_the_peak(tmp_path):
    settings = with_random_generators(Settings(cache_dir=str(tmp_path / "cache")), ["wav2lip96"], tmp_path / "w")
    out = bench_memory(settings, ["wav2lip96"])
    assert out["rss_mb_at_start"] > 0
    assert out["rss_mb_after_warm_up"] >= out["rss_mb_at_start"]
    assert out["rss_mb_peak"] >= out["rss_mb_after_wav2lip96_requests"] > 0
    assert "wav2lip96" in out["warm_up_s"] and out["precision"]["wav2lip96"]
