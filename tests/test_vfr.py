"""Time is real time: a variable-frame-rate video plays at its real speed.

The clip is made here with ffmpeg: 3 s whose brightness rises 60 grey levels per second (so a frame's grey
level says when it was shot), with every third frame of a 30 fps run dropped while keeping the others'
timestamps: frames are 1/30 s or 2/30 s apart (20 fps on average, "30 tbr"), like a phone recording.
Decoding it at the average rate (the old behaviour) plays 90 frames at 20 fps: 4.5 s, 0.67x speed.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from wav2lip384.media.video import VideoWriter, ffmpeg_exe, nominal_fps, open_video, probe
from wav2lip384.render.avatars import AvatarCache

SECONDS = 3.0
LEVELS_PER_SECOND = 60.0


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c=black:s=64x48:r=30:d={SECONDS:g},format=gray,"
                    f"geq=lum='min(255,T*{LEVELS_PER_SECOND:g})'",
                    "-vf", "select='not(eq(mod(n,3),1))'", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", str(path)], check=True, timeout=60)
    return path


def source_timestamps(path) -> np.ndarray:
    """Presentation times (s) of the file's real frames, as ffmpeg's showinfo reports them."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-vf", "showinfo", "-f", "null", "-"],
                         capture_output=True, text=True, timeout=60).stderr
    return np.array([float(t) for t in re.findall(r"pts_time:([\d.]+)", out)])


def grey(frames) -> np.ndarray:
    return np.array([float(f.mean()) for f in frames])


def check_motion(levels: np.ndarray, fps: float, pts: np.ndarray) -> None:
    """Frame i shows what was on screen at i / fps: the last real frame shot at or before that time."""
    for i, level in enumerate(levels):
        shown = pts[np.searchsorted(pts, i / fps + 1e-6) - 1]
        assert abs(level - LEVELS_PER_SECOND * shown) <= 3.0, (i, level, shown)


def test_the_clip_is_really_variable_rate(vfr_clip):
    pts = source_timestamps(vfr_clip)
    gaps = np.round(np.diff(pts) * 30).astype(int)
    assert len(pts) == 60 and set(gaps) == {1, 2}
    v = probe(vfr_clip).video[0]
    assert v["fps"] == pytest.approx(20.0) and v["tbr"] == pytest.approx(30.0)


def test_decoding_follows_the_timestamps(vfr_clip):
    pts = source_timestamps(vfr_clip)
    s = open_video(vfr_clip)
    frames = list(s.frames)
    assert s.fps == pytest.approx(30.0)
    assert len(frames) / s.fps == pytest.approx(SECONDS, abs=1 / 30)  # the real duration, not 4.5 s
    check_motion(grey(frames), s.fps, pts)
    # the old decoding (rate = average fps, frames as ffmpeg's default output gives them) was 0.67x speed
    old = open_video(vfr_clip, constant_rate=False)
    assert sum(1 for _ in old.frames) / old.fps == pytest.approx(SECONDS / 20 * 30, abs=0.1)


def test_avatar_and_output_play_at_the_real_speed(vfr_clip, tmp_path):
    pts = source_timestamps(vfr_clip)
    av = AvatarCache(None).get(vfr_clip, frames_needed=1000)
    assert av.fps == pytest.approx(30.0) and av.complete
    assert av.n_frames / av.fps == pytest.approx(SECONDS, abs=1 / 30)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, av.width, av.height, av.fps, crf=0) as wr:  # what the pipeline writes, frame for frame
        for f in av.frames:
            wr.write(f)
    assert probe(out).duration_s == pytest.approx(SECONDS, abs=0.05)
    back = open_video(out)
    check_motion(grey(back.frames), back.fps, pts)


def test_nominal_rate_rules():
    assert nominal_fps(25.0, 25.0) == 25
    assert float(nominal_fps(29.97, 29.97)) == pytest.approx(29.97, abs=1e-3)
    assert nominal_fps(22.13, 30.0) == 30  # VFR phone clip: its base rate
    assert float(nominal_fps(24.0, 90000.0)) == 24.0  # a clock, not a frame rate: the average
    assert nominal_fps(None, 30.0) == 30 and nominal_fps(None, None) is None
    assert nominal_fps(120.0, 120.0) == 60  # capped: lip-sync at 120 fps would cost twice as much for nothing
