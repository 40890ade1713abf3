"""``python -m asyncproc`` is the ``asyncproc`` command."""

import sys

from .cli.main import main

sys.exit(main())
