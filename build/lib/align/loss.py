"""Step `loss`: train-mode forward (batch statistics) and the model's real training loss, on

Runs the `loss` step alone: `python align/loss.py --model factseg50` (the options of
align/run_all.py); the step itself is rsport.alignment.steps.loss.
"""
import sys

from align.run_all import main

if __name__ == "__main__":
    sys.exit(main(default_steps=("loss",)))
