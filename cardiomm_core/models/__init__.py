"""Packaged CardioMM checkpoints (package data: ``*.safetensors`` + ``*.json`` pairs).

A package (not a bare folder) so that setuptools ships it as one, declared in setup.cfg
``[options.package_data]``; nothing imports it. See :mod:`cardiomm_core.packaged`.
"""
