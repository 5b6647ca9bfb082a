"""A small UNet (BatchNorm, bilinear upsampling, a self-attention block) written in PyTorch and ported to
Paddle, as a user would port their own model; aligned with rsport (see README.md)."""
