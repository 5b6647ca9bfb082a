"""UperNet with a ResNet-50 backbone: mmsegmentation 0.x ``EncoderDecoder`` + ``UPerHead`` + ``FCNHead``.

Provenance: github.com/ViTAE-Transformer/RSP @ f2981873 (``Semantic Segmentation/``, which vendors
mmsegmentation 0.21.0: configs/_base_/models/upernet_our_r50.py, configs/upernet/
upernet_our_r50_896x896_80k_isaid.py, mmseg/models/backbones/our_resnet.py,
mmseg/models/decode_heads/{uper_head,psp_head,fcn_head,decode_head}.py,
mmseg/models/losses/cross_entropy_loss.py) and open-mmlab/mmcv 1.x (cnn/bricks/conv_module.py);
Apache-2.0 (mmsegmentation, mmcv) / MIT (RSP). Papers: T. Xiao, Y. Liu, B. Zhou, Y. Jiang,
J. Sun, "Unified Perceptual Parsing for Scene Understanding", ECCV 2018; D. Wang, J. Zhang,
B. Du, G.-S. Xia, D. Tao, "An Empirical Study of Remote Sensing Pretraining", IEEE TGRS 2022.
Attribute names reproduce mmseg's state_dict keys (400 entries: ``backbone.*`` torchvision
ResNet-50 without ``fc``, ``decode_head.*``, ``auxiliary_head.*``), so an mmseg checkpoint's
``state_dict`` loads strictly. Twins: torch_ref/ and paddle_impl/models/upernet.py.

Deliberate differences from the original, none of which changes a weight name or a number:
- the top-down FPN sum is written out of place (``a = a + b``); in-place ``+=`` on a ReLU output
  breaks autograd in current PyTorch;
- forward returns softmax probabilities at input size in eval (``EncoderDecoder.inference``,
  mode 'whole') and ``(seg_logit, aux_logit)`` resized to the input in training, which is where
  mmseg's ``BaseDecodeHead.losses`` resizes them before the loss (labels are input-sized);
  the loss is the separate ``UperNetLoss``;
- SyncBN is plain BatchNorm (identical on one device; same keys).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_ref.models.resnet import ResNet, norm_layer

FLOAT32_EPS = 1.1920928955078125e-07  # torch.finfo(torch.float32).eps, mmseg's guard against 0 pixels


def resize(x, size, align_corners):
    """mmseg's ``resize``: bilinear to ``size``; align_corners=False is the half-pixel convention."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact bilinear


class ConvModule(nn.Module):
    """mmcv ConvModule as the mmseg heads here configure it (DeepLabV3+ adds dilation and depthwise
    groups): conv (no bias, a norm follows), BN, ReLU, registered as ``conv`` / ``bn`` /
    ``activate``; conv init He-normal (fan_out)."""

    def __init__(self, in_channels, out_channels, kernel_size, padding=0, dilation=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=padding, dilation=dilation,
                              groups=groups, bias=False)
        self.bn = norm_layer(out_channels)
        self.activate = nn.ReLU()
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")  # FRAMEWORK-DIFF: init API

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class PPM(nn.ModuleList):
    """Pyramid pooling: per scale, adaptive average pooling (bins floor(i*H/s)..ceil((i+1)*H/s),
    possibly overlapping) and a 1x1 ConvModule, resized back to the input size."""

    def __init__(self, pool_scales, in_channels, channels, align_corners):
        super().__init__([nn.Sequential(nn.AdaptiveAvgPool2d(output_size=scale), ConvModule(in_channels, channels, 1))  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact backward
                          for scale in pool_scales])
        self.align_corners = align_corners

    def forward(self, x):
        return [resize(stage(x), x.shape[2:], self.align_corners) for stage in self]


class DecodeHead(nn.Module):
    """mmseg's BaseDecodeHead parts that hold weights: ``conv_seg`` (1x1, bias, Normal(0.01)
    init) after ``dropout`` (Dropout2d), registered before the subclass's layers."""

    def __init__(self, channels, num_classes, dropout_ratio, align_corners):
        super().__init__()
        self.align_corners = align_corners
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(p=dropout_ratio)  # FRAMEWORK-DIFF: Dropout2d / Dropout2D
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)  # FRAMEWORK-DIFF: init API
        nn.init.zeros_(self.conv_seg.bias)  # FRAMEWORK-DIFF: init API

    def cls_seg(self, feat):
        return self.conv_seg(self.dropout(feat))


class UPerHead(DecodeHead):
    """UPerNet head: PPM on the last level, 1x1 laterals on the others, bilinear top-down sum,
    3x3 fpn_convs (not on the PPM level), all levels resized to stride 4, concatenated and fused.

    Args:
        in_channels: channels of the backbone levels (all four are used).
        channels: head width (512).
        num_classes: classes (16 for iSAID).
        pool_scales: PPM output sizes.
        dropout_ratio: Dropout2d before conv_seg.
        align_corners: of every resize in the head.
    """

    def __init__(self, in_channels, channels, num_classes, pool_scales, dropout_ratio, align_corners):
        super().__init__(channels, num_classes, dropout_ratio, align_corners)
        self.psp_modules = PPM(pool_scales, in_channels[-1], channels, align_corners)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for level_channels in in_channels[:-1]:
            self.lateral_convs.append(ConvModule(level_channels, channels, 1))
            self.fpn_convs.append(ConvModule(channels, channels, 3, padding=1))
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, padding=1)

    def psp_forward(self, x):
        return self.bottleneck(torch.cat([x] + self.psp_modules(x), dim=1))

    def forward(self, inputs):
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        laterals.append(self.psp_forward(inputs[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:], self.align_corners)
        fpn_outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)]
        fpn_outs.append(laterals[-1])
        fpn_outs = [fpn_outs[0]] + [resize(out, fpn_outs[0].shape[2:], self.align_corners) for out in fpn_outs[1:]]
        return self.cls_seg(self.fpn_bottleneck(torch.cat(fpn_outs, dim=1)))


class FCNHead(DecodeHead):
    """mmseg FCNHead with one 3x3 ConvModule (``convs.0``), no input concat, on ``in_index``.

    Args:
        in_channels: channels of the selected backbone level (1024, layer3).
        channels: head width (256).
        num_classes: classes.
        in_index: which backbone level it reads.
        dropout_ratio: Dropout2d before conv_seg.
        align_corners: kept for the resize of its logits.
    """

    def __init__(self, in_channels, channels, num_classes, in_index, dropout_ratio, align_corners):
        super().__init__(channels, num_classes, dropout_ratio, align_corners)
        self.in_index = in_index
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3, padding=1))

    def forward(self, inputs):
        return self.cls_seg(self.convs(inputs[self.in_index]))


class UperNet(nn.Module):
    """mmseg EncoderDecoder: torchvision-style ResNet backbone (RSP ``Our_ResNet``), UPerHead and
    an auxiliary FCNHead on layer3 (training only).

    Args:
        num_classes: classes including background (16 for iSAID).
        in_channels: image channels (Our_ResNet hard-codes 3; kept as an argument).
        layers: ResNet blocks per stage.
        stem_width: ResNet stem width (64; smaller for the tiny test variant).
        channels: UPerHead width (512).
        aux_channels: FCNHead width (256).
        pool_scales: PPM scales.
        dropout_ratio: Dropout2d before each conv_seg (off in eval).
        align_corners: of every bilinear resize (False in the config).

    Returns from forward: eval mode, class probabilities [N, num_classes, H, W] (softmax of the
    logits resized to the input); train mode, ``(seg_logit, aux_logit)``, each [N, num_classes,
    H, W], resized to the input as mmseg does before its loss.
    """

    def __init__(self, num_classes=16, in_channels=3, layers=(3, 4, 6, 3), stem_width=64, channels=512,
                 aux_channels=256, pool_scales=(1, 2, 3, 6), dropout_ratio=0.1, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.backbone = ResNet(layers, stem_width, in_channels)
        self.decode_head = UPerHead(self.backbone.out_channels, channels, num_classes, pool_scales, dropout_ratio,
                                    align_corners)
        self.auxiliary_head = FCNHead(self.backbone.out_channels[2], aux_channels, num_classes, 2, dropout_ratio,
                                      align_corners)

    def forward(self, x):
        features = self.backbone(x)
        seg_logit = resize(self.decode_head(features), x.shape[2:], self.align_corners)
        if self.training:
            return seg_logit, resize(self.auxiliary_head(features), x.shape[2:], self.align_corners)
        return F.softmax(seg_logit, dim=1)


def cross_entropy(logit, label, ignore_index, avg_non_ignore):
    """mmseg's ``cross_entropy``: per-pixel CE (0 at ignored pixels), then the mean over ALL
    pixels, ignored ones included (mmseg 0.21). ``avg_non_ignore`` (mmseg >= 0.23) instead divides
    the sum by (non-ignored count + float32 eps), as its ``weight_reduce_loss`` does."""
    losses = F.cross_entropy(logit, label, ignore_index=ignore_index, reduction="none")  # FRAMEWORK-DIFF: class axis: torch's default dim=1 is paddle's axis=1
    if avg_non_ignore:
        return losses.sum() / ((label != ignore_index).to(losses.dtype).sum() + FLOAT32_EPS)  # FRAMEWORK-DIFF: dtype cast API
    return losses.mean()


class UperNetLoss(nn.Module):
    """Training loss: ``decode.loss_ce + aux_weight * aux.loss_ce`` (both CrossEntropyLoss).

    Args:
        ignore_index: label value with zero loss (255).
        aux_weight: loss_weight of the auxiliary head (0.4).
        avg_non_ignore: mmseg >= 0.23 option; False reproduces 0.21 (RSP).
    """

    def __init__(self, ignore_index=255, aux_weight=0.4, avg_non_ignore=False):
        super().__init__()
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight
        self.avg_non_ignore = avg_non_ignore

    def forward(self, seg_logit, aux_logit, label):
        seg_loss = cross_entropy(seg_logit, label, self.ignore_index, self.avg_non_ignore)
        aux_loss = cross_entropy(aux_logit, label, self.ignore_index, self.avg_non_ignore)
        return seg_loss + self.aux_weight * aux_loss
