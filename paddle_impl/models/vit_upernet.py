"""ViT-S/16 + UPerNet for 2-channel Sentinel-1 SAR (VV, VH), DFC2020 classes.

Provenance (no single official repository ships this model; assembled as on the project's
reference sheet shared/reference/vit_s16_upernet.md):
- encoder: timm VisionTransformer names and ViT-S/16 hyper-parameters as used by FG-MAE,
  github.com/zhu-xlab/FGMAE @ 1144e550 (src/pretrain_ssl/models/mae/models_mae.py, MIT/Apache
  per the repository) and timm (huggingface/pytorch-image-models, Apache-2.0); Dosovitskiy et
  al., "An Image is Worth 16x16 Words", ICLR 2021; Wang et al., "Feature Guided Masked
  Autoencoder for Self-supervised Learning in Remote Sensing" (FG-MAE), 2023;
- 4-scale adapter ``fpn1..fpn4``: BEiT backbone of github.com/zhu-xlab/SSL4EO-S12 @ 2156913c
  (src/benchmark/pretrain_ssl/models/data2vec/semantic_segmentation/backbone/beit.py, MIT);
- heads: mmsegmentation 0.x UPerHead + FCNHead (Apache-2.0), Xiao et al., "Unified Perceptual
  Parsing for Scene Understanding", ECCV 2018; position-embedding resampling as mmseg's
  ``resize_pos_embed`` (bicubic, align_corners=False, class-token row kept).
Attribute names reproduce those keys (``backbone.*`` timm + ``fpn1/fpn2``, ``decode_head.*``,
``auxiliary_head.*``; 241 entries) so a checkpoint in that layout loads strictly.
Twins: torch_ref/ and paddle_impl/models/vit_upernet.py.

Deliberate choices, none of which changes a weight name:
- no final encoder LayerNorm (the BEiT-style segmentation backbone has none);
- no stochastic depth (drop_path 0) and ``dropout_ratio`` is an argument (original 0.1; the
  registry sets 0 so training passes are deterministic for the alignment proof);
- SyncBatchNorm is a plain BatchNorm (single device; same statistics on one process);
- forward resizes the logits to the input size (mmseg does it in the loss / at inference).
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_impl.models.resnet import norm_layer
from paddle_impl.ops import AdaptiveAvgPool2D, interpolate  # FRAMEWORK-DIFF: float64-exact ops (paddle_impl/ops.py)

# 1e-6 as float32 kernels see it. Paddle keeps the LayerNorm epsilon in float32 even for float64
# tensors (like BatchNorm's); float32 results are bit-identical to 1e-6.
LN_EPS = float(np.float32(1e-6))


def resize(x, size):
    """mmseg's ``resize``: bilinear, align_corners=False."""
    return interpolate(x, mode="bilinear", align_corners=False, size=size)  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact (align_mode=0 inside)


class PatchEmbed(nn.Module):
    """timm PatchEmbed: a kernel = stride = patch_size conv; returns tokens [B, N, C] and the grid."""

    def __init__(self, patch_size, in_channels, embed_dim):
        super().__init__()
        self.proj = nn.Conv2D(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        x = self.proj(x)
        return x.flatten(2).transpose([0, 2, 1])  # FRAMEWORK-DIFF: transpose API


class PosEmbedResize(nn.Module):
    """mmseg ``resize_pos_embed``: keep the class-token row, resample the square patch grid.

    Args:
        grid: (h, w) patch grid the table was trained for.
        mode: interpolation mode of the patch grid ("bicubic" in MAE/mmseg).
        align_corners: False in MAE/mmseg.
    """

    def __init__(self, grid, mode="bicubic", align_corners=False):
        super().__init__()
        self.grid = tuple(grid)
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, pos_embed, grid):
        if tuple(grid) == self.grid:
            return pos_embed
        cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
        dim = pos_embed.shape[2]
        patch_pos = patch_pos.reshape([1, self.grid[0], self.grid[1], dim]).transpose([0, 3, 1, 2])  # FRAMEWORK-DIFF: reshape/transpose API
        patch_pos = interpolate(patch_pos, mode=self.mode, align_corners=self.align_corners, size=grid)  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact bicubic
        patch_pos = patch_pos.flatten(2).transpose([0, 2, 1])  # FRAMEWORK-DIFF: transpose API
        return paddle.concat([cls_pos, patch_pos], axis=1)


class Attention(nn.Module):
    """timm Attention: one ``qkv`` Linear split as (3, heads, head_dim), scale head_dim ** -0.5."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias_attr=None if qkv_bias else False)  # FRAMEWORK-DIFF: paddle takes None/False for a bias
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape([batch, tokens, 3, self.num_heads, self.head_dim]).transpose([2, 0, 3, 1, 4])  # FRAMEWORK-DIFF: reshape/transpose API
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = paddle.matmul(q, k, transpose_y=True) * self.scale  # FRAMEWORK-DIFF: matmul with transposed k
        attn = F.softmax(attn, axis=-1)
        x = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([batch, tokens, dim])  # FRAMEWORK-DIFF: reshape/transpose API
        return self.proj(x)


class Mlp(nn.Module):
    """fc1, exact (erf) GELU, fc2."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=False)  # FRAMEWORK-DIFF: exact GELU spelled per API
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """timm-named ViT with the BEiT 4-scale adapter; forward returns [stride 4, 8, 16, 32] maps.

    Args:
        img_size: training size of ``pos_embed`` (other sizes resample it at every forward).
        patch_size: 16.
        in_channels: 2 for Sentinel-1 (VV, VH).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: ViT-S/16 is 384, 12, 6, 4, True.
        out_indices: blocks whose outputs feed fpn1..fpn4 (0-based).
        interpolate_mode: pos_embed resampling mode ("bicubic").
    """

    def __init__(self, img_size=256, patch_size=16, in_channels=2, embed_dim=384, depth=12, num_heads=6,
                 mlp_ratio=4.0, qkv_bias=True, out_indices=(3, 5, 7, 11), interpolate_mode="bicubic"):
        super().__init__()
        self.patch_size = patch_size
        self.out_indices = tuple(out_indices)
        grid = (img_size // patch_size, img_size // patch_size)
        self.cls_token = self.create_parameter([1, 1, embed_dim], default_initializer=nn.initializer.Constant(0.0))  # FRAMEWORK-DIFF: parameter creation
        self.pos_embed = self.create_parameter([1, 1 + grid[0] * grid[1], embed_dim], default_initializer=nn.initializer.Constant(0.0))  # FRAMEWORK-DIFF: parameter creation
        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim)
        self.pos_resize = PosEmbedResize(grid, mode=interpolate_mode, align_corners=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.fpn1 = nn.Sequential(
            nn.Conv2DTranspose(embed_dim, embed_dim, kernel_size=2, stride=2, padding=0),  # FRAMEWORK-DIFF: layer class
            norm_layer(embed_dim),
            nn.GELU(approximate=False),  # FRAMEWORK-DIFF: exact GELU spelled per API
            nn.Conv2DTranspose(embed_dim, embed_dim, kernel_size=2, stride=2, padding=0),  # FRAMEWORK-DIFF: layer class
        )
        self.fpn2 = nn.Sequential(nn.Conv2DTranspose(embed_dim, embed_dim, kernel_size=2, stride=2, padding=0))  # FRAMEWORK-DIFF: layer class
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2D(kernel_size=2, stride=2)
        self.out_channels = [embed_dim] * len(self.out_indices)
        self.output_stride = 32
        self._init_weights()

    def _init_weights(self):
        """MAE's initialisation: tokens N(0, 0.02), Linear xavier-uniform with zero bias."""
        nn.initializer.Normal(std=0.02)(self.cls_token)  # FRAMEWORK-DIFF: init API
        nn.initializer.Normal(std=0.02)(self.pos_embed)  # FRAMEWORK-DIFF: init API
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.initializer.XavierUniform()(m.weight)  # FRAMEWORK-DIFF: init API
                nn.initializer.Constant(0.0)(m.bias)  # FRAMEWORK-DIFF: init API

    def forward(self, x):
        batch = x.shape[0]
        grid = (x.shape[2] // self.patch_size, x.shape[3] // self.patch_size)
        x = self.patch_embed(x)
        x = paddle.concat([self.cls_token.expand([batch, -1, -1]), x], axis=1)  # FRAMEWORK-DIFF: expand API
        x = x + self.pos_resize(self.pos_embed, grid)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.out_indices:
                features.append(x[:, 1:].transpose([0, 2, 1]).reshape([batch, -1, grid[0], grid[1]]))  # FRAMEWORK-DIFF: reshape/transpose API
        ops = [self.fpn1, self.fpn2, self.fpn3, self.fpn4]
        return [op(feature) for op, feature in zip(ops, features)]


class ConvModule(nn.Module):
    """mmcv ConvModule as mmseg configures it: conv without bias, BatchNorm, ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, padding=0):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, kernel_size, padding=padding, bias_attr=False)
        self.bn = norm_layer(out_channels)
        self.activate = nn.ReLU()

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class UPerHead(nn.Module):
    """mmseg 0.x UPerHead: PPM on the last level, FPN top-down, fused 3x3, dropout, conv_seg.

    Args:
        in_channels: channels of the four input levels.
        channels: head width (512).
        num_classes: output classes.
        pool_scales: PPM bins (1, 2, 3, 6).
        dropout_ratio: Dropout2d before conv_seg (0.1 in mmseg).
    """

    def __init__(self, in_channels, channels, num_classes, pool_scales=(1, 2, 3, 6), dropout_ratio=0.1):
        super().__init__()
        self.conv_seg = nn.Conv2D(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2D(dropout_ratio)  # FRAMEWORK-DIFF: layer class
        self.psp_modules = nn.ModuleList([
            nn.Sequential(AdaptiveAvgPool2D(scale), ConvModule(in_channels[-1], channels, 1))  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact pooling backward
            for scale in pool_scales])
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList([ConvModule(c, channels, 1) for c in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([ConvModule(channels, channels, 3, padding=1) for _ in in_channels[:-1]])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, padding=1)
        nn.initializer.Normal(std=0.01)(self.conv_seg.weight)  # FRAMEWORK-DIFF: init API
        nn.initializer.Constant(0.0)(self.conv_seg.bias)  # FRAMEWORK-DIFF: init API

    def psp_forward(self, x):
        outs = [x] + [resize(ppm(x), x.shape[2:]) for ppm in self.psp_modules]
        return self.bottleneck(paddle.concat(outs, axis=1))

    def forward(self, features):
        laterals = [conv(features[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)] + [laterals[-1]]
        outs = [outs[0]] + [resize(out, outs[0].shape[2:]) for out in outs[1:]]
        output = self.fpn_bottleneck(paddle.concat(outs, axis=1))
        return self.conv_seg(self.dropout(output))


class FCNHead(nn.Module):
    """mmseg FCNHead(num_convs=1, concat_input=False) on one level: conv3x3 module, dropout, conv_seg.

    Args:
        in_channels, channels, num_classes: widths (384, 256, classes).
        in_index: which level it reads (2: stride 16).
        dropout_ratio: Dropout2d before conv_seg (0.1 in mmseg).
    """

    def __init__(self, in_channels, channels, num_classes, in_index=2, dropout_ratio=0.1):
        super().__init__()
        self.in_index = in_index
        self.conv_seg = nn.Conv2D(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2D(dropout_ratio)  # FRAMEWORK-DIFF: layer class
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3, padding=1))
        nn.initializer.Normal(std=0.01)(self.conv_seg.weight)  # FRAMEWORK-DIFF: init API
        nn.initializer.Constant(0.0)(self.conv_seg.bias)  # FRAMEWORK-DIFF: init API

    def forward(self, features):
        return self.conv_seg(self.dropout(self.convs(features[self.in_index])))


class ViTUperNet(nn.Module):
    """ViT-S/16 encoder with the BEiT adapter, UPerHead and an auxiliary FCNHead.

    Args:
        num_classes: 10 DFC2020 classes.
        in_channels: 2 (Sentinel-1 VV, VH).
        img_size: size ``pos_embed`` was trained for (256: 16x16 patches).
        patch_size, embed_dim, depth, num_heads, mlp_ratio: ViT-S/16 (16, 384, 12, 6, 4).
        out_indices: blocks feeding the adapter, (3, 5, 7, 11).
        channels: UPerHead width (512).
        aux_channels: FCNHead width (256).
        pool_scales: PPM bins.
        dropout_ratio: both heads' Dropout2d (0.1 in mmseg).
        interpolate_mode: pos_embed resampling mode ("bicubic").

    Returns from forward: eval mode, class probabilities [N, num_classes, H, W] (softmax of the
    logits resized to the input); train mode, ``(logit, aux_logit)`` at the input size.
    """

    def __init__(self, num_classes=10, in_channels=2, img_size=256, patch_size=16, embed_dim=384, depth=12,
                 num_heads=6, mlp_ratio=4.0, out_indices=(3, 5, 7, 11), channels=512, aux_channels=256,
                 pool_scales=(1, 2, 3, 6), dropout_ratio=0.1, interpolate_mode="bicubic"):
        super().__init__()
        self.backbone = VisionTransformer(img_size, patch_size, in_channels, embed_dim, depth, num_heads,
                                          mlp_ratio, True, out_indices, interpolate_mode)
        self.decode_head = UPerHead(self.backbone.out_channels, channels, num_classes, pool_scales, dropout_ratio)
        self.auxiliary_head = FCNHead(embed_dim, aux_channels, num_classes, 2, dropout_ratio)
        for m in list(self.decode_head.modules()) + list(self.auxiliary_head.modules()):
            if isinstance(m, ConvModule):
                nn.initializer.KaimingNormal(mode="fan_out", nonlinearity="relu")(m.conv.weight)  # FRAMEWORK-DIFF: init API

    def forward(self, x):
        size = x.shape[2:]
        features = self.backbone(x)
        logit = resize(self.decode_head(features), size)
        if self.training:
            return logit, resize(self.auxiliary_head(features), size)
        return F.softmax(logit, axis=1)


def pixel_cross_entropy(logit, label, ignore_index):
    """mmseg 0.x CrossEntropyLoss: per-pixel CE, ignored pixels count 0, mean over ALL pixels."""
    losses = F.nll_loss(F.log_softmax(logit, axis=1), label, ignore_index=ignore_index, reduction="none")
    return losses.mean()


class UperNetLoss(nn.Module):
    """Training loss: CE(main) + aux_weight * CE(aux), both with ignore_index.

    Args:
        ignore_index: label value excluded from the loss (255).
        aux_weight: weight of the auxiliary head's loss (0.4).
    """

    def __init__(self, ignore_index=255, aux_weight=0.4):
        super().__init__()
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight

    def forward(self, logit, aux_logit, label):
        main = pixel_cross_entropy(logit, label, self.ignore_index)
        return main + self.aux_weight * pixel_cross_entropy(aux_logit, label, self.ignore_index)
