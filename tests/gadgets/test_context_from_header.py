"""ScanContext from ISMRMRD headers, and sampling pattern / acceleration from masks."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from cardiomm_core.context import PATTERN_WORDS, ScanContext
from cardiomm_core.masks import make_mask
from gadgets.header_context import (
    DEFAULT_SCANNER_MODEL,
    DEFAULT_VENDOR,
    UNKNOWN_MODEL,
    context_from_header,
    declared_acceleration,
    nominal_field_strength,
    normalise_vendor,
    sampling_from_mask,
)
from gadgets.io.ismrmrd_io import read_header
from gadgets.io.simulated_scan import read_ground_truth


@pytest.fixture(scope="module")
def simulated_header(simulated_scan_file):
    header, _ = read_header(simulated_scan_file)
    return header


def test_simulated_header_gives_the_simulated_context(simulated_scan_file, simulated_header):
    truth = read_ground_truth(simulated_scan_file).context
    context = context_from_header(simulated_header, modality="LGE", view="four-chamber")
    # the header names the scanner and the protocol (CardioMM_cine_sax): the arguments are not used
    assert (context.vendor, context.scanner_model, context.field_strength_t) == ("Siemens", "Vida", 3.0)
    assert (context.modality, context.view) == ("Cine", "short-axis")
    assert context.with_sampling(truth.acceleration, truth.pattern) == truth
    assert (context.acceleration, context.pattern) == (1.0, "full")


@pytest.mark.parametrize(("protocol", "modality", "view"), [
    ("CardioMM_t1map_sax", "T1 mapping", "short-axis"),
    ("CardioMM_t2map_sax", "T2 mapping", "short-axis"),
    ("MOLLI_5(3)3_4CH", "T1 mapping", "four-chamber"),
    ("tf2d15_retro_iPAT_2ch", "Cine", "two-chamber"),
    ("LGE_PSIR_LAX", "LGE", "long-axis"),
    ("cine_3CH", "Cine", "three-chamber"),
    ("Cine LVOT", "Cine", "LVOT"),
    ("T2prep_SSFP_sa", "T2 mapping", "short-axis"),
])
def test_modality_and_view_come_from_the_protocol_name(simulated_header, protocol, modality, view):
    header = copy.deepcopy(simulated_header)
    header.measurementInformation.protocolName = protocol
    context = context_from_header(header, modality="Flow", view="aorta")
    assert (context.modality, context.view) == (modality, view)


def test_unrecognisable_protocol_uses_the_parameters(simulated_header, caplog):
    header = copy.deepcopy(simulated_header)
    header.measurementInformation.protocolName = "research_protocol_17"
    header.measurementInformation.seriesDescription = None
    header.measurementInformation.sequenceName = "gre"
    header.sequenceParameters.sequence_type = None
    with caplog.at_level(logging.INFO, logger="gadgets.header_context"):
        context = context_from_header(header, modality="Flow", view="aorta")
    assert (context.modality, context.view) == ("Flow", "aorta")
    assert any("no modality recognisable" in r.getMessage() for r in caplog.records)
    assert (context_from_header(header).modality, context_from_header(header).view) == ("Cine", "short-axis")


def test_sparse_shepp_logan_header_gets_defaults(shepp_logan_file, caplog):
    header, xml = read_header(shepp_logan_file)
    assert "<systemVendor>" not in xml and "<systemFieldStrength_T>" not in xml  # really sparse
    with caplog.at_level(logging.INFO, logger="gadgets.header_context"):
        context = context_from_header(header)
    assert (context.vendor, context.scanner_model) == (DEFAULT_VENDOR, DEFAULT_SCANNER_MODEL)
    assert context.field_strength_t == 1.5  # from the 63.5 MHz H1 resonance frequency it states
    assert (context.modality, context.view) == ("Cine", "short-axis")
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "no systemVendor" in messages and "no systemModel" in messages and "H1 resonance" in messages
    assert context_from_header(header, modality="T2 mapping", view="four-chamber").view == "four-chamber"


def test_vendor_names_and_field_strengths(simulated_header):
    header = copy.deepcopy(simulated_header)
    header.acquisitionSystemInformation.systemVendor = "GE MEDICAL SYSTEMS"
    header.acquisitionSystemInformation.systemModel = None
    header.acquisitionSystemInformation.systemFieldStrength_T = 1.494
    context = context_from_header(header)
    assert (context.vendor, context.scanner_model, context.field_strength_t) == ("GE", UNKNOWN_MODEL, 1.5)
    assert normalise_vendor("SIEMENS") == "Siemens" and normalise_vendor("Philips Medical Systems") == "Philips"
    assert normalise_vendor("Acme MR") == "Acme MR"
    assert nominal_field_strength(2.89362) == 3.0 and nominal_field_strength(2.0) == 2.0
    with pytest.raises(ValueError, match="field strength"):
        nominal_field_strength(0.0)
    with pytest.raises(ValueError, match="ismrmrdHeader"):
        context_from_header("<ismrmrdHeader/>")  # type: ignore[arg-type]


@pytest.mark.parametrize(("pattern", "acceleration", "n_frames", "n_ky", "n_kx"), [
    ("Uniform", 4, 6, 96, 40),
    ("Uniform", 8, 3, 131, 21),
    ("ktUniform", 4, 8, 96, 40),
    ("ktUniform", 6.5, 9, 85, 13),
    ("ktGaussian", 4, 6, 96, 40),
    ("ktGaussian", 10, 8, 121, 18),
    ("ktRadial", 8, 4, 48, 52),
])
def test_sampling_from_mask_recovers_family_and_acceleration(pattern, acceleration, n_frames, n_ky, n_kx):
    """The nominal R, as training tells it (cardiomm_core.prompting.describe_sampling), not the
    realised rate (Uniform R = 4 with 24 ACS lines on 96 lines realises 3.6 outside the ACS)."""
    mask = make_mask(pattern, acceleration, n_frames, n_ky, n_kx, seed=5)
    nominal, found = sampling_from_mask(mask.mask)
    assert (nominal, found) == (acceleration, pattern)
    assert sampling_from_mask(mask.mask, declared=acceleration) == (acceleration, pattern)
    assert ScanContext().with_sampling(nominal, found).pattern in PATTERN_WORDS


def test_sampling_from_mask_core_layout_torch_and_full():
    mask = make_mask("ktUniform", 5, 5, 64, 1, seed=0)
    core = np.repeat(mask.mask[None, None], 3, axis=0)  # (batch, 1, frames, ky, 1)
    assert sampling_from_mask(torch.from_numpy(core)) == sampling_from_mask(mask.mask)
    assert sampling_from_mask(np.ones((2, 1, 4, 12, 1), dtype=bool)) == (1.0, "full")
    # a line mask written out along kx is still a line mask
    assert sampling_from_mask(np.repeat(mask.mask, 7, axis=-1))[1] == "ktUniform"
    # nothing outside a calibration block: finite, and at least 1
    only_acs = np.zeros((1, 1, 2, 32, 1), dtype=np.float32)
    only_acs[..., 12:20, :] = 1
    acceleration, _ = sampling_from_mask(only_acs)
    assert np.isfinite(acceleration) and acceleration >= 1


def test_sampling_from_mask_rejects_bad_masks():
    with pytest.raises(ValueError, match="mask must have at least 3 dimensions"):
        sampling_from_mask(np.ones((4, 5)))
    with pytest.raises(ValueError, match="real or bool"):
        sampling_from_mask(np.ones((1, 4, 5), dtype=np.complex64))
    with pytest.raises(ValueError, match="numpy array or torch.Tensor"):
        sampling_from_mask([[[1.0]]])  # type: ignore[arg-type]


def test_declared_acceleration_comes_from_the_headers_parallel_imaging(simulated_scan_summary, simulated_header):
    """encoding.parallelImaging.accelerationFactor (step 1 x step 2), as the simulator writes it
    and scanners send it; None when the header has no such section."""
    assert declared_acceleration(simulated_header) == simulated_scan_summary.nominal_acceleration
    header = copy.deepcopy(simulated_header)
    header.encoding[0].parallelImaging.accelerationFactor.kspace_encoding_step_2 = 2
    assert declared_acceleration(header) == 2 * simulated_scan_summary.nominal_acceleration
    header.encoding[0].parallelImaging = None
    assert declared_acceleration(header) is None
    with pytest.raises(ValueError, match="ismrmrdHeader"):
        declared_acceleration("<ismrmrdHeader/>")  # type: ignore[arg-type]


def test_the_simulated_scans_inline_description_is_its_nominal_r(simulated_scan_file, simulated_scan_summary,
                                                                 simulated_header):
    truth = read_ground_truth(simulated_scan_file)
    declared = declared_acceleration(simulated_header)
    mask = truth.mask                                       # (frames, ky, 1)
    nominal = simulated_scan_summary.nominal_acceleration
    assert sampling_from_mask(np.asarray(mask)[None, None], declared=declared) == (nominal, truth.pattern)
    assert sampling_from_mask(np.asarray(mask)[None, None]) == (nominal, truth.pattern)
