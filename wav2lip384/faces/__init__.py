"""Faces in frames: detection, tracking, cropping and paste-back.

Modules: ``detect`` (detectors, one detection pass, the one ``count_faces`` rule), ``track`` (following one face
through a video), ``crop`` (pads, smoothing, crop policies, the crop itself), ``composite`` (paste-back through a
feathered lower-face mask). The public names are re-exported here.

Frames everywhere in this module are RGB ``uint8`` arrays of shape (H, W, 3).

Detectors share one small interface (:class:`FaceDetector`):
- :class:`S3FDDetector` — S3FD, the detector the paper and Wav2Lip use, run through the ``face-alignment``
  package's implementation with weights from a local file or the Hub (Wav2Lip's ``s3fd.pth`` has the same
  state dict as face-alignment's own) or from the torch hub cache.
- :class:`HaarDetector` — OpenCV's bundled Haar cascade: always available offline, less accurate. Used when
  the S3FD weights cannot be had; the name of the detector actually used travels with every result.

Box pipeline for a sequence of frames (the same for inference and for training preprocessing):
raw detection (largest face) -> :func:`apply_pads` -> :func:`smooth_boxes` (5 frames, switchable)
-> crop box by policy -> :func:`crop_face` resize to the model size.

Crop policies (:data:`CROP_POLICIES`):
- ``"square"`` — :func:`square_crop_box`, the paper's bottom-edge square (§2.1.3), for the paper's own model.
- ``"stretch"`` — :func:`stretch_crop_box`, the original Wav2Lip rule the public checkpoints (96, 256, the
  community 384) were trained on: the padded detector box, clipped to the frame, resized to the model's square
  input without keeping the aspect ratio. :func:`paste_back` resizes the output back to the box's w x h.
"""

from __future__ import annotations

from wav2lip384.faces.composite import lower_face_mask, paste_back  # noqa: F401
from wav2lip384.faces.crop import (  # noqa: F401
    CROP_POLICIES,
    DEFAULT_CROP_POLICY,
    DEFAULT_PADS,
    SMOOTH_WINDOW,
    Box,
    apply_pads,
    crop_box,
    crop_face,
    face_boxes,
    smooth_boxes,
    square_crop_box,
    stretch_crop_box,
)
from wav2lip384.faces.detect import (  # noqa: F401
    DEFAULT_S3FD_CHECKPOINT,
    DETECT_MAX_SIDE,
    Detections,
    FaceDetector,
    HaarDetector,
    S3FDDetector,
    build_detector,
    cached_detector,
    count_faces,
    detect_faces,
    largest_face,
    s3fd_candidates,
)
from wav2lip384.faces.track import (  # noqa: F401
    TrackConfig,
    box_agreement,
    dominant_face,
    face_tracklets,
    match_candidate,
    persistent_multi_face_frames,
    track_faces,
)
