from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvChain", "conv_chain"]

CHAIN_WIDTHS = (32, 64, 128, 256, 512, 1024, 2048, 4096)


class ConvChain(nn.Module):
    """``conv1`` ... ``conv8``: 3x3 convs without bias or BN, ReLU between, as in a popular channel-pruning
    tutorial (3 -> 32 -> ... -> 4096 channels, 100,658,016 parameters)."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = CHAIN_WIDTHS) -> None:
        super().__init__()
        channels = in_channels
        for index, width in enumerate(widths, start=1):
            # skip_init: the default Kaiming init of 100M weights is slow; they are filled once below instead.
            conv = nn.utils.skip_init(nn.Conv2d, channels, width, 3, padding=1, bias=False)
            with torch.no_grad():
                conv.weight.normal_(0.0, (2.0 / (channels * 9)) ** 0.5)
            self.add_module(f"conv{index}", conv)
            channels = width
        self.depth = len(widths)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, self.depth + 1):
            x = getattr(self, f"conv{index}")(x)
            if index < self.depth:
                x = self.relu(x)
        return x


def conv_chain(in_channels: int = 3, num_classes: int = 4096) -> ConvChain:
    """The tutorial's 8-layer chain; ``num_classes`` is the last layer's width (4096 there)."""
    return ConvChain(in_channels=in_channels, widths=(*CHAIN_WIDTHS[:-1], num_classes))
