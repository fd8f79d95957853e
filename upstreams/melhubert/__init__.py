"""MelHuBERT (Lin, Lee, Tang, ASRU 2023): HuBERT on log-mel spectrograms, as an s3prl upstream."""
from .config import MelHuBERTConfig
from .variants import RELEASED

__all__ = ["MelHuBERTConfig", "RELEASED"]
