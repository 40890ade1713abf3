"""``python -m asyncproc`` is the ``asyncproc`` command."""

import sys

from ._cli import main

sys.exit(main())
