"""Dasheng (Xiaomi's masked audio encoders: base, 0.6B, 1.2B) as an s3prl upstream."""
