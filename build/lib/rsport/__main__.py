"""``python -m rsport``: the ``rsport`` command (rsport/cli.py)."""
import sys

from rsport.cli import main

sys.exit(main())
