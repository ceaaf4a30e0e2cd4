"""`python -m jaxcxr`: the `jaxcxr` command (as the console script and `python -m jaxcxr.cli`)."""

import sys

from jaxcxr.cli.entry import main

sys.exit(main())
