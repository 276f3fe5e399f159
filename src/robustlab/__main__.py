"""``python -m robustlab`` (and ``torchrun --nproc_per_node=N -m robustlab train ...``): the command line."""

import sys

from .cli import main

sys.exit(main())
