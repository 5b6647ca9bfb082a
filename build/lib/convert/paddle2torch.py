"""Convert paddle weights of a registered model to torch; see `--help` and convert/core.py."""
import sys

from convert.cli import main

if __name__ == "__main__":
    sys.exit(main("paddle"))
