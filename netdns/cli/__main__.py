"""`python -m netdns.cli` is the `netdns` command too (as `python -m netdns` is)."""

import sys

from netdns.cli.main import main

sys.exit(main())
