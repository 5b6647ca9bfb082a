"""Step `metric`: both sides' metric code on the same predictions and labels: the confusion

Runs the `metric` step alone: `python align/metric.py --model factseg50` (the options of
align/run_all.py); the step itself is rsport.alignment.steps.metric.
"""
import sys

from align.run_all import main

if __name__ == "__main__":
    sys.exit(main(default_steps=("metric",)))
