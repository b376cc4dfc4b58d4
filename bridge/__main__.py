"""`python -m bridge` is the `outlook2mqtt` command."""

import sys

from .cli import main

sys.exit(main())
