"""The allowed import directions of ARCHITECTURE.md, enforced by reading the source (``ast``), not by
importing it: a violation fails with the file, the line and the rule it breaks.

What is parsed: every ``import x`` / ``from x import y`` statement anywhere in a module (top level,
inside functions, under ``if TYPE_CHECKING:``), relative imports resolved against the file's
package, and ``importlib.import_module("x")`` / ``__import__("x")`` calls with a literal name.
What is not: names built at run time, and the module paths that chain XML files give Gadgetron.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The project's own top-level packages and modules (what "the project" means below).
PROJECT = ("cardiomm_core", "gadgets", "train", "benchmarks", "tests", "cardiomm_guard")

#: Third-party frameworks that only the scanner side or the trainer may use.
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")


@dataclass(frozen=True)
class Rule:
    """What the code under ``folder`` (a folder or module of the repository) may not import.

    ``forbidden``: modules it may not import (a name forbids its submodules too: ``gadgets.tools``);
    ``stdlib_only``: it may import the standard
    library and nothing else (code that runs where the project is not installed); ``why``: the
    reason, printed with every violation.
    """

    folder: str
    forbidden: tuple[str, ...] = ()
    stdlib_only: bool = False
    why: str = ""


#: The pipeline stages the chains name, and the helpers only they use (the top level of gadgets/).
GADGET_STAGES = ("gadgets.noise_adjust", "gadgets.remove_oversampling", "gadgets.buffer", "gadgets.buffer_lines",
                 "gadgets.data_checks", "gadgets.coil_compression", "gadgets.recon", "gadgets.layout",
                 "gadgets.header_context")

RULES = (
    Rule("cardiomm_core", ("gadgets", "train", "benchmarks", "tests", "cardiomm_guard", "gadgetron", "ismrmrd",
                           *LIGHTNING),
         why="cardiomm_core is numerics and the model (torch + numpy): it knows no Gadgetron, no ISMRMRD, no trainer"),
    Rule("gadgets", ("train", "benchmarks", "tests", *LIGHTNING),
         why="gadgets is the scanner side: it may use cardiomm_core, never the trainer, the benchmarks or the tests"),
    Rule("train", ("benchmarks", "tests"),
         why="train may use cardiomm_core and (deliberately, for raw ISMRMRD data) gadgets, not benchmarks or tests"),
    Rule("cardiomm_guard", stdlib_only=True,
         why="cardiomm_guard is loaded by a .pth file in every interpreter: standard library only"),
    Rule("docker", stdlib_only=True,
         why="docker/deploytools.py runs at image build time, before the project is installed: standard library only"),
    Rule("setup.py", PROJECT, why="setup.py runs before the project is installed"),
    Rule("gadgets/protocol", ("gadgets.tools", *GADGET_STAGES),
         why="gadgets.protocol is how the project speaks Gadgetron: the stages and the tools build on it, never "
             "the reverse"),
    Rule("gadgets/io", ("gadgets.tools", "gadgets.protocol", *GADGET_STAGES),
         why="gadgets.io reads and writes files: it knows no stage, no tool and no wire"),
    *(Rule(f"{stage.replace('.', '/')}.py", ("gadgets.tools",),
           why="a pipeline stage runs inside Gadgetron: it may not import the tools or the local runner")
      for stage in GADGET_STAGES),
)
# benchmarks/ and tests/ may import anything.

SKIPPED_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".eggs", "out"}


@dataclass(frozen=True)
class Import:
    """One imported module: ``module`` absolute and dotted, at ``path:line``."""

    path: Path
    line: int
    module: str


def _package_of(path: Path, root: Path) -> list[str]:
    """The dotted package parts a module file belongs to (``gadgets/recon.py`` -> ``["gadgets"]``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1]


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    """Every module ``path`` imports (see the module docstring), relative imports made absolute.

    Raises ``SyntaxError`` (with the file name) when ``path`` does not parse.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(path, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path, root)
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append(Import(path, node.lineno, module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append(Import(path, node.lineno, node.args[0].value))
    return sorted(found, key=lambda imp: imp.line)


def python_files(folder: Path) -> list[Path]:
    """The ``.py`` files at or under ``folder`` (a file or a folder), build and venv folders left out."""
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.rglob("*.py") if not SKIPPED_DIRS.intersection(p.relative_to(folder).parts))


def violations(rule: Rule, root: Path = ROOT) -> list[str]:
    """One readable line per import under ``root/rule.folder`` (or ``root/rule.folder.py``) that breaks ``rule``."""
    target = root / rule.folder
    if not target.exists() and (root / f"{rule.folder}.py").exists():
        target = root / f"{rule.folder}.py"
    found = []
    for path in python_files(target):
        for imp in imports_of(path, root):
            top = imp.module.split(".")[0]
            forbidden = any(imp.module == name or imp.module.startswith(name + ".") for name in rule.forbidden)
            if forbidden or (rule.stdlib_only and top not in sys.stdlib_module_names):
                found.append(f"{path.relative_to(root)}:{imp.line}: imports {imp.module} ({rule.why})")
    return found


def _ignored_folders() -> set[str]:
    """Folder names that .gitignore ignores (``/data/``, ``build/``...): local output, not the layout."""
    gitignore = ROOT / ".gitignore"
    lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.exists() else []
    return {line.strip().strip("/") for line in lines if line.strip().endswith("/") and "*" not in line}


def test_every_top_level_folder_is_named_in_architecture_md():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    skipped = SKIPPED_DIRS | _ignored_folders()
    folders = sorted(p.name for p in ROOT.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.name not in skipped
                     and not p.name.endswith(".egg-info"))
    missing = [name for name in folders if f"`{name}/" not in text]
    assert not missing, f"ARCHITECTURE.md does not describe these top-level folders: {missing}"


@pytest.mark.parametrize("rule", RULES, ids=[rule.folder for rule in RULES])
def test_imports_point_the_allowed_way(rule: Rule):
    target = ROOT / rule.folder
    assert target.exists() or (ROOT / f"{rule.folder}.py").exists(), f"{rule.folder}: no such folder or module"
    found = violations(rule)
    assert not found, "imports against ARCHITECTURE.md:\n" + "\n".join(found)


def test_train_uses_gadgets_and_nothing_else_of_the_scanner_side_is_forbidden():
    """The deliberate exception is real (train reads raw ISMRMRD data through gadgets), so the rule
    that allows it is not a dead letter."""
    train_imports = [imp.module for path in python_files(ROOT / "train") for imp in imports_of(path)]
    assert any(module.split(".")[0] == "gadgets" for module in train_imports)


def test_a_violation_names_file_line_and_rule(tmp_path: Path):
    (tmp_path / "cardiomm_core" / "sub").mkdir(parents=True)
    (tmp_path / "cardiomm_core" / "__init__.py").write_text("")
    (tmp_path / "cardiomm_core" / "sub" / "__init__.py").write_text("")
    (tmp_path / "cardiomm_core" / "sub" / "bad.py").write_text(
        "import numpy\n"
        "from . import fine\n"
        "from .. import fft\n"
        "def later():\n"
        "    import ismrmrd.xsd\n"
        "    from ...gadgets import recon\n"            # out of the package: resolves to gadgets
        "    importlib.import_module('train.cli')\n"
    )
    found = violations(RULES[0], root=tmp_path)
    assert [line.split(" (")[0] for line in found] == [
        "cardiomm_core/sub/bad.py:5: imports ismrmrd.xsd",
        "cardiomm_core/sub/bad.py:6: imports gadgets",
        "cardiomm_core/sub/bad.py:7: imports train.cli",
    ], found
    assert "no Gadgetron" in found[0]


def test_stdlib_only_rule_refuses_third_party_and_project_imports(tmp_path: Path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "tool.py").write_text("import argparse\nimport yaml\nfrom gadgets import chain\n")
    found = violations(Rule("docker", stdlib_only=True, why="x"), root=tmp_path)
    assert [line.split(" (")[0] for line in found] == ["docker/tool.py:2: imports yaml",
                                                       "docker/tool.py:3: imports gadgets"]


def test_a_stage_may_not_import_the_tools_and_protocol_may_not_import_a_stage(tmp_path: Path):
    (tmp_path / "gadgets" / "protocol").mkdir(parents=True)
    (tmp_path / "gadgets" / "recon.py").write_text("from .protocol.stream import Gadget\nfrom .tools import replay\n")
    (tmp_path / "gadgets" / "protocol" / "wire.py").write_text("from . import wire_limits\nfrom ..recon import x\n")
    by_folder = {rule.folder: rule for rule in RULES}
    assert [line.split(" (")[0] for line in violations(by_folder["gadgets/recon.py"], root=tmp_path)] == [
        "gadgets/recon.py:2: imports gadgets.tools"]
    assert [line.split(" (")[0] for line in violations(by_folder["gadgets/protocol"], root=tmp_path)] == [
        "gadgets/protocol/wire.py:2: imports gadgets.recon"]


@pytest.mark.parametrize("module", ["gadgets.noise_adjust", "gadgets.remove_oversampling", "gadgets.buffer"])
def test_the_front_end_stages_start_without_torch(module: str):
    """Gadgetron starts every Python node as its own process: the stages before coil compression
    must not pay for importing torch (seconds and hundreds of MB per node)."""
    import subprocess

    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    assert result.stdout.strip() == "False", f"{module} imports torch"
