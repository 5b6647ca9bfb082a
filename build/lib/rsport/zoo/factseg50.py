"""Registry entry of factseg50 (FactSeg, ResNet-50, iSAID)."""
from rsport.registry import ModelSpec, register
from rsport.rules import Naming, Rule
from rsport.zoo import IMAGENET_MEAN, IMAGENET_STD

# PaddleRS's published factseg_isaid.pdparams names the FPN convs by list position (the reference
# sheet); the PaddleRS source read for this port (commit 173fe43) uses our names already.
PADDLERS_FPN = tuple(
    Rule(f"paddlers_fpn_{kind}", f"{{p}}.fpn_{kind}{{k:int}}.{{t}}", f"{{p}}.{kind}_blocks.{{k:int}}.{{t}}",
         offsets=(("k", -1),))
    for kind in ("inner", "layer"))

register(ModelSpec(
    name="factseg50",
    summary="FactSeg, ResNet-50 encoder, iSAID (16 classes)",
    torch_entry="torch_ref.models.factseg:FactSeg",
    paddle_entry="paddle_impl.models.factseg:FactSeg",
    torch_loss="torch_ref.models.factseg:JointLoss",
    paddle_loss="paddle_impl.models.factseg:JointLoss",
    kwargs=dict(num_classes=16, in_channels=3),
    tiny_kwargs=dict(layers=(1, 1, 1, 1), stem_width=8, fpn_channels=16, decoder_channels=8),
    in_channels=3,
    num_classes=16,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    input_size=(896, 896),
    verify_input=(2, 224, 288),
    tiny_input=(2, 64, 96),
    eval_outputs=("prob",),
    train_outputs=("fg_logit", "bi_logit"),
    tolerance="fp32_prob",
    align_input=(2, 128, 160),  # layer4 maps 4x5: float32 train-mode gradient noise stays below the profile (3x5: 53% in torch alone)
    taps=("resencoder.resnet.conv1", "resencoder.resnet.bn1", "resencoder.resnet.layer1", "resencoder.resnet.layer2",
          "resencoder.resnet.layer3", "resencoder.resnet.layer4", "fgfpn", "fg_decoder", "fg_cls",
          "bifpn", "bi_decoder", "bi_cls"),
    reference="Junjue-Wang/FactSeg@d7e3f5ba (module/factseg.py, configs/isaid/factseg.py), "
              "Ma et al., FactSeg, IEEE TGRS 2021",
    paddle_namings={"paddlers": Naming(PADDLERS_FPN, markers=(".inner_blocks.", ".layer_blocks."))},
))
