"""Registry entry of upernet_r50 (UperNet, torchvision-style ResNet-50, mmseg 0.21 as vendored by
RSP, iSAID). Names are identical in both frameworks, so the common rules (BN buffers) suffice."""
from rsport.registry import ModelSpec, register
from rsport.zoo import IMAGENET_MEAN, IMAGENET_STD, UPERHEAD_TAPS

register(ModelSpec(
    name="upernet_r50",
    summary="UperNet (PPM + FPN) with auxiliary FCN head, ResNet-50 backbone, iSAID (16 classes)",
    torch_entry="torch_ref.models.upernet:UperNet",
    paddle_entry="paddle_impl.models.upernet:UperNet",
    torch_loss="torch_ref.models.upernet:UperNetLoss",
    paddle_loss="paddle_impl.models.upernet:UperNetLoss",
    kwargs=dict(num_classes=16, in_channels=3, layers=(3, 4, 6, 3), stem_width=64, channels=512, aux_channels=256,
                pool_scales=(1, 2, 3, 6), dropout_ratio=0.1, align_corners=False),
    # c5 of the tiny input is 7x6: every PPM scale gets uneven, overlapping adaptive bins, which a
    # fixed-kernel pooling would not reproduce.
    tiny_kwargs=dict(layers=(1, 1, 1, 1), stem_width=8, channels=16, aux_channels=8),
    in_channels=3,
    num_classes=16,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    input_size=(896, 896),
    verify_input=(2, 224, 288),
    tiny_input=(2, 224, 192),
    eval_outputs=("prob",),
    train_outputs=("seg_logit", "aux_logit"),
    tolerance="fp32_prob",
    align_input=(2, 96, 128),
    taps=("backbone.conv1", "backbone.bn1", "backbone.layer1", "backbone.layer2", "backbone.layer3",
          "backbone.layer4") + UPERHEAD_TAPS,
    # RSP's mmseg config: test_cfg slide, crop 512, stride 384; MultiScaleFlipAug flip=True
    eval_protocol=dict(mode="slide", window=512, stride=384, flip=True),
    reference="ViTAE-Transformer/RSP@f2981873 (Semantic Segmentation/, mmsegmentation 0.21.0: "
              "configs/upernet/upernet_our_r50_896x896_80k_isaid.py, mmseg/models/decode_heads/uper_head.py), "
              "Xiao et al., UPerNet, ECCV 2018; Wang et al., RSP, IEEE TGRS 2022",
))
