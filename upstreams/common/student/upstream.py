"""The s3prl upstream of the distilled students (ARM/Mask and STaR flavours) and its builder."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..base import Upstream, announce
from ..checkpoint import CheckpointError, resolve_checkpoint, resolve_entry_checkpoint
from ..config import from_dict, load_model_config, parse_bool
from ..family import Release
from .config import ARM, PUBLISHED
from .formats import read_student
from .model import StudentModel

__all__ = ["StudentUpstream", "StudentOptions", "parse_flag", "build_student_upstream"]



def parse_flag(value: Any, name: str) -> bool:
    """yaml/kwarg booleans, also as strings ("true", "1", ...)."""
    return parse_bool(value, name)


@dataclass
class StudentOptions:
    """Keyword options of the student entries (also read from the ``-g`` yaml, top level or its
    ``distiller`` section): ``official_batching`` reproduces the official wrapper's numbers for
    padded batches (``official_batched_reuse``: its older spelling)."""

    official_batching: Any = None
    official_batched_reuse: Any = None

    @property
    def batching(self) -> bool:
        value = self.official_batching if self.official_batching is not None else self.official_batched_reuse
        return False if value is None else parse_flag(value, "official_batching")


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
def _release_config(release: Release, *, refresh: bool, entry: str, local_entry: str):
    """Config of a release whose checkpoint has none: its companion yaml, else the published one."""

    def fetch() -> Mapping:
        if release.yaml is not None:
            try:
                path = resolve_checkpoint(release.yaml, refresh=refresh, local_entry=local_entry,
                                          filename=release.filename.replace(".ckpt", ".yaml"),
                                          what=f"the {release.title} yaml")
                cfg = load_model_config(path)
                if isinstance(cfg.get("distiller"), Mapping):
                    return cfg["distiller"]
            except CheckpointError:
                if release.architecture is None:
                    raise
                announce(entry, f"could not fetch the {release.title} yaml; using the published "
                                f"{release.architecture} architecture", warning=True)
        if release.architecture is None:
            raise CheckpointError(
                f"{entry}: the {release.title} checkpoint has no configuration and its yaml could not be read; "
                f"pass it with -g (yaml: {release.yaml})."
            )
        return PUBLISHED[release.architecture]

    return fetch


def _check_size(count: int, release: Release, entry: str) -> None:
    """Warn when a release's file holds a student of another size (``count`` parameters)."""
    if release.params is not None and count != release.params:
        announce(entry, f"the loaded student has {count} parameters, the {release.title} release {release.params}; "
                        "is this the right file?", warning=True)
    approx = release.facts.get("approx_params_m")
    if approx is not None and abs(count / 1e6 - approx) > 0.05 * approx:
        announce(entry, f"the file holds a {count / 1e6:.2f}M-parameter student, not the {approx:.2f}M "
                        f"{release.title}; the official README links STaRHuBERT-S and -XS to the same file.",
                 warning=True)


def build_student_upstream(entry: str, flavour: str, ckpt: Any = None, model_config: Any = None,
                           refresh: bool = False, *, release: Release | None = None, local_entry: str,
                           **kwargs) -> StudentUpstream:
    """The upstream of a student entry. ``release``: what the entry downloads without ``-k``
    (``Family.release_for``; ``-k`` as in :func:`resolve_entry_checkpoint`), ``local_entry``: the
    entry named in error messages."""
    options = from_dict(StudentOptions, kwargs, f"{entry} (keyword options)", unknown="warn")
    path, release = resolve_entry_checkpoint(entry, release, ckpt, refresh=refresh, local_entry=local_entry)
    if path.is_dir():
        raise CheckpointError(f"{entry}: {path} is a folder; pass the .ckpt file (-k path/to/<name>.ckpt).")
    fallback = (_release_config(release, refresh=refresh, entry=entry, local_entry=local_entry)
                if release is not None else None)
    loaded = read_student(path, model_config, flavour, entry=entry, fallback_config=fallback)
    if options.official_batching is None and options.official_batched_reuse is None:
        options = from_dict(StudentOptions, loaded.options, f"{entry} (-g options)", unknown="warn")
    count = sum(p.numel() for p in loaded.model.parameters())
    if release is not None:
        _check_size(count, release, entry)
    name = release.title if release is not None else entry
    announce(entry, f"{path}: {name}, {count / 1e6:.2f}M parameters{', official batching' if options.batching else ''}")
    return StudentUpstream(loaded.model, name=name, official_batching=options.batching)
