"""Train a registered model with torch; see `--help`. The loop, flags, logs and checkpoint layout are
rsport/training.py (shared with paddle_impl/train.py); this file is the torch half: model, recipe, one
iteration, checkpoint files. Multi-process runs start under the framework's own launcher (the
`--help` example: DDP / DataParallel, gloo on CPU); each rank reads its own shard of every batch.
"""
import sys
from pathlib import Path

from rsport.weights import ConversionError
from rsport import training
from torch_ref import backend
from torch_ref.recipe import Recipe

TREE = "torch"


class Engine:
    """The framework half of a training run.

    Args:
        spec: the model's registry entry.
        cfg: the resolved run configuration (rsport.training.TrainConfig).
    """

    framework = TREE
    weights_suffix = backend.WEIGHTS_SUFFIX

    def __init__(self, spec, cfg):
        try:
            self.rank, self.world_size, local_rank = backend.init_distributed(cfg.device)
            self.device = backend.set_device(cfg.device, local_rank)
            backend.autocast(cfg.amp, cfg.device)  # fails early where there is no mixed precision
        except backend.SetupError as err:
            raise training.TrainError(str(err)) from None
        backend.set_threads(cfg.threads)
        self.spec, self.cfg = spec, cfg
        self.net = backend.build(spec, cfg.variant)
        self.loss_fn = backend.build_loss(spec)
        try:
            if cfg.resume:
                arrays = backend.weights_arrays(spec, self.net, Path(cfg.resume) / f"model{backend.WEIGHTS_SUFFIX}")
            elif cfg.weights:
                arrays = backend.weights_arrays(spec, self.net, cfg.weights)
            else:
                arrays = backend.reference_state(spec, cfg.variant, self.net)
            backend.load_state(self.net, arrays)
        except (ConversionError, backend.StateError) as err:
            source = cfg.resume or cfg.weights
            raise training.TrainError(f"{source}: {str(err).splitlines()[0]}" if str(source) not in str(err)
                                      else str(err).splitlines()[0]) from None
        self.net.to(self.device)  # FRAMEWORK-DIFF: device placement
        self.net.train()
        self.model = backend.distributed(self.net, self.world_size, self.device)
        self.recipe = Recipe(self.net, dict(spec.recipe, lr=cfg.lr, max_iters=cfg.iters))
        if cfg.resume:
            try:
                backend.load_optimizer(self.recipe, self.net, Path(cfg.resume) / f"optimizer{backend.OPTIMIZER_SUFFIX}")
            except Exception as err:  # noqa: BLE001 - a damaged file can make the unpickler raise anything
                raise training.TrainError(f"{cfg.resume}: optimizer state not readable: {type(err).__name__}: "
                                          f"{str(err).splitlines()[0][:200]}") from None

    def step(self, x, y, seed):
        """One iteration on a numpy batch: forward (autocast if --amp), loss in float32, backward,
        clip + update + schedule. Returns (loss, lr used)."""
        backend.manual_seed(seed)
        self.recipe.zero_grad()
        with backend.autocast(self.cfg.amp, self.cfg.device):
            outputs = self.model(backend.to_device(x, self.device))
        loss = self.loss_fn(*backend.float32(outputs), backend.to_device(y, self.device))
        loss.backward()
        lr = self.recipe.lr()
        self.recipe.step()
        return float(loss.detach()), lr  # FRAMEWORK-DIFF: detach before float

    def mean(self, value):
        return backend.all_reduce_mean(value, self.world_size, self.device)

    def write_weights(self, staged, path):
        backend.save_file(backend.state_arrays(self.net), staged.path(path))

    def write_checkpoint(self, staged, folder):
        self.write_weights(staged, folder / f"model{backend.WEIGHTS_SUFFIX}")
        backend.save_optimizer(self.recipe, self.net, staged.path(folder / f"optimizer{backend.OPTIMIZER_SUFFIX}"))


def main(argv=None) -> int:
    return training.main(TREE, Engine, argv)


if __name__ == "__main__":
    sys.exit(main())
