"""`python -m netdns.cni_plugin` is `netdns-cni`."""

import sys

from netdns.cni_plugin.main import main

sys.exit(main())
