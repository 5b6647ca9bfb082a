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

from torch_ref.models.resnet import ResNetEncoder, norm_layer


class FPN(nn.Module):
    """maskrcnn-benchmark FPN as in simplecv: 1x1 lateral and 3x3 output convs with bias, no
    norm, nearest x2 top-down. Convs are registered as ``fpn_inner{k}`` / ``fpn_layer{k}``."""

    def __init__(self, in_channels_list, out_channels):
        super().__init__()
        self.inner_names = []
        self.layer_names = []
        for k, in_channels in enumerate(in_channels_list, 1):
            inner = nn.Conv2d(in_channels, out_channels, kernel_size=1)
            layer = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
            for conv in (inner, layer):
                nn.init.kaiming_uniform_(conv.weight, a=1)  # FRAMEWORK-DIFF: init API
                nn.init.zeros_(conv.bias)  # FRAMEWORK-DIFF: init API
            self.add_module(f"fpn_inner{k}", inner)
            self.add_module(f"fpn_layer{k}", layer)
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


class AssymetricDecoder(nn.Module):
    """Semantic-FPN style decoder (the original's spelling): per level, max(1, log2(stride/4))
    units of conv3x3-BN-ReLU-(bilinear x2, align_corners=True); levels averaged."""

    def __init__(self, in_channels, out_channels, in_feat_output_strides=(4, 8, 16, 32), out_feat_output_stride=4):
        super().__init__()
        self.blocks = nn.ModuleList()
        for stride in in_feat_output_strides:
            num_upsample = int(math.log2(stride)) - int(math.log2(out_feat_output_stride))
            self.blocks.append(nn.Sequential(*[
                nn.Sequential(
                    nn.Conv2d(in_channels if idx == 0 else out_channels, out_channels, 3, 1, 1, bias=False),
                    norm_layer(out_channels),
                    nn.ReLU(),
                    nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True) if num_upsample else nn.Identity(),  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact bilinear
                )
                for idx in range(max(num_upsample, 1))]))

    def forward(self, features):
        return sum(block(feature) for block, feature in zip(self.blocks, features)) / len(self.blocks)


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
