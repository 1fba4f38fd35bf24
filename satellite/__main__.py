"""`python -m satellite` is the same as the `lfm-satellite` command."""

import sys

from satellite.cli import main

sys.exit(main())
