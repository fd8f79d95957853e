"""STaRHuBERT / STaRWavLM upstreams, built on the ARMHuBERT student (upstreams/armhubert)."""
