"""Frozen speech teachers from LOCAL checkpoints only (no network): HuBERT / WavLM layer outputs.

* a Hugging Face ``HubertModel``/``WavLMModel`` folder (``config.json`` + weights), read with
  ``local_files_only=True``;
* a fairseq HuBERT checkpoint (``hubert_base_ls960.pt``) or an s3prl-converted one, read through
  s3prl's own ``hubert_local`` / ``wavlm_local`` entries (s3prl converts fairseq files itself).

``teacher(wave [B, N]) -> list of [B, T, D]``: index 0 is the input of the first transformer
layer, index i the output of layer i (the convention of Hugging Face's ``hidden_states`` and of
s3prl's upstreams), so ``layers[9]`` is HuBERT layer 9 (M2D-S's offline target).

``teacher.encode(wave, lengths, mask_indices=None)`` is what distillation needs: the same list for
a zero-padded batch with its padding mask, and optionally with the teacher's own span masking
applied at GIVEN frames (the teacher's ``mask_emb`` / Hugging Face ``masked_spec_embed`` replaces
the projected CNN features there, as fairseq's ``apply_mask`` does). The s3prl models are run
piece by piece (their code is not edited): CNN -> LayerNorm -> frame padding mask
(``forward_padding_mask``) -> ``post_extract_proj`` -> input dropout (off: eval) -> mask ->
encoder, the layer inputs/outputs taken from s3prl's own hooks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import compat
from ..upstreams.common.masks import padding_mask

__all__ = ["TeacherError", "TeacherOutput", "LocalTeacher", "load_teacher"]


@dataclass
class TeacherOutput:
    """``hidden_states``: [B, T, D] x (layers + 1), index 0 = input of layer 1, index i = output
    of layer i (post-LN for HuBERT/WavLM Base); ``padding_mask`` [B, T] (True = padding) or None."""

    hidden_states: list[Tensor]
    padding_mask: Tensor | None
    #: the CNN features after their LayerNorm / projection, before any masking [B, T, D]
    features: Tensor | None = None

    @property
    def layers(self) -> list[Tensor]:
        return self.hidden_states[1:]

    @property
    def layer_input(self) -> Tensor:
        return self.hidden_states[0]


class TeacherError(ValueError):
    pass


class LocalTeacher(nn.Module):
    def __init__(self, model: nn.Module, kind: str, normalize: bool):
        super().__init__()
        self.model, self.kind, self.normalize = model.eval(), kind, normalize
        for param in self.model.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> list[torch.Tensor]:
        if wave.dim() != 2:
            raise TeacherError(f"teacher input must be [B, samples], got {tuple(wave.shape)}")
        wave = wave.float()
        if self.normalize:  # Wav2Vec2Processor(do_normalize=True): zero mean, unit variance per utterance
            wave = (wave - wave.mean(dim=1, keepdim=True)) / torch.sqrt(wave.var(dim=1, keepdim=True) + 1e-7)
        if self.kind == "huggingface":
            out = self.model(wave, output_hidden_states=True)
            return list(out.hidden_states)
        out = self.model([w for w in wave])
        return list(out["hidden_states"])

    # -- distillation -------------------------------------------------------------------------
    @property
    def inner(self) -> nn.Module:
        """The network itself (Hugging Face model, or the fairseq-style model inside s3prl's expert)."""
        return self.model if self.kind == "huggingface" else self.model.model

    @property
    def num_layers(self) -> int:
        if self.kind == "huggingface":
            return int(self.model.config.num_hidden_layers)
        return len(self.model.model.encoder.layers)

    @property
    def dim(self) -> int:
        if self.kind == "huggingface":
            return int(self.model.config.hidden_size)
        return int(self.model.model.encoder.embedding_dim)

    @property
    def supports_masking(self) -> bool:
        if self.kind == "huggingface":
            return getattr(self.model, "masked_spec_embed", None) is not None
        return isinstance(getattr(self.model.model, "mask_emb", None), torch.Tensor)

    def _normalise(self, wave: Tensor, lengths: Tensor) -> Tensor:
        """Zero mean / unit variance over each utterance's valid samples (padding stays zero)."""
        valid = ~padding_mask(lengths, wave.shape[1])
        count = lengths.clamp_min(1).to(wave.dtype)[:, None]
        mean = (wave * valid).sum(1, keepdim=True) / count
        var = (((wave - mean) * valid) ** 2).sum(1, keepdim=True) / (count - 1).clamp_min(1)
        return torch.where(valid, (wave - mean) / torch.sqrt(var + 1e-7), torch.zeros_like(wave))

    def _prepare_input(self, wave: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if wave.dim() != 2:
            raise TeacherError(f"teacher input must be [B, samples], got {tuple(wave.shape)}")
        wave = wave.float()
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[1], dtype=torch.long, device=wave.device)
        if self.normalize:
            wave = self._normalise(wave, lengths)
        return wave, (lengths if bool((lengths < wave.shape[1]).any()) else None)

    def _check_mask(self, mask_indices: Tensor | None, frames: tuple[int, int]) -> None:
        if mask_indices is None:
            return
        if not self.supports_masking:
            raise TeacherError("this teacher has no mask embedding (Hugging Face: masked_spec_embed exists only when "
                               "config.mask_time_prob > 0); masking distillation needs one")
        if tuple(mask_indices.shape) != tuple(frames):
            raise TeacherError(f"mask_indices {tuple(mask_indices.shape)} do not match the teacher's {tuple(frames)} "
                               "frames")

    @torch.no_grad()
    def encode(self, wave: Tensor, lengths: Tensor | None = None, mask_indices: Tensor | None = None) -> TeacherOutput:
        """``wave`` [B, N] zero-padded, ``lengths`` [B] samples (None = all N), ``mask_indices``
        [B, T] bool (True = replace the frame by the teacher's mask embedding) or None."""
        wave, lengths = self._prepare_input(wave, lengths)
        x, pad, frame_mask = self._front_end(wave, lengths)
        self._check_mask(mask_indices, x.shape[:2])
        return TeacherOutput(self._encoder(self._masked(x, mask_indices, frame_mask), pad, frame_mask), pad, x)

    @torch.no_grad()
    def encode_pair(self, wave: Tensor, lengths: Tensor | None, mask_indices: Tensor) -> tuple[TeacherOutput,
                                                                                                  TeacherOutput]:
        """``(encode(wave, lengths), encode(wave, lengths, mask_indices))`` with the CNN front end
        run once and both transformer passes in one batch of 2B (masking distillation's two runs)."""
        wave, lengths = self._prepare_input(wave, lengths)
        x, pad, frame_mask = self._front_end(wave, lengths)
        self._check_mask(mask_indices, x.shape[:2])
        both = torch.cat([x, self._masked(x, mask_indices, frame_mask)])
        twice = (lambda t: None if t is None else torch.cat([t, t]))
        hidden = self._encoder(both, twice(pad), twice(frame_mask))
        batch = x.shape[0]
        return (TeacherOutput([h[:batch] for h in hidden], pad, x), TeacherOutput([h[batch:] for h in hidden], pad, x))

    # -- the pieces (no teacher code edited) ---------------------------------------------------
    def _front_end(self, wave: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """CNN -> (LayerNorm, projection, input dropout) -> ``x`` [B, T, D], the frame padding mask
        (True = padding) and the model's own frame attention mask (Hugging Face) or None."""
        if self.kind == "huggingface":
            model = self.model
            extract = model.feature_extractor(wave).transpose(1, 2)
            frame_mask = None
            if lengths is not None:
                sample_mask = (~padding_mask(lengths, wave.shape[1])).long()
                frame_mask = model._get_feature_vector_attention_mask(extract.shape[1], sample_mask)
            projected = model.feature_projection(extract)
            x = projected[0] if isinstance(projected, tuple) else projected  # WavLM also returns the LN'd CNN output
            return x, (None if frame_mask is None else ~frame_mask.bool()), frame_mask
        model = self.model.model
        features = model.feature_extractor(wave).transpose(1, 2)
        features = model.layer_norm(features)
        pad = None
        if lengths is not None:
            sample_pad = padding_mask(lengths, wave.shape[1])
            pad = model.forward_padding_mask(features, sample_pad)
        if model.post_extract_proj is not None:
            features = model.post_extract_proj(features)
        return model.dropout_input(features), pad, None

    def _masked(self, x: Tensor, mask_indices: Tensor | None, frame_mask: Tensor | None) -> Tensor:
        if mask_indices is None:
            return x
        if self.kind == "huggingface":
            self.model.config.apply_spec_augment = True  # else Hugging Face ignores mask_time_indices
            return self.model._mask_hidden_states(x.clone(), mask_time_indices=mask_indices, attention_mask=frame_mask)
        return torch.where(mask_indices.unsqueeze(-1), self.model.model.mask_emb.to(x.dtype), x)

    def _encoder(self, x: Tensor, pad: Tensor | None, frame_mask: Tensor | None) -> list[Tensor]:
        if self.kind == "huggingface":
            return compat.encoder_hidden_states(self.model.encoder, x, attention_mask=frame_mask)
        expert, model = self.model, self.model.model
        # s3prl's hooks collect every layer's input and the encoder output: (name, [B, T, D])
        expert._hook_hiddens.clear()
        try:
            model.encoder(x, padding_mask=pad)
            # trimmed: s3prl's HuBERT pads the layers' input to required_seq_len_multiple (masked keys)
            hidden = [h[:, : x.shape[1]] for _, h in expert._hook_hiddens]
        finally:
            expert._hook_hiddens.clear()
        if len(hidden) != len(model.encoder.layers) + 1:
            raise TeacherError(f"expected {len(model.encoder.layers) + 1} hidden states from the s3prl teacher's hooks, "
                               f"got {len(hidden)}")
        return hidden


def load_teacher(path: str | os.PathLike, *, device: str | torch.device = "cpu", normalize: bool = True,
                 kind: str = "auto") -> LocalTeacher:
    """``kind``: ``huggingface``, ``hubert_local``, ``wavlm_local`` or ``auto`` (a folder with
    config.json is Hugging Face; a file is a fairseq/s3prl checkpoint: WavLM when its name or its
    weights say so, else HuBERT)."""
    path = Path(path)
    if not path.exists():
        raise TeacherError(f"teacher checkpoint {path} does not exist; give a local Hugging Face HubertModel folder "
                           "or a fairseq hubert_base_ls960.pt (nothing is downloaded)")
    auto = kind == "auto"
    if auto:
        if path.is_dir():
            kind = "huggingface"
        else:
            kind = "wavlm_local" if "wavlm" in path.name.lower() else "hubert_local"
    if kind == "huggingface":
        if not (path / "config.json").is_file():
            raise TeacherError(f"{path} has no config.json: not a Hugging Face model folder")
        import transformers

        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(path), config=config, local_files_only=True)
        if hasattr(model.config, "layerdrop"):
            model.config.layerdrop = 0.0
        if config.model_type not in ("hubert", "wavlm", "wav2vec2", "data2vec-audio"):
            raise TeacherError(f"{path} holds a {config.model_type!r} model; the teacher must be a Hugging Face "
                               "HubertModel or WavLMModel folder")
    elif kind in ("hubert_local", "wavlm_local"):
        import importlib

        from ..upstreams.common.checkpoint import load_checkpoint

        obj = load_checkpoint(path, family="HuBERT/WavLM teacher")
        # A raw fairseq file ({"cfg"/"args", "model"}) goes through s3prl's converter, which writes
        # <name>.converted.pt next to it; s3prl-converted files ("model_weight") load directly.
        # s3prl's WavLM files are {"cfg": dict, "model": state} with WavLM-only keys.
        is_wavlm = isinstance(obj, dict) and isinstance(obj.get("model"), dict) and any(
            "relative_attention_bias" in k or k.endswith("grep_a") for k in obj["model"])
        if is_wavlm and auto:
            kind = "wavlm_local"
        raw_fairseq = isinstance(obj, dict) and not is_wavlm and "model_weight" not in obj and "model" in obj and (
            "cfg" in obj or "args" in obj)
        del obj
        if raw_fairseq:
            try:
                import fairseq  # noqa: F401
            except ImportError:
                raise TeacherError(
                    f"{path} is a raw fairseq checkpoint; converting it needs fairseq (s3prl's converter imports it). "
                    "Convert it once where fairseq is installed (python -m s3prl.upstream.hubert.convert "
                    f"{path.name}), or give an s3prl-converted file or a Hugging Face HubertModel folder") from None
        family = "hubert" if kind == "hubert_local" else "wavlm"
        hubconf = importlib.import_module(f"s3prl.upstream.{family}.hubconf")
        extra = {"fairseq": True} if raw_fairseq and family == "hubert" else {}
        model = getattr(hubconf, kind)(ckpt=str(path), **extra)
    else:
        raise TeacherError(f"unknown teacher kind {kind!r}")
    return LocalTeacher(model, "huggingface" if kind == "huggingface" else "s3prl", normalize).to(device)
