"""Benchmarks, apart from the runtime (nothing in inference imports them).

- ``suite.py``: ``python -m wav2lip384.bench`` entries (our pipeline per model, plain vs optimised, the baseline).
- ``baseline.py``: the original Wav2Lip ``inference.py`` strategy, re-implemented for comparison.
"""
