"""`python -m bridge` is the `outlook2mqtt` command."""

import sys

from bridge.cli.main import main

sys.exit(main())
