"""s3prl upstream wrapper around :class:`StudentModel` (ARM/Mask and STaR flavours)."""
from __future__ import annotations

import logging
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..common.base import Upstream
from .config import ARM
from .model import StudentModel

__all__ = ["StudentUpstream", "parse_flag"]

logger = logging.getLogger(__name__)


def parse_flag(value: Any, name: str) -> bool:
    """yaml/kwarg booleans, also as strings ("true", "1", ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off", ""):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise ValueError(f"{name} must be true or false, got {value!r}")


class StudentUpstream(Upstream):
    """``hidden_states``: ARM/Mask = 12 projection-head outputs [B, T, 768]; STaR = 12 layer
    outputs [B, T, D]. ``last_hidden_state`` = the last of them (batch-major). 320 samples/frame.

    ``official_batching=True`` reproduces the official wrapper's numbers for padded batches
    (GroupNorm statistics over padding, head/utterance mix-up in map-reusing layers) instead of
    treating every utterance as if it were alone; single utterances are identical either way.
    """

    def __init__(self, model: StudentModel, *, name: str, official_batching: bool = False):
        super().__init__()
        self.model = model.eval()
        self.model_name = name
        self.official_batching = official_batching
        self.downsample_rate = model.downsample_rate

    front_end_parts = ("model.feature_extractor",)

    def encode(self, padded: Tensor, lengths: Tensor) -> dict:
        field = self.model.receptive_field
        if padded.shape[-1] < field:
            # fewer samples than one frame needs: zero-pad to one frame, as s3prl's probes expect a frame
            padded = F.pad(padded, (0, field - padded.shape[-1]))
        lengths = lengths.clamp(min=field)
        out = self.model(padded, lengths, official_batching=self.official_batching)
        if self.official_batching:  # the official wrapper's frames, whatever the padding left there
            return {"hidden_states": out["hidden_states"]}
        # frames past an utterance's own CNN output: zero (the base class), as when it runs alone
        return {"hidden_states": out["hidden_states"],
                "frame_lengths": self.model.feature_extractor.output_lengths(lengths)}

    def extra_repr(self) -> str:
        flavour = "projection heads" if self.model.cfg.flavour == ARM else "layer outputs"
        return f"name={self.model_name!r}, hidden_states={flavour}, official_batching={self.official_batching}"
