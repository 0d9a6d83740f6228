"""``python -m attnjax.inspect``: see :mod:`attnjax.inspect.cli`."""

import sys

from attnjax.inspect.cli import main

sys.exit(main())
