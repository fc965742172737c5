"""Training: a dataset over preprocessed clips, one shared loop, and two thin task definitions.

``python -m wav2lip384.train syncnet|generator --data DIR --size 96|384 --out DIR`` (see ``__main__``).
Nothing is imported here so ``import wav2lip384.train`` stays free of work.
"""
