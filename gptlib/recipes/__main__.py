"""``python -m gptlib.recipes``: see :mod:`gptlib.recipes`."""

import sys

from gptlib.recipes.runner import main

sys.exit(main())
