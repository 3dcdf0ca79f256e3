"""``python -m score_sde ...`` is the ``score-sde`` command line (see :mod:`score_sde.cli`)."""
import sys

from .cli import main

sys.exit(main())
