"""Training: a dataset over preprocessed clips, one shared loop, and two thin task definitions.

Workflow (GPU recommended; everything also runs on a CPU, slowly, and ``--tiny`` runs 32 px models)::

    python -m wav2lip384.train.preprocess --videos RECORDINGS/ --out DATA384 --size 384
    python -m wav2lip384.train syncnet   --data DATA384 --size 384 --out RUNS/sync384
    python -m wav2lip384.train generator --data DATA384 --size 384 --syncnet RUNS/sync384/last.pt \\
        --out RUNS/gen384 [--gan]
    torchrun --nproc_per_node 4 -m wav2lip384.train ...        # the same, data-parallel (DDP)
    python -m wav2lip384.evaluate --video RESULT.mp4 --reference REAL.mp4 --project-syncnet RUNS/sync384/last.pt
    python -m wav2lip384.train.publish push --checkpoint RUNS/gen384/last.pt --repo OWNER/NAME

The full recipe (multi-GPU, the paper's 300 min, costs, Hub upload) is ``wav2lip384/train/README.md``;
``--dry-run`` prints a run's hours of data, steps per epoch, memory per GPU and time per epoch.

Modules: ``data`` (streaming datasets; the original's negatives and mel/frame alignment, with the evidence),
``loop`` (the one training loop: validation required, checkpoints, exact resume, AMP, DDP), ``syncnet`` /
``generator`` (task definitions with frozen configs; the logged sync-loss schedule), ``plan`` (``--dry-run``),
``export`` (checkpoint -> inference format), ``tiny`` (small configs and synthetic clips for smoke runs),
``__main__`` (the CLI).
Nothing is imported here, so ``import wav2lip384.train`` stays free of work.
"""
