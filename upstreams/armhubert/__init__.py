"""ARMHuBERT, ARMwavLM and MaskHuBERT upstreams (the shared distilled student lives here)."""
