"""The registry entries, one module per model, imported in the product's order.

Adding a model: its two model files (torch_ref/models, paddle_impl/models), one module here
with its ModelSpec (and rule table), and its name in ORDER.
"""
import importlib

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# mmseg's UPerHead in eval mode, in the order its modules are called (the auxiliary FCN head runs in
# training only; LayerLists are never called themselves, their elements are).
UPERHEAD_TAPS = (tuple(f"decode_head.lateral_convs.{i}" for i in range(3))
                 + ("decode_head.psp_modules", "decode_head.bottleneck")
                 + tuple(f"decode_head.fpn_convs.{i}" for i in range(3))
                 + ("decode_head.fpn_bottleneck", "decode_head.conv_seg"))

ORDER = ("factseg50", "farseg50", "upernet_r50", "deeplabv3p_r50", "vit_s16_upernet", "hrnet48_ocr", "swin_t_upernet")

for _name in ORDER:
    importlib.import_module(f"rsport.zoo.{_name}")
