"""A model whose pruned copies wait in training while a gate file exists: a trial the test can hold mid-run.

Importable as ``gated_models:gated_net`` (tests/ on PYTHONPATH). The gate is the file named by the
``AUTOPRUNE_TEST_GATE`` environment variable. The base model (unpruned) never waits, so base training and a
worker's start-up go through; every trial whose plan removes channels waits in its first fine-tune step, inside
the objective, until the gate goes or a signal interrupts it.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from user_models import SmallNet

GATE_ENV = "AUTOPRUNE_TEST_GATE"


class GatedNet(SmallNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pruned = self.conv1.out_channels < 32 or self.conv2.out_channels < 32
        if pruned and self.training and torch.is_grad_enabled():
            gate = os.environ.get(GATE_ENV)
            while gate and os.path.exists(gate):
                time.sleep(0.02)
        return super().forward(x)


def gated_net() -> nn.Module:
    return GatedNet()
