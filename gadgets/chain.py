"""Reconstruction chains: Gadgetron version-2 stream configs, their YAML twins, and a local runner.

A chain is what Gadgetron 4.x loads from ``$GADGETRON_HOME/share/gadgetron/config/NAME.xml`` (or
receives as text in a CONFIG_SCRIPT message): readers, a stream of nodes, writers. Gadgetron's
parser (``apps/gadgetron/connection/Config.cpp``, class ``V2``) accepts a root ``<configuration>``
whose ``<version>`` is ``2`` and reads:

* ``<readers><reader><dll/><classname/>[<slot/>]</reader>...</readers>``, ``<writers>`` likewise;
* ``<stream>`` whose children are nodes: ``<gadget><name/><dll/><classname/><property .../></gadget>``
  (properties as ``<property name="n" value="v"/>`` or the legacy ``<property><name/><value/>``)
  and ``<external>`` with one action, ``<execute name="MODULE" target="CLASS" type="python"/>``
  (Gadgetron starts ``python -m gadgetron PORT MODULE CLASS``, one process per node and per
  scan) or ``<connect port="P" address="A"/>`` (an already-running process; the address
  defaults to ``localhost``), plus ``<configuration>`` (sent verbatim to the process as the
  CONFIG message, parsed there by :mod:`gadgets.params`). Gadgetron reads nothing else from a
  ``<connect>`` element; this project adds ``name``/``target`` attributes to it, naming the
  gadget the worker on that port serves (``gadgets.recon`` / ``CardioMMRecon``), so the local
  runner can run it in-process. Gadgetron ignores them.

The same chain as YAML (``chains/*.yaml``)::

    name: cardiomm_cine_python
    description: free text (becomes the XML's leading comment)
    readers:
      - {dll: gadgetron_core_readers, classname: AcquisitionReader, slot: 1008}
    writers:
      - {dll: gadgetron_core_writers, classname: ImageWriter}
    stages:
      - kind: native                      # a Gadgetron (C++) gadget
        name: NoiseAdjust                 # optional <name>
        dll: gadgetron_mricore
        classname: NoiseAdjustGadget
        properties: {pass_nonconformant_data: true}
      - kind: python                      # <external><execute type="python"/>
        module: gadgets.coil_compression
        target: CoilCompression
        properties: {n_coils: 8}
      - kind: connect                     # <external><connect/>: a warm worker
        address: localhost
        port: 18000
        module: gadgets.recon             # the gadget the worker serves
        target: CardioMMRecon
        properties: {checkpoint: packaged}
        note: optional text (the XML comment written before the node)

:func:`load_chain` reads either form into one :class:`Chain`; :meth:`Chain.to_xml` and
:meth:`Chain.to_yaml` write them. Property values are kept as text (what Gadgetron sends);
YAML booleans and numbers are converted to the spelling Gadgetron's configs use
(``true``/``false``, ``repr`` of numbers).

The local runner (:func:`run_chain`) executes a chain without Gadgetron:

* ``python`` stages: the gadget class is imported and configured from the node's properties
  (``Gadget.from_config``), and the stages are composed as generators;
* ``native`` stages run through their registered Python equivalent (:data:`NATIVE_EQUIVALENTS`):
  ``NoiseAdjustGadget`` -> :class:`~gadgets.noise_adjust.NoiseAdjust`,
  ``RemoveROOversamplingGadget`` -> :class:`~gadgets.remove_oversampling.RemoveOversampling`,
  ``AcquisitionAccumulateTriggerGadget`` followed by ``BucketToBufferGadget`` ->
  :class:`~gadgets.buffer.AcquisitionBuffer`, with the native properties (and the native
  defaults, which differ from the Python gadget's) mapped; a native gadget without an
  equivalent is a ValueError naming the gadget and the chain. One behaviour is deliberately not
  reproduced: Gadgetron's native NoiseAdjustGadget fails a scan with a noise measurement when
  no storage server is running ("Failed to store item"); its equivalent needs none;
* ``connect`` stages run in-process as the gadget they serve (``connect="inprocess"``, the
  default) or through a real socket to the running worker (``connect="socket"``), with this
  module playing Gadgetron's side of the external protocol (:class:`ExternalPeer`).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import queue
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import ismrmrd
import yaml

from .params import parse_params
from .stream import Gadget, PeerVanished, encode_item, recv_exactly
from .wire_limits import MESSAGE_NAMES, SAFE_READERS, TEXT_LIMIT_BYTES, MessageBudget, MessageTooLarge, message_limit

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

STAGE_KINDS = ("native", "python", "connect")
#: How the local runner reaches ``connect`` stages.
CONNECT_MODES = ("inprocess", "socket")
#: The address Gadgetron uses when ``<connect>`` has none.
DEFAULT_CONNECT_ADDRESS = "localhost"
#: Gadgets the project's warm workers serve, by port, for ``<connect>`` nodes that do not say.
KNOWN_WORKERS: dict[int, tuple[str, str]] = {18000: ("gadgets.recon", "CardioMMRecon")}

_CHAIN_KEYS = ("name", "description", "readers", "writers", "stages")
_ENDPOINT_KEYS = ("dll", "classname", "slot")
_STAGE_KEYS = {
    "native": ("kind", "name", "dll", "classname", "properties", "note"),
    "python": ("kind", "module", "target", "properties", "note"),
    "connect": ("kind", "address", "port", "module", "target", "properties", "note"),
}
_MODULE_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Endpoint:
    """A reader or writer of a chain: ``dll``, ``classname`` and, for readers, an optional ``slot``."""

    dll: str
    classname: str
    slot: int | None = None


@dataclass(frozen=True)
class Stage:
    """One node of a chain's stream.

    ``kind`` is ``native`` (``dll``, ``classname``, optional ``name``), ``python`` (``module``,
    ``target``: an ``<external><execute type="python"/>``) or ``connect`` (``address``, ``port``
    and the ``module``/``target`` of the gadget the worker serves). ``properties`` maps names to
    text values; ``note`` is documentation (an XML comment before the node).
    """

    kind: str
    name: str = ""
    dll: str = ""
    classname: str = ""
    module: str = ""
    target: str = ""
    address: str = ""
    port: int | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def label(self) -> str:
        """A short human name: the native name/classname, or the Python target."""
        if self.kind == "native":
            return self.name or self.classname
        if self.kind == "connect":
            served = self.target or "?"
            return f"{served}@{self.address or DEFAULT_CONNECT_ADDRESS}:{self.port}"
        return self.target

    def semantic(self) -> tuple[Any, ...]:
        """What Gadgetron (and the runner) act on: everything but the note."""
        return (self.kind, self.name, self.dll, self.classname, self.module, self.target,
                self.address, self.port, tuple(sorted(self.properties.items())))


@dataclass(frozen=True)
class Chain:
    """A reconstruction chain: readers, stages, writers (see the module docstring)."""

    name: str
    stages: tuple[Stage, ...]
    readers: tuple[Endpoint, ...] = ()
    writers: tuple[Endpoint, ...] = ()
    description: str = ""
    source: str = ""

    def semantic(self) -> tuple[Any, ...]:
        """Readers, writers and stages without the documentation (for comparing XML and YAML)."""
        return (self.readers, self.writers, tuple(stage.semantic() for stage in self.stages))

    def stage_for(self, target: str) -> Stage:
        """The one python/connect stage whose target (or native classname) is ``target``."""
        found = [s for s in self.stages if target in (s.target, s.classname) and (s.target or s.classname)]
        if len(found) != 1:
            raise ValueError(f"chain {self.name!r} has {len(found)} stages named {target!r}; "
                             f"stages: {[s.label for s in self.stages]}")
        return found[0]

    def with_properties(self, target: str, **properties: Any) -> Chain:
        """A copy with ``properties`` set on every stage whose target or classname is ``target``.

        Values are converted to their chain spelling (:func:`property_text`); a value of None
        removes the property. Raises ValueError when no stage matches.
        """
        matched = False
        stages = []
        for stage in self.stages:
            if target in (stage.target, stage.classname) and (stage.target or stage.classname):
                matched = True
                merged = dict(stage.properties)
                for key, value in properties.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = property_text(value)
                stage = replace(stage, properties=merged)
            stages.append(stage)
        if not matched:
            raise ValueError(f"chain {self.name!r} has no stage {target!r} to set {sorted(properties)} on; "
                             f"stages: {[s.label for s in self.stages]}")
        return replace(self, stages=tuple(stages))

    # -- writing -----------------------------------------------------------------------------

    def to_xml(self) -> str:
        """The chain as a Gadgetron version-2 stream config (XML text)."""
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<configuration>"]
        if self.description.strip():
            lines.append(_xml_comment(self.description, "    "))
        lines.append("    <version>2</version>")
        lines.append("")
        lines.append("    <readers>")
        for reader in self.readers:
            lines.append(_endpoint_xml("reader", reader))
        lines.append("    </readers>")
        lines.append("")
        lines.append("    <writers>")
        for writer in self.writers:
            lines.append(_endpoint_xml("writer", writer))
        lines.append("    </writers>")
        lines.append("")
        lines.append("    <stream>")
        for number, stage in enumerate(self.stages):
            if number:
                lines.append("")
            if stage.note.strip():
                lines.append(_xml_comment(stage.note, "        "))
            lines.extend(_stage_xml(stage))
        lines.append("    </stream>")
        lines.append("</configuration>")
        return "\n".join(lines) + "\n"

    def to_mapping(self) -> dict[str, Any]:
        """The chain as plain data (the YAML document)."""
        document: dict[str, Any] = {"name": self.name}
        if self.description.strip():
            document["description"] = _clean_text(self.description) + "\n"
        document["readers"] = [_endpoint_mapping(r) for r in self.readers]
        document["writers"] = [_endpoint_mapping(w) for w in self.writers]
        stages = []
        for stage in self.stages:
            entry: dict[str, Any] = {"kind": stage.kind}
            for key in _STAGE_KEYS[stage.kind][1:]:
                if key in ("properties", "note"):
                    continue
                value = getattr(stage, key)
                if value not in ("", None):
                    entry[key] = value
            entry["properties"] = {k: _yaml_scalar(v) for k, v in stage.properties.items()}
            if stage.note.strip():
                entry["note"] = _clean_text(stage.note)
            stages.append(entry)
        document["stages"] = stages
        return document

    def to_yaml(self) -> str:
        """The chain as YAML text (the schema in the module docstring)."""
        return yaml.safe_dump(self.to_mapping(), sort_keys=False, default_flow_style=False, width=100)


def property_text(value: Any) -> str:
    """The chain (XML) spelling of a property value: bools as true/false, numbers as repr, text stripped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"property value must be finite, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        return value.strip()
    raise ValueError(f"property value must be a string, number or boolean, got {type(value).__name__} {value!r}")


def _yaml_scalar(text: str) -> Any:
    """The YAML value for a property text: booleans and numbers unquoted when they read back the same."""
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", text):
        number = float(text)
        if repr(number) == text:
            return number
    return text


def _clean_text(text: str) -> str:
    """Whitespace-normalised documentation text (paragraphs kept)."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip())]
    return "\n\n".join(p for p in paragraphs if p)


def _xml_comment(text: str, indent: str) -> str:
    body = _clean_text(text).replace("--", "- -")
    wrapped: list[str] = []
    for paragraph in body.split("\n\n"):
        line = ""
        for word in paragraph.split():
            if line and len(line) + 1 + len(word) > 92:
                wrapped.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        wrapped.append(line)
        wrapped.append("")
    wrapped = wrapped[:-1]
    inner = "\n".join(f"{indent}    {w}" if w else "" for w in wrapped)
    return f"{indent}<!--\n{inner}\n{indent}-->"


def _endpoint_xml(tag: str, endpoint: Endpoint) -> str:
    slot = "" if endpoint.slot is None else f"<slot>{endpoint.slot}</slot>"
    return (f"        <{tag}>{slot}<dll>{escape(endpoint.dll)}</dll>"
            f"<classname>{escape(endpoint.classname)}</classname></{tag}>")


def _endpoint_mapping(endpoint: Endpoint) -> dict[str, Any]:
    entry: dict[str, Any] = {"dll": endpoint.dll, "classname": endpoint.classname}
    if endpoint.slot is not None:
        entry["slot"] = endpoint.slot
    return entry


def _property_lines(properties: Mapping[str, str], indent: str) -> list[str]:
    return [f"{indent}<property name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in properties.items()]


def _stage_xml(stage: Stage) -> list[str]:
    i2, i3, i4 = " " * 8, " " * 12, " " * 16
    if stage.kind == "native":
        lines = [f"{i2}<gadget>"]
        if stage.name:
            lines.append(f"{i3}<name>{escape(stage.name)}</name>")
        lines.append(f"{i3}<dll>{escape(stage.dll)}</dll>")
        lines.append(f"{i3}<classname>{escape(stage.classname)}</classname>")
        lines.extend(_property_lines(stage.properties, i3))
        lines.append(f"{i2}</gadget>")
        return lines
    lines = [f"{i2}<external>"]
    if stage.kind == "python":
        lines.append(f"{i3}<execute name={quoteattr(stage.module)} target={quoteattr(stage.target)} type=\"python\"/>")
    else:
        served = ""
        if stage.module:
            served += f" name={quoteattr(stage.module)}"
        if stage.target:
            served += f" target={quoteattr(stage.target)}"
        address = stage.address or DEFAULT_CONNECT_ADDRESS
        lines.append(f"{i3}<connect port=\"{stage.port}\" address={quoteattr(address)}{served}/>")
    if stage.properties:
        lines.append(f"{i3}<configuration>")
        lines.extend(_property_lines(stage.properties, i4))
        lines.append(f"{i3}</configuration>")
    else:
        lines.append(f"{i3}<configuration/>")
    lines.append(f"{i2}</external>")
    return lines


# --------------------------------------------------------------------------- reading


def load_chain(path: PathLike) -> Chain:
    """Read a chain from ``path``: ``.xml`` (Gadgetron version-2 stream config) or ``.yaml``/``.yml``.

    Raises ValueError naming the file for an unreadable or malformed chain (FileNotFoundError
    for a missing file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"chain file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return chain_from_xml(text, name=path.stem, source=str(path))
    if suffix in (".yaml", ".yml"):
        return chain_from_yaml(text, source=str(path))
    raise ValueError(f"chain file {str(path)!r} must end in .xml, .yaml or .yml")


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(node: ElementTree.Element, tag: str) -> list[ElementTree.Element]:
    return [child for child in node if _local(child.tag) == tag]


def _child(node: ElementTree.Element, tag: str) -> ElementTree.Element | None:
    found = _children(node, tag)
    return found[0] if found else None


def _text(node: ElementTree.Element, tag: str) -> str:
    child = _child(node, tag)
    return "" if child is None or child.text is None else child.text.strip()


def _xml_properties(node: ElementTree.Element, where: str) -> dict[str, str]:
    """``<property name= value=/>`` and legacy ``<property><name/><value/></property>`` children."""
    properties: dict[str, str] = {}
    for prop in _children(node, "property"):
        v2 = "name" in prop.attrib and "value" in prop.attrib
        legacy = _child(prop, "name") is not None and _child(prop, "value") is not None
        if v2 == legacy:  # Gadgetron: "Unable to parse property" / "Ambiguous property parse"
            raise ValueError(f"{where}: cannot parse property "
                             f"{ElementTree.tostring(prop, encoding='unicode').strip()!r}")
        if v2:
            properties[prop.attrib["name"]] = prop.attrib["value"]
        else:
            properties[_text(prop, "name")] = _text(prop, "value")
    return properties


def _xml_endpoints(node: ElementTree.Element | None, tag: str, where: str) -> tuple[Endpoint, ...]:
    if node is None:
        return ()
    endpoints = []
    for item in _children(node, tag):
        dll, classname, slot_text = _text(item, "dll"), _text(item, "classname"), _text(item, "slot")
        if not dll or not classname:
            raise ValueError(f"{where}: every <{tag}> needs <dll> and <classname>")
        slot = None
        if slot_text:
            try:
                slot = int(slot_text)
            except ValueError:
                raise ValueError(f"{where}: <{tag}> {classname} has a non-integer <slot> {slot_text!r}") from None
        endpoints.append(Endpoint(dll, classname, slot))
    return tuple(endpoints)


def _comment_text(node: ElementTree.Element) -> str:
    return _clean_text(node.text or "")


def chain_from_xml(text: str, *, name: str = "chain", source: str = "") -> Chain:
    """Parse a Gadgetron version-2 stream config (see the module docstring) into a :class:`Chain`."""
    where = source or name
    parser = ElementTree.XMLParser(target=ElementTree.TreeBuilder(insert_comments=True))
    try:
        root = ElementTree.fromstring(text, parser=parser)
    except ElementTree.ParseError as exc:
        raise ValueError(f"{where}: not well-formed XML ({exc})") from None
    if _local(root.tag) == "gadgetronStreamConfiguration":
        raise ValueError(f"{where}: a legacy (version 1) <gadgetronStreamConfiguration>; "
                         "only version-2 <configuration> chains are supported")
    if _local(root.tag) != "configuration":
        raise ValueError(f"{where}: the root element must be <configuration>, got <{_local(root.tag)}>")
    version = _text(root, "version")
    if version != "2":
        raise ValueError(f"{where}: <configuration> must have <version>2</version> (Gadgetron's V2 parser), "
                         f"got {version!r}")
    description = ""
    for child in root:
        if child.tag is ElementTree.Comment:
            description = _comment_text(child)
            break
        if _local(child.tag) in ("readers", "writers", "stream"):
            break
    streams = _children(root, "stream")
    if len(streams) != 1:
        raise ValueError(f"{where}: needs exactly one <stream>, found {len(streams)}")
    stages: list[Stage] = []
    note = ""
    for node in streams[0]:
        if node.tag is ElementTree.Comment:
            note = _comment_text(node)
            continue
        tag = _local(node.tag)
        position = f"{where}: stream node {len(stages) + 1}"
        if tag == "gadget":
            stage = Stage(kind="native", name=_text(node, "name"), dll=_text(node, "dll"),
                          classname=_text(node, "classname"), properties=_xml_properties(node, position),
                          note=note)
            if not stage.dll or not stage.classname:
                raise ValueError(f"{position}: <gadget> needs <dll> and <classname>")
        elif tag == "external":
            stage = _xml_external(node, position, note)
        else:
            raise ValueError(f"{position}: <{tag}> nodes are not supported (only <gadget> and <external>)")
        stages.append(stage)
        note = ""
    return Chain(name=name, stages=tuple(stages), readers=_xml_endpoints(_child(root, "readers"), "reader", where),
                 writers=_xml_endpoints(_child(root, "writers"), "writer", where), description=description,
                 source=source)


def _xml_external(node: ElementTree.Element, where: str, note: str) -> Stage:
    configuration = _child(node, "configuration")
    properties = {} if configuration is None else _xml_properties(configuration, where)
    for action in node:
        tag = _local(action.tag)
        if tag == "execute":
            kind = action.attrib.get("type", "")
            if kind != "python":
                raise ValueError(f"{where}: <execute type={kind!r}> is not supported (only type=\"python\")")
            module, target = action.attrib.get("name", ""), action.attrib.get("target", "")
            if not module or not target:
                raise ValueError(f"{where}: <execute> needs name (the module) and target (the gadget class)")
            return Stage(kind="python", module=module, target=target, properties=properties, note=note)
        if tag == "connect":
            port_text = action.attrib.get("port", "")
            try:
                port = int(port_text)
            except ValueError:
                raise ValueError(f"{where}: <connect> needs an integer port, got {port_text!r}") from None
            return Stage(kind="connect", address=action.attrib.get("address", "") or DEFAULT_CONNECT_ADDRESS,
                         port=port, module=action.attrib.get("name", ""), target=action.attrib.get("target", ""),
                         properties=properties, note=note)
    raise ValueError(f"{where}: <external> needs an <execute> or <connect> action")


def _check_keys(mapping: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = [key for key in mapping if key not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")


def _yaml_endpoints(entries: Any, what: str, where: str) -> tuple[Endpoint, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ValueError(f"{where}: {what} must be a list")
    endpoints = []
    for number, entry in enumerate(entries, 1):
        place = f"{where}: {what}[{number}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{place} must be a mapping with dll and classname")
        _check_keys(entry, _ENDPOINT_KEYS, place)
        dll, classname, slot = entry.get("dll"), entry.get("classname"), entry.get("slot")
        if not isinstance(dll, str) or not dll or not isinstance(classname, str) or not classname:
            raise ValueError(f"{place} needs non-empty dll and classname strings")
        if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int)):
            raise ValueError(f"{place}: slot must be an integer, got {slot!r}")
        endpoints.append(Endpoint(dll, classname, slot))
    return tuple(endpoints)


def _yaml_string(entry: Mapping[str, Any], key: str, place: str, required: bool) -> str:
    value = entry.get(key)
    if value is None:
        if required:
            raise ValueError(f"{place} needs {key!r}")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{place}: {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def chain_from_mapping(document: Mapping[str, Any], *, source: str = "") -> Chain:
    """A :class:`Chain` from a YAML document's data (see the module docstring for the schema)."""
    where = source or "chain"
    if not isinstance(document, Mapping):
        raise ValueError(f"{where}: a chain document must be a mapping")
    _check_keys(document, _CHAIN_KEYS, where)
    name = document.get("name") or (Path(source).stem if source else "")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: 'name' must be a non-empty string")
    description = document.get("description") or ""
    if not isinstance(description, str):
        raise ValueError(f"{where}: 'description' must be text")
    entries = document.get("stages")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: 'stages' must be a non-empty list")
    stages = []
    for number, entry in enumerate(entries, 1):
        place = f"{where}: stages[{number}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{place} must be a mapping")
        kind = entry.get("kind")
        if kind not in STAGE_KINDS:
            raise ValueError(f"{place}: kind must be one of {STAGE_KINDS}, got {kind!r}")
        _check_keys(entry, _STAGE_KEYS[kind], place)
        raw = entry.get("properties") or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"{place}: properties must be a mapping of name: value")
        try:
            properties = {str(k): property_text(v) for k, v in raw.items()}
        except ValueError as exc:
            raise ValueError(f"{place}: {exc}") from None
        note = entry.get("note") or ""
        if not isinstance(note, str):
            raise ValueError(f"{place}: note must be text")
        note = _clean_text(note)
        if kind == "native":
            stage = Stage(kind="native", name=_yaml_string(entry, "name", place, False),
                          dll=_yaml_string(entry, "dll", place, True),
                          classname=_yaml_string(entry, "classname", place, True), properties=properties, note=note)
        elif kind == "python":
            stage = Stage(kind="python", module=_yaml_string(entry, "module", place, True),
                          target=_yaml_string(entry, "target", place, True), properties=properties, note=note)
        else:
            port = entry.get("port")
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"{place}: port must be an integer in 1..65535, got {port!r}")
            stage = Stage(kind="connect", address=_yaml_string(entry, "address", place, False) or DEFAULT_CONNECT_ADDRESS,
                          port=port, module=_yaml_string(entry, "module", place, False),
                          target=_yaml_string(entry, "target", place, False), properties=properties, note=note)
        stages.append(stage)
    return Chain(name=name, stages=tuple(stages), readers=_yaml_endpoints(document.get("readers"), "readers", where),
                 writers=_yaml_endpoints(document.get("writers"), "writers", where),
                 description=_clean_text(description), source=source)


def chain_from_yaml(text: str, *, source: str = "") -> Chain:
    """Parse a YAML chain (see the module docstring)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source or 'chain'}: not valid YAML ({exc})") from None
    return chain_from_mapping(document, source=source)


# --------------------------------------------------------------------------- python gadgets


def gadget_class(module: str, target: str, *, where: str = "chain") -> type[Gadget]:
    """Import ``module`` and return its :class:`~gadgets.stream.Gadget` subclass ``target``.

    Raises ValueError naming ``where`` when the module cannot be imported or ``target`` is not a
    Gadget class (gadgetron-python function targets cannot run in the local runner).
    """
    if not _MODULE_NAME.match(module or "") or not _IDENTIFIER.match(target or ""):
        raise ValueError(f"{where}: {module!r}/{target!r} is not a module name and class name")
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"{where}: cannot import module {module!r} ({exc})") from None
    cls = getattr(imported, target, None)
    if cls is None:
        raise ValueError(f"{where}: module {module!r} has no {target!r}")
    if not (isinstance(cls, type) and issubclass(cls, Gadget)):
        raise ValueError(f"{where}: {module}.{target} is not a gadgets.stream.Gadget class, "
                         "so the local runner cannot run it")
    return cls


def validate_stage(stage: Stage, chain_name: str = "chain") -> type[Gadget]:
    """Check a python/connect stage: importable gadget class and valid parameters; return the class."""
    module, target = stage.module, stage.target
    if stage.kind == "connect" and not (module and target):
        module, target = _served_gadget(stage, chain_name)
    if stage.kind not in ("python", "connect"):
        raise ValueError(f"chain {chain_name!r}: stage {stage.label} is not a Python stage")
    where = f"chain {chain_name!r}, stage {stage.label}"
    cls = gadget_class(module, target, where=where)
    parse_params(cls.PARAMETERS, dict(stage.properties), cls.gadget_name())
    return cls


def _served_gadget(stage: Stage, chain_name: str) -> tuple[str, str]:
    if stage.module and stage.target:
        return stage.module, stage.target
    if stage.port in KNOWN_WORKERS:
        return KNOWN_WORKERS[int(stage.port)]
    raise ValueError(f"chain {chain_name!r}: the <connect> stage to port {stage.port} does not say which gadget "
                     "the worker serves (name=/target= attributes, or module/target in YAML), so it cannot run "
                     "in-process; use connect='socket' to reach the running worker")


# --------------------------------------------------------------------------- native equivalents


@dataclass(frozen=True)
class NativeEquivalent:
    """How the local runner runs a run of native gadgets: ``classnames`` (consecutive native
    stages, in order) become one Python gadget ``module.target`` configured by
    ``convert(list of the native stages' properties) -> Python parameters`` (None: identity)."""

    classnames: tuple[str, ...]
    module: str
    target: str
    convert: Callable[[Sequence[Mapping[str, str]]], Mapping[str, Any] | None]
    note: str = ""


class _NativeProperties:
    """Reads a native gadget's text properties with Gadgetron's defaults; unknown names fail."""

    def __init__(self, classname: str, properties: Mapping[str, str], known: Mapping[str, str],
                 ignored: Sequence[str] = ()) -> None:
        unknown = [name for name in properties if name not in known and name not in ignored]
        if unknown:
            raise ValueError(f"{classname}: property {unknown[0]!r} is not one the local runner knows "
                             f"(known: {', '.join(sorted(set(known) | set(ignored)))})")
        for name in ignored:
            if name in properties:
                logger.debug("%s: property %s=%r has no meaning in the local runner; ignored",
                             classname, name, properties[name])
        self.values = {name: properties.get(name, default) for name, default in known.items()}

    def __getitem__(self, name: str) -> str:
        return self.values[name].strip()


def _dimension(value: str) -> str:
    """Gadgetron's empty dimension is 'none'."""
    return value.strip() or "none"


_COMMON_IGNORED = ("verbose", "debug_folder", "perform_timing")


def _noise_adjust(props: Sequence[Mapping[str, str]]) -> Mapping[str, Any] | None:
    p = _NativeProperties("NoiseAdjustGadget", props[0], {
        "perform_noise_adjust": "true", "pass_nonconformant_data": "true", "noise_dwell_time_us_preset": "0",
        "scale_only_channels_by_name": ""},
        ignored=_COMMON_IGNORED + ("noise_dependency_prefix", "noise_dependency_folder"))
    if p["noise_dwell_time_us_preset"] not in ("", "0", "0.0"):
        raise ValueError("NoiseAdjustGadget: noise_dwell_time_us_preset is not supported by the Python NoiseAdjust")
    if p["scale_only_channels_by_name"]:
        raise ValueError("NoiseAdjustGadget: scale_only_channels_by_name is not supported by the Python NoiseAdjust")
    if p["perform_noise_adjust"].lower() in ("false", "0", "no", "off"):
        return None
    return {"pass_nonconformant_data": p["pass_nonconformant_data"]}


def _remove_oversampling(props: Sequence[Mapping[str, str]]) -> Mapping[str, Any] | None:
    _NativeProperties("RemoveROOversamplingGadget", props[0], {}, ignored=_COMMON_IGNORED)
    return {}


def _accumulate_and_buffer(props: Sequence[Mapping[str, str]]) -> Mapping[str, Any] | None:
    trigger = _NativeProperties("AcquisitionAccumulateTriggerGadget", props[0],
                                {"trigger_dimension": "", "sorting_dimension": ""}, ignored=_COMMON_IGNORED)
    buffer = _NativeProperties("BucketToBufferGadget", props[1], {
        "N_dimension": "", "S_dimension": "", "split_slices": "false", "ignore_segment": "false"},
        ignored=_COMMON_IGNORED)
    return {
        "trigger_dimension": _dimension(trigger["trigger_dimension"]),
        "sorting_dimension": _dimension(trigger["sorting_dimension"]),
        "N_dimension": _dimension(buffer["N_dimension"]),
        "S_dimension": _dimension(buffer["S_dimension"]),
        "split_slices": buffer["split_slices"],
        "ignore_segment": buffer["ignore_segment"],
    }


#: Native Gadgetron gadgets the local runner can run, keyed by the first classname of each run.
NATIVE_EQUIVALENTS: dict[str, NativeEquivalent] = {}


def register_native_equivalent(equivalent: NativeEquivalent) -> None:
    """Add (or replace) a native equivalent, keyed by its first classname."""
    if not equivalent.classnames:
        raise ValueError("a native equivalent needs at least one classname")
    NATIVE_EQUIVALENTS[equivalent.classnames[0]] = equivalent


for _equivalent in (
    NativeEquivalent(("NoiseAdjustGadget",), "gadgets.noise_adjust", "NoiseAdjust", _noise_adjust,
                     note="needs no storage server; Gadgetron's native gadget fails a noise scan without one"),
    NativeEquivalent(("RemoveROOversamplingGadget",), "gadgets.remove_oversampling", "RemoveOversampling",
                     _remove_oversampling),
    NativeEquivalent(("AcquisitionAccumulateTriggerGadget", "BucketToBufferGadget"), "gadgets.buffer",
                     "AcquisitionBuffer", _accumulate_and_buffer,
                     note="native defaults (no trigger, no N/S dimension, no split) mapped explicitly"),
):
    register_native_equivalent(_equivalent)


@dataclass(frozen=True)
class PlannedStep:
    """One step of the local runner: the stages it covers, and the gadget (or socket) that runs them."""

    stages: tuple[Stage, ...]
    module: str
    target: str
    params: Mapping[str, Any] | None
    mode: str  # "gadget", "identity" or "socket"

    @property
    def label(self) -> str:
        return "+".join(stage.label for stage in self.stages)


def plan_chain(chain: Chain, *, connect: str = "inprocess") -> list[PlannedStep]:
    """How :func:`run_chain` would run ``chain``: native runs mapped, every gadget validated.

    Raises ValueError naming the chain and the stage for a native gadget without a Python
    equivalent (or an unsupported property), an unimportable gadget or invalid parameters.
    """
    if connect not in CONNECT_MODES:
        raise ValueError(f"connect must be one of {CONNECT_MODES}, got {connect!r}")
    steps: list[PlannedStep] = []
    stages = list(chain.stages)
    index = 0
    while index < len(stages):
        stage = stages[index]
        if stage.kind == "native":
            equivalent = NATIVE_EQUIVALENTS.get(stage.classname)
            if equivalent is None:
                partner = [e for e in NATIVE_EQUIVALENTS.values() if stage.classname in e.classnames[1:]]
                hint = (f" on its own (only after {' + '.join(partner[0].classnames[:-1])})" if partner else "")
                raise ValueError(
                    f"chain {chain.name!r}: native gadget {stage.classname} (stage {index + 1}) has no Python "
                    f"equivalent{hint}; the local runner knows {', '.join(sorted(' + '.join(e.classnames) for e in NATIVE_EQUIVALENTS.values()))}")
            run = stages[index:index + len(equivalent.classnames)]
            if [s.classname for s in run] != list(equivalent.classnames) or any(s.kind != "native" for s in run):
                raise ValueError(
                    f"chain {chain.name!r}: native gadget {stage.classname} (stage {index + 1}) has a Python "
                    f"equivalent only as the sequence {' -> '.join(equivalent.classnames)}")
            try:
                params = equivalent.convert([s.properties for s in run])
            except ValueError as exc:
                raise ValueError(f"chain {chain.name!r}, stage {index + 1}: {exc}") from None
            if params is None:
                steps.append(PlannedStep(tuple(run), "", "", None, "identity"))
            else:
                cls = gadget_class(equivalent.module, equivalent.target, where=f"chain {chain.name!r}")
                try:
                    parse_params(cls.PARAMETERS, params, cls.gadget_name())
                except ValueError as exc:
                    raise ValueError(f"chain {chain.name!r}, stage {index + 1} ({stage.classname}): {exc}") from None
                steps.append(PlannedStep(tuple(run), equivalent.module, equivalent.target, dict(params), "gadget"))
            if stage.classname == "NoiseAdjustGadget" and params is not None:
                logger.info("chain %s: native NoiseAdjustGadget runs as the Python NoiseAdjust (on a Gadgetron "
                            "server without a storage server the native gadget fails a scan with a noise "
                            "measurement)", chain.name)
            index += len(run)
            continue
        if stage.kind == "connect" and connect == "socket":
            if stage.port is None:
                raise ValueError(f"chain {chain.name!r}: connect stage {index + 1} has no port")
            steps.append(PlannedStep((stage,), stage.module, stage.target, dict(stage.properties), "socket"))
        else:
            validate_stage(stage, chain.name)
            module, target = (stage.module, stage.target) if stage.kind == "python" else _served_gadget(stage, chain.name)
            steps.append(PlannedStep((stage,), module, target, dict(stage.properties), "gadget"))
        index += 1
    return steps


# --------------------------------------------------------------------------- the external protocol, Gadgetron's side


_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
MESSAGE_CONFIG, MESSAGE_HEADER, MESSAGE_CLOSE, MESSAGE_ERROR = 2, 3, 4, 8


class ExternalGadgetError(RuntimeError):
    """An external gadget (a worker reached over a socket) reported an error or broke the protocol.

    ``kind``: ``"connect"`` (it could not be reached), ``"connection"`` (the connection broke or
    timed out before its CLOSE, or it spoke something unreadable) or ``"reported"`` (it sent an
    ERROR).
    """

    def __init__(self, message: str, kind: str = "connection") -> None:
        super().__init__(message)
        self.kind = kind


def configuration_xml(properties: Mapping[str, str]) -> str:
    """The CONFIG text Gadgetron sends an external node: its ``<configuration>`` as pugixml saves it."""
    if not properties:
        return '<?xml version="1.0"?>\n<configuration />\n'
    lines = ['<?xml version="1.0"?>', "<configuration>"]
    lines.extend(f"\t<property name={quoteattr(k)} value={quoteattr(v)} />" for k, v in properties.items())
    lines.append("</configuration>")
    return "\n".join(lines) + "\n"


class _SocketSource:
    """``read(n)``: exactly n bytes or ExternalGadgetError (peer gone); each read is charged to
    ``budget`` first (MessageTooLarge before anything is allocated)."""

    def __init__(self, sock: socket.socket, where: str, budget: MessageBudget | None = None) -> None:
        self.sock = sock
        self.where = where
        self.budget = budget

    def read(self, n: int) -> bytes | bytearray:
        if self.budget is not None and n > 0:
            self.budget.charge(n)
        try:
            return recv_exactly(self.sock, n)
        except TimeoutError:
            raise ExternalGadgetError(f"{self.where}: no answer within the timeout") from None
        except PeerVanished as exc:
            if exc.__cause__ is not None:  # reset
                raise ExternalGadgetError(f"{self.where}: connection lost ({exc.__cause__})") from None
            raise ExternalGadgetError(f"{self.where}: the peer closed the connection without CLOSE") from None
        except OSError as exc:
            raise ExternalGadgetError(f"{self.where}: connection lost ({exc})") from None


def _sender_failure(exc: BaseException, where: str) -> BaseException:
    """What the sender thread's failure becomes: a broken connection is an ExternalGadgetError."""
    if isinstance(exc, OSError):
        return ExternalGadgetError(f"{where}: connection lost while sending ({exc})")
    return exc


class ExternalPeer:
    """Gadgetron's side of one external node: connect to a worker, stream items, read results.

    ``run(items, header_xml)`` connects to ``address:port``, sends CONFIG (the node's
    configuration), HEADER, every item (from a sender thread, so large streams cannot deadlock)
    and CLOSE, and yields what comes back until the worker's CLOSE. An ERROR (8) from the worker
    raises :class:`ExternalGadgetError` with its text; so does a vanished worker.
    """

    def __init__(self, address: str, port: int, properties: Mapping[str, str] | None = None, *,
                 timeout: float = 600.0, connect_timeout: float = 10.0) -> None:
        self.address = address or DEFAULT_CONNECT_ADDRESS
        self.port = int(port)
        self.properties = dict(properties or {})
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    def run(self, items: Iterable[Any], header_xml: str) -> Iterator[Any]:
        from gadgetron.external import readers
        from gadgetron.types.image_array import read_image_array
        from gadgetron.types.recon_data import read_recon_data

        read_by_id: dict[int, Callable[[Any], Any]] = {
            1008: readers.read_acquisition, 1022: readers.read_image, 1026: readers.read_waveform,
            1023: read_recon_data, 1024: read_image_array,
        }
        read_by_id.update(SAFE_READERS)  # size checked before allocating: the peer's lengths are untrusted
        where = f"external gadget at {self.address}:{self.port}"
        try:
            parsed = ismrmrd.xsd.CreateFromDocument(header_xml)
        except Exception:  # noqa: BLE001 - a header the chain accepted; the limit then is the ceiling
            parsed = None
        budget = MessageBudget(*message_limit(parsed))
        try:
            sock = socket.create_connection((self.address, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise ExternalGadgetError(f"cannot connect to the {where}: {exc}", "connect") from None
        sock.settimeout(self.timeout)
        failure: queue.Queue[BaseException] = queue.Queue()
        stop = threading.Event()

        def send() -> None:
            try:
                config = configuration_xml(self.properties).encode("utf-8")
                sock.sendall(_U16.pack(MESSAGE_CONFIG) + _U32.pack(len(config)) + config)
                header = header_xml.encode("utf-8")
                sock.sendall(_U16.pack(MESSAGE_HEADER) + _U32.pack(len(header)) + header)
                for item in items:
                    if stop.is_set():
                        return
                    sock.sendall(encode_item(item))
                sock.sendall(_U16.pack(MESSAGE_CLOSE))
            except BaseException as exc:  # reported by the reading side
                failure.put(exc)

        sender = threading.Thread(target=send, name=f"external-{self.port}-sender", daemon=True)
        sender.start()
        source = _SocketSource(sock, where, budget)
        try:
            while True:
                budget.begin()
                try:
                    (message_id,) = _U16.unpack(source.read(2))
                except ExternalGadgetError:
                    if not failure.empty():
                        raise _sender_failure(failure.get(), where) from None
                    raise
                if message_id == MESSAGE_CLOSE:
                    break
                if message_id == MESSAGE_ERROR:
                    (length,) = _U64.unpack(source.read(8))
                    if length > TEXT_LIMIT_BYTES:  # never allocate what an ERROR claims
                        raise ExternalGadgetError(f"{where} sent an ERROR claiming {length} bytes of text "
                                                  f"(more than {TEXT_LIMIT_BYTES}); connection dropped")
                    text = bytes(source.read(length)).decode("utf-8", errors="replace")
                    raise ExternalGadgetError(f"{where} reported: {text}", "reported")
                reader = read_by_id.get(message_id)
                if reader is None:
                    raise ExternalGadgetError(f"{where} sent message id {message_id}, which cannot be read")
                budget.begin(f"{MESSAGE_NAMES.get(message_id, 'message')} ({message_id}) message")
                try:
                    item = reader(source)
                except (MessageTooLarge, ValueError, struct.error) as exc:
                    raise ExternalGadgetError(f"{where} sent an unreadable message: {exc}") from None
                yield item
            sender.join(self.timeout)
            if not failure.empty():
                raise _sender_failure(failure.get(), where)
        finally:
            stop.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            sender.join(5.0)


# --------------------------------------------------------------------------- the local runner


def _header_pair(header: str | bytes | ismrmrd.xsd.ismrmrdHeader) -> tuple[ismrmrd.xsd.ismrmrdHeader, str]:
    if isinstance(header, bytes):
        header = header.decode("utf-8")
    if isinstance(header, str):
        try:
            return ismrmrd.xsd.CreateFromDocument(header), header
        except Exception as exc:  # xsdata raises several parser error types
            raise ValueError(f"header_xml is not a valid ISMRMRD header: {exc}") from None
    if isinstance(header, ismrmrd.xsd.ismrmrdHeader):
        return header, ismrmrd.xsd.ToXML(header)
    raise ValueError(f"header must be ISMRMRD XML text or an ismrmrd.xsd.ismrmrdHeader, got {type(header).__name__}")


def build_gadgets(chain: Chain, *, connect: str = "inprocess") -> list[tuple[PlannedStep, Any]]:
    """The configured gadget (or :class:`ExternalPeer`, or None for identity) of every planned step."""
    built: list[tuple[PlannedStep, Any]] = []
    for step in plan_chain(chain, connect=connect):
        if step.mode == "identity":
            built.append((step, None))
        elif step.mode == "socket":
            stage = step.stages[0]
            built.append((step, ExternalPeer(stage.address, int(stage.port or 0), stage.properties)))
        else:
            cls = gadget_class(step.module, step.target, where=f"chain {chain.name!r}")
            try:
                built.append((step, cls.from_config(dict(step.params or {}))))
            except ValueError as exc:
                raise ValueError(f"chain {chain.name!r}, stage {step.label}: {exc}") from None
    return built


def run_chain(chain: Chain, header_xml: str | bytes | ismrmrd.xsd.ismrmrdHeader, items: Iterable[Any], *,
              connect: str = "inprocess") -> Iterator[Any]:
    """Run ``chain`` locally over ``items`` (acquisitions, waveforms...); return the output iterator.

    The chain is planned and every gadget configured before this returns (so a bad chain raises
    ValueError at once); the items are processed lazily as the result is iterated. ``connect``:
    ``"inprocess"`` runs ``<connect>`` stages as the gadget they serve, ``"socket"`` streams to
    the worker at their address and port (:class:`ExternalPeer`).
    """
    header, xml_text = _header_pair(header_xml)
    built = build_gadgets(chain, connect=connect)
    logger.info("running chain %s locally: %s", chain.name, " -> ".join(step.label for step, _ in built))

    def pipeline() -> Iterator[Any]:
        stream: Iterator[Any] = iter(items)
        for step, runner in built:
            if runner is None:
                continue
            if isinstance(runner, ExternalPeer):
                stream = runner.run(stream, xml_text)
            else:
                stream = runner(stream, header)
        yield from stream

    return pipeline()


__all__ = [
    "Chain", "Endpoint", "Stage", "NativeEquivalent", "NATIVE_EQUIVALENTS", "KNOWN_WORKERS", "PlannedStep",
    "ExternalPeer", "ExternalGadgetError", "load_chain", "chain_from_xml", "chain_from_yaml", "chain_from_mapping",
    "gadget_class", "validate_stage", "plan_chain", "build_gadgets", "run_chain", "register_native_equivalent",
    "configuration_xml", "encode_item", "property_text",
]
