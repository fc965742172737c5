"""``python -m services bench ...``: the app-level benchmark (see services/bench.py)."""

from services.bench import main

raise SystemExit(main())
