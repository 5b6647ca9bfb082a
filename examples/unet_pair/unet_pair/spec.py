"""The example's registry entry: with it, every rsport tool takes the UNet like a zoo model.

    rsport align --spec unet_pair.spec            # or, once this package is installed: --model unet_pair
    rsport convert --spec unet_pair.spec --variant tiny
"""
from rsport import ModelSpec

SPEC = ModelSpec(
    name="unet_pair",
    summary="example: a small UNet (BatchNorm, bilinear, self-attention) ported by a user",
    reference="examples/unet_pair in the rsport repository",
    torch_entry="unet_pair.torch_unet:UNet",
    paddle_entry="unet_pair.paddle_unet:UNet",
    torch_loss="unet_pair.torch_unet:SegLoss",
    paddle_loss="unet_pair.paddle_unet:SegLoss",
    in_channels=3,
    num_classes=6,
    mean=(120.0, 120.0, 120.0),
    std=(60.0, 60.0, 60.0),
    kwargs=dict(in_channels=3, num_classes=6, width=16, heads=2),
    tiny_kwargs=dict(width=8),
    eval_outputs=("prob",),
    train_outputs=("logit",),
    align_input=(2, 40, 56),
    tiny_input=(2, 24, 40),
    verify_input=(2, 40, 56),
    taps=("enc1", "enc2", "enc3", "attn", "dec2", "dec1", "head"),
)
