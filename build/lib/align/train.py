"""Step `train`: K iterations of the real training loop (train mode, loss, clip, optimizer,

Runs the `train` step alone: `python align/train.py --model factseg50` (the options of
align/run_all.py); the step itself is rsport.alignment.steps.train.
"""
import sys

from align.run_all import main

if __name__ == "__main__":
    sys.exit(main(default_steps=("train",)))
