"""The distilled wav2vec2-style student shared by two families: ARMHuBERT (ARMwavLM, MaskHuBERT;
``upstreams/armhubert``) and STaRHuBERT (STaRWavLM; ``upstreams/starhubert``).

``config`` (the official ``distiller`` yaml section), ``model`` (the one implementation, both
flavours), ``formats`` (the Lightning release format and the fingerprints), ``upstream`` (the s3prl
wrapper and the builder the two families call), ``testing`` (random release files).
"""
