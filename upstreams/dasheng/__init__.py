"""Dasheng (Xiaomi's masked-autoencoder audio encoders: base, 0.6B, 1.2B) as an s3prl upstream.

Entries: ``dasheng_base``, ``dasheng_06B``, ``dasheng_12B`` (official Zenodo files, downloaded once
into the s3prl cache) and ``dasheng_local -k <file or folder>`` for either official layout (the
pip/Zenodo ``.pt`` or a Hugging Face ``mispeech/dasheng-*`` folder / ``model.safetensors``).

Output: 25 Hz frames (``get_downsample_rates() == 640``); ``hidden_states`` = the embeddings,
blocks 1..L-1 and the final LayerNorm of block L (= the official output, ``last_hidden_state``).

``-g`` YAML options: ``batch_mode`` (``per_utterance``: each utterance in a padded batch gives
exactly what it gives alone; ``official``: the pip package's batched ``model(x, x_length)`` with
its batch-wide top_db floor) and ``dtype`` (``float32`` or ``bfloat16``; the front end stays
float32).
"""
