"""HRNetV2-W48 + OCR: HRNet-Semantic-Segmentation's ``seg_hrnet_ocr`` (branch HRNet-OCR).

Provenance: github.com/HRNet/HRNet-Semantic-Segmentation @ 0bbb2880 (branch HRNet-OCR):
lib/models/seg_hrnet_ocr.py (last changed in 7b0a416), lib/core/criterion.py, lib/utils/utils.py
(FullModel, adjust_learning_rate), lib/datasets/base_dataset.py (inference),
experiments/cityscapes/seg_hrnet_ocr_w48_trainval_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml;
MIT License (Microsoft). Papers: J. Wang, K. Sun, T. Cheng, B. Jiang, C. Deng, Y. Zhao, D. Liu,
Y. Mu, M. Tan, X. Wang, W. Liu, B. Xiao, "Deep High-Resolution Representation Learning for Visual
Recognition", TPAMI 2020; Y. Yuan, X. Chen, J. Wang, "Object-Contextual Representations for
Semantic Segmentation", ECCV 2020.
Attribute names reproduce the original's state_dict keys in its order (1890 entries, no prefix;
70,368,976 parameters at 16 classes), so the published ``hrnet_ocr_cs_trainval_8227_torch11.pth``
loads strictly once its ``FullModel`` prefix ``model.`` and the criterion's ``loss.criterion.weight``
are removed (the registry's ``hrnetseg_fullmodel`` naming does both and reports it).
Twins: torch_ref/ and paddle_impl/models/hrnet_ocr.py.

Deliberate differences from the original, none of which changes a weight name or a number:
- forward returns class probabilities at input size in eval: softmax of the OCR logits resized
  bilinearly with align_corners=True (``BaseDataset.inference`` resizes the same way and takes
  exp(logits); softmax is that map normalised per pixel, same argmax). In training it returns
  ``(aux_logit, seg_logit)``, the raw model outputs [aux, ocr] resized to the input with
  align_corners=True, which is what the original criterion does before its CE (labels are
  input-sized); the loss is the separate ``OCRLoss``;
- code paths the W48 OCR configuration never runs are left out: the attention block's MaxPool
  and resize for scale > 1 (the model passes scale 1), the gather's multiplication by its scale
  (1), single-branch and single-scale-output HighResolutionModules, and BasicBlock downsampling
  (a transition always gives a branch its own width);
- the backbone's BNs and ReLUs are built through the shared ``norm_layer`` and ``nn.ReLU()``:
  SyncBatchNorm is plain BatchNorm (identical on one device; same keys), ReLUs are not in place;
- ``init_weights`` reproduces the original's initialisation without reading a pretrained file
  (the conversion and training tools load weights).
"""
import math  # FRAMEWORK-DIFF: torch_default_init below

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_impl.models.resnet import Bottleneck, norm_layer
from paddle_impl.ops import interpolate  # FRAMEWORK-DIFF: float64-exact bilinear (paddle_impl/ops.py)


def resize(x, size, align_corners):
    """Bilinear resize to ``size`` (H, W); the OCR model uses align_corners=True everywhere."""
    return interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)  # FRAMEWORK-DIFF: paddle_impl/ops.py, float64-exact bilinear


def torch_default_init(layer):  # FRAMEWORK-DIFF: paddle-only; paddle's default conv init is not torch's
    """PyTorch's default Conv2d init, which the original's heads keep: weight (kaiming-uniform, a = sqrt(5)) and bias U(+-1/sqrt(fan_in))."""  # FRAMEWORK-DIFF: same
    if isinstance(layer, nn.Conv2D):  # FRAMEWORK-DIFF: same
        bound = 1 / math.sqrt(math.prod(layer.weight.shape[1:]))  # FRAMEWORK-DIFF: same (1 / sqrt(fan_in))
        nn.initializer.Uniform(-bound, bound)(layer.weight)  # FRAMEWORK-DIFF: same
        if layer.bias is not None:  # FRAMEWORK-DIFF: same
            nn.initializer.Uniform(-bound, bound)(layer.bias)  # FRAMEWORK-DIFF: same


def conv3x3(in_planes, out_planes, stride=1):
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2D(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias_attr=False)


def conv1x1(in_planes, out_planes):
    """1x1 convolution without bias (a BatchNorm follows)."""
    return nn.Conv2D(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias_attr=False)


def bn_relu(channels):
    """The original's ``ModuleHelper.BNReLU``: ``Sequential(BN, ReLU)``, hence the keys ``<i>.0.*``."""
    return nn.Sequential(norm_layer(channels), nn.ReLU())


class BasicBlock(nn.Layer):
    """Two 3x3 conv + BN with an identity shortcut (stride 1, equal widths), ReLU after the sum."""

    expansion = 1

    def __init__(self, inplanes, planes):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class HighResolutionModule(nn.Layer):
    """One multi-resolution module: per branch, ``num_blocks`` BasicBlocks; then every output branch
    i sums all branches (fuse method SUM), starting from branch 0's contribution:
    j == i identity; j > i a 1x1 conv + BN at the low resolution, then a bilinear resize to branch
    i's exact size; j < i, (i - j) stride-2 3x3 convs, BN + ReLU after all but the last, which maps
    to C_i with BN only. ReLU after the sum.

    Args:
        channels: per-branch widths C_0 .. C_{n-1} (halving resolution per branch).
        num_blocks: BasicBlocks per branch.
        align_corners: of the upsampling resizes.
    """

    def __init__(self, channels, num_blocks, align_corners):
        super().__init__()
        self.align_corners = align_corners
        self.branches = nn.LayerList([nn.Sequential(*[BasicBlock(c, c) for _ in range(num_blocks)])
                                       for c in channels])
        self.fuse_layers = self._make_fuse_layers(channels)
        self.relu = nn.ReLU()

    @staticmethod
    def _make_fuse_layers(channels):
        fuse_layers = []
        for i, c_i in enumerate(channels):
            fuse_layer = []
            for j, c_j in enumerate(channels):
                if j > i:
                    fuse_layer.append(nn.Sequential(conv1x1(c_j, c_i), norm_layer(c_i)))
                elif j == i:
                    fuse_layer.append(None)
                else:
                    steps = [nn.Sequential(conv3x3(c_j, c_j, stride=2), norm_layer(c_j), nn.ReLU())
                             for _ in range(i - j - 1)]
                    steps.append(nn.Sequential(conv3x3(c_j, c_i, stride=2), norm_layer(c_i)))
                    fuse_layer.append(nn.Sequential(*steps))
            fuse_layers.append(nn.LayerList(fuse_layer))
        return nn.LayerList(fuse_layers)

    def forward(self, x):
        x = [branch(xi) for branch, xi in zip(self.branches, x)]
        x_fuse = []
        for i, fuse_layer in enumerate(self.fuse_layers):
            y = x[0] if i == 0 else fuse_layer[0](x[0])
            for j in range(1, len(x)):
                if j == i:
                    y = y + x[j]
                elif j > i:
                    y = y + resize(fuse_layer[j](x[j]), x[i].shape[2:], self.align_corners)
                else:
                    y = y + fuse_layer[j](x[j])
            x_fuse.append(self.relu(y))
        return x_fuse


class SpatialGather_Module(nn.Layer):
    """Object-region representations: for each of the K soft object regions (the auxiliary head's
    logits), the pixel features averaged with the weights softmax(region logits) taken over SPACE
    (all H*W pixels). No parameters.

    Args:
        cls_num: number of regions K (the classes).

    Returns from forward: [N, C, K, 1].
    """

    def __init__(self, cls_num):
        super().__init__()
        self.cls_num = cls_num

    def forward(self, feats, probs):
        batch_size, c = probs.shape[0], probs.shape[1]
        probs = probs.reshape([batch_size, c, -1])  # N x K x HW
        feats = feats.reshape([batch_size, feats.shape[1], -1]).permute(0, 2, 1)  # N x HW x C
        probs = F.softmax(probs, axis=2)  # over space
        return paddle.matmul(probs, feats).permute(0, 2, 1).unsqueeze(3)  # N x C x K x 1


class ObjectAttentionBlock2D(nn.Layer):
    """Pixel-region attention at scale 1 (the original's ``_ObjectAttentionBlock`` and its 2-D
    subclass in one): query from the pixels (``f_pixel``), key and value from the region
    representations (``f_object``, ``f_down``), similarity scaled by key_channels ** -0.5 and
    normalised by softmax over the K REGIONS, the context projected back by ``f_up``. Every conv is
    1x1 without bias and followed by BN + ReLU.

    Args:
        in_channels: pixel / region feature width (512).
        key_channels: query and key width (256).
    """

    def __init__(self, in_channels, key_channels):
        super().__init__()
        self.in_channels = in_channels
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(conv1x1(in_channels, key_channels), bn_relu(key_channels),
                                     conv1x1(key_channels, key_channels), bn_relu(key_channels))
        self.f_object = nn.Sequential(conv1x1(in_channels, key_channels), bn_relu(key_channels),
                                      conv1x1(key_channels, key_channels), bn_relu(key_channels))
        self.f_down = nn.Sequential(conv1x1(in_channels, key_channels), bn_relu(key_channels))
        self.f_up = nn.Sequential(conv1x1(key_channels, in_channels), bn_relu(in_channels))

    def forward(self, x, proxy):
        batch_size, h, w = x.shape[0], x.shape[2], x.shape[3]
        query = self.f_pixel(x).reshape([batch_size, self.key_channels, -1]).permute(0, 2, 1)  # N x HW x Ck
        key = self.f_object(proxy).reshape([batch_size, self.key_channels, -1])  # N x Ck x K
        value = self.f_down(proxy).reshape([batch_size, self.key_channels, -1]).permute(0, 2, 1)  # N x K x Ck
        sim_map = paddle.matmul(query, key)
        sim_map = (self.key_channels ** -0.5) * sim_map
        sim_map = F.softmax(sim_map, axis=-1)  # over the regions
        context = paddle.matmul(sim_map, value).permute(0, 2, 1)
        context = context.reshape([batch_size, self.key_channels, h, w])
        return self.f_up(context)


class SpatialOCR_Module(nn.Layer):
    """The OCR distribution head: object context for every pixel, concatenated [context, pixels]
    and fused by a 1x1 conv (no bias) + BN + ReLU + channel dropout.

    Args:
        in_channels: pixel feature width (512).
        key_channels: attention width (256).
        out_channels: output width (512).
        dropout: Dropout2d probability (the model hard-codes 0.05).
    """

    def __init__(self, in_channels, key_channels, out_channels, dropout):
        super().__init__()
        self.object_context_block = ObjectAttentionBlock2D(in_channels, key_channels)
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2D(2 * in_channels, out_channels, kernel_size=1, padding=0, bias_attr=False),
            bn_relu(out_channels),
            nn.Dropout2D(dropout),  # FRAMEWORK-DIFF: Dropout2d / Dropout2D
        )

    def forward(self, feats, proxy_feats):
        context = self.object_context_block(feats, proxy_feats)
        return self.conv_bn_dropout(paddle.concat([context, feats], axis=1))


class HRNetOCR(nn.Layer):
    """The original's ``HighResolutionNet`` (seg_hrnet_ocr): HRNetV2 backbone (stem of two stride-2
    3x3 convs, a Bottleneck stage, three multi-resolution stages), the four branches resized to
    1/4 and concatenated, then OCR: soft object regions from the auxiliary head, spatial gather,
    object attention, the fused distribution head and a 1x1 classifier.

    Args:
        num_classes: classes K (16 for iSAID; the Cityscapes checkpoint has 19).
        in_channels: image channels (the original hard-codes 3; kept as an argument).
        stem_width: channels of the two stem convs (64, hard-coded in the original).
        stage1_channels: Bottleneck planes of ``layer1`` (64; output 4x).
        stage1_blocks: Bottlenecks in ``layer1`` (4).
        channels: branch widths of stages 2-4 (48, 96, 192, 384 for W48); stage s uses the first s.
        num_modules: HighResolutionModules in stages 2, 3, 4 (1, 4, 3).
        num_blocks: BasicBlocks per branch in every module (4).
        ocr_mid_channels: pixel representation width (512, ``MODEL.OCR.MID_CHANNELS``).
        ocr_key_channels: attention width (256, ``MODEL.OCR.KEY_CHANNELS``).
        dropout: channel dropout of the distribution head (0.05, hard-coded in the original).
        align_corners: of every bilinear resize (True: ``MODEL.ALIGN_CORNERS`` default, which no
            OCR yaml overrides).

    Returns from forward: eval mode, class probabilities [N, K, H, W] (softmax of the OCR logits
    resized to the input); train mode, ``(aux_logit, seg_logit)``, each [N, K, H, W], the
    auxiliary (soft region) and OCR logits resized to the input as the original loss does.
    """

    def __init__(self, num_classes=16, in_channels=3, stem_width=64, stage1_channels=64, stage1_blocks=4,
                 channels=(48, 96, 192, 384), num_modules=(1, 4, 3), num_blocks=4, ocr_mid_channels=512,
                 ocr_key_channels=256, dropout=0.05, align_corners=True):
        super().__init__()
        self.align_corners = align_corners
        self.conv1 = nn.Conv2D(in_channels, stem_width, kernel_size=3, stride=2, padding=1, bias_attr=False)
        self.bn1 = norm_layer(stem_width)
        self.conv2 = nn.Conv2D(stem_width, stem_width, kernel_size=3, stride=2, padding=1, bias_attr=False)
        self.bn2 = norm_layer(stem_width)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(stem_width, stage1_channels, stage1_blocks)
        self.transition1 = self._make_transition_layer([stage1_channels * Bottleneck.expansion], channels[:2])
        self.stage2 = self._make_stage(channels[:2], num_modules[0], num_blocks)
        self.transition2 = self._make_transition_layer(channels[:2], channels[:3])
        self.stage3 = self._make_stage(channels[:3], num_modules[1], num_blocks)
        self.transition3 = self._make_transition_layer(channels[:3], channels[:4])
        self.stage4 = self._make_stage(channels[:4], num_modules[2], num_blocks)
        last_inp_channels = sum(channels)
        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2D(last_inp_channels, ocr_mid_channels, kernel_size=3, stride=1, padding=1, bias_attr=True),
            norm_layer(ocr_mid_channels),
            nn.ReLU(),
        )
        self.ocr_gather_head = SpatialGather_Module(num_classes)
        self.ocr_distri_head = SpatialOCR_Module(ocr_mid_channels, ocr_key_channels, ocr_mid_channels, dropout)
        self.cls_head = nn.Conv2D(ocr_mid_channels, num_classes, kernel_size=1, stride=1, padding=0, bias_attr=True)
        self.aux_head = nn.Sequential(
            nn.Conv2D(last_inp_channels, last_inp_channels, kernel_size=1, stride=1, padding=0, bias_attr=True),
            norm_layer(last_inp_channels),
            nn.ReLU(),
            nn.Conv2D(last_inp_channels, num_classes, kernel_size=1, stride=1, padding=0, bias_attr=True),
        )
        self.init_weights()

    @staticmethod
    def _make_layer(inplanes, planes, blocks):
        downsample = None
        if inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2D(inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=1, bias_attr=False),
                norm_layer(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(inplanes, planes, 1, downsample)]
        layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @staticmethod
    def _make_transition_layer(pre_channels, cur_channels):
        """Per branch of the next stage: None (pass through) or a 3x3 conv + BN + ReLU where the
        width changes; a new branch is a chain of stride-2 3x3 convs from the last branch."""
        transition_layers = []
        for i, c_cur in enumerate(cur_channels):
            if i < len(pre_channels):
                transition_layers.append(None if c_cur == pre_channels[i] else nn.Sequential(
                    conv3x3(pre_channels[i], c_cur), norm_layer(c_cur), nn.ReLU()))
            else:
                steps = []
                for j in range(i + 1 - len(pre_channels)):
                    out = c_cur if j == i - len(pre_channels) else pre_channels[-1]
                    steps.append(nn.Sequential(conv3x3(pre_channels[-1], out, stride=2), norm_layer(out), nn.ReLU()))
                transition_layers.append(nn.Sequential(*steps))
        return nn.LayerList(transition_layers)

    def _make_stage(self, channels, num_modules, num_blocks):
        return nn.Sequential(*[HighResolutionModule(channels, num_blocks, self.align_corners)
                               for _ in range(num_modules)])

    @staticmethod
    def _transition(transition, y_list):
        """The next stage's inputs: a branch passes through or through its transition; a new
        branch starts from the previous stage's LAST branch."""
        return [y_list[i] if layer is None else layer(y_list[i] if i < len(y_list) else y_list[-1])
                for i, layer in enumerate(transition)]

    def init_weights(self):
        """The original's initialisation without a pretrained file: every conv whose module name
        contains none of 'cls', 'aux', 'ocr' gets N(0, 0.001) weights; BNs are 1 / 0 (already
        their default); the head modules keep PyTorch's default initialisation."""
        for name, m in self.named_sublayers():  # FRAMEWORK-DIFF: named_modules / named_sublayers
            if any(part in name for part in ("cls", "aux", "ocr")):
                torch_default_init(m)  # FRAMEWORK-DIFF: paddle's default conv init is not torch's
                continue
            if isinstance(m, nn.Conv2D):
                nn.initializer.Normal(mean=0.0, std=0.001)(m.weight)  # FRAMEWORK-DIFF: init API

    def features(self, x):
        """The backbone: stage-4 branches 1..3 resized to branch 0's size (1/4) and concatenated
        in branch order [x0, x1, x2, x3] (720 channels for W48)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        y_list = self.stage2(self._transition(self.transition1, [x]))
        y_list = self.stage3(self._transition(self.transition2, y_list))
        x = self.stage4(self._transition(self.transition3, y_list))
        size = x[0].shape[2:]
        return paddle.concat([x[0]] + [resize(xi, size, self.align_corners) for xi in x[1:]], axis=1)

    def forward(self, x):
        feats = self.features(x)
        out_aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        context = self.ocr_gather_head(feats, out_aux)
        feats = self.ocr_distri_head(feats, context)
        out = self.cls_head(feats)
        if self.training:
            return resize(out_aux, x.shape[2:], self.align_corners), resize(out, x.shape[2:], self.align_corners)
        return F.softmax(resize(out, x.shape[2:], self.align_corners), axis=1)


class OCRLoss(nn.Layer):
    """The original criterion (``CrossEntropy`` of lib/core/criterion.py inside ``FullModel``):
    the sum over the outputs, in the model's order (aux, ocr), of balance weight x CE. Each output
    whose size differs from the label's is first resized to it (bilinear, align_corners=True); the
    CE is ``nn.CrossEntropyLoss(weight=class_weights, ignore_index)`` with mean reduction, i.e.
    sum(w_y * ce) / sum(w_y) over the non-ignored pixels (the plain mean when unweighted). The
    W48 OCR yamls set ``USE_OHEM: false``, so OHEM is not part of this recipe.

    Args:
        ignore_index: label value without loss (``TRAIN.IGNORE_LABEL`` 255).
        balance_weights: ``LOSS.BALANCE_WEIGHTS`` per output: 0.4 aux, 1.0 OCR.
        class_weights: per-class CE weights (the Cityscapes dataset has 19 fixed values; None:
            unweighted, as for a dataset without them such as iSAID).
        align_corners: of the resize to the label size (``MODEL.ALIGN_CORNERS``).
    """

    def __init__(self, ignore_index=255, balance_weights=(0.4, 1.0), class_weights=None, align_corners=True):
        super().__init__()
        self.ignore_index = ignore_index
        self.balance_weights = balance_weights
        self.class_weights = class_weights
        self.align_corners = align_corners

    def _forward(self, score, target):
        if tuple(score.shape[2:]) != tuple(target.shape[1:]):
            score = resize(score, target.shape[1:], self.align_corners)
        weight = None if self.class_weights is None else paddle.to_tensor(self.class_weights, dtype=score.dtype)  # FRAMEWORK-DIFF: tensor API
        return F.cross_entropy(score, target, weight=weight, ignore_index=self.ignore_index, axis=1)  # FRAMEWORK-DIFF: class axis: torch's default dim=1 is paddle's axis=1 (paddle defaults to the last)

    def forward(self, aux_logit, seg_logit, label):
        return sum(w * self._forward(x, label) for w, x in zip(self.balance_weights, (aux_logit, seg_logit)))
