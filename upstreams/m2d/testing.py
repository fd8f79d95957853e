"""Small random-weight M2D checkpoints in every official file layout, for tests and examples.

The writers produce the structures of the released files (key names, nesting, pickled
``argparse.Namespace``, extra heads) with small layer sizes, so that every reader path runs
without the 0.3-1.6 GB downloads.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..common.checkpoint import cached_download_path
from ..common.files import full_size_writer
from . import formats
from .config import DEFAULT_STATS, M2DConfig, parse_release_name
from .formats import release_args
from .model import M2DEncoder
from .releases import RELEASES

__all__ = [
    "tiny_config",
    "random_encoder_state",
    "write_full_checkpoint",
    "write_encoder_only",
    "write_evar_checkpoint",
    "write_clap2025_checkpoint",
    "write_release_zip",
    "make_checkpoint",
]

TEST_STATS = (-11.506255149841309, 4.314857482910156)


def tiny_config(name: str = "m2d_vit_base-80x208p16x16-test", embed_dim: int = 64, depth: int = 2) -> M2DConfig:
    """A small model with the input/patch sizes of the release name ``name``."""
    parsed = parse_release_name(name)
    if parsed is None:
        raise ValueError(f"not a release-style name: {name}")
    return M2DConfig(
        input_size=parsed["input_size"], patch_size=parsed["patch_size"], sample_rate=parsed["sample_rate"],
        embed_dim=embed_dim, depth=depth, num_heads=max(1, embed_dim // 64), model_name=parsed["model_name"],
    )


def random_encoder_state(config: M2DConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Encoder tensors with random (not default) values everywhere except the fixed pos_embed."""
    torch.manual_seed(seed)
    encoder = M2DEncoder(config)
    generator = torch.Generator().manual_seed(seed)
    state = encoder.state_dict()
    for key, value in state.items():
        if key in ("pos_embed", "norm_stats"):
            continue
        noise = torch.randn(value.shape, generator=generator)
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            state[key] = 1.0 + 0.1 * noise
        else:
            state[key] = 0.05 * noise
    state.pop("norm_stats")
    return state


def _block_state(prefix: str, dim: int, depth: int, generator) -> dict[str, torch.Tensor]:
    out = {}
    for i in range(depth):
        for name, shape in (("norm1.weight", (dim,)), ("norm1.bias", (dim,)), ("attn.qkv.weight", (3 * dim, dim)),
                            ("attn.qkv.bias", (3 * dim,)), ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
                            ("norm2.weight", (dim,)), ("norm2.bias", (dim,)), ("mlp.fc1.weight", (4 * dim, dim)),
                            ("mlp.fc1.bias", (4 * dim,)), ("mlp.fc2.weight", (dim, 4 * dim)), ("mlp.fc2.bias", (dim,))):
            out[f"{prefix}.{i}.{name}"] = 0.05 * torch.randn(shape, generator=generator)
    return out


def _training_heads(config: M2DConfig, variant: str, seed: int) -> dict[str, torch.Tensor]:
    """Predictor, EMA target and the variant's extra head, as in the official full checkpoints."""
    generator = torch.Generator().manual_seed(seed + 1)
    d, dec = config.embed_dim, 32
    rows = 1 + config.num_patches
    heads = {
        "mask_token": torch.zeros(1, 1, dec),
        "decoder_pos_embed": torch.zeros(1, rows, dec),
        "decoder_embed.weight": 0.05 * torch.randn(dec, d, generator=generator),
        "decoder_embed.bias": torch.zeros(dec),
        **_block_state("decoder_blocks", dec, 1, generator),
        "decoder_norm.weight": torch.ones(dec), "decoder_norm.bias": torch.zeros(dec),
        "decoder_pred.weight": 0.05 * torch.randn(d, dec, generator=generator), "decoder_pred.bias": torch.zeros(d),
        **_block_state("target_blocks", d, config.depth, generator),
        "target_norm.weight": torch.ones(d), "target_norm.bias": torch.zeros(d),
    }
    feature_dim = config.feature_dim
    if variant == "m2d_s":
        heads["offline_predictor.weight"] = 0.05 * torch.randn(768, feature_dim, generator=generator)
        heads["offline_predictor.bias"] = torch.zeros(768)
    elif variant == "m2d_as":
        heads["offline_predictor.weight"] = 0.05 * torch.randn(527, feature_dim, generator=generator)
        heads["offline_predictor.bias"] = torch.zeros(527)
    elif variant == "m2d_x":
        heads["offline_predictor.weight"] = 0.05 * torch.randn(feature_dim, feature_dim, generator=generator)
        heads["offline_predictor.bias"] = torch.zeros(feature_dim)
    elif variant == "m2d_clap":
        heads["logit_scale"] = torch.tensor(2.659)
        for i in (0, 2):
            heads[f"audio_proj.{i}.weight"] = 0.05 * torch.randn(d, d, generator=generator)
            heads[f"audio_proj.{i}.bias"] = torch.zeros(d)
    elif variant != "m2d":
        raise ValueError(f"unknown variant {variant!r}")
    return heads


def write_full_checkpoint(path: Path, config: M2DConfig, *, variant: str = "m2d", norm_stats=None,
                          seed: int = 0) -> Path:
    """A random full pre-training checkpoint of ``variant`` (:func:`.formats.write_full`)."""
    args = release_args(config, mask_ratio=0.7, epochs=300, lr=2.4e-3, output_dir="m2d_out", distributed=False)
    return formats.write_full(
        path, config, random_encoder_state(config, seed), heads=_training_heads(config, variant, seed),
        norm_stats=norm_stats, args=args, epoch=299,
        optimizer={"state": {}, "param_groups": [{"lr": 0.0, "weight_decay": 0.05, "params": []}]},
        scaler={"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                "_growth_tracker": 0})


def write_encoder_only(path: Path, config: M2DConfig, *, norm_stats=DEFAULT_STATS, seed: int = 0,
                       clap: bool = False) -> Path:
    """A random encoder-only file (+ ``audio_proj`` for CLAP)."""
    extra = None
    if clap:
        extra = {k: v for k, v in _training_heads(config, "m2d_clap", seed).items() if k.startswith("audio_proj")}
    return formats.write_encoder_only(path, random_encoder_state(config, seed), norm_stats=norm_stats, extra=extra)


def write_evar_checkpoint(path: Path, config: M2DConfig, *, seed: int = 0, num_classes: int = 527) -> Path:
    """A random EVAR fine-tuning output with its task head."""
    head = {"norm.running_mean": torch.zeros(config.feature_dim), "norm.running_var": torch.ones(config.feature_dim),
            "norm.num_batches_tracked": torch.tensor(0),
            "mlp.mlp.0.weight": torch.zeros(num_classes, config.feature_dim),
            "mlp.mlp.0.bias": torch.zeros(num_classes)}
    return formats.write_evar(path, config, random_encoder_state(config, seed), head=head)


def write_clap2025_checkpoint(path: Path, config: M2DConfig, *, norm_stats=(-7.2618, 4.3512), seed: int = 0) -> Path:
    """A random 2025 M2D-CLAP checkpoint (audio projection, a stand-in text encoder)."""
    generator = torch.Generator().manual_seed(seed + 2)
    d = config.embed_dim
    heads = {"audio_proj.sem_token": torch.zeros(1, 1, d),
             **{f"audio_proj.{k}": v for k, v in _block_state("sem_blocks", d, 1, generator).items()},
             "audio_proj.norm.weight": torch.ones(d), "audio_proj.norm.bias": torch.zeros(d),
             "text_encoder.embeddings.word_embeddings.weight": torch.zeros(8, 16), "logit_scale": torch.tensor(2.659)}
    return formats.write_clap2025(path, config, random_encoder_state(config, seed), heads=heads, norm_stats=norm_stats)


def write_release_zip(path: Path, folder: str, writer, embed_dim: int = 64, **kwargs) -> Path:
    """A GitHub-release-style zip of a random ``writer`` file: ``<folder>/checkpoint-300.pth``."""
    config = tiny_config(folder, embed_dim=embed_dim)
    staging = path.parent / (path.name + ".staging") / folder
    return formats.write_release_zip(path, folder, writer(staging / "checkpoint-300.pth", config, **kwargs))


def _named_writer(folder: str):
    if folder.endswith("-2025"):
        return write_clap2025_checkpoint, {}
    if "enconly" in folder:
        return write_encoder_only, {}
    variant = folder.split("-")[0].replace("_vit_base", "").replace("_vit_large", "")
    return write_full_checkpoint, {"variant": variant}


def make_checkpoint(entry: str, directory: Path) -> dict:
    """A small checkpoint for ``entry`` (for the end-to-end tests): returns ``ckpt``/``model_config``.

    Named entries get their release zip placed in the download cache (the test sets
    ``S3PRL_PLUGINS_CACHE_DIR``) and ``ckpt=None``.
    """
    directory = Path(directory)
    if entry in RELEASES:
        release = RELEASES[entry]
        folder = release.facts["folder"]
        writer, kwargs = _named_writer(folder)
        write_release_zip(cached_download_path(release.url), folder, writer, embed_dim=128, **kwargs)
        return {"ckpt": None, "model_config": None}
    # M2D-S layout (80x2 patches, 20 ms frames): the speech model of the SUPERB papers.
    folder = "m2d_s_vit_base-80x200p80x2-230201"
    config = tiny_config(folder, embed_dim=128)
    weight = directory / folder / "checkpoint-1000.pth"
    if entry == "m2d":
        write_full_checkpoint(weight, config, variant="m2d_s")
        return {"ckpt": f"{weight},{TEST_STATS[0]},{TEST_STATS[1]}", "model_config": None}
    if entry == "m2d_local":
        write_full_checkpoint(weight, config, norm_stats=(-7.5, 4.1))
        yaml_path = directory / "m2d_norm.yaml"
        yaml_path.write_text(f"norm_mean: {TEST_STATS[0]}\nnorm_std: {TEST_STATS[1]}\n")
        return {"ckpt": str(weight), "model_config": str(yaml_path)}
    if entry == "m2d_calcnorm":
        write_full_checkpoint(weight, config)
        yaml_path = directory / "m2d_calcnorm.yaml"
        yaml_path.write_text("calcnorm_updates: 40\n")
        return {"ckpt": str(weight), "model_config": str(yaml_path)}
    raise KeyError(f"unknown M2D entry {entry!r}")


def _full_size(input_size, patch_size, model_name):
    config = M2DConfig(input_size=input_size, patch_size=patch_size, model_name=model_name)
    folder = f"{model_name}-{input_size[0]}x{input_size[1]}p{patch_size[0]}x{patch_size[1]}-random"  # the config
    return full_size_writer(f"{folder}/checkpoint-300.pth", lambda path: write_encoder_only(path, config))


#: full-size random checkpoints for the benchmarks (``FAMILY.architectures``)
write_full_size_16x16 = _full_size((80, 608), (16, 16), "m2d_vit_base")
write_full_size_80x2 = _full_size((80, 400), (80, 2), "m2d_s_vit_base")
