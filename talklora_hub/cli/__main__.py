"""`python -m talklora_hub.cli ...`: the same command line as `talklora-hub` (LocalHub starts its server this way)."""

import sys

from . import main

sys.exit(main())
