"""s3prl upstreams of the plugin families (imported as ``s3prl_plugins.upstreams``).

Each family folder holds an s3prl hub module (``hubconf.py``), the s3prl-facing wrapper
(``expert.py``), its model and the readers for its official checkpoint formats. Pieces shared by
several families (input checks, padding masks, checkpoint loading, transformer blocks, front ends)
live in :mod:`s3prl_plugins.upstreams.common`.
"""
