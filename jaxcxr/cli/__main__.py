"""`python -m jaxcxr.cli`: the `jaxcxr` command."""

import sys

from jaxcxr.cli.entry import main

sys.exit(main())
