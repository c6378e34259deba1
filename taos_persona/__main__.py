"""``python -m taos_persona``: see :mod:`taos_persona.cli`."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
