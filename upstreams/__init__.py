"""s3prl upstreams of the plugin families (imported as ``s3prl_plugins.upstreams``).

Each family folder has the same files for the same roles (``hubconf.py`` the entries,
``upstream.py`` the s3prl-facing wrapper, ``model.py``, ``formats.py`` the readers and writers of
its official checkpoint formats, ...; see ``common/family.py``). Pieces shared by
several families (input checks, padding masks, checkpoint loading, transformer blocks, front ends)
live in :mod:`s3prl_plugins.upstreams.common`.
"""
