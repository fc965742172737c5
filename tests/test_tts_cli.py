"""``python -m tts`` as a user runs it: JSON out, WAV written, clear errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DH_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "tts", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_say_writes_a_wav_and_prints_json(out_dir):
    out, lip = out_dir / "x.wav", out_dir / "x16k.wav"
    r = run("say", "您好，请问有什么可以帮您？", "--out", str(out), "--lipsync-out", str(lip))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["engine"] == "espeak" and info["lang"] == "zh" and info["sample_rate"] == 22050
    assert 1.5 < info["duration_s"] < 8 and info["seconds_spent"] > 0
    wav, sr = sf.read(out)
    assert sr == 22050 and abs(len(wav) / sr - info["duration_s"]) < 0.01
    w16, sr16 = sf.read(lip)
    assert sr16 == 16000 and abs(len(w16) / sr16 - info["duration_s"]) < 0.01


def test_engines_json_lists_every_engine():
    r = run("engines", "--json")
    assert r.returncode == 0, r.stderr
    engines = {e["name"]: e for e in json.loads(r.stdout)}
    assert set(engines) == {"gpt_sovits", "neural", "espeak"}
    assert engines["espeak"]["available"] and engines["espeak"]["languages"] == ["zh", "en"]
    assert not engines["gpt_sovits"]["available"] and engines["gpt_sovits"]["reason"]


def test_empty_text_and_unavailable_engine_exit_2_with_a_message():
    r = run("say", "  ", "--out", os.devnull)
    assert r.returncode == 2 and "empty" in r.stderr and not r.stdout
    r = run("say", "hello", "--engine", "gpt_sovits")
    assert r.returncode == 2 and "not available" in r.stderr


def test_bench_prints_rtf_json():
    r = run("bench", "--json", "--engine", "espeak", "--repeats", "1")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    esp = res["engines"]["espeak"]
    assert esp["zh"]["audio_s"] > 1 and 0 < esp["zh"]["rtf"] < 1 and 0 < esp["en"]["rtf"] < 1
