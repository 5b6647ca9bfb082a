"""The Paddle port of torch_unet.py: same classes and attribute names, so the weights map by name.

Two ops come from rsport's paddle_impl.ops instead of paddle: in float64, paddle's bilinear
resize computes its source coordinates in float32 and its BatchNorm/LayerNorm apply epsilon in
float32, which float64 alignment shows as ~1e-7 / ~1e-12 differences that are not porting bugs.
``interpolate`` and the norms there are exact in float64 and call paddle's own kernels in float32.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_impl.ops import BatchNorm2D, LayerNorm, interpolate


class ConvBlock(nn.Layer):
    """Two 3x3 conv + BatchNorm + ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, out_channels, 3, padding=1, bias_attr=False)
        self.bn1 = BatchNorm2D(out_channels, epsilon=1e-5, momentum=0.9)  # paddle momentum = 1 - torch's
        self.conv2 = nn.Conv2D(out_channels, out_channels, 3, padding=1, bias_attr=False)
        self.bn2 = BatchNorm2D(out_channels, epsilon=1e-5, momentum=0.9)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class Attention(nn.Layer):
    """Multi-head self-attention over the pixels of a feature map, pre-norm, with a residual."""

    def __init__(self, channels, heads):
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.norm = LayerNorm(channels, epsilon=1e-6)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x):
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose([0, 2, 1])  # [N, HW, C]
        qkv = self.qkv(self.norm(tokens)).reshape([n, h * w, 3, self.heads, c // self.heads]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.softmax(q @ k.transpose([0, 1, 3, 2]) * self.scale, axis=-1)
        out = (attn @ v).transpose([0, 2, 1, 3]).reshape([n, h * w, c])
        return x + self.proj(out).transpose([0, 2, 1]).reshape([n, c, h, w])


class UNet(nn.Layer):
    """Three-level UNet: encoder, attention at the bottleneck, bilinear decoder, 1x1 head.
    Eval mode returns class probabilities, train mode the logits."""

    def __init__(self, in_channels=3, num_classes=6, width=16, heads=2):
        super().__init__()
        self.enc1 = ConvBlock(in_channels, width)
        self.enc2 = ConvBlock(width, 2 * width)
        self.enc3 = ConvBlock(2 * width, 4 * width)
        self.attn = Attention(4 * width, heads)
        self.dec2 = ConvBlock(6 * width, 2 * width)
        self.dec1 = ConvBlock(3 * width, width)
        self.head = nn.Conv2D(width, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.attn(self.enc3(F.max_pool2d(e2, 2)))
        up2 = interpolate(e3, size=e2.shape[2:], mode="bilinear", align_corners=False)
        d2 = self.dec2(paddle.concat([up2, e2], axis=1))
        up1 = interpolate(d2, size=e1.shape[2:], mode="bilinear", align_corners=False)
        logits = self.head(self.dec1(paddle.concat([up1, e1], axis=1)))
        return logits if self.training else F.softmax(logits, axis=1)


class SegLoss(nn.Layer):
    """Pixel-wise cross-entropy, ignored pixels left out of the mean."""

    def __init__(self, ignore_index=255):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits, label):
        return F.cross_entropy(logits, label, ignore_index=self.ignore_index, axis=1)
