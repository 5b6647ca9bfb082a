"""Step `backward`: the gradient of EVERY trainable parameter after the train-mode loss, mapped

Runs the `backward` step alone: `python align/backward.py --model factseg50` (the options of
align/run_all.py); the step itself is rsport.alignment.steps.backward.
"""
import sys

from align.run_all import main

if __name__ == "__main__":
    sys.exit(main(default_steps=("backward",)))
