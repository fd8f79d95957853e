"""ARMHuBERT, ARMwavLM and MaskHuBERT (distilled HuBERT/WavLM students) as s3prl upstreams.

``hidden_states`` are the 12 projection-head outputs [B, T, 768], as in the official wrapper. A
``-g`` yaml (or keyword) ``official_batching: true`` reproduces the official numbers for padded
batches (the default treats each utterance as if alone).
"""
from ..common.family import Architecture, Family, Recipe
from .releases import DEFAULT_RELEASE, RELEASES

FAMILY = Family(
    name="armhubert",
    title="ARMHuBERT",
    package=__name__,
    entries=("armhubert", "maskhubert", "armhubert_local", "maskhubert_local"),
    releases=RELEASES,
    default_releases=DEFAULT_RELEASE,
    local_entry="armhubert_local",
    entry_docs={
        "armhubert": "Official form -u armhubert -k <.ckpt> -g <.yaml> (ARMHuBERT, ARMwavLM, MaskHuBERT files); "
                     "without -k the ARMHuBERT-960h release.",
        "maskhubert": "Official form -u maskhubert -k <.ckpt> -g <.yaml>; without -k the MaskHuBERT-960h release.",
        "armhubert_local": "-u armhubert_local -k <.ckpt> [-g <.yaml>].",
        "maskhubert_local": "-u maskhubert_local -k <.ckpt> [-g <.yaml>].",
        **{entry: f"{r.title} ({r.description}), downloaded from {r.url}. -k: an already downloaded copy; "
                  "-g: options such as official_batching." for entry, r in RELEASES.items()},
    },
    recipes=(
        Recipe("armhubert", "s3prl_plugins.pretrain.distill", "armhubert_960.yaml", "config_runner_armhubert.yaml"),
        Recipe("maskhubert", "s3prl_plugins.pretrain.distill", "maskhubert_960.yaml", "config_runner_maskhubert.yaml"),
    ),
    architectures=(
        Architecture("armhubert", "armhubert_local", "testing:write_full_size_armhubert"),
        Architecture("armhubert_s", "armhubert_local", "testing:write_full_size_armhubert_s"),
        Architecture("maskhubert", "maskhubert_local", "testing:write_full_size_maskhubert"),
    ),
)
