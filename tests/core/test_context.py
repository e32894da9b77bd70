import pytest

from cardiomm_core.context import ScanContext


def test_sentences_in_cardiomm_form():
    ctx = ScanContext(field_strength_t=3.0, vendor="Siemens", scanner_model="Vida",
                      modality="Cine", view="short-axis", acceleration=16, pattern="ktGaussian")
    assert ctx.metadata_sentence() == (
        "Adult cardiac MRI reconstruction. Vendor: 3.0T, Siemens, Vida. Modality: Cine, short-axis."
    )
    assert ctx.undersampling_sentence() == "Undersampling: 16x Random."


@pytest.mark.parametrize("accel,pattern,expected", [
    (8.0, "Uniform", "Undersampling: 8x Uniform."),
    (12.5, "ktRadial", "Undersampling: 12.5x Radial."),
    (4.02, "ktUniform", "Undersampling: 4x kt-Uniform."),
    (1, "full", "Undersampling: 1x Fully sampled."),
])
def test_undersampling_sentence(accel, pattern, expected):
    assert ScanContext(acceleration=accel, pattern=pattern).undersampling_sentence() == expected


def test_field_strength_and_mapping_wording():
    ctx = ScanContext(field_strength_t=1.5, vendor="GE", scanner_model="Artist", modality="T1 mapping")
    assert ctx.metadata_sentence() == (
        "Adult cardiac MRI reconstruction. Vendor: 1.5T, GE, Artist. Modality: T1 mapping, short-axis."
    )


def test_with_sampling_and_roundtrip():
    ctx = ScanContext().with_sampling(24, "ktRadial")
    assert ctx.sentences()[1] == "Undersampling: 24x Radial."
    assert ScanContext.from_dict(ctx.to_dict()) == ctx


@pytest.mark.parametrize("kwargs,match", [
    ({"pattern": "spiral"}, "pattern must be one of"),
    ({"acceleration": 0.5}, "acceleration must be"),
    ({"field_strength_t": -3}, "field_strength_t"),
    ({"vendor": ""}, "vendor must be"),
])
def test_bad_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScanContext(**kwargs)


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="colour"):
        ScanContext.from_dict({"colour": "red"})
