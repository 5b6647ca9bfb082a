"""Registry entry of deeplabv3p_r50 (mmseg 0.x DeepLabV3+ R-50-D8, iSAID)."""
from rsport.registry import ModelSpec, register
from rsport.zoo import IMAGENET_MEAN, IMAGENET_STD

register(ModelSpec(
    name="deeplabv3p_r50",
    summary="DeepLabV3+, ResNetV1c-50 D8 (mmseg 0.x), iSAID (16 classes)",
    torch_entry="torch_ref.models.deeplabv3p:DeepLabV3Plus",
    paddle_entry="paddle_impl.models.deeplabv3p:DeepLabV3Plus",
    torch_loss="torch_ref.models.deeplabv3p:EncoderDecoderLoss",
    paddle_loss="paddle_impl.models.deeplabv3p:EncoderDecoderLoss",
    kwargs=dict(num_classes=16, in_channels=3),
    tiny_kwargs=dict(layers=(1, 1, 1, 1), stem_channels=8, base_channels=8, channels=16, c1_channels=8,
                     aux_channels=8),
    in_channels=3,
    num_classes=16,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    input_size=(896, 896),
    verify_input=(2, 320, 384),  # stride-8 maps of 40x48: every ASPP dilation (up to 36) reaches real pixels
    tiny_input=(2, 64, 96),
    eval_outputs=("prob",),
    train_outputs=("seg_logit", "aux_logit"),
    tolerance="fp32_prob_dilated",  # measured float32 noise at 320x320, see the profile
    align_input=(2, 64, 96),
    # float64 gradients: the image-pooling BatchNorm (1x1 maps, batch 2) amplifies float64 noise
    # ~2e4 times into the stem gradients, measured on torch alone (see the profile's calibration)
    profile_overrides={("float64", "grad"): "fp64_grad_illconditioned"},
    taps=("backbone.stem", "backbone.maxpool", "backbone.layer1", "backbone.layer2", "backbone.layer3",
          "backbone.layer4", "decode_head.image_pool", "decode_head.pool_resize", "decode_head.aspp_modules",
          "decode_head.bottleneck", "decode_head.c1_bottleneck", "decode_head.c1_resize",
          "decode_head.sep_bottleneck", "decode_head.conv_seg", "resize"),
    # mmseg's deeplabv3plus iSAID config: test_cfg mode='whole' (no flip)
    eval_protocol=dict(mode="whole", flip=False),
    reference="open-mmlab/mmsegmentation 0.21.0 (Apache-2.0) configs/_base_/models/deeplabv3plus_r50-d8.py, "
              "configs/deeplabv3plus/deeplabv3plus_r50-d8_4x4_896x896_80k_isaid.py; Chen et al., DeepLabV3+, ECCV 2018",
))
