"""``python -m audiopolicyd.ctl``: ``audiopolicyctl``."""

import sys

from . import main

sys.exit(main())
