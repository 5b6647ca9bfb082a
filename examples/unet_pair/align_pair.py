"""Align the example UNet pair through rsport's Python API (run from this folder, or anywhere with
this folder on PYTHONPATH): python align_pair.py [--out DIR]."""
import argparse
import sys

import numpy as np
import torch

import rsport
from unet_pair import paddle_unet, torch_unet


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="output/align_unet", help="report folder (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch_model = torch_unet.UNet(width=8)          # your trained model: load its checkpoint here
    paddle_model = paddle_unet.UNet(width=8)        # your port: its weights come from the torch model
    batch = np.random.default_rng(0).standard_normal((2, 3, 40, 56)).astype("float32")  # H != W
    report = rsport.align_pair(
        torch_model, paddle_model, batch,
        loss_fns=(torch_unet.SegLoss(), paddle_unet.SegLoss()),  # fn(output, label) on each side
        num_classes=6,                                              # seeded labels and the metric step
        name="unet", out=args.out)
    print(report.table())
    print(f"{'PASSED' if report.passed else 'FAILED'}; report: {args.out}/report.md")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
