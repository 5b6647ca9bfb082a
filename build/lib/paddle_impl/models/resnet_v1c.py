"""ResNetV1c (mmsegmentation 0.x) with mmseg's parameter names: deep 3-conv stem, dilated stages.

Provenance: open-mmlab/mmsegmentation 0.21.0 (Apache-2.0), mmseg/models/backbones/resnet.py and
mmseg/models/utils/res_layer.py, read in the copy vendored by ViTAE-Transformer/RSP @ f2981873
(``Semantic Segmentation/``). Papers: He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016; the V1c deep stem from He et al., "Bag of Tricks for Image Classification with
Convolutional Neural Networks", CVPR 2019. An mmseg ``backbone.*`` state_dict (and
``open-mmlab://resnet50_v1c``) loads strictly. Twins: torch_ref/ and paddle_impl/models/resnet_v1c.py.

Deliberate difference: mmseg's ``zero_init_residual`` (bn3 weight 0) is not applied at
construction. It only matters for training from scratch, and every mmseg config replaces it by
the pretrained ``resnet50_v1c`` weights; without it every parameter gets a gradient at once.
"""
import paddle.nn as nn

from paddle_impl.models.resnet import Bottleneck, norm_layer


class ResLayer(nn.Sequential):
    """One stage (mmseg ResLayer, ``avg_down=False``): a 1x1 strided projection shortcut in
    block 0 when the shape changes; with ``contract_dilation`` block 0 of a dilated stage uses
    ``dilation // 2``, the other blocks ``dilation``."""

    def __init__(self, inplanes, planes, num_blocks, stride=1, dilation=1, contract_dilation=True):
        downsample = None
        if stride != 1 or inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2D(inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias_attr=False),
                norm_layer(planes * Bottleneck.expansion),
            )
        first_dilation = dilation // 2 if dilation > 1 and contract_dilation else dilation
        blocks = [Bottleneck(inplanes, planes, stride, downsample, dilation=first_dilation)]
        blocks += [Bottleneck(planes * Bottleneck.expansion, planes, dilation=dilation) for _ in range(1, num_blocks)]
        super().__init__(*blocks)


class ResNetV1c(nn.Layer):
    """ResNetV1c: deep stem (3x3 convs stem_channels/2, stem_channels/2, stem_channels, each
    BN-ReLU), 3x3/2 max pool, four dilated stages; forward returns [c2, c3, c4, c5].

    Args:
        in_channels: image channels.
        layers: blocks per stage, (3, 4, 6, 3) for depth 50.
        stem_channels: output channels of the stem (64).
        base_channels: bottleneck width of the first stage (64), doubled per stage.
        strides: stride of block 0 per stage; (1, 2, 1, 1) gives output stride 8 ("D8").
        dilations: dilation per stage, (1, 1, 2, 4) for D8.
        contract_dilation: halve the dilation of block 0 of each dilated stage.
    """

    def __init__(self, in_channels=3, layers=(3, 4, 6, 3), stem_channels=64, base_channels=64,
                 strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), contract_dilation=True):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2D(in_channels, stem_channels // 2, kernel_size=3, stride=2, padding=1, bias_attr=False),
            norm_layer(stem_channels // 2),
            nn.ReLU(),
            nn.Conv2D(stem_channels // 2, stem_channels // 2, kernel_size=3, stride=1, padding=1, bias_attr=False),
            norm_layer(stem_channels // 2),
            nn.ReLU(),
            nn.Conv2D(stem_channels // 2, stem_channels, kernel_size=3, stride=1, padding=1, bias_attr=False),
            norm_layer(stem_channels),
            nn.ReLU(),
        )
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1, ceil_mode=False)
        inplanes = stem_channels
        self.out_channels = []
        self.layer_names = []
        for i, (num_blocks, stride, dilation) in enumerate(zip(layers, strides, dilations)):
            planes = base_channels * 2 ** i
            self.add_sublayer(f"layer{i + 1}", ResLayer(inplanes, planes, num_blocks, stride, dilation, contract_dilation))
            inplanes = planes * Bottleneck.expansion
            self.out_channels.append(inplanes)
            self.layer_names.append(f"layer{i + 1}")
        self.output_stride = 4
        for stride in strides:
            self.output_stride *= stride
        self._init_weights()

    def _init_weights(self):
        """mmseg ResNet's init_cfg: Kaiming normal (fan_out, relu) convs; BN weight 1, bias 0."""
        for m in self.sublayers():
            if isinstance(m, nn.Conv2D):
                nn.initializer.KaimingNormal(mode="fan_out", nonlinearity="relu")(m.weight)  # FRAMEWORK-DIFF: init API

    def forward(self, x):
        x = self.maxpool(self.stem(x))
        outs = []
        for name in self.layer_names:
            x = getattr(self, name)(x)
            outs.append(x)
        return outs
