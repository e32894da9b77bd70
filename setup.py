"""Packaging hook: install ``cardiomm_guard.pth`` into site-packages (wheel and editable installs).

Everything else is declared in setup.cfg. The ``.pth`` file makes every interpreter of an
environment where this project is installed import :mod:`cardiomm_guard`, which patches
gadgetron-python's spinning socket read whenever ``gadgetron.external.connection`` is imported
(see that module). A ``.pth`` file has to lie in the site-packages root, where no package can put
it, hence the two command hooks below:

* ``build_py`` copies it into ``build_lib``: a wheel (``pip install .``) carries it in its root,
  which pip installs into site-packages.
* ``editable_wheel`` (``pip install -e .``, what ``make install`` does) copies it into the
  editable wheel's root for the same reason.
"""

from __future__ import annotations

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "cardiomm_guard.pth"
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):
            self.copy_file(os.path.join(HERE, PTH), os.path.join(self.build_lib, PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH))
        return outputs


cmdclass = {"build_py": BuildPyWithPth}

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools < 64: no PEP 660 editable installs
    editable_wheel = None

if editable_wheel is not None:

    class EditableWheelWithPth(editable_wheel):
        def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):  # type: ignore[no-untyped-def]
            result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
            shutil.copyfile(os.path.join(HERE, PTH), os.path.join(unpacked_wheel, PTH))
            return result

    cmdclass["editable_wheel"] = EditableWheelWithPth

setup(cmdclass=cmdclass)
