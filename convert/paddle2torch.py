"""Convert paddle weights of a registered model to torch; see `--help` and convert/core.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from convert.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("paddle"))
