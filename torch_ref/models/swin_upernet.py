"""Swin-T + UperNet (mmsegmentation 0.x ``EncoderDecoder``), RSP's iSAID configuration.

Provenance: github.com/ViTAE-Transformer/RSP @ f2981873 (``Semantic Segmentation/``, MIT; vendors
mmsegmentation 0.21.0, Apache-2.0): configs/swin/upernet_swin_tiny_patch4_window7_896x896_80k_isaid.py
on configs/_base_/models/upernet_swin.py, backbone mmseg/models/backbones/swin_transformer.py (type
``swin``), which is the Swin backbone of github.com/SwinTransformer/Swin-Transformer-Semantic-Segmentation
@ 87e6f905 (mmseg/models/backbones/swin_transformer.py, Apache-2.0 repository, the file MIT (c)
Microsoft) with identical forward code and names. Papers: Z. Liu et al., "Swin Transformer:
Hierarchical Vision Transformer using Shifted Windows", ICCV 2021; T. Xiao et al., "Unified Perceptual
Parsing for Scene Understanding", ECCV 2018; D. Wang et al., "An Empirical Study of Remote Sensing
Pretraining", IEEE TGRS 2022. Reference sheet: shared/reference/swin_t_upernet.md.
Attribute names reproduce the original state_dict (271 entries: ``backbone.patch_embed``,
``backbone.layers.{i}.blocks.{j}`` with the persistent ``attn.relative_position_index`` buffer,
``backbone.layers.{i}.downsample``, ``backbone.norm{i}``, mmseg 0.x ``decode_head.*`` and
``auxiliary_head.*``), so an RSP / Swin-Transformer-Semantic-Segmentation checkpoint loads strictly.
Twins: torch_ref/ and paddle_impl/models/swin_upernet.py. Heads, resize and loss are upernet.py's.

Deliberate choices, none of which changes a weight name or a number:
- the Dropout(p=0) layers of the config (``drop_rate``, ``attn_drop_rate`` 0) are identities and are
  left out; stochastic depth (``drop_path_rate`` 0.3) is kept as ``DropPath`` (the harness turns it off
  with the dropouts in its train-mode passes, backend.train_mode);
- ``ape=False``, ``patch_norm=True`` and ``out_indices=(0, 1, 2, 3)`` of the config are fixed (no
  ``absolute_pos_embed``, ``patch_embed.norm`` always, all four stages feed the heads);
- the shifted-window attention mask (0 / -100, built on the window-padded grid, recomputed every
  forward as the original does) is built with tensor ops from the grid size (arange, comparisons,
  the window partition; no numpy, no Python loop over regions): the same values;
- the zero padding to multiples of the patch, of the window and of 2 (patch merging) is a pad by
  the largest amount (patch - 1, window - 1, 1) followed by a crop to the padded size, and the crop
  after the attention always runs: the same tensors as the original's ``F.pad`` by size-dependent
  amounts behind ``if`` tests, but no pad amount and no branch depends on the input size, so one
  static graph (Paddle, ONNX) serves every input size, with dynamic H and W;
- the block's spatial size is an argument of its forward instead of the ``blk.H, blk.W`` attributes;
- SyncBN in the heads is a plain BatchNorm (identical on one device; same keys);
- forward resizes the logits to the input size (mmseg does it in the loss / at inference).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_ref.models.upernet import FCNHead, UPerHead, resize

# nn.LayerNorm's default, exactly (paddle_impl/ops.py LayerNorm applies it in float64 too).
LN_EPS = 1e-5
MASK_VALUE = -100.0  # the original's (finite) logit offset between tokens of different shifted regions


class DropPath(nn.Module):
    """Stochastic depth (timm ``DropPath``): in training, zero the whole residual branch of each
    sample with probability ``drop_prob`` and scale kept samples by 1 / (1 - drop_prob).

    Args:
        drop_prob: probability of dropping a sample's branch.
    """

    is_dropout = True  # backend.train_mode switches it off with the dropouts (RNG streams differ)

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = [x.shape[0]] + [1] * (x.ndim - 1)
        mask = torch.bernoulli(torch.full(shape, keep_prob, dtype=x.dtype, device=x.device))  # FRAMEWORK-DIFF: tensor creation
        return x * (mask / keep_prob)


class Mlp(nn.Module):
    """fc1, exact (erf) GELU, fc2."""

    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="none")  # FRAMEWORK-DIFF: exact GELU: torch approximate="none" is paddle approximate=False
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def window_partition(x, window_size):
    """(B, H, W, C) -> (B * nW, window_size ** 2, C); windows batch-major, then row-major."""
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // window_size, window_size, width // window_size, window_size, channels)  # FRAMEWORK-DIFF: reshape API
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, channels)  # FRAMEWORK-DIFF: reshape/transpose API


def window_reverse(windows, window_size, height, width):
    """Inverse of ``window_partition``: (B * nW, window_size ** 2, C) -> (B, H, W, C)."""
    channels = windows.shape[-1]
    x = windows.reshape(-1, height // window_size, width // window_size, window_size, window_size, channels)  # FRAMEWORK-DIFF: reshape API
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)  # FRAMEWORK-DIFF: reshape/transpose API


def relative_position_index(window_size):
    """[N, N] int64, N = window_size ** 2: for query token i and key token j (row-major in the
    window), (h_i - h_j + ws - 1) * (2 ws - 1) + (w_i - w_j + ws - 1), the row of the bias table."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij")).reshape(2, -1)
    relative = coords[:, :, None] - coords[:, None, :] + (window_size - 1)
    return (relative[0] * (2 * window_size - 1) + relative[1]).astype(np.int64)


def padded_size(size, multiple):
    """``size`` rounded up to a multiple of ``multiple``; ``size`` may be an int or a shape value of a
    static graph (a traced / symbolic size), so the same code serves export with dynamic H and W."""
    return (size + multiple - 1) // multiple * multiple


def pad_bottom_right(x, height, width, max_pad):
    """Zero-pad the (H, W) axes of a (B, H, W, C) map at the bottom / right to ``height`` x ``width``,
    at most ``max_pad`` more than it has: a fixed pad by ``max_pad``, then a crop. The same tensor as
    the original's pad by the size-dependent amounts, with no pad amount depending on the size."""
    x = F.pad(x, (0, 0, 0, max_pad, 0, max_pad))  # FRAMEWORK-DIFF: paddle pads NHWC through data_format
    return x[:, :height, :width, :]


def shift_regions(size, window_size, shift_size):
    """Region of each row (or column) of a padded grid of ``size``, as the original labels it for the
    shifted windows: 0 in [0, size - ws), 1 in [size - ws, size - shift), 2 in [size - shift, size)."""
    index = torch.arange(size)
    return (index >= size - window_size).to(torch.int64) + (index >= size - shift_size).to(torch.int64)  # FRAMEWORK-DIFF: cast API


def shifted_window_mask(height, width, window_size, shift_size):
    """[nW, N, N] attention offsets of the shifted windows on the padded (height, width) grid:
    0 where query and key lie in the same region of the rolled map, MASK_VALUE elsewhere. Regions:
    rows [0, H - ws), [H - ws, H - shift), [H - shift, H), likewise for columns (id = 3 row + col).
    Built with tensor ops from the grid size (float32 values -100.0 / 0.0, exact in every float type)."""
    rows = shift_regions(height, window_size, shift_size)
    cols = shift_regions(width, window_size, shift_size)
    ids = (3 * rows.unsqueeze(1) + cols.unsqueeze(0)).reshape(1, height, width, 1)  # FRAMEWORK-DIFF: reshape API
    ids = window_partition(ids, window_size).squeeze(-1)
    return torch.where(ids.unsqueeze(1) != ids.unsqueeze(2), MASK_VALUE, 0.0)


def drop_path_rates(rate, count):
    """Stochastic depth per block in global order, linear from 0 to ``rate``: the float32 values of the
    original's ``torch.linspace(0, rate, count)`` (same two-sided float32 formula; tests compare them)."""
    if count == 1:
        return [0.0]
    step = np.float32(rate) / np.float32(count - 1)
    i = np.arange(count)
    below = i.astype(np.float32) * step
    above = np.float32(rate) - (count - 1 - i).astype(np.float32) * step
    return np.where(i < count // 2, below, above).astype(np.float32).tolist()


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a learned relative position bias (W-MSA / SW-MSA).

    Args:
        dim: channels.
        window_size: side of the square window (7).
        num_heads: heads (head_dim = dim // num_heads; q is scaled by head_dim ** -0.5).
        qkv_bias: bias of the ``qkv`` Linear (True).
    """

    def __init__(self, dim, window_size, num_heads, qkv_bias=True):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))  # FRAMEWORK-DIFF: parameter creation (torch.zeros is paddle's Constant(0.0))
        self.register_buffer("relative_position_index", torch.from_numpy(relative_position_index(window_size)))  # FRAMEWORK-DIFF: persistent buffer (the default in both)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)  # FRAMEWORK-DIFF: paddle takes None/False for a bias
        self.proj = nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02, a=-2.0, b=2.0)  # FRAMEWORK-DIFF: init API (mmcv's trunc_normal_, cut at +-2)

    def forward(self, x, mask=None):
        """x: (B * nW, N, C) window tokens; mask: (nW, N, N) offsets or None."""
        windows, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(windows, tokens, 3, self.num_heads, channels // self.num_heads).permute(2, 0, 3, 1, 4)  # FRAMEWORK-DIFF: reshape/transpose API
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = torch.matmul(q, k.transpose(-2, -1))  # FRAMEWORK-DIFF: matmul with transposed k
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]  # FRAMEWORK-DIFF: gather API
        bias = bias.reshape(tokens, tokens, -1).permute(2, 0, 1)  # FRAMEWORK-DIFF: reshape/transpose API
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.reshape(-1, num_windows, self.num_heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)  # FRAMEWORK-DIFF: reshape API
            attn = attn.reshape(-1, self.num_heads, tokens, tokens)  # FRAMEWORK-DIFF: reshape API
        attn = self.softmax(attn)
        x = torch.matmul(attn, v).transpose(1, 2).reshape(windows, tokens, channels)  # FRAMEWORK-DIFF: reshape/transpose API
        return self.proj(x)


class SwinTransformerBlock(nn.Module):
    """Pre-norm Swin block: x + drop_path(W-MSA or SW-MSA(norm1(x))), then x + drop_path(mlp(norm2(x))).

    The normalised map is zero-padded right/bottom to multiples of the window (padded tokens are
    NOT masked: they act as keys and values, as in the original), rolled by -shift before the
    attention and by +shift after it, and cropped back.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: window side (7).
        shift_size: 0 (W-MSA) or window_size // 2 (SW-MSA).
        mlp_ratio: MLP hidden width / dim (4).
        qkv_bias: bias of ``attn.qkv``.
        drop_path: stochastic depth rate of this block (``nn.Identity`` when 0).
    """

    def __init__(self, dim, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)  # FRAMEWORK-DIFF: float64-exact epsilon (paddle_impl/ops.py)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)  # FRAMEWORK-DIFF: float64-exact epsilon (paddle_impl/ops.py)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, height, width, mask):
        """x: (B, H * W, C); mask: the stage's shifted-window mask (used only when shifted)."""
        batch, _, channels = x.shape
        shortcut = x
        x = self.norm1(x).reshape(batch, height, width, channels)  # FRAMEWORK-DIFF: reshape API
        padded_h, padded_w = padded_size(height, self.window_size), padded_size(width, self.window_size)
        x = pad_bottom_right(x, padded_h, padded_w, self.window_size - 1)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))  # FRAMEWORK-DIFF: dims / axis
        else:
            mask = None
        windows = self.attn(window_partition(x, self.window_size), mask=mask)
        x = window_reverse(windows, self.window_size, padded_h, padded_w)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))  # FRAMEWORK-DIFF: dims / axis
        x = x[:, :height, :width, :]
        x = shortcut + self.drop_path(x.reshape(batch, height * width, channels))  # FRAMEWORK-DIFF: reshape API
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> one token: zero-pad odd sizes (bottom/right), concatenate the four
    sub-grids in the order (even row, even col), (odd, even), (even, odd), (odd, odd), then
    LayerNorm(4C) and a bias-free Linear 4C -> 2C.

    Args:
        dim: input channels C.
    """

    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)  # FRAMEWORK-DIFF: paddle takes None/False for a bias
        self.norm = nn.LayerNorm(4 * dim, eps=LN_EPS)  # FRAMEWORK-DIFF: float64-exact epsilon (paddle_impl/ops.py)

    def forward(self, x, height, width):
        batch, _, channels = x.shape
        x = x.reshape(batch, height, width, channels)  # FRAMEWORK-DIFF: reshape API
        x = pad_bottom_right(x, padded_size(height, 2), padded_size(width, 2), 1)
        x0 = x[:, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, :]
        x3 = x[:, 1::2, 1::2, :]
        x = torch.cat([x0, x1, x2, x3], dim=-1).reshape(batch, -1, 4 * channels)  # FRAMEWORK-DIFF: reshape API
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks alternating W-MSA / SW-MSA (odd blocks shifted by
    window_size // 2) sharing one mask, then PatchMerging (all stages but the last).

    Args:
        dim: channels.
        depth: blocks.
        num_heads: attention heads.
        window_size: window side.
        mlp_ratio: MLP hidden width / dim.
        qkv_bias: bias of every ``attn.qkv``.
        drop_path: per-block stochastic depth rates (a list of ``depth`` values).
        downsample: whether a PatchMerging follows.
    """

    def __init__(self, dim, depth, num_heads, window_size=7, mlp_ratio=4.0, qkv_bias=True, drop_path=(),
                 downsample=True):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                                 qkv_bias, drop_path[i])
            for i in range(depth)])
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x, height, width):
        """Returns (stage output, H, W, next stage's input, next H, next W)."""
        padded_h, padded_w = padded_size(height, self.window_size), padded_size(width, self.window_size)
        mask = shifted_window_mask(padded_h, padded_w, self.window_size, self.shift_size)
        mask = mask.to(dtype=x.dtype, device=x.device)  # FRAMEWORK-DIFF: cast API (paddle: no device)
        for block in self.blocks:
            x = block(x, height, width, mask)
        if self.downsample is None:
            return x, height, width, x, height, width
        return x, height, width, self.downsample(x, height, width), (height + 1) // 2, (width + 1) // 2


class PatchEmbed(nn.Module):
    """Zero-pad right/bottom to multiples of the patch size, kernel = stride = patch conv, LayerNorm
    over channels; returns NCHW.

    Args:
        patch_size: 4.
        in_channels: image channels.
        embed_dim: output channels (96).
    """

    def __init__(self, patch_size=4, in_channels=3, embed_dim=96):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)  # FRAMEWORK-DIFF: float64-exact epsilon (paddle_impl/ops.py)

    def forward(self, x):
        padded_h, padded_w = padded_size(x.shape[2], self.patch_size), padded_size(x.shape[3], self.patch_size)
        x = F.pad(x, (0, self.patch_size - 1, 0, self.patch_size - 1))  # FRAMEWORK-DIFF: pad list spelled per API (NCHW: left, right, top, bottom)
        x = self.proj(x[:, :, :padded_h, :padded_w])
        grid_h, grid_w = x.shape[2], x.shape[3]
        x = self.norm(x.flatten(2).transpose(1, 2))  # FRAMEWORK-DIFF: transpose API
        return x.transpose(1, 2).reshape(-1, self.embed_dim, grid_h, grid_w)  # FRAMEWORK-DIFF: reshape/transpose API


class SwinTransformer(nn.Module):
    """Swin backbone (RSP type ``swin``); forward returns the four normalised stage maps
    [C, 2C, 4C, 8C] at strides 4, 8, 16, 32 (sizes ceil-divided for inputs that are not multiples).

    Args:
        patch_size: 4.
        in_channels: image channels (3).
        embed_dim: C of stage 0 (96).
        depths: blocks per stage (2, 2, 6, 2).
        num_heads: heads per stage (3, 6, 12, 24).
        window_size: 7.
        mlp_ratio: 4.
        qkv_bias: True.
        drop_path_rate: stochastic depth of the last block; linear from 0 over all blocks (0.3).
    """

    def __init__(self, patch_size=4, in_channels=3, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                 window_size=7, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.3):
        super().__init__()
        self.num_layers = len(depths)
        self.num_features = [embed_dim * 2 ** i for i in range(self.num_layers)]
        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim)
        rates = drop_path_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(BasicLayer(self.num_features[i], depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias,
                                          rates[sum(depths[:i]):sum(depths[:i + 1])], i < self.num_layers - 1))
        for i in range(self.num_layers):
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i], eps=LN_EPS))  # FRAMEWORK-DIFF: float64-exact epsilon (paddle_impl/ops.py)
        self.out_channels = list(self.num_features)
        self.output_stride = 32
        self._init_weights()

    def _init_weights(self):
        """The original's initialisation without a checkpoint (Swin-Transformer-Semantic-Segmentation's
        ``_init_weights``; RSP's copy crashes there): Linear weights truncated normal (std 0.02, cut at
        +-2), biases 0; LayerNorms 1 / 0 (their defaults)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)  # FRAMEWORK-DIFF: init API
                if m.bias is not None:
                    nn.init.zeros_(m.bias)  # FRAMEWORK-DIFF: init API

    def forward(self, x):
        x = self.patch_embed(x)
        height, width = x.shape[2], x.shape[3]
        x = x.flatten(2).transpose(1, 2)  # FRAMEWORK-DIFF: transpose API
        outs = []
        for i, layer in enumerate(self.layers):
            out, out_h, out_w, x, height, width = layer(x, height, width)
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.reshape(-1, out_h, out_w, self.num_features[i]).permute(0, 3, 1, 2))  # FRAMEWORK-DIFF: reshape/transpose API
        return outs


class SwinUperNet(nn.Module):
    """mmseg EncoderDecoder: Swin backbone, UPerHead on all four stages and an auxiliary FCNHead on
    stage 2 (training only).

    Args:
        num_classes: classes including background (16 for iSAID).
        in_channels: image channels (3).
        embed_dim: Swin C (96 for Swin-T).
        depths: blocks per stage ((2, 2, 6, 2)).
        num_heads: heads per stage ((3, 6, 12, 24)).
        window_size: 7.
        drop_path_rate: 0.3 (stochastic depth, train mode only).
        channels: UPerHead width (512).
        aux_channels: FCNHead width (256).
        pool_scales: PPM scales.
        dropout_ratio: Dropout2d before each conv_seg (0.1).
        align_corners: of every bilinear resize (False).

    Returns from forward: eval mode, class probabilities [N, num_classes, H, W] (softmax of the
    logits resized to the input); train mode, ``(seg_logit, aux_logit)`` resized to the input as
    mmseg does before its loss.
    """

    def __init__(self, num_classes=16, in_channels=3, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                 window_size=7, drop_path_rate=0.3, channels=512, aux_channels=256, pool_scales=(1, 2, 3, 6),
                 dropout_ratio=0.1, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.backbone = SwinTransformer(4, in_channels, embed_dim, depths, num_heads, window_size, 4.0, True,
                                        drop_path_rate)
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
