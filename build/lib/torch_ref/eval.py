"""Evaluate a registered model with torch; see `--help`. The sliding-window evaluation, flags,
metric definitions, table and JSON are rsport/evaluation.py (shared with paddle_impl/eval.py);
this file is the torch half: model, weights, window probabilities, confusion matrix.
"""
import sys

from rsport.weights import ConversionError
from rsport import evaluation
from torch_ref import backend

TREE = "torch"


class Evaluator:
    """The framework half of an evaluation.

    Args:
        spec: the model's registry entry.
        cfg: the resolved configuration (rsport.evaluation.EvalConfig).
    """

    framework = TREE

    def __init__(self, spec, cfg):
        try:
            self.device = backend.set_device(cfg.device)
        except backend.SetupError as err:
            raise evaluation.EvalError(str(err)) from None
        backend.set_threads(cfg.threads)
        self.spec = spec
        self.net = backend.build(spec, cfg.variant)
        try:
            if cfg.weights:
                arrays = backend.weights_arrays(spec, self.net, cfg.weights)
            else:
                arrays = backend.reference_state(spec, cfg.variant, self.net)
            backend.load_state(self.net, arrays)
        except (ConversionError, backend.StateError) as err:
            first = str(err).splitlines()[0]
            raise evaluation.EvalError(first if str(cfg.weights) in first else f"{cfg.weights}: {first}") from None
        self.net.to(self.device)  # FRAMEWORK-DIFF: device placement
        self.net.eval()

    def predict(self, x):
        """Window batch [N, C, h, w] -> probabilities [N, K, h, w] (numpy)."""
        return backend.probabilities(self.net, self.spec, x, self.device)

    def confusion(self, pred, label):
        """This scene's confusion matrix by this framework's metric code."""
        return backend.confusion(pred, label, self.spec.num_classes, self.spec.ignore_index)

    def checks(self, confusion, doc):
        """Extra report entries: none here (the paddle twin cross-checks paddleseg's metric code)."""  # FRAMEWORK-DIFF: same
        return {}  # FRAMEWORK-DIFF: paddleseg's metric code


def main(argv=None) -> int:
    return evaluation.main(TREE, Evaluator, argv)


if __name__ == "__main__":
    sys.exit(main())
