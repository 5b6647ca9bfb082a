"""The embedded default weights: a seeded torch reference with realistic, non-default BN state.

Pure random initialisation leaves BatchNorm at mean 0 / var 1, which (a) cannot catch a
converter that forgets BN buffers and (b) drives activations of a deep ResNet to ~1e3, making
float32 comparisons meaningless. So: seed, randomise the BN affine parameters, estimate the
running statistics by train-mode forward passes over seeded sample images (cumulative average),
then perturb them so that they are not exactly the batch statistics of any input either.
"""
import torch

from rsport.fixtures import image_batch
from rsport.registry import ModelSpec
from torch_ref import backend

DEFAULT_SEED = 2333  # the original training config's seed
CALIBRATION_BATCHES = 3


def build_reference(spec: ModelSpec, variant: str = "default", seed: int = DEFAULT_SEED):
    """Return the spec's torch model (eval mode) with seeded weights and randomised BN state."""
    torch.manual_seed(seed)
    model = backend.build(spec, variant)
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if backend.layer_type(m) == "BatchNorm"]
    momenta = [bn.momentum for bn in norms]
    batch, channels, height, width = spec.fixture_shape(variant)
    with torch.no_grad():
        for bn in norms:
            bn.weight.copy_(torch.empty_like(bn.weight).uniform_(0.5, 1.5, generator=gen))
            bn.bias.copy_(torch.empty_like(bn.bias).normal_(0.0, 0.1, generator=gen))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        model.train()
        for i in range(CALIBRATION_BATCHES):
            model(torch.from_numpy(image_batch(spec, (batch * 2, channels, height // 2, width // 2), seed + i)))
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
            std = bn.running_var.sqrt()
            bn.running_mean.add_(0.1 * std * torch.randn(bn.running_mean.shape, generator=gen))
            bn.running_var.mul_(torch.exp(0.2 * torch.randn(bn.running_var.shape, generator=gen)))
    model.eval()
    return model
