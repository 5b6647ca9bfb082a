"""The original training recipes. Default: SGD with momentum and weight decay on every parameter,
global L2-norm gradient clipping, poly learning rate updated every iteration. ``optimizer="adamw"``
(swin_t_upernet): AdamW with mmcv's paramwise weight decay (0 for names containing a
``no_decay_keys`` entry), no clipping, and mmcv's poly schedule with a linear warmup
(``mmcv_poly_lr``).

Twins: torch_ref/ and paddle_impl/recipe.py. Momentum and weight decay are rounded to float32:
paddle keeps them as float32 op attributes even for float64 parameters, every float32 kernel
uses the rounded value anyway (float32 results are bit-identical), and only with it do the
float64 twins agree to 1e-15.
"""
import warnings

import numpy as np
import torch


def poly_factor(iteration, max_iters, power, delay=0):
    """Poly decay: (1 - it / max_iters) ** power, reaching 0 at max_iters. ``delay`` shifts the
    schedule by that many steps (the first ``delay + 1`` steps use the base LR): with delay 1, step t
    uses it = t - 1, as where the LR is set AFTER each optimizer step from the index of the step
    just taken (HRNet-Semantic-Segmentation's ``adjust_learning_rate``)."""
    return (1 - max(iteration - delay, 0) / max_iters) ** power


def mmcv_poly_lr(iteration, base_lr, recipe):
    """The learning rate mmcv 1.x's PolyLrUpdaterHook sets before iteration ``iteration`` (0-based,
    by_epoch=False), with the same expressions: regular = (base - min_lr) * (1 - t/T) ** power + min_lr;
    during a linear warmup (t < warmup_iters) it is regular * (1 - (1 - t/warmup_iters) * (1 - ratio)),
    i.e. the warmup multiplies the poly-DECAYED value, not the base (paddle's LinearWarmup does not)."""
    coeff = (1 - iteration / recipe["max_iters"]) ** recipe["power"]
    regular = (base_lr - recipe["min_lr"]) * coeff + recipe["min_lr"]
    if iteration >= recipe["warmup_iters"]:
        return regular
    k = (1 - iteration / recipe["warmup_iters"]) * (1 - recipe["warmup_ratio"])
    return regular * (1 - k)


def decay_groups(model, no_decay_keys):
    """Trainable (name, parameter) pairs split as mmcv's DefaultOptimizerConstructor splits them with
    ``custom_keys={key: dict(decay_mult=0.)}``: no decay when any key is a substring of the dotted
    name. Returns (decayed, not decayed), each in model order."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]  # FRAMEWORK-DIFF: trainable flag
    decayed = [(name, p) for name, p in named if not any(key in name for key in no_decay_keys)]
    return decayed, [(name, p) for name, p in named if any(key in name for key in no_decay_keys)]


class MmcvPolyLR(torch.optim.lr_scheduler.LRScheduler):  # FRAMEWORK-DIFF: scheduler base class
    """``mmcv_poly_lr`` as a scheduler: every group gets the same value (all lr_mult are 1)."""

    def __init__(self, optimizer, base_lr, recipe):  # FRAMEWORK-DIFF: scheduler signature
        self.base_lr = base_lr  # FRAMEWORK-DIFF: paddle sets it in its constructor
        self.recipe = dict(recipe)
        super().__init__(optimizer)  # FRAMEWORK-DIFF: same

    def get_lr(self):
        return [mmcv_poly_lr(self.last_epoch, self.base_lr, self.recipe) for _ in self.optimizer.param_groups]  # FRAMEWORK-DIFF: same


class Recipe:
    """Optimizer, schedule and clipping for ``model``'s trainable parameters.

    Args:
        model: the network.
        recipe: the spec's recipe: SGD (lr, momentum, weight_decay, clip_norm, power, max_iters) or,
            with ``optimizer="adamw"``, AdamW (lr, betas, eps, weight_decay, no_decay_keys,
            clip_norm None, power, min_lr, warmup_iters, warmup_ratio, max_iters); SGD's optional
            ``poly_delay`` (default 0) delays the poly schedule by that many steps; ``start_iter``
            (default 0) advances the schedule that many iterations first (the alignment harness
            starts right after the warmup, where the learning rate moves the weights).
    """

    def __init__(self, model, recipe):
        self.params = [p for p in model.parameters() if p.requires_grad]  # FRAMEWORK-DIFF: trainable flag
        self.clip_norm = recipe.get("clip_norm")
        if recipe.get("optimizer", "sgd") == "adamw":
            self._adamw(model, recipe)
        else:
            self._sgd(recipe)
        with warnings.catch_warnings():  # torch warns of a scheduler step before any optimizer step
            warnings.simplefilter("ignore")
            for _ in range(recipe.get("start_iter", 0)):
                self.scheduler.step()

    def _sgd(self, recipe):
        """SGD with momentum and L2 weight decay on every parameter, poly LR."""
        self.optimizer = torch.optim.SGD(  # FRAMEWORK-DIFF: optimizer class
            self.params, lr=recipe["lr"], momentum=float(np.float32(recipe["momentum"])),  # FRAMEWORK-DIFF: same
            weight_decay=float(np.float32(recipe["weight_decay"])))  # FRAMEWORK-DIFF: same
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(  # FRAMEWORK-DIFF: scheduler class
            self.optimizer, lambda it: poly_factor(it, recipe["max_iters"], recipe["power"], recipe.get("poly_delay", 0)))  # FRAMEWORK-DIFF: same

    def _adamw(self, model, recipe):
        """AdamW (decoupled decay) on two groups: weight_decay, and 0 for the no-decay names."""
        decayed, plain = decay_groups(model, recipe["no_decay_keys"])
        self.optimizer = torch.optim.AdamW(  # FRAMEWORK-DIFF: optimizer class (the no-decay group: torch weight_decay 0.0, paddle apply_decay_param_fun)
            [{"params": [p for _, p in decayed], "weight_decay": recipe["weight_decay"]},  # FRAMEWORK-DIFF: same
             {"params": [p for _, p in plain], "weight_decay": 0.0}],  # FRAMEWORK-DIFF: same
            lr=recipe["lr"], betas=tuple(recipe["betas"]), eps=recipe["eps"])  # FRAMEWORK-DIFF: same
        self.scheduler = MmcvPolyLR(self.optimizer, recipe["lr"], recipe)  # FRAMEWORK-DIFF: same

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
