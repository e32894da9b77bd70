"""gadgets.protocol.chain_format and gadgets.tools.chain_runner: the chains in chains/ (XML and YAML twins), the chain model and the local runner.

Every chain's XML and YAML are read into one model and must agree; every XML must be a
well-formed version-2 stream config as Gadgetron's V2 parser reads it; every Python stage must
name an importable gadget class whose own parameter parser accepts the stage's properties.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import ismrmrd
import numpy as np
import pytest
from gadgetron.external.connection import Connection
from gadgetron.types.recon_data import ReconData

from gadgets.buffer import AcquisitionBuffer
from gadgets.noise_adjust import NoiseAdjust
from gadgets.protocol.chain_format import Chain, Stage, chain_from_xml, chain_from_yaml, load_chain
from gadgets.protocol.external_peer import ExternalGadgetError
from gadgets.remove_oversampling import RemoveOversampling
from gadgets.tools.chain_runner import NATIVE_EQUIVALENTS, plan_chain, run_chain, validate_stage
from tests.gadgets.harness import EchoGadget, assert_items_equal, synthetic_scan

CHAINS_DIR = Path(__file__).resolve().parents[2] / "chains"
CHAIN_NAMES = ("cardiomm_cine_python", "cardiomm_cine_native", "cardiomm_cine_worker")


def _front_end(chain: Chain, n_stages: int) -> Chain:
    """The first ``n_stages`` stages of ``chain`` (acquisitions in, ReconData out)."""
    return Chain(name=f"{chain.name}[:{n_stages}]", stages=chain.stages[:n_stages], readers=chain.readers,
                 writers=chain.writers)


@pytest.mark.parametrize("name", CHAIN_NAMES)
def test_xml_and_yaml_twins_describe_the_same_chain(name: str) -> None:
    from_xml = load_chain(CHAINS_DIR / f"{name}.xml")
    from_yaml = load_chain(CHAINS_DIR / f"{name}.yaml")
    assert from_xml.semantic() == from_yaml.semantic()
    assert [s.kind for s in from_xml.stages] == [s.kind for s in from_yaml.stages]
    assert [(s.classname, s.module, s.target) for s in from_xml.stages] == \
        [(s.classname, s.module, s.target) for s in from_yaml.stages]
    assert [dict(s.properties) for s in from_xml.stages] == [dict(s.properties) for s in from_yaml.stages]
    assert from_yaml.name == name
    # The YAML's documentation is what the XML carries as comments.
    assert from_xml.description == from_yaml.description
    assert [s.note for s in from_xml.stages] == [s.note for s in from_yaml.stages]


@pytest.mark.parametrize("name", CHAIN_NAMES)
def test_xml_is_a_well_formed_version_2_stream_config(name: str) -> None:
    root = ElementTree.parse(CHAINS_DIR / f"{name}.xml").getroot()
    assert root.tag == "configuration"
    assert root.findtext("version") == "2"
    assert [child.tag for child in root] == ["version", "readers", "writers", "stream"]
    readers = {(r.findtext("classname"), r.findtext("slot")) for r in root.find("readers")}
    assert ("AcquisitionReader", "1008") in readers and ("WaveformReader", "1026") in readers
    assert all(r.findtext("dll") == "gadgetron_core_readers" for r in root.find("readers"))
    assert [w.findtext("classname") for w in root.find("writers")] == ["ImageWriter"]
    stream = list(root.find("stream"))
    assert stream and {node.tag for node in stream} <= {"gadget", "external"}
    for node in stream:
        properties = node.findall("property") if node.tag == "gadget" else node.find("configuration").findall("property")
        assert all(set(p.attrib) == {"name", "value"} for p in properties)
        if node.tag == "gadget":
            assert node.findtext("dll") and node.findtext("classname")
            continue
        actions = [child for child in node if child.tag in ("execute", "connect")]
        assert len(actions) == 1
        action = actions[0]
        if action.tag == "execute":  # Gadgetron runs `python -m gadgetron PORT name target`
            assert action.get("type") == "python" and action.get("name") and action.get("target")
        else:
            assert int(action.get("port")) == 18000 and action.get("address") == "localhost"


@pytest.mark.parametrize("name", CHAIN_NAMES)
def test_every_python_stage_names_a_gadget_with_valid_parameters(name: str) -> None:
    chain = load_chain(CHAINS_DIR / f"{name}.yaml")
    python_stages = [s for s in chain.stages if s.kind in ("python", "connect")]
    assert python_stages
    for stage in python_stages:
        cls = validate_stage(stage, chain.name)
        assert cls.__name__ == stage.target
        given = cls.from_config(dict(stage.properties)).params
        for key, text in stage.properties.items():  # each property reached the gadget's parser
            assert key in given
            assert str(given[key]).lower() == text.lower() or given[key] == type(given[key])(text)


def test_the_three_chains_end_with_the_same_recon() -> None:
    chains = [load_chain(CHAINS_DIR / f"{name}.xml") for name in CHAIN_NAMES]
    recon = [chain.stages[-1] for chain in chains]
    assert {(s.module, s.target) for s in recon} == {("gadgets.recon", "CardioMMRecon")}
    assert len({tuple(sorted(s.properties.items())) for s in recon}) == 1
    assert [s.kind for s in recon] == ["python", "python", "connect"]
    # native and worker chains share the native front end
    assert [s.semantic() for s in chains[1].stages[:5]] == [s.semantic() for s in chains[2].stages[:5]]


@pytest.mark.parametrize("name", CHAIN_NAMES)
def test_round_trips_through_xml_and_yaml(name: str) -> None:
    chain = load_chain(CHAINS_DIR / f"{name}.yaml")
    again_xml = chain_from_xml(chain.to_xml(), name=chain.name)
    again_yaml = chain_from_yaml(chain.to_yaml())
    assert again_xml.semantic() == chain.semantic() == again_yaml.semantic()
    assert again_yaml.description == chain.description and again_xml.description == chain.description


def test_native_stages_map_to_their_python_equivalents() -> None:
    steps = plan_chain(load_chain(CHAINS_DIR / "cardiomm_cine_native.xml"))
    assert [(s.module, s.target) for s in steps] == [
        ("gadgets.noise_adjust", "NoiseAdjust"), ("gadgets.remove_oversampling", "RemoveOversampling"),
        ("gadgets.buffer", "AcquisitionBuffer"), ("gadgets.coil_compression", "CoilCompression"),
        ("gadgets.recon", "CardioMMRecon")]
    assert [len(s.stages) for s in steps] == [1, 1, 2, 1, 1]
    assert steps[2].params == {"trigger_dimension": "slice", "sorting_dimension": "none", "N_dimension": "phase",
                               "S_dimension": "set", "split_slices": "true", "ignore_segment": "true"}
    assert set(NATIVE_EQUIVALENTS) >= {"NoiseAdjustGadget", "RemoveROOversamplingGadget",
                                       "AcquisitionAccumulateTriggerGadget"}


def _native(classname: str, **properties: str) -> Stage:
    return Stage(kind="native", dll="gadgetron_mricore", classname=classname, properties=properties)


def test_native_defaults_are_gadgetrons_not_the_python_gadgets() -> None:
    chain = Chain(name="defaults", stages=(_native("AcquisitionAccumulateTriggerGadget"),
                                           _native("BucketToBufferGadget")))
    (step,) = plan_chain(chain)
    gadget = AcquisitionBuffer.from_config(dict(step.params))
    # AcquisitionBuffer's own defaults are slice / auto / set; Gadgetron's are none / none / none.
    assert (gadget.params.trigger_dimension, gadget.params.N_dimension, gadget.params.S_dimension,
            gadget.params.split_slices) == ("none", "none", "none", False)


def test_native_noise_adjust_switched_off_runs_as_identity() -> None:
    chain = Chain(name="off", stages=(_native("NoiseAdjustGadget", perform_noise_adjust="false"),))
    (step,) = plan_chain(chain)
    assert step.mode == "identity"
    items = synthetic_scan(np.random.default_rng(3), n_slices=1, n_phases=1).acquisitions
    header = synthetic_scan(np.random.default_rng(3), n_slices=1, n_phases=1).header_xml
    assert_items_equal(list(run_chain(chain, header, items)), items)


@pytest.mark.parametrize("stages, message", [
    ((_native("GenericReconCartesianGrappaGadget"),), "GenericReconCartesianGrappaGadget"),
    ((_native("BucketToBufferGadget"),), "only after AcquisitionAccumulateTriggerGadget"),
    ((_native("AcquisitionAccumulateTriggerGadget"),), "AcquisitionAccumulateTriggerGadget -> BucketToBufferGadget"),
    ((_native("NoiseAdjustGadget", scale_only_channels_by_name="Body"),), "scale_only_channels_by_name"),
    ((_native("RemoveROOversamplingGadget", typo="1"),), "typo"),
])
def test_native_gadget_without_equivalent_is_named_with_the_chain(stages: tuple[Stage, ...], message: str) -> None:
    with pytest.raises(ValueError, match="my_chain") as error:
        plan_chain(Chain(name="my_chain", stages=stages))
    assert message in str(error.value)


def test_bad_python_stages_are_reported_with_gadget_and_value() -> None:
    bad_value = Stage(kind="python", module="gadgets.coil_compression", target="CoilCompression",
                      properties={"n_coils": "0"})
    with pytest.raises(ValueError, match=r"CoilCompression: parameter 'n_coils' has invalid value '0'"):
        validate_stage(bad_value, "c")
    unknown = Stage(kind="python", module="gadgets.coil_compression", target="CoilCompression",
                    properties={"n_coil": "4"})
    with pytest.raises(ValueError, match="unknown parameter 'n_coil'"):
        validate_stage(unknown, "c")
    missing = Stage(kind="python", module="gadgets.no_such_module", target="X")
    with pytest.raises(ValueError, match="cannot import module 'gadgets.no_such_module'"):
        validate_stage(missing, "c")
    not_a_gadget = Stage(kind="python", module="gadgets.protocol.chain_format", target="Chain")
    with pytest.raises(ValueError, match="not a gadgets.protocol.stream.Gadget class"):
        validate_stage(not_a_gadget, "c")


@pytest.mark.parametrize("text, message", [
    ("<gadgetronStreamConfiguration/>", "legacy"),
    ("<configuration><version>1</version><stream/></configuration>", "<version>2</version>"),
    ("<configuration><version>2</version></configuration>", "exactly one <stream>"),
    ("<configuration><version>2</version><stream><parallel/></stream></configuration>", "<parallel>"),
    ("<configuration><version>2</version><stream><external><configuration/></external></stream></configuration>",
     "<execute> or <connect>"),
    ('<configuration><version>2</version><stream><external><execute name="m" target="t" type="matlab"/>'
     "</external></stream></configuration>", "type='matlab'"),
    ("<configuration><version>2</version><stream><gadget><dll>d</dll><classname>c</classname>"
     "<property/></gadget></stream></configuration>", "cannot parse property"),
    ("<configuration>", "not well-formed"),
])
def test_malformed_xml_chains_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="bad.xml") as error:
        chain_from_xml(text, name="bad", source="bad.xml")
    assert message in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("name: x\nstages: []\n", "non-empty list"),
    ("name: x\nstages:\n  - kind: magic\n", "kind must be one of"),
    ("name: x\nstages:\n  - {kind: python, module: m, target: T, propertys: {}}\n", "unknown key 'propertys'"),
    ("name: x\nstages:\n  - {kind: connect, port: 99999}\n", "port must be an integer"),
    ("name: x\nstages:\n  - {kind: python, module: m, target: T, properties: {a: [1]}}\n", "string, number or boolean"),
    ("name: x\nextra: 1\nstages:\n  - {kind: python, module: m, target: T}\n", "unknown key 'extra'"),
])
def test_malformed_yaml_chains_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="bad.yaml") as error:
        chain_from_yaml(text, source="bad.yaml")
    assert message in str(error.value)


def test_yaml_scalars_take_gadgetrons_spelling() -> None:
    chain = chain_from_yaml("name: x\nstages:\n  - kind: python\n    module: m\n    target: T\n"
                            "    properties: {a: true, b: 8, c: 0.5, d: none, e: ''}\n")
    assert dict(chain.stages[0].properties) == {"a": "true", "b": "8", "c": "0.5", "d": "none", "e": ""}
    assert chain.with_properties("T", b=4, d=None).stages[0].properties == {"a": "true", "b": "4", "c": "0.5",
                                                                          "e": ""}
    with pytest.raises(ValueError, match="no stage 'Nope'"):
        chain.with_properties("Nope", b=1)


@pytest.fixture(scope="module")
def scan() -> Any:
    return synthetic_scan(np.random.default_rng(11), n_coils=3, n_slices=2, n_phases=3)


def test_runner_composes_python_gadgets_as_a_pipeline(scan: Any) -> None:
    chain = _front_end(load_chain(CHAINS_DIR / "cardiomm_cine_python.yaml"), 3)
    out = list(run_chain(chain, scan.header_xml, scan.acquisitions))
    stages = chain.stages
    header = scan.header
    manual: Any = iter(scan.acquisitions)
    for gadget in (NoiseAdjust.from_config(dict(stages[0].properties)),
                   RemoveOversampling.from_config(dict(stages[1].properties)),
                   AcquisitionBuffer.from_config(dict(stages[2].properties))):
        manual = gadget(manual, header)
    expected = list(manual)
    assert len(out) == 2 and all(isinstance(item, ReconData) for item in out)  # one per slice
    assert_items_equal(out, expected)


def test_native_front_end_through_equivalents_equals_the_python_one(scan: Any) -> None:
    python = _front_end(load_chain(CHAINS_DIR / "cardiomm_cine_python.yaml"), 3)
    native = _front_end(load_chain(CHAINS_DIR / "cardiomm_cine_native.yaml"), 4)
    assert_items_equal(list(run_chain(native, scan.header_xml, scan.acquisitions)),
                       list(run_chain(python, scan.header_xml, scan.acquisitions)))


def test_runner_fails_before_streaming_on_a_bad_chain(scan: Any) -> None:
    consumed = []

    def items() -> Any:
        for acq in scan.acquisitions:
            consumed.append(acq)
            yield acq

    chain = Chain(name="broken", stages=(_native("NoiseAdjustGadget"), _native("ExtractGadget")))
    with pytest.raises(ValueError, match="ExtractGadget"):
        run_chain(chain, scan.header_xml, items())
    assert consumed == []


class _Worker:
    """A warm worker on loopback: accepts ONE connection and serves it with ``gadget.handle``."""

    def __init__(self, gadget: Any) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(20)
        self.port = self.listener.getsockname()[1]
        self.gadget = gadget
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with Connection(conn) as connection:
            self.gadget.handle(connection)

    def close(self) -> None:
        self.thread.join(20)
        self.listener.close()


@pytest.mark.parametrize("fail_after", [0, 5])
def test_connect_stage_through_a_real_socket(scan: Any, fail_after: int) -> None:
    worker = _Worker(EchoGadget())
    chain = Chain(name="warm", stages=(Stage(kind="connect", address="127.0.0.1", port=worker.port,
                                             module="tests.gadgets.harness", target="EchoGadget",
                                             properties={"fail_after": str(fail_after)}),))
    try:
        if fail_after:
            with pytest.raises(ExternalGadgetError, match="EchoGadget was told to fail after 5"):
                list(run_chain(chain, scan.header_xml, scan.acquisitions, connect="socket"))
        else:
            out = list(run_chain(chain, scan.header_xml, scan.acquisitions, connect="socket"))
            assert_items_equal(out, scan.acquisitions)
            # and in-process, as the gadget the worker serves
            assert_items_equal(list(run_chain(chain, scan.header_xml, scan.acquisitions)), scan.acquisitions)
    finally:
        worker.close()


def test_connect_stage_without_a_known_gadget_cannot_run_in_process(scan: Any) -> None:
    chain = Chain(name="unknown_worker", stages=(Stage(kind="connect", port=18123),))
    with pytest.raises(ValueError, match="unknown_worker.*does not say which gadget"):
        run_chain(chain, scan.header_xml, scan.acquisitions)


def test_connect_to_nothing_is_a_clear_error(scan: Any) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    chain = Chain(name="gone", stages=(Stage(kind="connect", address="127.0.0.1", port=port),))
    with pytest.raises(ExternalGadgetError, match=f"cannot connect.*{port}"):
        list(run_chain(chain, scan.header_xml, scan.acquisitions, connect="socket"))


def test_header_must_be_ismrmrd(scan: Any) -> None:
    chain = _front_end(load_chain(CHAINS_DIR / "cardiomm_cine_python.yaml"), 1)
    with pytest.raises(ValueError, match="header"):
        run_chain(chain, "<notAHeader/>", [])
    images = list(run_chain(chain, ismrmrd.xsd.CreateFromDocument(scan.header_xml), scan.acquisitions[:3]))
    assert len(images) == 2  # the noise scan is consumed
