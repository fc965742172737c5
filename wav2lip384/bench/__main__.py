"""``python -m wav2lip384.bench --json [--quick]`` (see :mod:`wav2lip384.bench.suite`)."""

import sys

from wav2lip384.bench.suite import main

sys.exit(main())
