"""Turning a face video or photo plus speech into a lip-synced video.

- ``pipeline.py``: :class:`LipSyncPipeline`, stateless per request over the avatar store.
- ``avatars.py``: the avatar store (decoded frames, face boxes and crops, cached face features) on disk and in memory.
- ``optimize.py``: precision and runtime transforms of a loaded generator (exact fusions, verified bf16).

Nothing is imported here: ``import wav2lip384.render`` stays cheap.
"""
