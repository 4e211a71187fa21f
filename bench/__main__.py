"""``python -m bench`` is the ``bench`` command (and what ``torchrun -m bench`` starts)."""

import sys

from bench.cli import main

sys.exit(main())
