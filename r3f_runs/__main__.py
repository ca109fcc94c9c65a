"""``python -m r3f_runs``, or run by its path (``python CHECKOUT/r3f_runs``, as the recipes do): r3f_runs.cli."""

import os
import sys

if not __package__:  # run by its path: sys.path[0] is this package's folder; the packages beside it come first
    sys.path[0] = os.path.dirname(os.path.abspath(sys.path[0]))

from r3f_runs.cli import main  # noqa: E402

sys.exit(main())
