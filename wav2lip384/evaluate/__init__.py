"""Measuring generated videos: lip sync (LSE-D/LSE-C, syncnet_python protocol), FID, lower-face sharpness and
the project SyncNet's sync confidence. Used by the CLI (``python -m wav2lip384.evaluate``) and may be used by
inference-side services (Compare); it never imports ``wav2lip384.train``.

- ``lse.py``: the protocol code (syncnet_python's LSE-D / LSE-C), the weights (:data:`DEFAULT_SYNCNET`),
  :func:`evaluate` (the CLI's measures), :func:`video_scores` (one video's figures, as Compare shows them) and
  :func:`lse_of` (LSE of one video, for gates).
- ``gate.py``: the lip-sync check of precision levers (:class:`LseGate`, :func:`lse_gate_for`): a faster
  precision is refused when it lowers LSE-C on the example clip by more than 0.1 (published weights only).
- ``mouth.py``: the weight-free mouth figures: :func:`sharpness` (the project's one sharpness measure) and
  :func:`pause_motion` (how still the mouth stays in pauses).
"""

from wav2lip384.evaluate.gate import MAX_LSE_C_DROP, ExampleClip, LseGate, lse_gate_for  # noqa: F401
from wav2lip384.evaluate.lse import (  # noqa: F401
    CROP_SCALE,
    DEFAULT_SYNCNET,
    FPS,
    HOW_TO_GET_SYNCNET,
    LSE_CROP,
    MEDIAN_KERNEL,
    MIN_TRACK,
    PROJECT_LABEL,
    QUALITY_CROP,
    SYNCNET_S3FD,
    VSHIFT,
    FaceTrack,
    build_syncnet_s,
    evaluate,
    face_track,
    frechet_distance,
    inception_features,
    load_inception,
    load_project_syncnet,
    load_syncnet_s,
    lse_from_distances,
    lse_of,
    lse_scores,
    main,
    mfcc_16k,
    offset_distances,
    project_sync,
    summary_text,
    syncnet_features,
    syncnet_provenance,
    video_scores,
)
from wav2lip384.evaluate.mouth import (  # noqa: F401
    MIN_PAUSE_FRAMES,
    PAUSE_DB,
    pause_frames,
    pause_motion,
    sharpness,
)
