"""Packaging: the packaged model ships, declared as a package of its own, so setuptools installs it
without its 35-line "Package 'cardiomm_core.models' is absent from the packages configuration"
warning (checked by hand: a fresh ``pip install -v -e .`` and ``pip wheel .`` print no such
warning, and the wheel holds cardiomm_core/models/*.safetensors and *.json)."""

from __future__ import annotations

import fnmatch
import importlib
from pathlib import Path

import pytest
from setuptools.config.setupcfg import read_configuration

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("cardiomm_core", "gadgets", "train")


def test_every_folder_with_shipped_files_is_a_declared_package():
    options = read_configuration(str(ROOT / "setup.cfg"))["options"]
    packages, package_data = set(options["packages"]), options.get("package_data", {})
    assert "cardiomm_core.models" in packages
    patterns = package_data["cardiomm_core.models"]
    models = [p.name for p in (ROOT / "cardiomm_core" / "models").iterdir() if p.is_file()]
    for suffix in (".safetensors", ".json"):
        shipped = [name for name in models if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]
        assert any(name.endswith(suffix) for name in shipped), (suffix, models, patterns)
    # a package-data pattern must belong to a declared package, else setuptools warns (and may stop shipping it)
    for package in package_data:
        assert package in packages, package
    # every folder of the three packages that holds Python code is a package
    for top in TOP_LEVEL:
        for folder in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if folder.name == "__pycache__" or not any(folder.glob("*.py")):
                continue
            name = ".".join(folder.relative_to(ROOT).parts)
            assert name in packages, f"{name} holds Python files but is not in setup.cfg's packages"


def _console_scripts() -> list[str]:
    return list(read_configuration(str(ROOT / "setup.cfg"))["options"]["entry_points"]["console_scripts"])


@pytest.mark.parametrize("entry", _console_scripts())
def test_console_scripts_name_functions_that_exist(entry: str) -> None:
    """An installed ``cardiomm-*`` command imports ``module:function`` from setup.cfg (issue 15 moved them)."""
    name, target = (part.strip() for part in entry.split("="))
    module_name, function = target.split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function, None)), f"{name} = {target}: no such function"
