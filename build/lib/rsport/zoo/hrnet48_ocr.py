"""Registry entry of hrnet48_ocr (HRNetV2-W48 + OCR, HRNet-Semantic-Segmentation branch HRNet-OCR,
iSAID). Our names are the original's in both frameworks, so the common rules (BN buffers) suffice;
three foreign namings are accepted as conversion sources (all detected by marker keys, reported).

torch side:
- ``hrnetseg_fullmodel``: the original's training checkpoints, e.g. the published
  ``hrnet_ocr_cs_trainval_8227_torch11.pth``: the ``FullModel`` state (``model.`` + our keys, plus
  the criterion's ``loss.criterion.weight`` class weights, which are not model weights).
- ``openseg``: openseg.pytorch@65bbbd4 (branch pytorch-1.7, bn_type torchsyncbn)
  ``HRNet_W48_OCR``: backbone under ``backbone.``, ``conv3x3`` for ``conv3x3_ocr``, one more index
  level in its head BN+ReLU pairs, biased 1x1 OCR convs (folded into the BN that follows) and a
  3x3 ``aux_head.0`` where the original has a 1x1: that one tensor cannot map, so openseg's own
  checkpoints are refused with the shape in the report; the table is exact for everything else.

paddle side:
- ``paddleseg``: PaddleSeg 2.8 ``OCRNet(backbone=HRNet_W48(), backbone_indices=[0])``: every
  tensor maps; its seven biased OCR 1x1 convs are folded into the BN that follows. Its numerics
  differ unless built with ``HRNet_W48(padding_same=False, align_corners=True)`` and
  ``OCRNet(align_corners=True)`` (tests/test_hrnet48_ocr.py measures where and why).
"""
from rsport.registry import ModelSpec, register
from rsport.rules import Fold, Naming, Rule
from rsport.zoo import IMAGENET_MEAN, IMAGENET_STD

_OCR = "ocr_distri_head.object_context_block"  # our prefix of the attention block
_PS_OCR = "head.spatial_ocr.attention_block"  # PaddleSeg's

HRNETSEG_FULLMODEL = Naming(
    rules=(Rule("fullmodel_prefix", "{p}", "model.{p}"),),
    ignore=(r"loss\.criterion\.weight",),
    markers=("model.stage2.",),
    note="HRNet-Semantic-Segmentation training checkpoint (FullModel): 'model.' prefix removed; the "
         "criterion's class weights (loss.criterion.weight) are not model weights",
)

OPENSEG = Naming(
    rules=(
        Rule("openseg_conv3x3_conv", "conv3x3_ocr.0.{t}", "conv3x3.0.{t}"),
        Rule("openseg_conv3x3_bn", "conv3x3_ocr.1.{t}", "conv3x3.1.0.{t}"),
        Rule("openseg_ocr_head", "ocr_distri_head.{p}", "ocr_distri_head.{p}"),
        Rule("openseg_cls_head", "cls_head.{t}", "cls_head.{t}"),
        Rule("openseg_aux_conv", "aux_head.0.{t}", "aux_head.0.{t}"),
        Rule("openseg_aux_bn", "aux_head.1.{t}", "aux_head.1.0.{t}"),
        Rule("openseg_aux_cls", "aux_head.3.{t}", "aux_head.2.{t}"),
        Rule("openseg_backbone", "{p}", "backbone.{p}"),  # last: in the native direction it matches anything
    ),
    folds=tuple(Fold(f"{_OCR}.{conv}.bias", f"{_OCR}.{bn}.0.running_mean")
                for conv, bn in (("f_pixel.0", "f_pixel.1"), ("f_pixel.2", "f_pixel.3"), ("f_object.0", "f_object.1"),
                                 ("f_object.2", "f_object.3"), ("f_down.0", "f_down.1"), ("f_up.0", "f_up.1")))
          + (Fold("ocr_distri_head.conv_bn_dropout.0.bias", "ocr_distri_head.conv_bn_dropout.1.0.running_mean"),),
    markers=("backbone.stage2.", "conv3x3.1.0."),
    note="openseg.pytorch HRNet_W48_OCR: its aux_head.0 is a 3x3 conv where the original's is 1x1, so an "
         "openseg-trained checkpoint cannot run on this model (the shape is reported); everything else maps",
)


def _paddleseg_rules() -> tuple[Rule, ...]:
    """PaddleSeg 2.8 OCRNet + HRNet_W48 names (foreign) against our paddle names (native)."""
    bb = "backbone"
    stage = bb + ".st{s:int}.stage_st{s:int}_{m:int}"
    rules = [
        Rule("ps_stem_conv1", "conv1.{t}", f"{bb}.conv_layer1_1._conv.{{t}}"),
        Rule("ps_stem_bn1", "bn1.{t}", f"{bb}.conv_layer1_1._batch_norm.{{t}}"),
        Rule("ps_stem_conv2", "conv2.{t}", f"{bb}.conv_layer1_2._conv.{{t}}"),
        Rule("ps_stem_bn2", "bn2.{t}", f"{bb}.conv_layer1_2._batch_norm.{{t}}"),
        Rule("ps_layer1_down_conv", "layer1.{b:int}.downsample.0.{t}", f"{bb}.la1.bb_layer2_{{b:int}}.conv_down._conv.{{t}}",
             offsets=(("b", 1),)),
        Rule("ps_layer1_down_bn", "layer1.{b:int}.downsample.1.{t}",
             f"{bb}.la1.bb_layer2_{{b:int}}.conv_down._batch_norm.{{t}}", offsets=(("b", 1),)),
        Rule("ps_layer1_conv", "layer1.{b:int}.conv{c:int}.{t}", f"{bb}.la1.bb_layer2_{{b:int}}.conv{{c:int}}._conv.{{t}}",
             offsets=(("b", 1),)),
        Rule("ps_layer1_bn", "layer1.{b:int}.bn{c:int}.{t}", f"{bb}.la1.bb_layer2_{{b:int}}.conv{{c:int}}._batch_norm.{{t}}",
             offsets=(("b", 1),)),
        # branch 0 of stage 2 is the only transition of an existing branch (256 -> C_0); every other
        # transition creates the new lowest-resolution branch (one nesting level deeper in ours)
        Rule("ps_tr1_0_conv", "transition1.0.0.{t}", f"{bb}.tr1.transition_tr1_layer_1._conv.{{t}}"),
        Rule("ps_tr1_0_bn", "transition1.0.1.{t}", f"{bb}.tr1.transition_tr1_layer_1._batch_norm.{{t}}"),
        Rule("ps_tr_new_conv", "transition{s:int}.{i:int}.0.0.{t}",
             f"{bb}.tr{{s:int}}.transition_tr{{s:int}}_layer_{{i:int}}._conv.{{t}}", offsets=(("i", 1),)),
        Rule("ps_tr_new_bn", "transition{s:int}.{i:int}.0.1.{t}",
             f"{bb}.tr{{s:int}}.transition_tr{{s:int}}_layer_{{i:int}}._batch_norm.{{t}}", offsets=(("i", 1),)),
        Rule("ps_branch_conv", "stage{s:int}.{m:int}.branches.{b:int}.{k:int}.conv{c:int}.{t}",
             stage + ".branches_func.bb_st{s:int}_{m:int}_branch_layer_{b:int}_{k:int}.conv{c:int}._conv.{t}",
             offsets=(("m", 1), ("b", 1), ("k", 1))),
        Rule("ps_branch_bn", "stage{s:int}.{m:int}.branches.{b:int}.{k:int}.bn{c:int}.{t}",
             stage + ".branches_func.bb_st{s:int}_{m:int}_branch_layer_{b:int}_{k:int}.conv{c:int}._batch_norm.{t}",
             offsets=(("m", 1), ("b", 1), ("k", 1))),
        Rule("ps_fuse_down_conv", "stage{s:int}.{m:int}.fuse_layers.{i:int}.{j:int}.{k:int}.0.{t}",
             stage + ".fuse_func.residual_st{s:int}_{m:int}_layer_{i:int}_{j:int}_{k:int}._conv.{t}",
             offsets=(("m", 1), ("i", 1), ("j", 1), ("k", 1))),
        Rule("ps_fuse_down_bn", "stage{s:int}.{m:int}.fuse_layers.{i:int}.{j:int}.{k:int}.1.{t}",
             stage + ".fuse_func.residual_st{s:int}_{m:int}_layer_{i:int}_{j:int}_{k:int}._batch_norm.{t}",
             offsets=(("m", 1), ("i", 1), ("j", 1), ("k", 1))),
        Rule("ps_fuse_up_conv", "stage{s:int}.{m:int}.fuse_layers.{i:int}.{j:int}.0.{t}",
             stage + ".fuse_func.residual_st{s:int}_{m:int}_layer_{i:int}_{j:int}._conv.{t}",
             offsets=(("m", 1), ("i", 1), ("j", 1))),
        Rule("ps_fuse_up_bn", "stage{s:int}.{m:int}.fuse_layers.{i:int}.{j:int}.1.{t}",
             stage + ".fuse_func.residual_st{s:int}_{m:int}_layer_{i:int}_{j:int}._batch_norm.{t}",
             offsets=(("m", 1), ("i", 1), ("j", 1))),
        Rule("ps_conv3x3_ocr_conv", "conv3x3_ocr.0.{t}", "head.conv3x3_ocr._conv.{t}"),
        Rule("ps_conv3x3_ocr_bn", "conv3x3_ocr.1.{t}", "head.conv3x3_ocr._batch_norm.{t}"),
    ]
    for f in ("f_pixel", "f_object"):  # two conv + BN/ReLU pairs: ours 0,1.0 / 2,3.0; PaddleSeg 0 / 1
        for ours_conv, ours_bn, theirs in ((0, 1, 0), (2, 3, 1)):
            rules.append(Rule(f"ps_{f}_{theirs}_conv", f"{_OCR}.{f}.{ours_conv}.{{t}}", f"{_PS_OCR}.{f}.{theirs}._conv.{{t}}"))
            rules.append(Rule(f"ps_{f}_{theirs}_bn", f"{_OCR}.{f}.{ours_bn}.0.{{t}}",
                              f"{_PS_OCR}.{f}.{theirs}._batch_norm.{{t}}"))
    for f in ("f_down", "f_up"):
        rules.append(Rule(f"ps_{f}_conv", f"{_OCR}.{f}.0.{{t}}", f"{_PS_OCR}.{f}._conv.{{t}}"))
        rules.append(Rule(f"ps_{f}_bn", f"{_OCR}.{f}.1.0.{{t}}", f"{_PS_OCR}.{f}._batch_norm.{{t}}"))
    rules += [
        Rule("ps_distri_conv", "ocr_distri_head.conv_bn_dropout.0.{t}", "head.spatial_ocr.conv1x1.0._conv.{t}"),
        Rule("ps_distri_bn", "ocr_distri_head.conv_bn_dropout.1.0.{t}", "head.spatial_ocr.conv1x1.0._batch_norm.{t}"),
        Rule("ps_cls_head", "cls_head.{t}", "head.cls_head.{t}"),
        Rule("ps_aux_conv", "aux_head.0.{t}", "head.aux_head.0._conv.{t}"),
        Rule("ps_aux_bn", "aux_head.1.{t}", "head.aux_head.0._batch_norm.{t}"),
        Rule("ps_aux_cls", "aux_head.3.{t}", "head.aux_head.1.{t}"),
    ]
    return tuple(rules)


PADDLESEG = Naming(
    rules=_paddleseg_rules(),
    folds=tuple(Fold(f"{_PS_OCR}.{layer}._conv.bias", f"{_PS_OCR}.{layer}._batch_norm._mean")
                for layer in ("f_pixel.0", "f_pixel.1", "f_object.0", "f_object.1", "f_down", "f_up"))
          + (Fold("head.spatial_ocr.conv1x1.0._conv.bias", "head.spatial_ocr.conv1x1.0._batch_norm._mean"),),
    markers=("backbone.conv_layer1_1.", "head.spatial_ocr."),
    note="PaddleSeg OCRNet + HRNet_W48: same weights; PaddleSeg computes the same function only with "
         "HRNet_W48(padding_same=False, align_corners=True) and OCRNet(align_corners=True)",
)

register(ModelSpec(
    name="hrnet48_ocr",
    summary="HRNetV2-W48 + OCR (object-contextual representations) with auxiliary head, iSAID (16 classes)",
    torch_entry="torch_ref.models.hrnet_ocr:HRNetOCR",
    paddle_entry="paddle_impl.models.hrnet_ocr:HRNetOCR",
    torch_loss="torch_ref.models.hrnet_ocr:OCRLoss",
    paddle_loss="paddle_impl.models.hrnet_ocr:OCRLoss",
    kwargs=dict(num_classes=16, in_channels=3, stem_width=64, stage1_channels=64, stage1_blocks=4,
                channels=(48, 96, 192, 384), num_modules=(1, 4, 3), num_blocks=4, ocr_mid_channels=512,
                ocr_key_channels=256, dropout=0.05, align_corners=True),
    # every structural feature at small widths: 4 stages, all four branches with doubling widths,
    # fuse layers with 1x1 + upsampling and 1-, 2- and 3-step stride-2 chains, two modules in stage
    # 4, the whole OCR head. The 72x100 tiny input gives branch maps 18x25, 9x13, 5x7, 3x4: odd sizes,
    # so the stride-2 chains and the resizes to each branch's exact size are exercised.
    tiny_kwargs=dict(stem_width=8, stage1_channels=8, stage1_blocks=1, channels=(4, 8, 16, 32), num_modules=(1, 1, 2),
                     num_blocks=1, ocr_mid_channels=16, ocr_key_channels=8),
    in_channels=3,
    num_classes=16,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    input_size=(896, 896),
    verify_input=(2, 164, 228),  # branch maps 41x57, 21x29, 11x15, 6x8
    tiny_input=(2, 72, 100),
    eval_outputs=("prob",),
    train_outputs=("aux_logit", "seg_logit"),
    tolerance="fp32_prob_sharp_attention",  # float32 noise of the near one-hot attention, see the profile
    # float64 gradients reach 4.5e2 and attention taps 2.6e2: judged relative to their scale (the profile)
    profile_overrides={("float64", "grad"): "fp64_large_scale", ("float64", "tap"): "fp64_large_scale"},
    align_input=(2, 76, 108),  # branch maps 19x27, 10x14, 5x7, 3x4; keeps the full-size harness run short
    taps=("conv1", "bn1", "conv2", "bn2", "layer1", "transition1.0", "transition1.1", "stage2", "transition2.2",
          "stage3", "transition3.3", "stage4", "aux_head", "conv3x3_ocr", "ocr_gather_head",
          "ocr_distri_head.object_context_block", "ocr_distri_head", "cls_head"),
    # SGD (nesterov False, one parameter group: NONBACKBONE_KEYWORDS empty), weight decay on every
    # parameter, no gradient clipping, poly power 0.9 set after each step from the index of the
    # step just taken (poly_delay 1: steps 0 and 1 both use the base LR); 484 epochs x 289
    # iterations (Cityscapes trainval, batch 12) = 139,876.
    recipe=dict(lr=0.01, momentum=0.9, weight_decay=5e-4, clip_norm=None, power=0.9, max_iters=139876,
                poly_delay=1),
    # the w48 OCR yaml: single scale, FLIP_TEST false, whole image
    eval_protocol=dict(mode="whole", flip=False),
    reference="HRNet/HRNet-Semantic-Segmentation@0bbb2880 (branch HRNet-OCR, MIT): lib/models/seg_hrnet_ocr.py, "
              "lib/core/criterion.py, experiments/cityscapes/seg_hrnet_ocr_w48_trainval_512x1024_sgd_lr1e-2_wd5e-4_"
              "bs_12_epoch484.yaml; Wang et al., HRNet, TPAMI 2020; Yuan et al., OCR, ECCV 2020",
    torch_namings={"hrnetseg_fullmodel": HRNETSEG_FULLMODEL, "openseg": OPENSEG},
    paddle_namings={"paddleseg": PADDLESEG},
))
