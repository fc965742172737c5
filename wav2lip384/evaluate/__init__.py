"""Measuring generated videos: lip sync (LSE-D/LSE-C, syncnet_python protocol), FID, lower-face sharpness and
the project SyncNet's sync confidence. Used by the CLI (``python -m wav2lip384.evaluate``) and may be used by
inference-side services (Compare); it never imports ``wav2lip384.train``.

- ``lse.py``: the protocol code and :func:`evaluate`.
"""

from wav2lip384.evaluate.lse import (  # noqa: F401
    build_syncnet_s,
    load_syncnet_s,
    offset_distances,
    lse_from_distances,
    mfcc_16k,
    lse_scores,
    FaceTrack,
    face_track,
    sharpness,
    frechet_distance,
    inception_features,
    load_inception,
    load_project_syncnet,
    project_sync,
    evaluate,
    main,
    FPS,
    VSHIFT,
    MIN_TRACK,
    LSE_CROP,
    CROP_SCALE,
    MEDIAN_KERNEL,
    QUALITY_CROP,
    PROJECT_LABEL,
)
