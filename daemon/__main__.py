"""python -m audiopolicyd runs the daemon."""

import sys

from .app import main

sys.exit(main())
