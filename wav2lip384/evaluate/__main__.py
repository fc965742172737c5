"""``python -m wav2lip384.evaluate --video V [--reference R] --json`` (see :mod:`wav2lip384.evaluate.lse`)."""

import sys

from wav2lip384.evaluate.lse import main

sys.exit(main())
