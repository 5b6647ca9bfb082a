"""Registry entry of swin_t_upernet (UperNet, Swin-T backbone of the original Swin segmentation code, mmseg 0.21
as vendored by RSP, iSAID)."""
from rsport.registry import LITE_TRAIN, ModelSpec, register
from rsport.rules import Naming, Reorder, Rule
from rsport.zoo import IMAGENET_MEAN, IMAGENET_STD, UPERHEAD_TAPS

# The original PatchMerging concatenates the 2x2 neighbours position-major (k * C + c, k over (row, col)
# offsets (0,0), (1,0), (0,1), (1,1)); mmseg 1.x's nn.Unfold is channel-major (c * 4 + p, p over (0,0),
# (0,1), (1,0), (1,1)): position p holds the original's k = (0, 2, 1, 3)[p]. LayerNorm(4C) and the
# reduction's input axis follow that layout (tools/model_converters/swin2mmseg.py's
# correct_unfold_{reduction,norm}_order, both of which this one op reproduces).
UNFOLD_ORDER = Reorder(axis=-1, groups=4, perm=(0, 2, 1, 3))

# mmsegmentation 1.x ``SwinTransformer`` (and RSP's unused mmseg-native swin.py) names the same tensors
# differently; a torch-side conversion source (shared/reference/swin_t_upernet.md section 11). Heads
# keep their names. In each rule ``torch`` is our name, ``paddle`` the mmseg 1.x one.
MMSEG1 = Naming(
    rules=(
        Rule("mmseg1_patch_proj", "backbone.patch_embed.proj.{t}", "backbone.patch_embed.projection.{t}"),
        Rule("mmseg1_attn", "backbone.layers.{s:int}.blocks.{b:int}.attn.{p}",
             "backbone.stages.{s:int}.blocks.{b:int}.attn.w_msa.{p}"),
        Rule("mmseg1_fc1", "backbone.layers.{s:int}.blocks.{b:int}.mlp.fc1.{t}",
             "backbone.stages.{s:int}.blocks.{b:int}.ffn.layers.0.0.{t}"),
        Rule("mmseg1_fc2", "backbone.layers.{s:int}.blocks.{b:int}.mlp.fc2.{t}",
             "backbone.stages.{s:int}.blocks.{b:int}.ffn.layers.1.{t}"),
        Rule("mmseg1_block", "backbone.layers.{s:int}.blocks.{b:int}.{p}", "backbone.stages.{s:int}.blocks.{b:int}.{p}"),
        Rule("mmseg1_merge_reduction", "backbone.layers.{s:int}.downsample.reduction.weight",
             "backbone.stages.{s:int}.downsample.reduction.weight", op=UNFOLD_ORDER),
        Rule("mmseg1_merge_norm", "backbone.layers.{s:int}.downsample.norm.{t}",
             "backbone.stages.{s:int}.downsample.norm.{t}", op=UNFOLD_ORDER),
    ),
    markers=("backbone.stages.", ".attn.w_msa."),
)

# RSP configs/swin/upernet_swin_tiny_patch4_window7_896x896_80k_isaid.py (optimizer, lr_config) and
# configs/_base_/schedules/schedule_80k.py (max_iters); shared/reference/swin_t_upernet.md section 7.
# AdamW with mmcv's paramwise custom_keys: weight decay 0 for every parameter whose dotted name contains
# one of ``no_decay_keys`` (substring, as mmcv matches them); no gradient clipping (optimizer_config {});
# mmcv's poly LR (power 1, min_lr 0) with a linear warmup that multiplies the poly-decayed value.
ADAMW_RECIPE = dict(optimizer="adamw", lr=6e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                    no_decay_keys=("absolute_pos_embed", "relative_position_bias_table", "norm"),
                    clip_norm=None, power=1.0, min_lr=0.0, warmup_iters=1500, warmup_ratio=1e-6, max_iters=80000)

_BLOCKS = tuple(f"backbone.layers.{i}.blocks.{j}" for i, depth in enumerate((2, 2, 6, 2)) for j in range(depth))

register(ModelSpec(
    name="swin_t_upernet",
    summary="UperNet (PPM + FPN) with auxiliary FCN head, Swin-T backbone (window 7), iSAID (16 classes)",
    torch_entry="torch_ref.models.swin_upernet:SwinUperNet",
    paddle_entry="paddle_impl.models.swin_upernet:SwinUperNet",
    torch_loss="torch_ref.models.upernet:UperNetLoss",
    paddle_loss="paddle_impl.models.upernet:UperNetLoss",
    kwargs=dict(num_classes=16, in_channels=3, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                window_size=7, drop_path_rate=0.3, channels=512, aux_channels=256, pool_scales=(1, 2, 3, 6),
                dropout_ratio=0.1, align_corners=False),
    # The full depths (2, 2, 6, 2), so that the taps are the full model's, at width 8; the original window 7. The tiny input
    # 70x102 is not a multiple of the patch (padded to 72x104: 18x26 tokens); the stages then see
    # 18x26 -> 21x28 windows, 9x13 -> 14x14 (merged with padding of both sides), 5x7 -> 7x7 and
    # 3x4 -> 7x7 (a single window row: the first shift region is empty).
    tiny_kwargs=dict(embed_dim=8, num_heads=(1, 2, 2, 4), channels=16, aux_channels=8),
    in_channels=3,
    num_classes=16,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    input_size=(896, 896),
    # 230x330: patch padding (232x332), window padding and odd-size patch merging in every stage.
    verify_input=(2, 230, 330),
    tiny_input=(2, 70, 102),
    eval_outputs=("prob",),
    train_outputs=("seg_logit", "aux_logit"),
    tolerance="fp32_prob",
    # Lite training (TIPC lite modes): the recipe's 1500-iteration linear warmup (ratio 1e-6) spans the
    # whole 40-iteration run, so with the recipe's lr 6e-5 the scheduled lr never exceeds 4e-7 and the
    # tiny model's loss stays flat (mean of the last 5 vs the first 5: -0.4%, 0.3 standard errors,
    # measured); with 0.1 the warmed-up lr reaches 6.7e-4 and the loss drops by 11.8% (9.8 standard
    # errors), so the lite run shows that training works.
    lite=dict(LITE_TRAIN, lr=0.1),
    # 98x134: patch padding (100x136), stages 25x34 -> 28x35, 13x17 -> 14x21, 7x9 -> 7x14, 4x5 -> 7x7.
    align_input=(2, 98, 134),
    # Every block, then its stage's patch merging, in call order; the stage-output norms; the heads.
    taps=("backbone.patch_embed",) + _BLOCKS[:2] + ("backbone.layers.0.downsample",) + _BLOCKS[2:4]
         + ("backbone.layers.1.downsample",) + _BLOCKS[4:10] + ("backbone.layers.2.downsample",) + _BLOCKS[10:]
         + ("backbone.norm0", "backbone.norm1", "backbone.norm2", "backbone.norm3") + UPERHEAD_TAPS,
    recipe=ADAMW_RECIPE,
    torch_namings={"mmseg1": MMSEG1},
    # RSP's mmseg config: test_cfg slide, crop 512, stride 384; MultiScaleFlipAug flip=True
    eval_protocol=dict(mode="slide", window=512, stride=384, flip=True),
    reference="ViTAE-Transformer/RSP@f2981873 (Semantic Segmentation/, mmsegmentation 0.21.0: "
              "configs/swin/upernet_swin_tiny_patch4_window7_896x896_80k_isaid.py, mmseg/models/backbones/"
              "swin_transformer.py = SwinTransformer/Swin-Transformer-Semantic-Segmentation@87e6f905's backbone); "
              "Liu et al., Swin Transformer, ICCV 2021; Xiao et al., UPerNet, ECCV 2018; Wang et al., RSP, IEEE TGRS "
              "2022; shared/reference/swin_t_upernet.md",
))
