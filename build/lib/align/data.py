"""Step `data`: both twins are fed exactly the same batches.

Runs the `data` step alone: `python align/data.py --model factseg50` (the options of
align/run_all.py); the step itself is rsport.alignment.steps.data.
"""
import sys

from align.run_all import main

if __name__ == "__main__":
    sys.exit(main(default_steps=("data",)))
