"""``python -m aiotasks``: see ``aiotasks._cli``."""

from ._cli import main

raise SystemExit(main())
