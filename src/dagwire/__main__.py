"""`python -m dagwire`: the same command line as `dagwire`."""

import sys

from .cli import main

sys.exit(main())
