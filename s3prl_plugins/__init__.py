"""s3prl-plugins: M2D, MelHuBERT, ARMHuBERT/STaRHuBERT and Dasheng for s3prl."""

__version__ = "0.1.0"
