"""Media the lip-sync pipeline reads and writes: ``video.py`` (probe, decode, encode, mux through ffmpeg) and
``audio.py`` (the generator's mel features and their frame windows). Generic audio loading and the one
resampler live in :mod:`common.audio` so that ``qa`` and ``tts`` can use them without importing this package.

Nothing is imported here: ``import wav2lip384.media`` stays cheap.
"""
