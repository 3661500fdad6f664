"""`python -m talklora_hub.hub serve --root DIR ...`: the hub commands without the full CLI."""

import sys

from .commands import main

sys.exit(main())
