"""The two weight initialisations of the official trainers, written once.

* :func:`init_vit` - MAE/timm (M2D, Dasheng's encoder): Linear weights Xavier-uniform, biases 0,
  LayerNorm (1, 0);
* :func:`init_bert` - fairseq's ``init_bert_params`` (MelHuBERT, the distilled students) and
  Dasheng's decoder: Linear weights N(0, 0.02) (truncated for Dasheng's decoder), biases 0.

Both visit the Linear layers in ``module.modules()`` order, the official draw order.
"""
from __future__ import annotations

from torch import nn

__all__ = ["init_vit", "init_bert"]


def init_vit(module: nn.Module) -> None:
    for child in module.modules():
        if isinstance(child, nn.Linear):
            nn.init.xavier_uniform_(child.weight)
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, nn.LayerNorm):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)


def init_bert(module: nn.Module, std: float = 0.02, truncated: bool = False) -> None:
    for child in module.modules():
        if isinstance(child, nn.Linear):
            if truncated:
                nn.init.trunc_normal_(child.weight, std=std)
            else:
                nn.init.normal_(child.weight, mean=0.0, std=std)
            if child.bias is not None:
                nn.init.zeros_(child.bias)
