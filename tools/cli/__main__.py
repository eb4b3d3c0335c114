"""`python -m dfd.tools.cli`: the `dfd` command, e.g. under `accelerate launch -m dfd.tools.cli predict ...`."""

import sys

from . import main


sys.exit(main())
