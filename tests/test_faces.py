"""Face boxes: the paper's square crop rule, pads, smoothing, paste-back mask, detector choice."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserFacingError
from wav2lip384 import faces as F


# --- crop rule ---------------------------------------------------------------------------------------------
def test_square_crop_keeps_bottom_edge_and_width():
    # a tall box (typical face): the square sits on the bottom edge, side = the bottom edge's length
    sq = F.square_crop_box((100, 50, 200, 220), (480, 640, 3))
    assert sq == (100, 120, 200, 220)
    x1, y1, x2, y2 = sq
    assert x2 - x1 == y2 - y1 == 100


def test_square_crop_wide_box_grows_upwards():
    sq = F.square_crop_box((100, 150, 260, 250), (480, 640))
    assert sq == (100, 90, 260, 250)  # bottom kept at 250, square of 160 above it


def test_square_crop_shrinks_instead_of_leaving_the_frame():
    # the square would start above the frame: it shrinks, bottom edge kept, centred on the box
    sq = F.square_crop_box((0, 0, 300, 120), (200, 400))
    x1, y1, x2, y2 = sq
    assert (y1, y2) == (0, 120) and x2 - x1 == 120 and x1 == 90
    # never outside the frame on the right either
    sq = F.square_crop_box((350, 100, 420, 180), (200, 400))
    assert sq[2] <= 400 and sq[2] - sq[0] == sq[3] - sq[1]


def test_crop_is_square_resize_without_distortion():
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[100:150, 100:150] = 255  # a white square in the crop's middle stays a square
    crop = F.crop_face(frame, (50, 50, 200, 200), 96)
    assert crop.shape == (96, 96, 3)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1


# --- pads and smoothing --------------------------------------------------------------------------------
def test_pads_default_and_clipping():
    assert F.DEFAULT_PADS == (0, 10, 0, 0)
    b = F.apply_pads(np.array([[10, 20, 110, 130]], np.float32), (5, 10, 3, 4), (140, 112))
    np.testing.assert_array_equal(b, [[7, 15, 112, 140]])  # right and bottom clipped to the frame


def test_smoothing_is_a_centred_window_of_five_and_switchable():
    raw = np.array([[0, 0, 10, 10]] * 10, np.float32)
    raw[5] += 50  # one jittery frame
    sm = F.smooth_boxes(raw, 5)
    assert sm[5, 0] == pytest.approx(10.0)  # 50 / 5
    assert sm[3, 0] == pytest.approx(10.0) and sm[0, 0] == 0 and sm[8, 0] == 0
    off = F.face_boxes(raw, (200, 200), pads=(0, 0, 0, 0), smooth=False)
    assert off[5, 0] == 50
    on = F.face_boxes(raw, (200, 200), pads=(0, 0, 0, 0), smooth=True)
    assert on[5, 0] == 10


def test_face_boxes_mark_missing_frames():
    raw = np.array([[0, 0, 10, 10], [np.nan] * 4, [0, 0, 10, 10]], np.float32)
    out = F.face_boxes(raw, (100, 100))
    assert (out[1] == -1).all() and (out[0] >= 0).all()


# --- paste-back --------------------------------------------------------------------------------------------
def test_mask_is_zero_on_upper_face_and_borders_and_one_on_the_mouth():
    m = F.lower_face_mask(100)[..., 0]
    assert m.shape == (100, 100)
    assert m[:45].max() == 0  # upper face untouched
    assert m[:, 0].max() == 0 and m[:, -1].max() == 0 and m[-1].max() == 0  # no seam at the box border
    assert m[75, 50] == pytest.approx(1.0)
    assert np.all(np.diff(m[:, 50][:70]) >= 0)  # monotone ramp: feathered, not a hard edge


def test_paste_back_changes_only_the_lower_face_inside_the_box():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    face = np.full((96, 96, 3), 7, np.uint8)
    box = (100, 60, 200, 160)
    out = F.paste_back(frame, face, box)
    diff = np.any(out != frame, axis=2)
    ys, xs = np.nonzero(diff)
    assert diff.any()
    assert xs.min() > 100 and xs.max() < 199 and ys.max() < 159  # strictly inside the box
    assert ys.min() >= 60 + 45  # nothing above the feathered lower-face region
    outside = np.ones(diff.shape, bool)
    outside[60:160, 100:200] = False
    assert not diff[outside].any()
    hard = F.paste_back(frame, face, box, feather=False)
    assert (hard[60:160, 100:200] == 7).all()


def test_pasting_a_frames_own_crop_back_leaves_it_unchanged():
    # geometry check: crop -> resize to the model size -> paste back lands exactly where it came from
    yy, xx = np.mgrid[0:300, 0:400]
    frame = np.stack([(yy + xx) % 256, (2 * yy) % 256, (3 * xx) % 256], 2).astype(np.uint8)
    frame = __import__("cv2").GaussianBlur(frame, (9, 9), 3)  # smooth content survives resampling
    box = F.square_crop_box((120, 40, 260, 230), frame.shape)
    for size in (96, 384):
        out = F.paste_back(frame, F.crop_face(frame, box, size), box)
        err = np.abs(out.astype(int) - frame.astype(int))
        assert err.mean() < 0.5 and np.percentile(err, 99.9) <= (12 if size == 96 else 4), size


# --- detectors ------------------------------------------------------------------------------------------
def test_offline_s3fd_falls_back_to_haar_and_says_so(tmp_path):
    det = F.build_detector(str(tmp_path / "missing" / "s3fd.pth"))
    assert isinstance(det, F.HaarDetector)
    assert "opencv-haar" in det.description and "S3FD" in det.description
    det = F.build_detector(F.DEFAULT_S3FD_CHECKPOINT)  # Hub offline in tests
    assert det.name == "opencv-haar"
    with pytest.raises(UserFacingError, match="S3FD"):
        F.build_detector(F.DEFAULT_S3FD_CHECKPOINT, fallback=False)


@pytest.mark.slow  # builds the S3FD network (~5 s with face-alignment's imports)
def test_s3fd_loads_a_local_weights_file(tmp_path):
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    torch.manual_seed(0)
    path = tmp_path / "s3fd.pth"
    torch.save(s3fd().state_dict(), path)  # random weights, same format as Wav2Lip's s3fd.pth
    det = F.build_detector(str(path))
    assert isinstance(det, F.S3FDDetector) and det.description == "s3fd"
    found = det.detect_batch([np.zeros((64, 64, 3), np.uint8)])
    assert len(found) == 1 and found[0].shape[1] == 5


def test_detect_faces_picks_the_largest_and_counts_faces():
    class Two(F.FaceDetector):
        name = "two"

        def detect_batch(self, frames):
            return [np.array([[0, 0, 10, 10, 0.9], [20, 20, 60, 70, 0.8]], np.float32) for _ in frames]

    frames = [np.zeros((100, 100, 3), np.uint8)] * 3
    det = F.detect_faces(Two(), frames, max_side=50)  # downscaled for detection, boxes scaled back
    np.testing.assert_allclose(det.boxes[0], [40, 40, 120, 140])
    # the 10x10 box is under a quarter of the largest face's area: not counted as a second face
    assert det.multi_face_frames == []
    assert F.count_faces(np.array([[0, 0, 40, 40, 1], [50, 50, 90, 90, 1]], np.float32)) == 2


@pytest.mark.slow
def test_haar_finds_the_faces_of_the_real_images(shared_data):
    from wav2lip384.media.video import read_image

    det = F.HaarDetector()
    for name in ("face_recognition_obama.jpg", "sadtalker_happy.png"):
        img = read_image(shared_data / "image" / name)
        d = F.detect_faces(det, [img])
        assert d.missing == [], name
        x1, y1, x2, y2 = F.face_boxes(d.boxes, img.shape)[0]
        assert 0 <= x1 < x2 <= img.shape[1] and 0 <= y1 < y2 <= img.shape[0]


# --- crop policies -----------------------------------------------------------------------------------------
def _textured(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_stretch_crop_is_the_padded_box_resized_without_keeping_aspect():
    import cv2

    frame = _textured(240, 320)
    raw = np.array([[100.4, 60.2, 180.6, 170.0]], np.float32)  # 80 x 110 box, taller than wide
    boxes = F.face_boxes(raw, frame.shape, pads=(0, 10, 0, 0), smooth=False, policy="stretch")
    assert tuple(boxes[0]) == (100, 60, 181, 180)  # bottom pad of 10, rounded, not squared
    crop = F.crop_face(frame, boxes[0], 96)
    want = cv2.resize(frame[60:180, 100:181], (96, 96), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crop, want)
    # pads are clipped to the frame (Wav2Lip's rule), the box is never outside it
    edge = F.face_boxes(np.array([[250, 200, 330, 236]], np.float32), frame.shape, policy="stretch")
    assert tuple(edge[0]) == (250, 200, 320, 240)
    # the square policy (default) still gives the paper's square
    sq = F.face_boxes(raw, frame.shape, pads=(0, 10, 0, 0), smooth=False)
    assert sq[0, 2] - sq[0, 0] == sq[0, 3] - sq[0, 1]
    with pytest.raises(ValueError, match="crop policy"):
        F.face_boxes(raw, frame.shape, policy="letterbox")


def test_paste_back_of_a_non_square_box_changes_only_pixels_inside_it():
    frame = _textured(200, 300, seed=1)
    box = (40, 30, 140, 180)  # 100 wide, 150 high
    face = np.full((96, 96, 3), 255, np.uint8)
    for feather in (True, False):
        out = F.paste_back(frame, face, box, feather=feather)
        changed = np.any(out != frame, axis=2)
        ys, xs = np.nonzero(changed)
        assert ys.min() >= 30 and ys.max() < 180 and xs.min() >= 40 and xs.max() < 140
        if feather:
            assert not changed[30:30 + int(0.45 * 150)].any()  # upper face kept
            assert changed[30 + int(0.8 * 150), 90]  # mouth area replaced
        else:
            assert changed[30:180, 40:140].mean() > 0.99
    m = F.lower_face_mask(150, width=100)
    assert m.shape == (150, 100, 1) and m[:, 0].max() == 0 and m[-1].max() == 0
    np.testing.assert_array_equal(F.lower_face_mask(64), F.lower_face_mask(64, width=64))


def test_stretch_crop_and_paste_back_round_trip_is_lossless_enough():
    # a box's own stretched crop pasted back changes nothing visible (the model sees what it gives back)
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[:, :, 0] = np.linspace(0, 255, 300, dtype=np.uint8)[None]  # smooth ramp: resampling loses little
    box = (40, 30, 140, 180)
    crop = F.crop_face(frame, box, 96)
    out = F.paste_back(frame, crop, box)
    assert np.abs(out.astype(int) - frame.astype(int)).max() <= 3
