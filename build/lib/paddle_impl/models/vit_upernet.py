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
- heads and loss: mmsegmentation 0.x UPerHead + FCNHead and CrossEntropyLoss (Apache-2.0), shared
  with upernet_r50 (models/upernet.py), Xiao et al., "Unified Perceptual Parsing for Scene
  Understanding", ECCV 2018; position-embedding resampling as mmseg's
  ``resize_pos_embed`` (bicubic, align_corners=False, class-token row kept).
Attribute names reproduce those keys (``backbone.*`` timm + ``fpn1/fpn2``, ``decode_head.*``,
``auxiliary_head.*``; 241 entries) so a checkpoint in that layout loads strictly.
Twins: torch_ref/ and paddle_impl/models/vit_upernet.py.

Deliberate choices, none of which changes a weight name:
- no final encoder LayerNorm (the BEiT-style segmentation backbone has none);
- no stochastic depth (drop_path 0); ``dropout_ratio`` is an argument (original 0.1; the
  alignment harness turns dropout off in its train-mode passes, backend.train_mode);
- SyncBatchNorm is a plain BatchNorm (single device; same statistics on one process);
- forward resizes the logits to the input size (mmseg does it in the loss / at inference).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_impl.models.resnet import norm_layer
from paddle_impl.models.upernet import FCNHead, UPerHead, resize
from paddle_impl.ops import LayerNorm, interpolate  # FRAMEWORK-DIFF: float64-exact bicubic and LN epsilon (paddle_impl/ops.py)

# timm's epsilon, exactly (paddle's kernel applies it in float32; paddle_impl/ops.py LayerNorm is
# exact in float64).
LN_EPS = 1e-6


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
        self.act = nn.GELU(approximate=False)  # FRAMEWORK-DIFF: exact GELU: torch approximate="none" is paddle approximate=False
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True):
        super().__init__()
        self.norm1 = LayerNorm(dim, epsilon=LN_EPS)  # FRAMEWORK-DIFF: float64-exact epsilon (paddle_impl/ops.py)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = LayerNorm(dim, epsilon=LN_EPS)  # FRAMEWORK-DIFF: float64-exact epsilon (paddle_impl/ops.py)
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
        self.cls_token = self.create_parameter([1, 1, embed_dim], default_initializer=nn.initializer.Constant(0.0))  # FRAMEWORK-DIFF: parameter creation (torch.zeros is paddle's Constant(0.0))
        self.pos_embed = self.create_parameter([1, 1 + grid[0] * grid[1], embed_dim], default_initializer=nn.initializer.Constant(0.0))  # FRAMEWORK-DIFF: parameter creation (torch.zeros is paddle's Constant(0.0))
        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim)
        self.pos_resize = PosEmbedResize(grid, mode=interpolate_mode, align_corners=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.fpn1 = nn.Sequential(
            nn.Conv2DTranspose(embed_dim, embed_dim, kernel_size=2, stride=2, padding=0),  # FRAMEWORK-DIFF: layer class
            norm_layer(embed_dim),
            nn.GELU(approximate=False),  # FRAMEWORK-DIFF: exact GELU: torch approximate="none" is paddle approximate=False
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
                features.append(x[:, 1:].transpose([0, 2, 1]).reshape([batch, x.shape[2], grid[0], grid[1]]).contiguous())  # FRAMEWORK-DIFF: reshape/transpose API; contiguous as BEiT's backbone
        ops = [self.fpn1, self.fpn2, self.fpn3, self.fpn4]
        return [op(feature) for op, feature in zip(ops, features)]


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
        self.decode_head = UPerHead(self.backbone.out_channels, channels, num_classes, pool_scales, dropout_ratio,
                                    align_corners=False)
        self.auxiliary_head = FCNHead(embed_dim, aux_channels, num_classes, 2, dropout_ratio, align_corners=False)

    def forward(self, x):
        size = x.shape[2:]
        features = self.backbone(x)
        logit = resize(self.decode_head(features), size, align_corners=False)
        if self.training:
            return logit, resize(self.auxiliary_head(features), size, align_corners=False)
        return F.softmax(logit, axis=1)
