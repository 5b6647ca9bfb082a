"""FactSeg: foreground activation-driven small object segmentation.

Provenance: github.com/Junjue-Wang/FactSeg @ d7e3f5ba (module/factseg.py, module/loss.py,
module/semantic_fpn.py) and github.com/Z-Zheng/SimpleCV (simplecv/module/fpn.py, resnet.py);
no license file in the original repository. Paper: A. Ma, J. Wang, Y. Zhong, Z. Zheng,
"FactSeg: Foreground Activation-Driven Small Object Semantic Segmentation in Large-Scale
Remote Sensing Imagery", IEEE TGRS 60, 2022. Attribute names reproduce the original state_dict
keys (438 entries) so the published checkpoint loads strictly.
Twins: torch_ref/ and paddle_impl/models/factseg.py.

Deliberate differences from the original, none of which changes a weight name:
- eval fusion normalises with ``keepdim=True``; the original's sum without keepdim is only
  right for batch size 1 (identical there);
- no debug print, no dead ``skip_decoder`` / attention / OHEM branches;
- forward returns logits in train mode; the loss is the separate ``JointLoss``.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_ref.models.resnet import ResNetEncoder
from torch_ref.models.semantic_fpn import FPN, AssymetricDecoder


def joint_probability(fg_logit, bi_logit):
    """Collaborative probability: background scaled by (1 - p_fg), foreground classes by p_fg,
    renormalised per pixel (keepdim: correct for any batch size)."""
    fg_prob = F.sigmoid(bi_logit)
    cls_prob = F.softmax(fg_logit, dim=1)
    joint = torch.cat([cls_prob[:, :1] * (1 - fg_prob), cls_prob[:, 1:] * fg_prob], dim=1)
    return joint / joint.sum(dim=1, keepdim=True)


class FactSeg(nn.Module):
    """FactSeg with a ResNet-50 encoder, two FPNs and two asymmetric decoders.

    Args:
        num_classes: semantic classes including background (16 for iSAID).
        in_channels: image channels.
        layers: ResNet blocks per stage.
        stem_width: ResNet stem width (64; smaller for the tiny test variant).
        fpn_channels: FPN width (256).
        decoder_channels: decoder width (128).

    Returns from forward: eval mode, the fused class probabilities [N, num_classes, H, W];
    train mode, ``(fg_logit [N, num_classes, H, W], bi_logit [N, 1, H, W])``.
    """

    def __init__(self, num_classes=16, in_channels=3, layers=(3, 4, 6, 3), stem_width=64,
                 fpn_channels=256, decoder_channels=128):
        super().__init__()
        self.resencoder = ResNetEncoder(layers, stem_width, in_channels)
        self.fgfpn = FPN(self.resencoder.out_channels, fpn_channels)
        self.bifpn = FPN(self.resencoder.out_channels, fpn_channels)
        self.fg_decoder = AssymetricDecoder(fpn_channels, decoder_channels)
        self.bi_decoder = AssymetricDecoder(fpn_channels, decoder_channels)
        self.fg_cls = nn.Conv2d(decoder_channels, num_classes, kernel_size=1)
        self.bi_cls = nn.Conv2d(decoder_channels, 1, kernel_size=1)

    def forward(self, x):
        features = self.resencoder(x)
        fg_logit = self.fg_cls(self.fg_decoder(self.fgfpn(features)))
        bi_logit = self.bi_cls(self.bi_decoder(self.bifpn(features)))
        fg_logit = F.interpolate(fg_logit, scale_factor=4.0, mode="bilinear", align_corners=True)  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact bilinear
        bi_logit = F.interpolate(bi_logit, scale_factor=4.0, mode="bilinear", align_corners=True)  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact bilinear
        if self.training:
            return fg_logit, bi_logit
        return joint_probability(fg_logit, bi_logit)


def som(losses, ratio):
    """Small-object mining: mean of the nonzero losses among the top ``ratio`` of all pixels."""
    num_hard = int(ratio * math.prod(losses.shape))
    top, _ = losses.reshape([-1]).topk(num_hard)
    kept = (top != 0).to(top.dtype)  # FRAMEWORK-DIFF: dtype cast API
    return (top * kept).sum() / (kept.sum() + 1e-6)


class JointLoss(nn.Module):
    """FactSeg's training loss: NLL of the joint probability, reduced by small-object mining.

    Args:
        ignore_index: label value excluded from the loss (its pixel loss is 0).
        ratio: share of pixels kept by SOM (0.1 in configs/isaid/factseg.py).
    """

    def __init__(self, ignore_index=255, ratio=0.1):
        super().__init__()
        self.ignore_index = ignore_index
        self.ratio = ratio

    def forward(self, fg_logit, bi_logit, label):
        prob = joint_probability(fg_logit, bi_logit)
        losses = F.nll_loss(torch.log(prob), label, ignore_index=self.ignore_index, reduction="none")
        return som(losses, self.ratio)
