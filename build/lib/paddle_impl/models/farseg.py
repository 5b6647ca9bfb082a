"""FarSeg: foreground-aware relation network for geospatial object segmentation.

Provenance: github.com/Z-Zheng/FarSeg @ 35ba29fc (module/farseg.py @ ef73ecd0, module/loss.py,
configs/isaid/farseg50.py) and github.com/Z-Zheng/SimpleCV (ResNetEncoder, FPN); license
Apache-2.0 per the repository. Paper: Z. Zheng, Y. Zhong, J. Wang, A. Ma, "Foreground-Aware
Relation Network for Geospatial Object Segmentation in High Spatial Resolution Remote Sensing
Imagery", CVPR 2020. Attribute names reproduce the original state_dict keys (451 entries,
``buffer_step`` included) so the released farseg50.pth loads strictly.
Twins: torch_ref/ and paddle_impl/models/farseg.py.

Deliberate differences from the original, none of which changes a weight name:
- forward returns (logits, annealing step) in train mode; the loss is the separate
  ``AnnealingSoftmaxFocalLoss`` (the original computes it inside forward);
- no debug prints, no CUDA memory entry, no unused loss variants.
"""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_impl.models.resnet import ResNetEncoder, norm_layer
from paddle_impl.models.semantic_fpn import FPN, AssymetricDecoder
from paddle_impl.ops import AdaptiveAvgPool2D, Upsample  # FRAMEWORK-DIFF: float64-exact ops (paddle_impl/ops.py)


class SceneRelation(nn.Layer):
    """Foreground-scene relation: per pyramid level, a scene embedding (from the global context
    of c5) scores each pixel's content embedding; sigmoid(dot product) gates the re-encoded
    features.

    Args:
        in_channels: channels of the scene feature (c5: 2048).
        channel_list: channels of each pyramid level.
        out_channels: embedding width (256).
        scale_aware_proj: one scene projection per level (the iSAID config) or one shared.
    """

    def __init__(self, in_channels, channel_list, out_channels, scale_aware_proj=True):
        super().__init__()
        self.scale_aware_proj = scale_aware_proj
        projections = len(channel_list) if scale_aware_proj else 1
        scene = [nn.Sequential(nn.Conv2D(in_channels, out_channels, 1), nn.ReLU(), nn.Conv2D(out_channels, out_channels, 1))
                 for _ in range(projections)]
        self.scene_encoder = nn.LayerList(scene) if scale_aware_proj else scene[0]
        self.content_encoders = nn.LayerList(
            [nn.Sequential(nn.Conv2D(c, out_channels, 1), norm_layer(out_channels), nn.ReLU()) for c in channel_list])
        self.feature_reencoders = nn.LayerList(
            [nn.Sequential(nn.Conv2D(c, out_channels, 1), norm_layer(out_channels), nn.ReLU()) for c in channel_list])
        self.normalizer = nn.Sigmoid()

    def forward(self, scene_feature, features):
        content_feats = [encoder(feature) for encoder, feature in zip(self.content_encoders, features)]
        if self.scale_aware_proj:
            scene_feats = [projection(scene_feature) for projection in self.scene_encoder]
        else:
            scene_feats = [self.scene_encoder(scene_feature)] * len(content_feats)
        relations = [self.normalizer((sf * cf).sum(axis=1, keepdim=True)) for sf, cf in zip(scene_feats, content_feats)]
        p_feats = [encoder(feature) for encoder, feature in zip(self.feature_reencoders, features)]
        return [r * p for r, p in zip(relations, p_feats)]


class FarSeg(nn.Layer):
    """FarSeg with a ResNet-50 encoder, FPN, foreground-scene relation and light-weight decoder.

    Args:
        num_classes: semantic classes including background (16 for iSAID).
        in_channels: image channels.
        layers: ResNet blocks per stage.
        stem_width: ResNet stem width (64; smaller for the tiny test variant).
        fpn_channels: FPN and relation width (256).
        decoder_channels: decoder width (128).

    Returns from forward: eval mode, class probabilities [N, num_classes, H, W]; train mode,
    ``(logits [N, num_classes, H, W], step)`` where ``step`` is the annealing counter
    ``buffer_step`` after this iteration's increment (the loss anneals with it).
    """

    def __init__(self, num_classes=16, in_channels=3, layers=(3, 4, 6, 3), stem_width=64,
                 fpn_channels=256, decoder_channels=128):
        super().__init__()
        self.register_buffer("buffer_step", paddle.zeros([], dtype="float32"))  # FRAMEWORK-DIFF: tensor API
        self.en = ResNetEncoder(layers, stem_width, in_channels)
        self.fpn = FPN(self.en.out_channels, fpn_channels)
        self.decoder = AssymetricDecoder(fpn_channels, decoder_channels)
        self.cls_pred_conv = nn.Conv2D(decoder_channels, num_classes, kernel_size=1)
        self.upsample4x_op = Upsample(scale_factor=4.0, mode="bilinear", align_corners=True)  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact bilinear
        self.gap = AdaptiveAvgPool2D(1)  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact pooling backward
        self.sr = SceneRelation(self.en.out_channels[-1], [fpn_channels] * len(self.en.out_channels), fpn_channels)

    def forward(self, x):
        features = self.en(x)
        pyramid = self.fpn(features)
        refined = self.sr(self.gap(features[-1]), pyramid)
        logit = self.upsample4x_op(self.cls_pred_conv(self.decoder(refined)))
        if self.training:
            with paddle.no_grad():  # FRAMEWORK-DIFF: no-grad API
                self.buffer_step.set_value(self.buffer_step + 1)  # FRAMEWORK-DIFF: in-place API
            return logit, self.buffer_step.clone()
        return F.softmax(logit, axis=1)


def cosine_annealing(lower_bound, upper_bound, t, t_max):
    """From ``lower_bound`` at t = 0 to ``upper_bound`` at t = t_max along half a cosine."""
    return upper_bound + 0.5 * (lower_bound - upper_bound) * (math.cos(math.pi * t / t_max) + 1)


class AnnealingSoftmaxFocalLoss(nn.Layer):
    """FarSeg's loss: cross-entropy whose pixel weights anneal from 1 (plain CE) to normalised
    focal weights (1 - p_true) ** gamma over ``max_step`` iterations (cosine schedule).

    Args:
        ignore_index: label value excluded from the loss.
        gamma: focusing parameter (2.0).
        max_step: annealing length in iterations (10000).

    The sum of weighted losses is divided by (valid pixels + batch size), as in the original.
    """

    def __init__(self, ignore_index=255, gamma=2.0, max_step=10000):
        super().__init__()
        self.ignore_index = ignore_index
        self.gamma = gamma
        self.max_step = max_step

    def forward(self, logit, step, label):
        losses = F.nll_loss(F.log_softmax(logit, axis=1), label, ignore_index=self.ignore_index, reduction="none")
        with paddle.no_grad():  # FRAMEWORK-DIFF: no-grad API
            valid = label != self.ignore_index
            true_class = paddle.where(valid, label, paddle.zeros_like(label))
            modulating = (1 - F.softmax(logit, axis=1)).pow(self.gamma)
            modulating = paddle.take_along_axis(modulating, true_class.unsqueeze(1), axis=1).squeeze(1)  # FRAMEWORK-DIFF: gather API (torch's dim 1 is paddle's axis=1)
            scales = modulating * (losses.sum() / (losses * modulating).sum())
            t = float(step)
            scale = scales if t > self.max_step else cosine_annealing(1, scales, t, self.max_step)
        return (losses * scale).sum() / (valid.sum() + logit.shape[0]).astype(losses.dtype)  # FRAMEWORK-DIFF: cast API
