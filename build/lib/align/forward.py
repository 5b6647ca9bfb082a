"""Step `forward`: eval mode, batch >= 2, every named output and every tap.

Runs the `forward` step alone: `python align/forward.py --model factseg50` (the options of
align/run_all.py); the step itself is rsport.alignment.steps.forward.
"""
import sys

from align.run_all import main

if __name__ == "__main__":
    sys.exit(main(default_steps=("forward",)))
