"""Generated speech data sets for tests and demos (``python -m s3prl_plugins.data --help``)."""
from .datasets import (  # noqa: F401
    INTENTS,
    KEYWORDS,
    ks_speaker_ids,
    ks_split_of,
    make_all,
    make_ic,
    make_ks,
    make_librispeech,
    make_noise,
    write_bucket_csvs,
)
