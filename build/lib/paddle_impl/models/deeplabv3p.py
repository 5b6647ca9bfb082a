"""DeepLabV3+ with a dilated ResNetV1c-50 (mmsegmentation 0.x ``deeplabv3plus_r50-d8``).

Provenance: open-mmlab/mmsegmentation 0.21.0 (Apache-2.0): configs/_base_/models/
deeplabv3plus_r50-d8.py, mmseg/models/decode_heads/{sep_aspp_head,aspp_head,fcn_head,
decode_head}.py, mmseg/models/segmentors/encoder_decoder.py, mmseg/models/losses/
cross_entropy_loss.py, read in the copy vendored by ViTAE-Transformer/RSP @ f2981873; mmcv
(Apache-2.0) cnn/bricks/{conv_module,depthwise_separable_conv_module}.py for ConvModule naming.
Paper: L.-C. Chen, Y. Zhu, G. Papandreou, F. Schroff, H. Adam, "Encoder-Decoder with Atrous
Separable Convolution for Semantic Image Segmentation", ECCV 2018. Attribute names reproduce the
mmseg state_dict keys (``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``: 424 entries for
16 classes), so a published mmseg checkpoint's ``state_dict`` loads strictly.
Twins: torch_ref/ and paddle_impl/models/deeplabv3p.py.

Deliberate differences from the original, none of which changes a weight name:
- mmseg's functional ``resize`` calls are parameter-free ``Resize`` modules, so the alignment
  harness can name each one (no state_dict entries);
- forward returns, in train mode, the decode and auxiliary logits already resized to the input
  (bilinear, align_corners=False), which is where mmseg's ``losses()`` resizes them before the
  loss; in eval mode the softmax of the resized decode logits (``test_cfg mode='whole'``); the
  auxiliary head runs only in training, as in mmseg;
- the loss is the separate ``EncoderDecoderLoss`` (decode CE + 0.4 * auxiliary CE).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_impl.models.resnet_v1c import ResNetV1c
from paddle_impl.models.upernet import ConvModule
from paddle_impl.ops import AdaptiveAvgPool2D, interpolate  # FRAMEWORK-DIFF: float64-exact ops (paddle_impl/ops.py)


class DepthwiseSeparableConvModule(nn.Layer):
    """mmcv DepthwiseSeparableConvModule: a depthwise ConvModule (groups = in_channels, each with
    BN and ReLU) followed by a 1x1 pointwise ConvModule."""

    def __init__(self, in_channels, out_channels, kernel_size, padding=0, dilation=1):
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, padding=padding, dilation=dilation,
                                         groups=in_channels)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


class Resize(nn.Layer):
    """mmseg's ``resize`` as a parameter-free module: bilinear to the spatial size of ``like``."""

    def __init__(self, align_corners):
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x, like):
        return interpolate(x, size=list(like.shape[2:]), mode="bilinear", align_corners=self.align_corners)  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact bilinear


class DepthwiseSeparableASPPModule(nn.LayerList):
    """ASPP branches: a 1x1 ConvModule for dilation 1, depthwise separable 3x3 ConvModules
    (padding = dilation) for the others; forward returns the list of branch outputs."""

    def __init__(self, dilations, in_channels, channels):
        super().__init__()
        for dilation in dilations:
            if dilation == 1:
                self.append(ConvModule(in_channels, channels, 1, padding=0, dilation=1))
            else:
                self.append(DepthwiseSeparableConvModule(in_channels, channels, 3, padding=dilation, dilation=dilation))

    def forward(self, x):
        return [branch(x) for branch in self]


class DepthwiseSeparableASPPHead(nn.Layer):
    """mmseg DepthwiseSeparableASPPHead (DeepLabV3+ decoder) on [c2, c3, c4, c5].

    Image pooling (global mean, 1x1 ConvModule, resized back) and the ASPP branches on c5 are
    concatenated and fused by a 3x3 ``bottleneck``; the result is resized to c2's size,
    concatenated with ``c1_bottleneck(c2)``, refined by two depthwise separable 3x3 modules and
    classified by ``conv_seg`` after dropout.

    Args:
        in_channels: channels of c5 (2048).
        c1_in_channels: channels of c2 (256).
        channels: ASPP and decoder width (512).
        c1_channels: width of the low-level projection (48).
        num_classes: output classes.
        dilations: ASPP dilations (1, 12, 24, 36).
        dropout_ratio: Dropout2d before ``conv_seg`` (0.1; 0 builds no dropout layer).
        align_corners: of every resize in the head (False).
    """

    def __init__(self, in_channels=2048, c1_in_channels=256, channels=512, c1_channels=48, num_classes=19,
                 dilations=(1, 12, 24, 36), dropout_ratio=0.1, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.conv_seg = nn.Conv2D(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2D(dropout_ratio) if dropout_ratio > 0 else None  # FRAMEWORK-DIFF: Dropout2d / Dropout2D
        self.image_pool = nn.Sequential(AdaptiveAvgPool2D(1), ConvModule(in_channels, channels, 1))  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact pooling backward
        self.aspp_modules = DepthwiseSeparableASPPModule(dilations, in_channels, channels)
        self.bottleneck = ConvModule((len(dilations) + 1) * channels, channels, 3, padding=1)
        self.c1_bottleneck = ConvModule(c1_in_channels, c1_channels, 1)
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvModule(channels + c1_channels, channels, 3, padding=1),
            DepthwiseSeparableConvModule(channels, channels, 3, padding=1),
        )
        self.pool_resize = Resize(align_corners)
        self.c1_resize = Resize(align_corners)
        nn.initializer.Normal(mean=0.0, std=0.01)(self.conv_seg.weight)  # FRAMEWORK-DIFF: init API
        nn.initializer.Constant(0.0)(self.conv_seg.bias)  # FRAMEWORK-DIFF: init API

    def forward(self, features):
        x = features[3]
        aspp_outs = [self.pool_resize(self.image_pool(x), x)]
        aspp_outs.extend(self.aspp_modules(x))
        output = self.bottleneck(paddle.concat(aspp_outs, axis=1))
        c1_output = self.c1_bottleneck(features[0])
        output = paddle.concat([self.c1_resize(output, c1_output), c1_output], axis=1)
        output = self.sep_bottleneck(output)
        if self.dropout is not None:
            output = self.dropout(output)
        return self.conv_seg(output)


class FCNHead(nn.Layer):
    """mmseg FCNHead with one 3x3 ConvModule (``concat_input=False``) on c4: the auxiliary head.

    Args:
        in_channels: channels of c4 (1024).
        channels: width (256).
        num_classes: output classes.
        dropout_ratio: Dropout2d before ``conv_seg`` (0.1; 0 builds no dropout layer).
    """

    def __init__(self, in_channels=1024, channels=256, num_classes=19, dropout_ratio=0.1):
        super().__init__()
        self.conv_seg = nn.Conv2D(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2D(dropout_ratio) if dropout_ratio > 0 else None  # FRAMEWORK-DIFF: Dropout2d / Dropout2D
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3, padding=1, dilation=1))
        nn.initializer.Normal(mean=0.0, std=0.01)(self.conv_seg.weight)  # FRAMEWORK-DIFF: init API
        nn.initializer.Constant(0.0)(self.conv_seg.bias)  # FRAMEWORK-DIFF: init API

    def forward(self, features):
        output = self.convs(features[2])
        if self.dropout is not None:
            output = self.dropout(output)
        return self.conv_seg(output)


class DeepLabV3Plus(nn.Layer):
    """mmseg EncoderDecoder(ResNetV1c-D8, DepthwiseSeparableASPPHead, FCNHead auxiliary).

    Args:
        num_classes: classes of both heads (16 for iSAID).
        in_channels: image channels.
        layers: ResNetV1c blocks per stage.
        stem_channels / base_channels: ResNetV1c widths (64 / 64).
        strides / dilations / contract_dilation: ResNetV1c D8 layout.
        channels / c1_channels / aspp_dilations: decode head (512 / 48 / (1, 12, 24, 36)).
        aux_channels: auxiliary head width (256).
        dropout_ratio: both heads' Dropout2d (0.1).
        align_corners: of every resize (False).

    Returns from forward: eval mode, class probabilities [N, num_classes, H, W]; train mode,
    ``(seg_logit, aux_logit)``, both [N, num_classes, H, W].
    """

    def __init__(self, num_classes=19, in_channels=3, layers=(3, 4, 6, 3), stem_channels=64, base_channels=64,
                 strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), contract_dilation=True, channels=512, c1_channels=48,
                 aspp_dilations=(1, 12, 24, 36), aux_channels=256, dropout_ratio=0.1, align_corners=False):
        super().__init__()
        self.backbone = ResNetV1c(in_channels, layers, stem_channels, base_channels, strides, dilations,
                                  contract_dilation)
        c2, _, c4, c5 = self.backbone.out_channels
        self.decode_head = DepthwiseSeparableASPPHead(c5, c2, channels, c1_channels, num_classes, aspp_dilations,
                                                      dropout_ratio, align_corners)
        self.auxiliary_head = FCNHead(c4, aux_channels, num_classes, dropout_ratio)
        self.resize = Resize(align_corners)
        self.aux_resize = Resize(align_corners)

    def forward(self, x):
        features = self.backbone(x)
        seg_logit = self.resize(self.decode_head(features), x)
        if self.training:
            return seg_logit, self.aux_resize(self.auxiliary_head(features), x)
        return F.softmax(seg_logit, axis=1)


# torch.finfo(torch.float32).eps, which mmseg's weight_reduce_loss adds to avg_factor.
EPS_FLOAT32 = 1.1920928955078125e-07


class CrossEntropyLoss(nn.Layer):
    """mmseg CrossEntropyLoss for one head: ``loss_weight`` x the per-pixel CE, reduced by the mean
    over ALL pixels, ignored ones counting as 0 (mmseg 0.x default, ``avg_non_ignore=False``);
    with ``avg_non_ignore`` (mmseg >= 0.23 option) the sum over (non-ignored count + float32 eps).

    Args:
        loss_weight: weight of this head's loss.
        ignore_index: label value excluded from the loss.
        avg_non_ignore: average over non-ignored pixels only.
    """

    def __init__(self, loss_weight=1.0, ignore_index=255, avg_non_ignore=False):
        super().__init__()
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore

    def forward(self, logit, label):
        losses = F.cross_entropy(logit, label, ignore_index=self.ignore_index, reduction="none", axis=1)  # FRAMEWORK-DIFF: class axis: torch's default dim=1 is paddle's axis=1
        if self.avg_non_ignore:
            count = (label != self.ignore_index).sum().astype(losses.dtype)  # FRAMEWORK-DIFF: dtype cast API
            return self.loss_weight * (losses.sum() / (count + EPS_FLOAT32))
        return self.loss_weight * losses.mean()



class EncoderDecoderLoss(nn.Layer):
    """The config's training loss: decode-head CE (weight 1.0) + auxiliary-head CE (weight 0.4),
    both on logits resized to the label size (done by the model's forward).

    Args:
        ignore_index: label value excluded from the loss (255).
        decode_weight / auxiliary_weight: the heads' ``loss_weight`` (1.0 / 0.4).
        avg_non_ignore: see ``CrossEntropyLoss`` (False, as in mmseg 0.x configs).
    """

    def __init__(self, ignore_index=255, decode_weight=1.0, auxiliary_weight=0.4, avg_non_ignore=False):
        super().__init__()
        self.loss_decode = CrossEntropyLoss(decode_weight, ignore_index, avg_non_ignore)
        self.loss_aux = CrossEntropyLoss(auxiliary_weight, ignore_index, avg_non_ignore)

    def forward(self, seg_logit, aux_logit, label):
        return self.loss_decode(seg_logit, label) + self.loss_aux(aux_logit, label)
