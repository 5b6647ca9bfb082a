"""ResNet-50 v1.5 encoder with torchvision's parameter names.

Provenance: the layout of torchvision.models.resnet (BSD-3-Clause), He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016; stride on the 3x3 conv (v1.5). A torchvision
``resnet50`` ImageNet state_dict loads into ``ResNet`` strictly once its ``fc.*`` entries are
left out (this encoder has no classifier). Twins: torch_ref/ and paddle_impl/models/resnet.py.
"""
import paddle.nn as nn

from paddle_impl.ops import BatchNorm2D  # FRAMEWORK-DIFF: torch-exact running statistics

# The originals' epsilon, exactly: float64 computes what the original code computes. (Paddle's
# kernel applies epsilon in float32; paddle_impl/ops.py BatchNorm2D is exact in float64.)
BN_EPS = 1e-5
BN_MOMENTUM = 0.9  # FRAMEWORK-DIFF: paddle weights the OLD statistic: 0.9 here == torch 0.1


def norm_layer(channels):
    """BatchNorm with the reference's epsilon and momentum spelled out."""
    return BatchNorm2D(channels, epsilon=BN_EPS, momentum=BN_MOMENTUM)  # FRAMEWORK-DIFF: paddle_impl/ops.py BN


class Bottleneck(nn.Layer):
    """1x1 reduce, 3x3 (strided, optionally dilated with padding = dilation), 1x1 expand, with a
    projection shortcut when shapes change (torchvision's and mmseg's 'pytorch' style)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2D(inplanes, planes, kernel_size=1, bias_attr=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2D(planes, planes, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
                               bias_attr=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2D(planes, planes * self.expansion, kernel_size=1, bias_attr=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Layer):
    """Bottleneck ResNet without classifier; forward returns the stage features [c2, c3, c4, c5].

    Args:
        layers: blocks per stage, (3, 4, 6, 3) for ResNet-50.
        stem_width: channels of the stem and of the first stage's bottleneck (64).
        in_channels: image channels.
    """

    def __init__(self, layers=(3, 4, 6, 3), stem_width=64, in_channels=3):
        super().__init__()
        self.inplanes = stem_width
        self.conv1 = nn.Conv2D(in_channels, stem_width, kernel_size=7, stride=2, padding=3, bias_attr=False)
        self.bn1 = norm_layer(stem_width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(stem_width, layers[0], stride=1)
        self.layer2 = self._make_layer(stem_width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(stem_width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(stem_width * 8, layers[3], stride=2)
        self.out_channels = [stem_width * 2 ** i * Bottleneck.expansion for i in range(4)]
        self.output_stride = 32
        self._init_weights()

    def _make_layer(self, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2D(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias_attr=False),
                norm_layer(planes * Bottleneck.expansion),
            )
        units = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        units += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*units)

    def _init_weights(self):
        """torchvision's initialisation: He-normal (fan_out) convs, BN weight 1 and bias 0."""
        for m in self.sublayers():
            if isinstance(m, nn.Conv2D):
                nn.initializer.KaimingNormal(mode="fan_out", nonlinearity="relu")(m.weight)  # FRAMEWORK-DIFF: init API

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


class ResNetEncoder(nn.Layer):
    """simplecv's ResNetEncoder wrapper (``resencoder.resnet.*`` keys), output stride 32."""

    def __init__(self, layers=(3, 4, 6, 3), stem_width=64, in_channels=3):
        super().__init__()
        self.resnet = ResNet(layers, stem_width, in_channels)
        self.out_channels = self.resnet.out_channels
        self.output_stride = self.resnet.output_stride

    def forward(self, x):
        return self.resnet(x)
