"""The chain format: Gadgetron version-2 stream configs and their YAML twins, read, checked and written.

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
  CONFIG message, parsed there by :mod:`gadgets.protocol.params`). Gadgetron reads nothing else from a
  ``<connect>`` element; this project adds ``name``/``target`` attributes to it, naming the
  gadget the worker on that port serves (``gadgets.recon`` / ``CardioMMRecon``), so the local
  runner (:mod:`gadgets.tools.chain_runner`) can run it in-process. Gadgetron ignores them.

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
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import yaml

from ..io import PathLike

STAGE_KINDS = ("native", "python", "connect")
#: The address Gadgetron uses when ``<connect>`` has none.
DEFAULT_CONNECT_ADDRESS = "localhost"

_CHAIN_KEYS = ("name", "description", "readers", "writers", "stages")
_ENDPOINT_KEYS = ("dll", "classname", "slot")
_STAGE_KEYS = {
    "native": ("kind", "name", "dll", "classname", "properties", "note"),
    "python": ("kind", "module", "target", "properties", "note"),
    "connect": ("kind", "address", "port", "module", "target", "properties", "note"),
}


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


def _yaml_entries(entries: Any, what: str, where: str, needs: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(place, entry)`` for each entry of the YAML list ``what``; ValueError naming the place when
    ``entries`` is not a list or an entry is not a mapping (``needs``: what the message adds)."""
    if not isinstance(entries, list):
        raise ValueError(f"{where}: {what} must be a list")
    for number, entry in enumerate(entries, 1):
        place = f"{where}: {what}[{number}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{place} must be a mapping{needs}")
        yield place, entry


def _yaml_endpoints(entries: Any, what: str, where: str) -> tuple[Endpoint, ...]:
    if entries is None:
        return ()
    endpoints = []
    for place, entry in _yaml_entries(entries, what, where, " with dll and classname"):
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
    for place, entry in _yaml_entries(entries, "stages", where):
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


__all__ = ["Chain", "Endpoint", "Stage", "STAGE_KINDS", "DEFAULT_CONNECT_ADDRESS", "load_chain", "chain_from_xml",
           "chain_from_yaml", "chain_from_mapping", "property_text"]
