"""Normalisation layers shared by the networks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype (stable under fp16/bf16 autocast)."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            weight = None if self.weight is None else self.weight.float()
            bias = None if self.bias is None else self.bias.float()
            return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)
