"""``python -m growres`` is the ``growres`` command."""
import sys

from .cli import main

sys.exit(main())
