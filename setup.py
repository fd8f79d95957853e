"""Packaging: ``pyproject.toml`` holds the metadata; this file only computes the package list.

The repository's top-level folders map into the one import namespace ``s3prl_plugins``, so nothing
is installed as a top-level ``upstreams`` or ``pretrain`` (s3prl's run_pretrain.py imports its own
top-level ``pretrain``). Subpackages are found, so a new family folder under ``upstreams/`` is
packaged without editing anything.
"""
from setuptools import find_packages, setup

ROOTS = {"s3prl_plugins": "s3prl_plugins", "s3prl_plugins.upstreams": "upstreams", "s3prl_plugins.pretrain": "pretrain"}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS)
