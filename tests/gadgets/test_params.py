"""gadgets.protocol.params: one typed parser for Gadgetron XML configuration and YAML mappings."""

from __future__ import annotations

import pytest

from gadgets.protocol.params import Param, config_properties, config_values, parse_params
from tests.gadgets.harness import config_xml

SPEC = (
    Param("n_coils", int, 8, low=1, doc="coils"),
    Param("energy", float, None, high=1.0),
    Param("split_slices", bool, False),
    Param("trigger_dimension", str, "slice", choices=("slice", "none", "phase")),
    Param("label", str, "cine"),
)


def parse_config(spec, config, gadget):
    """Parameters from CONFIG XML text or a mapping, as ``Gadget.from_config`` reads them."""
    return parse_params(spec, config_values(config, gadget), gadget)


def test_pugixml_configuration_gives_typed_values() -> None:
    xml = config_xml({"n_coils": "6", "energy": "0.9", "split_slices": "true", "trigger_dimension": "PHASE"})
    params = parse_config(SPEC, xml, "TestGadget")
    assert params.n_coils == 6 and isinstance(params.n_coils, int)
    assert params.energy == pytest.approx(0.9)
    assert params.split_slices is True
    assert params.trigger_dimension == "phase"  # canonical spelling of the choice
    assert params.label == "cine"  # default


@pytest.mark.parametrize("config", [None, "", b"", "   ", '<?xml version="1.0"?>\n', "<configuration/>",
                                    config_xml({})])
def test_empty_configurations_give_defaults(config: object) -> None:
    params = parse_config(SPEC, config, "TestGadget")
    assert dict(params) == {"n_coils": 8, "energy": None, "split_slices": False,
                            "trigger_dimension": "slice", "label": "cine"}


def test_legacy_property_form_and_later_duplicate_wins() -> None:
    xml = ("<configuration><property><name>n_coils</name><value> 4 </value></property>"
           '<property name="n_coils" value="5"/></configuration>')
    assert config_properties(xml) == {"n_coils": "5"}
    assert parse_config(SPEC, xml, "G").n_coils == 5


@pytest.mark.parametrize("text, expected", [("true", True), ("False", False), ("1", True), ("0", False),
                                            ("yes", True), ("NO", False), (True, True), (0, False)])
def test_bool_spellings(text: object, expected: bool) -> None:
    assert parse_params(SPEC, {"split_slices": text}, "G").split_slices is expected


def test_yaml_mapping_with_native_types() -> None:
    params = parse_config(SPEC, {"n_coils": 3, "energy": 1, "split_slices": True}, "G")
    assert (params.n_coils, params.energy, params.split_slices) == (3, 1.0, True)
    assert parse_config(SPEC, {"energy": "none"}, "G").energy is None


@pytest.mark.parametrize("values, words", [
    ({"n_colis": "4"}, ["ReconGadget", "n_colis", "'4'", "unknown"]),
    ({"n_coils": "eight"}, ["ReconGadget", "n_coils", "'eight'", "integer"]),
    ({"n_coils": "8.5"}, ["n_coils", "'8.5'"]),
    ({"n_coils": 2.5}, ["n_coils", "2.5"]),
    ({"n_coils": True}, ["n_coils", "True"]),
    ({"n_coils": "0"}, ["n_coils", ">= 1"]),
    ({"energy": "lots"}, ["energy", "'lots'", "number"]),
    ({"energy": "nan"}, ["energy", "NaN"]),
    ({"energy": "1.5"}, ["energy", "<= 1.0"]),
    ({"split_slices": "maybe"}, ["split_slices", "'maybe'", "boolean"]),
    ({"trigger_dimension": "sideways"}, ["trigger_dimension", "'sideways'", "'slice'", "'none'"]),
    ({"n_coils": None}, ["n_coils", "None"]),
])
def test_malformed_parameters_name_gadget_parameter_and_value(values: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        parse_params(SPEC, values, "ReconGadget")
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("xml, word", [
    ("<configuration><property name='x'/></configuration>", "no value"),
    ("<configuration><property><name>x</name></property></configuration>", "malformed property"),
    ("<gadget><property name='n_coils' value='1'/></gadget>", "<configuration>"),
    ("<configuration><property", "not valid XML"),
])
def test_malformed_xml_is_rejected(xml: str, word: str) -> None:
    with pytest.raises(ValueError, match="G: ") as info:
        parse_config(SPEC, xml, "G")
    assert word in str(info.value)


def test_xml_special_characters_round_trip() -> None:
    xml = config_xml({"label": 'a <b> & "c"'})
    assert parse_config(SPEC, xml, "G").label == 'a <b> & "c"'


def test_params_are_read_only_with_attribute_access() -> None:
    params = parse_params(SPEC, {}, "G")
    with pytest.raises(AttributeError, match="no parameter 'missing'"):
        _ = params.missing
    with pytest.raises(TypeError):
        params["n_coils"] = 3  # type: ignore[index]


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="type must be"):
        Param("x", list, [])
    with pytest.raises(ValueError, match="choices need type str"):
        Param("x", int, 1, choices=("a",))
