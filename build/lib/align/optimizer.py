"""Step `optimizer`: the training recipe alone (SGD momentum, weight decay, global-norm clip,

Runs the `optimizer` step alone: `python align/optimizer.py --model factseg50` (the options of
align/run_all.py); the step itself is rsport.alignment.steps.optimizer.
"""
import sys

from align.run_all import main

if __name__ == "__main__":
    sys.exit(main(default_steps=("optimizer",)))
