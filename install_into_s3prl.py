#!/usr/bin/env python
"""Register s3prl-plugins in the installed s3prl: ``python install_into_s3prl.py [--help]``.

See ``s3prl_plugins/installer.py`` for what it changes; ``--uninstall`` undoes it byte for byte.
"""
import sys

try:
    from s3prl_plugins.installer import main
except ImportError as error:  # run before `pip install -e .`
    sys.exit(f"error: s3prl_plugins is not installed in this Python ({error}); run `pip install -e .` first.")

if __name__ == "__main__":
    sys.exit(main())
