"""Registry entry of farseg50 (FarSeg, ResNet-50, iSAID)."""
from rsport.registry import ModelSpec, register
from rsport.rules import Naming, Rule
from rsport.zoo import IMAGENET_MEAN, IMAGENET_STD

# PaddleRS (paddlers/rs_models/seg/farseg.py @ 085c7c8) names the same tensors differently; the
# mapping is exact except that it has no annealing counter (created as 0: the loss schedule
# restarts) and keeps paddle.vision's unused ImageNet classifier (ignored).
# torchgeo's FarSeg is NOT an exact source: its classifier is a 3x3 conv where the original has
# a 1x1 (decoder.classifier.0 [C,128,3,3] vs cls_pred_conv [C,128,1,1]), so its weights cannot
# reproduce this model; it is not offered.
PADDLERS = Naming(
    rules=(
        Rule("paddlers_encoder", "en.{p}", "encoder.{p}"),
        Rule("paddlers_fpn_inner", "fpn.fpn_inner{k:int}.{t}", "fpn.inner_blocks.{k:int}.{t}", offsets=(("k", -1),)),
        Rule("paddlers_fpn_layer", "fpn.fpn_layer{k:int}.{t}", "fpn.layer_blocks.{k:int}.{t}", offsets=(("k", -1),)),
        Rule("paddlers_relation", "sr.{p}", "fsr.{p}"),
        Rule("paddlers_head", "cls_pred_conv.{t}", "cls_head.0.{t}"),
        Rule("paddlers_no_step", "buffer_step", None, fill="zeros_float32"),
    ),
    ignore=(r"encoder\.resnet\.fc\..*",),
    markers=("fsr.", "cls_head.0."),
)

register(ModelSpec(
    name="farseg50",
    summary="FarSeg, ResNet-50 encoder, foreground-scene relation, iSAID (16 classes)",
    torch_entry="torch_ref.models.farseg:FarSeg",
    paddle_entry="paddle_impl.models.farseg:FarSeg",
    torch_loss="torch_ref.models.farseg:AnnealingSoftmaxFocalLoss",
    paddle_loss="paddle_impl.models.farseg:AnnealingSoftmaxFocalLoss",
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
    train_outputs=("logit", "step"),
    tolerance="fp32_prob_relation",  # the scene relation amplifies float32 rounding, see the profiles
    # deploy/export.py: Paddle Inference's oneDNN legacy program vs the fp32 dynamic model.
    profile_overrides={("float32", "deploy"): "fp32_prob_deploy", ("float32", "tap"): "fp32_logit_relation"},
    align_input=(2, 128, 160),  # layer4 maps 4x5: float32 train-mode gradient noise stays below the profile (3x5: 53% in torch alone)
    taps=("en.resnet.conv1", "en.resnet.bn1", "en.resnet.layer1", "en.resnet.layer2", "en.resnet.layer3",
          "en.resnet.layer4", "fpn", "gap", "sr", "decoder", "cls_pred_conv", "upsample4x_op"),
    reference="Z-Zheng/FarSeg@35ba29fc (module/farseg.py @ ef73ecd0, module/loss.py, configs/isaid/farseg50.py), "
              "Zheng et al., FarSeg, CVPR 2020",
    paddle_namings={"paddlers": PADDLERS},
    # The loss anneals from cross-entropy to focal weights over 10k steps, counted by buffer_step: at
    # step 0 the focal term (its gamma) has no effect. The alignment starts mid-schedule so it does.
    align_state={"buffer_step": 5000.0},
))
