"""Dasheng (Xiaomi's masked-autoencoder audio encoders: base, 0.6B, 1.2B) as an s3prl upstream.

Entries: ``dasheng_base``, ``dasheng_06B``, ``dasheng_12B`` (official Zenodo files, downloaded once
into the s3prl cache) and ``dasheng_local -k <file or folder>`` for either official layout (the
pip/Zenodo ``.pt`` or a Hugging Face ``mispeech/dasheng-*`` folder / ``model.safetensors``).

Output: 25 Hz frames (``get_downsample_rates() == 640``); ``hidden_states`` = the embeddings,
blocks 1..L-1 and the final LayerNorm of block L (= the official output, ``last_hidden_state``).
``-g`` options: :class:`~.config.DashengOptions`.
"""
from ..common.family import Architecture, Family, Recipe
from .releases import RELEASES

FAMILY = Family(
    name="dasheng",
    title="Dasheng",
    package=__name__,
    entries=("dasheng_local",),
    releases=RELEASES,
    local_entry="dasheng_local",
    entry_docs={"dasheng_local": "Dasheng from a local official checkpoint: -k = the pip/Zenodo .pt file, or a "
                                 "Hugging Face mispeech/dasheng-* folder / its model.safetensors."},
    recipes=(Recipe("dasheng", "s3prl_plugins.pretrain.dasheng", "dasheng_base.yaml", "config_runner_dasheng.yaml"),),
    architectures=(
        Architecture("dasheng_base", "dasheng_local", "testing:write_full_size_base"),
        Architecture("dasheng_06B", "dasheng_local", "testing:write_full_size_06B", large=True),
        Architecture("dasheng_12B", "dasheng_local", "testing:write_full_size_12B", large=True),
    ),
)
