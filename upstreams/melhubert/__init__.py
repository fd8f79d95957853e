"""MelHuBERT (a HuBERT on log-mel features, 10 ms and 20 ms frames) as an s3prl upstream."""
from ..common.family import Architecture, Family, Recipe
from .releases import DEFAULT_RELEASE, RELEASES

FAMILY = Family(
    name="melhubert",
    title="MelHuBERT",
    package=__name__,
    entries=("melhubert_local", "melhubert"),
    releases=RELEASES,
    default_releases=DEFAULT_RELEASE,
    local_entry="melhubert_local",
    entry_docs={
        "melhubert_local": "MelHuBERT from a local checkpoint: -u melhubert_local -k PATH [-g stats.yaml].",
        "melhubert": f"-u melhubert -k PATH [-g stats.yaml]; without -k the 20 ms 960 h stage-2 MelHuBERT "
                     f"({DEFAULT_RELEASE['melhubert']}), recommended by the author for features.",
    },
    recipes=(Recipe("melhubert", "s3prl_plugins.pretrain.melhubert", "melhubert_20ms.yaml",
                    "config_runner_melhubert.yaml"),),
    architectures=(
        Architecture("melhubert_20ms", "melhubert_local", "testing:write_full_size_20ms"),
        Architecture("melhubert_10ms", "melhubert_local", "testing:write_full_size_10ms"),
    ),
)
