"""One typed parser for gadget parameters, from Gadgetron's XML or from a YAML mapping.

Each gadget declares its parameters once, as a sequence of :class:`Param`::

    PARAMETERS = (
        Param("n_coils", int, None, low=1, doc="virtual coils to keep"),
        Param("trigger_dimension", str, "slice", choices=("slice", "none", ...)),
    )

Values come from two places and go through the same conversion:

* the CONFIG message Gadgetron sends an external node: the node's ``<configuration>`` element,
  serialised by pugixml, e.g. ::

      <?xml version="1.0"?>
      <configuration>
          <property name="n_coils" value="8" />
      </configuration>

  (``<property><name>..</name><value>..</value></property>``, the legacy form Gadgetron also
  accepts, is read too). A node without a ``<configuration>`` element makes Gadgetron send only
  the XML declaration; that, an empty string and ``None`` all mean "no parameters";
* a YAML mapping (the ``chains/*.yaml`` twins and the local runner), whose values may already be
  ints, floats or bools.

Unknown or malformed parameters raise ``ValueError`` naming the gadget, the parameter and the
value. Conversions: ``bool`` accepts true/false/1/0/yes/no/on/off (any case) and Python bools;
``int`` accepts integers and integral strings (not bools, not 8.5); ``float`` accepts numbers and
numeric strings (not NaN); ``str`` accepts strings (and YAML scalars, as text). A parameter whose
default is ``None`` is optional: ``None``, ``""`` and ``"none"`` leave it unset. ``choices`` are
compared case-insensitively and the canonical spelling is returned.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NONE = frozenset({"", "none", "null"})


@dataclass(frozen=True)
class Param:
    """One gadget parameter: name, type (bool, int, float or str), default, optional constraints.

    ``choices`` restricts a str parameter to a set of words; ``low``/``high`` bound an int or
    float parameter (inclusive); ``check`` is an extra predicate returning an error text or None.
    A default of ``None`` makes the parameter optional (unset unless given).
    """

    name: str
    type: type
    default: Any
    choices: tuple[str, ...] | None = None
    doc: str = ""
    low: float | None = None
    high: float | None = None
    check: Callable[[Any], str | None] | None = None

    def __post_init__(self) -> None:
        if self.type not in (bool, int, float, str):
            raise ValueError(f"Param {self.name!r}: type must be bool, int, float or str, got {self.type!r}")
        if self.choices is not None and self.type is not str:
            raise ValueError(f"Param {self.name!r}: choices need type str")


class Params(Mapping[str, Any]):
    """Parsed, validated parameter values: a read-only mapping with attribute access."""

    def __init__(self, gadget: str, values: Mapping[str, Any]) -> None:
        self._gadget = gadget
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"{self.__dict__.get('_gadget', 'gadget')} has no parameter {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Params[{self._gadget}]({inner})"


def _fail(gadget: str, param: Param, value: Any, expected: str) -> ValueError:
    return ValueError(f"{gadget}: parameter {param.name!r} has invalid value {value!r}: expected {expected}")


def convert(param: Param, value: Any, gadget: str) -> Any:
    """Convert and validate one raw ``value`` (XML text or YAML scalar) for ``param``."""
    if param.default is None and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
        return None
    if value is None:
        raise _fail(gadget, param, value, f"a {param.type.__name__}")
    text = value.strip() if isinstance(value, str) else None
    result: Any
    if param.type is bool:
        if isinstance(value, bool):
            result = value
        elif isinstance(value, int) and value in (0, 1):
            result = bool(value)
        elif text is not None and text.lower() in _TRUE:
            result = True
        elif text is not None and text.lower() in _FALSE:
            result = False
        else:
            raise _fail(gadget, param, value, "a boolean (true/false/1/0/yes/no)")
    elif param.type is int:
        if isinstance(value, bool):
            raise _fail(gadget, param, value, "an integer")
        if isinstance(value, int):
            result = int(value)
        elif isinstance(value, float) and value.is_integer():
            result = int(value)
        elif text is not None:
            try:
                result = int(text, 10)
            except ValueError:
                raise _fail(gadget, param, value, "an integer") from None
        else:
            raise _fail(gadget, param, value, "an integer")
    elif param.type is float:
        if isinstance(value, bool):
            raise _fail(gadget, param, value, "a number")
        if isinstance(value, (int, float)):
            result = float(value)
        elif text is not None:
            try:
                result = float(text)
            except ValueError:
                raise _fail(gadget, param, value, "a number") from None
        else:
            raise _fail(gadget, param, value, "a number")
        if math.isnan(result):
            raise _fail(gadget, param, value, "a number (not NaN)")
    else:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            result = str(value).strip()
        elif isinstance(value, bool):
            result = "true" if value else "false"
        else:
            raise _fail(gadget, param, value, "a string")
        if param.choices is not None:
            lowered = {c.lower(): c for c in param.choices}
            if result.lower() not in lowered:
                raise _fail(gadget, param, value, "one of " + ", ".join(repr(c) for c in param.choices))
            result = lowered[result.lower()]
    if param.low is not None and result < param.low:
        raise _fail(gadget, param, value, f"a value >= {param.low}")
    if param.high is not None and result > param.high:
        raise _fail(gadget, param, value, f"a value <= {param.high}")
    if param.check is not None:
        problem = param.check(result)
        if problem:
            raise _fail(gadget, param, value, problem)
    return result


def parse_params(spec: Sequence[Param], values: Mapping[str, Any] | None, gadget: str) -> Params:
    """Validate ``values`` against ``spec``; missing parameters take their defaults.

    ``values`` maps parameter names to raw values (XML strings or YAML scalars). Raises
    ValueError for an unknown name or a malformed value, naming ``gadget``, the parameter and
    the value.
    """
    by_name = {p.name: p for p in spec}
    if values is not None and not isinstance(values, Mapping):
        raise ValueError(f"{gadget}: parameters must be a mapping, got {type(values).__name__}")
    values = dict(values or {})
    unknown = [name for name in values if name not in by_name]
    if unknown:
        name = unknown[0]
        known = ", ".join(sorted(by_name)) or "(none)"
        raise ValueError(
            f"{gadget}: unknown parameter {name!r} (value {values[name]!r}); known parameters: {known}"
        )
    parsed: dict[str, Any] = {}
    for param in spec:
        if param.name in values:
            parsed[param.name] = convert(param, values[param.name], gadget)
        else:
            parsed[param.name] = param.default
    return Params(gadget, parsed)


def config_properties(config: str | bytes | None, gadget: str = "gadget") -> dict[str, str]:
    """The ``name -> value`` properties of a Gadgetron external-node ``<configuration>`` XML text.

    ``None``, empty text and a bare XML declaration give ``{}``. Both the version-2 form
    ``<property name="..." value="..."/>`` and the legacy ``<property><name/><value/></property>``
    are read; a later duplicate wins (as in Gadgetron's own property map). Raises ValueError
    for text that is not XML, a root other than ``<configuration>``, or a malformed property.
    """
    if config is None:
        return {}
    if isinstance(config, bytes):
        try:
            config = config.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{gadget}: configuration is not UTF-8 text ({exc})") from None
    text = config.strip().rstrip("\x00").strip()
    if not text:
        return {}
    if text.startswith("<?xml") and text.endswith("?>") and text.count("<") == 1:
        return {}
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise ValueError(f"{gadget}: configuration is not valid XML ({exc}): {text[:200]!r}") from None
    if _local(root.tag) != "configuration":
        raise ValueError(f"{gadget}: configuration root must be <configuration>, got <{_local(root.tag)}>")
    properties: dict[str, str] = {}
    for node in root:
        if _local(node.tag) != "property":
            logger.debug("%s: ignoring <%s> in configuration", gadget, _local(node.tag))
            continue
        if "name" in node.attrib:
            if "value" not in node.attrib:
                raise ValueError(f"{gadget}: property {node.attrib['name']!r} has no value attribute")
            properties[node.attrib["name"]] = node.attrib["value"]
            continue
        name_node = _child(node, "name")
        value_node = _child(node, "value")
        if name_node is None or value_node is None:
            raise ValueError(
                f"{gadget}: malformed property {ElementTree.tostring(node, encoding='unicode').strip()!r}: "
                "needs name and value"
            )
        properties[(name_node.text or "").strip()] = (value_node.text or "").strip()
    return properties


def config_values(config: str | bytes | Mapping[str, Any] | None, gadget: str) -> Mapping[str, Any]:
    """A node's parameter values from Gadgetron's CONFIG XML text (str/bytes), a YAML mapping, or None
    (no values: the defaults); ValueError naming ``gadget`` for anything else."""
    if config is None or isinstance(config, (str, bytes)):
        return config_properties(config, gadget)
    if isinstance(config, Mapping):
        return config
    raise ValueError(f"{gadget}: configuration must be XML text or a mapping, got {type(config).__name__}")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(node: ElementTree.Element, name: str) -> ElementTree.Element | None:
    for child in node:
        if _local(child.tag) == name:
            return child
    return None
