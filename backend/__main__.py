"""``python -m backend serve | <op> ...`` (see backend/cli.py)."""

from backend.cli import main

raise SystemExit(main())
