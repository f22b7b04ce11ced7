"""``python -m backend serve | <op> ...`` (see backend/cli.py)."""

from backend import malloc

malloc.configure()  # before torch allocates anything: see backend/malloc.py

from backend.cli import main  # noqa: E402

raise SystemExit(main())
