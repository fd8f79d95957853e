"""M2D (Masked Modeling Duo: M2D, M2D-S, M2D-AS/M2D-X, the M2D-CLAP audio tower) as an s3prl upstream."""
from ..common.family import Architecture, Family, Recipe
from .releases import RELEASES

_SUFFIX = " Statistics: -k MEAN,STD or -g (a YAML with norm_mean/norm_std, or a SUPERB task name)."

FAMILY = Family(
    name="m2d",
    title="M2D",
    package=__name__,
    entries=("m2d", "m2d_calcnorm", "m2d_local"),
    releases=RELEASES,
    local_entry="m2d_local",
    entry_docs={
        "m2d": "Official form: -u m2d -k /path/to/<release folder>/checkpoint-300.pth,MEAN,STD.",
        "m2d_calcnorm": "-u m2d_calcnorm -k PATH: prints the data set's statistics and the -k/-g to use.",
        "m2d_local": "-u m2d_local -k PATH for every official M2D weight file (full, encoder-only, EVAR, CLAP).",
        **{entry: f"{r.description}: {r.facts['folder']} ({r.url}).{_SUFFIX}" for entry, r in RELEASES.items()},
    },
    recipes=(
        Recipe("m2d", "s3prl_plugins.pretrain.m2d", "m2d_vit_base-80x608p16x16.yaml", "config_runner_m2d.yaml"),
        Recipe("m2ds", "s3prl_plugins.pretrain.m2d", "m2d_s_vit_base-80x400p80x2.yaml", "config_runner_m2d.yaml"),
        Recipe("m2das", "s3prl_plugins.pretrain.m2d", "m2d_as_vit_base-80x608p16x16.yaml", "config_runner_m2d.yaml"),
        Recipe("m2dx", "s3prl_plugins.pretrain.m2d", "m2d_x_vit_base-80x608p16x16.yaml", "config_runner_m2d.yaml"),
    ),
    architectures=(
        Architecture("m2d_vit_base_16x16", "m2d_local", "testing:write_full_size_16x16"),
        Architecture("m2d_s_vit_base_80x2", "m2d_local", "testing:write_full_size_80x2"),
    ),
)
