"""The example files: present, the sizes and durations examples/README.md documents, a face the offline
detector finds, and re-creatable by ``python -m examples.make_examples``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from examples import make_examples as mk

EX = Path(mk.__file__).resolve().parent


@pytest.fixture(scope="module")
def haar():
    from wav2lip384.faces import HaarDetector

    return HaarDetector()  # the detector every install has (what build_detector(None) falls back to)


@pytest.fixture(scope="module")
def video_frames():
    from wav2lip384.media.video import open_video

    return list(open_video(EX / mk.VIDEO).frames)


def test_readme_lists_every_example_with_its_size_and_licence():
    readme = (EX / "README.md").read_text(encoding="utf-8")
    for name in (mk.PHOTO, mk.VIDEO, mk.CLOSEUP, *mk.SPEECH):
        assert (EX / name).is_file(), name
        assert f"`{name}`" in readme, name
    assert "512×512" in readme and "8.0 s" in readme and "25 fps" in readme
    assert "public domain" in readme and "skimage.data.astronaut" in readme and "made by this project" in readme


def test_closeup_shows_a_face_of_at_least_384_px(haar):
    from wav2lip384.faces import detect_faces
    from wav2lip384.media.video import read_image

    det = detect_faces(haar, [read_image(EX / mk.CLOSEUP)])
    box = det.boxes[0]  # (4,) x1, y1, x2, y2; NaN when no face
    assert np.isfinite(box).all() and box[2] - box[0] >= 384  # a 384 model's mouth is not shrunk when pasted back


def test_photo_is_the_full_512px_source_with_one_detectable_face(haar):
    from wav2lip384.faces import detect_faces, face_boxes
    from wav2lip384.media.video import read_image, sniff_format

    path = EX / mk.PHOTO
    assert sniff_format(path) == "jpeg" and path.stat().st_size < 150_000
    img = read_image(path)
    assert img.shape == (512, 512, 3)
    # the whole source photo, only JPEG loss: not a crop, not resampled
    err = np.abs(img.astype(np.int16) - mk.source_photo().astype(np.int16))
    assert err.mean() < 2.0
    det = detect_faces(haar, [img])
    assert det.missing == [] and det.n_faces.tolist() == [1]
    x1, y1, x2, y2 = det.boxes[0]
    assert 85 <= x2 - x1 <= 110 and 90 <= y2 - y1 <= 120  # README: 94x103 px
    side = int(np.diff(face_boxes(det.boxes, img.shape, smooth=False)[0][[0, 2]])[0])
    assert side >= 90  # the crop the lip-sync models see


def test_video_avatar_plays_8s_at_25fps_without_sound_and_keeps_its_face(haar, video_frames):
    from wav2lip384.faces import detect_faces
    from wav2lip384.media.video import probe

    path = EX / mk.VIDEO
    assert path.stat().st_size < 1_500_000
    info = probe(path)
    assert info.audio == [] and len(info.video) == 1
    v = info.video[0]
    assert (v["codec"], v["width"], v["height"], v["fps"]) == ("h264", 512, 512, 25.0)
    assert info.duration_s == pytest.approx(8.0, abs=0.05)
    assert len(video_frames) == 200
    # the detector on a spread of frames (all 200 take ~1 min on a busy CPU; make_examples checked them)
    sample = video_frames[::25] + [video_frames[-1]]
    det = detect_faces(haar, sample)
    assert det.missing == [] and set(det.n_faces.tolist()) == {1}
    widths = det.boxes[:, 2] - det.boxes[:, 0]
    assert widths.min() >= 85
    centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
    assert np.ptp(centres, axis=0).max() < 20  # gentle: the face moves a few pixels, not across the frame
    # it moves, and it loops: last -> first is a step like any other (coding noise aside)
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in zip(video_frames[:-1], video_frames[1:])]
    assert np.abs(video_frames[100].astype(np.int16) - video_frames[0].astype(np.int16)).mean() > 1.0
    assert np.abs(video_frames[-1].astype(np.int16) - video_frames[0].astype(np.int16)).mean() < 4 * max(diffs)


def test_head_motion_is_periodic_and_small():
    period = mk.VIDEO_SECONDS
    a, b = mk.head_motion(0.0, period), mk.head_motion(period, period)
    assert a.roll_deg == pytest.approx(b.roll_deg, abs=1e-9) and a.dx == pytest.approx(b.dx, abs=1e-9)
    assert a.dy == pytest.approx(b.dy, abs=1e-9) and a.scale == pytest.approx(b.scale) and a.zoom == pytest.approx(b.zoom)
    poses = [mk.head_motion(t, period) for t in np.linspace(0, period, 101)]
    assert max(abs(p.roll_deg) for p in poses) <= 2.5
    assert max(max(abs(p.dx), abs(p.dy)) for p in poses) <= 3.0
    assert all(1.0 <= p.zoom <= 1.02 and 0.98 <= p.scale <= 1.02 for p in poses)


def test_make_examples_recreates_the_images_and_the_videos_first_frame(tmp_path, video_frames):
    from wav2lip384.media.video import read_image

    photo = read_image(mk.make_photo(tmp_path / mk.PHOTO))
    assert np.abs(photo.astype(np.int16) - read_image(EX / mk.PHOTO).astype(np.int16)).max() <= 1
    closeup = read_image(mk.make_closeup(tmp_path / mk.CLOSEUP))
    assert np.abs(closeup.astype(np.int16) - read_image(EX / mk.CLOSEUP).astype(np.int16)).max() <= 1
    first = next(mk.motion_frames(mk.source_photo()))
    mse = np.mean((first.astype(np.float64) - video_frames[0].astype(np.float64)) ** 2)
    assert 10 * np.log10(255.0 ** 2 / mse) > 30  # the committed video is this script's output (H.264 loss aside)
