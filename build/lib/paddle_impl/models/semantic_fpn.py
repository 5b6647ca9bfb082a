"""Semantic-FPN building blocks shared by FactSeg and FarSeg: the simplecv FPN and the
asymmetric decoder ("AssymetricDecoder", the original spelling).

Provenance: github.com/Z-Zheng/SimpleCV (simplecv/module/fpn.py, a maskrcnn-benchmark
derivative) and github.com/Junjue-Wang/FactSeg @ d7e3f5ba / github.com/Z-Zheng/FarSeg
(module/semantic_fpn.py, module/farseg.py). Kirillov et al., "Panoptic Feature Pyramid
Networks", CVPR 2019. Twins: torch_ref/ and paddle_impl/models/semantic_fpn.py.
"""
import math

import paddle.nn as nn
import paddle.nn.functional as F

from paddle_impl.models.resnet import norm_layer
from paddle_impl.ops import Upsample  # FRAMEWORK-DIFF: float64-exact bilinear (paddle_impl/ops.py)


class FPN(nn.Layer):
    """maskrcnn-benchmark FPN as in simplecv: 1x1 lateral and 3x3 output convs with bias, no
    norm, nearest x2 top-down. Convs are registered as ``fpn_inner{k}`` / ``fpn_layer{k}``."""

    def __init__(self, in_channels_list, out_channels):
        super().__init__()
        self.inner_names = []
        self.layer_names = []
        for k, in_channels in enumerate(in_channels_list, 1):
            inner = nn.Conv2D(in_channels, out_channels, kernel_size=1)
            layer = nn.Conv2D(out_channels, out_channels, kernel_size=3, padding=1)
            for conv in (inner, layer):
                nn.initializer.KaimingUniform(negative_slope=1, nonlinearity="leaky_relu")(conv.weight)  # FRAMEWORK-DIFF: init API (torch's a=1 is paddle's negative_slope=1)
                nn.initializer.Constant(0.0)(conv.bias)  # FRAMEWORK-DIFF: init API
            self.add_sublayer(f"fpn_inner{k}", inner)
            self.add_sublayer(f"fpn_layer{k}", layer)
            self.inner_names.append(f"fpn_inner{k}")
            self.layer_names.append(f"fpn_layer{k}")

    def forward(self, features):
        last_inner = getattr(self, self.inner_names[-1])(features[-1])
        results = [getattr(self, self.layer_names[-1])(last_inner)]
        for feature, inner, layer in zip(features[-2::-1], self.inner_names[-2::-1], self.layer_names[-2::-1]):
            top_down = F.interpolate(last_inner, scale_factor=2.0, mode="nearest")
            last_inner = getattr(self, inner)(feature) + top_down
            results.insert(0, getattr(self, layer)(last_inner))
        return results


class AssymetricDecoder(nn.Layer):
    """Semantic-FPN style decoder (the original's spelling): per level, max(1, log2(stride/4))
    units of conv3x3-BN-ReLU-(bilinear x2, align_corners=True); levels averaged."""

    def __init__(self, in_channels, out_channels, in_feat_output_strides=(4, 8, 16, 32), out_feat_output_stride=4):
        super().__init__()
        self.blocks = nn.LayerList()
        for stride in in_feat_output_strides:
            num_upsample = int(math.log2(stride)) - int(math.log2(out_feat_output_stride))
            self.blocks.append(nn.Sequential(*[
                nn.Sequential(
                    nn.Conv2D(in_channels if idx == 0 else out_channels, out_channels, 3, 1, 1, bias_attr=False),
                    norm_layer(out_channels),
                    nn.ReLU(),
                    Upsample(scale_factor=2.0, mode="bilinear", align_corners=True) if num_upsample else nn.Identity(),  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact bilinear
                )
                for idx in range(max(num_upsample, 1))]))

    def forward(self, features):
        return sum(block(feature) for block, feature in zip(self.blocks, features)) / len(self.blocks)
