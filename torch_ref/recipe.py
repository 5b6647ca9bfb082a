"""The original training recipe: SGD with momentum and weight decay on every parameter, global
L2-norm gradient clipping, poly learning rate updated every iteration.

Twins: torch_ref/ and paddle_impl/recipe.py. Momentum and weight decay are rounded to float32:
paddle keeps them as float32 op attributes even for float64 parameters, every float32 kernel
uses the rounded value anyway (float32 results are bit-identical), and only with it do the
float64 twins agree to 1e-15.
"""
import numpy as np
import torch


def poly_factor(iteration, max_iters, power, delay=0):
    """Poly decay: (1 - it / max_iters) ** power, reaching 0 at max_iters. ``delay`` shifts the
    schedule by that many steps (the first ``delay + 1`` steps use the base LR): with delay 1, step t
    uses it = t - 1, as where the LR is set AFTER each optimizer step from the index of the step
    just taken (HRNet-Semantic-Segmentation's ``adjust_learning_rate``)."""
    return (1 - max(iteration - delay, 0) / max_iters) ** power


class Recipe:
    """Optimizer, schedule and clipping for ``model``'s trainable parameters.

    Args:
        model: the network.
        recipe: the spec's recipe (lr, momentum, weight_decay, clip_norm, power, max_iters; optional
            poly_delay, default 0). ``clip_norm`` None: no gradient clipping.
    """

    def __init__(self, model, recipe):
        self.params = [p for p in model.parameters() if p.requires_grad]  # FRAMEWORK-DIFF: trainable flag
        self.clip_norm = recipe.get("clip_norm")
        self.optimizer = torch.optim.SGD(  # FRAMEWORK-DIFF: optimizer class
            self.params, lr=recipe["lr"], momentum=float(np.float32(recipe["momentum"])),  # FRAMEWORK-DIFF: same
            weight_decay=float(np.float32(recipe["weight_decay"])))  # FRAMEWORK-DIFF: same
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(  # FRAMEWORK-DIFF: scheduler class
            self.optimizer, lambda it: poly_factor(it, recipe["max_iters"], recipe["power"], recipe.get("poly_delay", 0)))  # FRAMEWORK-DIFF: same

    def lr(self):
        """The learning rate the next step will use."""
        return self.optimizer.param_groups[0]["lr"]  # FRAMEWORK-DIFF: optimizer API

    def zero_grad(self):
        self.optimizer.zero_grad()  # FRAMEWORK-DIFF: optimizer API

    def step(self):
        """Clip by the global norm (unless the recipe has none), update, advance the schedule."""
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)  # FRAMEWORK-DIFF: paddle_impl/ops.py
        self.optimizer.step()
        self.scheduler.step()
