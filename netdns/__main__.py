"""`python -m netdns` is the `netdns` command."""

import sys

from netdns.cli import main

sys.exit(main())
