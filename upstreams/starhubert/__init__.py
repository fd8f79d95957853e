"""STaRHuBERT and STaRWavLM (distilled students with temporal Gram-matrix distillation) as s3prl upstreams.

``hidden_states`` are the 12 raw layer outputs [B, T, D]; ``last_hidden_state`` is batch-major
(the official wrapper returns it time-major). ``final_proj.*`` in the files is dropped. The
student shares its implementation with ARMHuBERT (``common/student``).
"""
from ..common.family import Architecture, Family, Recipe
from .releases import DEFAULT_RELEASE, RELEASES

FAMILY = Family(
    name="starhubert",
    title="STaRHuBERT",
    package=__name__,
    entries=("starhubert", "starhubert_local"),
    releases=RELEASES,
    default_releases=DEFAULT_RELEASE,
    local_entry="starhubert_local",
    entry_docs={
        "starhubert": "Official form -u starhubert -k <.ckpt> -g <.yaml>; without -k the STaRHuBERT release.",
        "starhubert_local": "-u starhubert_local -k <.ckpt> [-g <.yaml>].",
        **{entry: f"{r.title} ({r.description}), downloaded from Google Drive ({r.url}). -k: an already downloaded "
                  "copy; -g: the companion yaml or options." for entry, r in RELEASES.items()},
    },
    recipes=(Recipe("starhubert", "s3prl_plugins.pretrain.distill", "starhubert_960.yaml",
                    "config_runner_starhubert.yaml"),),
    architectures=(
        Architecture("starhubert", "starhubert_local", "testing:write_full_size_starhubert"),
        Architecture("starhubert_l", "starhubert_local", "testing:write_full_size_starhubert_l"),
    ),
)
