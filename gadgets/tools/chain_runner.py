"""The local runner: a chain (:mod:`gadgets.protocol.chain_format`) run in this process, without Gadgetron.

:func:`run_chain` executes it:

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
  runner playing Gadgetron's side of the external protocol
  (:class:`~gadgets.protocol.external_peer.ExternalPeer`).
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ismrmrd

from ..protocol.chain_format import Chain, Stage
from ..protocol.external_peer import ExternalPeer
from ..protocol.params import parse_params
from ..protocol.stream import Gadget

logger = logging.getLogger(__name__)

#: How the local runner reaches ``connect`` stages.
CONNECT_MODES = ("inprocess", "socket")
#: Gadgets the project's warm workers serve, by port, for ``<connect>`` nodes that do not say.
KNOWN_WORKERS: dict[int, tuple[str, str]] = {18000: ("gadgets.recon", "CardioMMRecon")}

_MODULE_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


# --------------------------------------------------------------------------- python gadgets


def gadget_class(module: str, target: str, *, where: str = "chain") -> type[Gadget]:
    """Import ``module`` and return its :class:`~gadgets.protocol.stream.Gadget` subclass ``target``.

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
        raise ValueError(f"{where}: {module}.{target} is not a gadgets.protocol.stream.Gadget class, "
                         "so the local runner cannot run it")
    return cls


def validate_stage(stage: Stage, chain_name: str = "chain") -> type[Gadget]:
    """Check a python/connect stage: importable gadget class and valid parameters; return the class."""
    module, target = stage.module, stage.target
    if stage.kind == "connect" and not (module and target):
        module, target = served_gadget(stage, chain_name)
    if stage.kind not in ("python", "connect"):
        raise ValueError(f"chain {chain_name!r}: stage {stage.label} is not a Python stage")
    where = f"chain {chain_name!r}, stage {stage.label}"
    cls = gadget_class(module, target, where=where)
    parse_params(cls.PARAMETERS, dict(stage.properties), cls.gadget_name())
    return cls


def served_gadget(stage: Stage, chain_name: str) -> tuple[str, str]:
    """The ``(module, target)`` of the gadget a python/connect stage runs (a ``<connect>`` stage that does not
    say: the one :data:`KNOWN_WORKERS` names for its port); ValueError when neither says."""
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
            module, target = (stage.module, stage.target) if stage.kind == "python" else served_gadget(stage, chain.name)
            steps.append(PlannedStep((stage,), module, target, dict(stage.properties), "gadget"))
        index += 1
    return steps


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
        for _step, runner in built:
            if runner is None:
                continue
            if isinstance(runner, ExternalPeer):
                stream = runner.run(stream, xml_text)
            else:
                stream = runner(stream, header)
        yield from stream

    return pipeline()


__all__ = [
    "NativeEquivalent", "NATIVE_EQUIVALENTS", "KNOWN_WORKERS", "CONNECT_MODES", "PlannedStep", "gadget_class",
    "validate_stage", "served_gadget", "plan_chain", "build_gadgets", "run_chain", "register_native_equivalent",
]
