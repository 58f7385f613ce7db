"""``python -m eval.cli`` (and ``torchrun -m eval.cli``): the ``tdbn-zoo`` command line."""
import sys

from . import main

sys.exit(main())
