"""Entry point of ``python -m aura_core``."""

import sys

from aura_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
