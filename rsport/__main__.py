"""``python -m rsport``: the ``rsport`` command (rsport/cli.py)."""
import sys

from rsport.cli import main

if __name__ == "__main__":  # importing the module (tests enumerate rsport's modules) runs nothing
    sys.exit(main())
