"""What the model is told: sentence styles, the official masks, and one description of sampling
that training, evaluation and the gadgets share (cardiomm_core.prompting)."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
import torch

from cardiomm_core.context import ScanContext
from cardiomm_core.masks import _nearest_rotated_row, _rotation_matrix, acs_start, make_mask
from cardiomm_core.prompting import PromptSpec, describe_sampling, sampling_context

# ---- sentence styles -------------------------------------------------------------------------

#: (ScanContext fields, official metadata sentence): the strings the official CardioMM code builds
#: (captured by running its data transform, ../shared/CARDIOMM_OFFICIAL.md section 4).
OFFICIAL_METADATA = [
    (dict(), "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: cine, short-axis."),
    (dict(field_strength_t=0.55, scanner_model="FreeMax", view="long-axis"),
     "Adult cardiac MRI reconstruction.Vendor: 0.55T, Siemens, FreeMax. Modality: cine, long-axis."),
    (dict(modality="Flow", view="aorta"),
     "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: phase contrast, through-plane."),
    (dict(modality="LGE", view="four-chamber"),
     "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: late Gadolinium enhancement, long-axis."),
    (dict(view="aorta, transversal"),
     "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: cine, transversal aorta."),
    (dict(view="LVOT"), "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: cine, outflow tract."),
    (dict(view="RVOT"), "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: cine, outflow tract."),
    (dict(field_strength_t=5.0, scanner_model="Terra", modality="Black blood"),
     "Adult cardiac MRI reconstruction.Vendor: 5.0T, Siemens, Terra. Modality: blackblood, short-axis."),
    (dict(field_strength_t=1.5, vendor="Philips", scanner_model="Ingenia", modality="T1 mapping", view="two-chamber"),
     "Adult cardiac MRI reconstruction.Vendor: 1.5T, Philips, Ingenia. Modality: T1 mapping, long-axis."),
    (dict(modality="T2* mapping"), "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: T2 star mapping, short-axis."),
    (dict(modality="T1rho mapping", view="three-chamber"),
     "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: T1 rho mapping, long-axis."),
    (dict(modality="T2-weighted"), "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: T2 weighted, short-axis."),
    (dict(modality="Tagging"), "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: tagging, short-axis."),
    (dict(population="Pediatric", modality="Perfusion"),
     "Pediatric cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: perfusion, short-axis."),
]


def _nearest_rotated_row_full(side: int, row: int, angle_deg: float, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """:func:`cardiomm_core.masks._nearest_rotated_row` evaluated on every pixel (slow; a check for the fast one)."""
    matrix = _rotation_matrix(side, angle_deg)
    grid_x, grid_y = np.meshgrid(cols.astype(np.float64), rows.astype(np.float64))
    points = np.stack([grid_x.ravel(), grid_y.ravel(), np.ones(grid_x.size)], axis=1)
    source = points @ matrix.T
    src_x = np.floor(source[:, 0] + 0.5)
    hit = (np.floor(source[:, 1] + 0.5) == row) & (src_x >= 0) & (src_x <= side - 1)
    return hit.reshape(grid_x.shape)


@pytest.mark.parametrize("fields, expected", OFFICIAL_METADATA)
def test_official_metadata_sentences_are_the_official_strings(fields, expected):
    assert ScanContext(**fields).metadata_sentence("official") == expected


@pytest.mark.parametrize("acceleration, pattern, expected", [
    (16, "ktGaussian", "Undersampling: 16x random."),
    (8, "Uniform", "Undersampling: 8x uniform."),
    (8, "ktUniform", "Undersampling: 8x uniform."),
    (24, "ktRadial", "Undersampling: 24x radial."),
    (4, "ktGaussian", "Undersampling: 4x random."),
])
def test_official_undersampling_sentences(acceleration, pattern, expected):
    assert ScanContext().with_sampling(acceleration, pattern).undersampling_sentence("official") == expected


def test_project_style_is_unchanged_and_the_default():
    """The packaged model was trained on these exact strings."""
    context = ScanContext().with_sampling(16, "ktGaussian")
    assert context.sentences() == context.sentences("project") == (
        "Adult cardiac MRI reconstruction. Vendor: 3.0T, Siemens, Vida. Modality: Cine, short-axis.",
        "Undersampling: 16x Random.")
    assert ScanContext(field_strength_t=0.55).metadata_sentence().startswith(
        "Adult cardiac MRI reconstruction. Vendor: 0.6T")
    assert ScanContext().with_sampling(8, "ktUniform").undersampling_sentence() == "Undersampling: 8x kt-Uniform."
    with pytest.raises(ValueError, match="style"):
        context.sentences("shouting")


# ---- official masks --------------------------------------------------------------------------

#: Facts measured by running the official generator (CardioMM_dataundersampling/Python_Reimpl_Version,
#: commit 07d8a6b, outside this repository) with ncalib = 20: (pattern, R, n_kx, n_ky, frames,
#: gaussian_seed) -> non-ACS AF, effective AF, sha256[:16] of np.packbits of the mask in the
#: project layout (frames, ky, kx|1), sampled lines per frame (line patterns).
OFFICIAL_FACTS = [
    (("Uniform", 8, 512, 246, 12, 0), 7.79, 5.02, "ef24432bb830e26e", [49] * 12),
    (("Uniform", 16, 448, 204, 1, 0), 15.33, 6.38, "d743fd96e64cc70a", [32]),
    (("ktGaussian", 8, 512, 246, 12, 7), 8.66, None, "4e29cbe3105ed75c",
     [45, 47, 46, 45, 46, 46, 46, 47, 45, 49, 45, 46]),
    (("ktGaussian", 16, 512, 246, 12, 7), 18.45, None, "2a50836af6324a07",
     [33, 33, 30, 31, 33, 30, 35, 34, 31, 34, 30, 33]),
    (("ktGaussian", 24, 512, 246, 12, 7), 27.96, None, "ff89541b098017b1",
     [29, 29, 27, 26, 29, 27, 30, 29, 27, 29, 27, 28]),
    (("ktGaussian", 16, 512, 246, 12, 1), 17.73, 7.51, "fbed4ed68133bcd5",
     [34, 32, 33, 32, 34, 33, 33, 33, 32, 33, 31, 33]),
    (("ktGaussian", 8, 448, 204, 10, 7), 8.89, 5.01, "86395d6160326a76", [39, 42, 41, 41, 41, 39, 41, 42, 37, 44]),
    (("ktGaussian", 24, 128, 123, 5, 1000), 30.29, 5.26, "77ae1a542ef201de", [23, 23, 23, 24, 24]),
    (("ktRadial", 8, 256, 255, 1, 0), 7.34, 7.07, "279ff5ad8fcb2b38", None),
    (("ktRadial", 16, 128, 246, 2, 0), 9.72, 8.75, "0baeb9a7cb8930d6", None),
    (("ktRadial", 24, 96, 80, 12, 0), 8.09, 5.91, "43a4d1067add405e", None),
]


def _packed_hash(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask.astype(bool)).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("case, non_acs_af, effective_af, digest, lines", OFFICIAL_FACTS,
                         ids=[f"{c[0][0]}{c[0][1]}-{c[0][3]}x{c[0][2]}x{c[0][4]}-s{c[0][5]}" for c in OFFICIAL_FACTS])
def test_official_masks_reproduce_the_official_generator(case, non_acs_af, effective_af, digest, lines):
    pattern, acceleration, n_kx, n_ky, n_frames, seed = case
    mask = make_mask(pattern, acceleration, n_frames, n_ky, n_kx, seed=seed, convention="official")
    assert mask.n_acs == 20
    assert _packed_hash(mask.mask) == digest
    assert round(mask.realised_acceleration, 2) == non_acs_af
    if effective_af is not None:
        assert round(mask.effective_acceleration, 2) == effective_af
    if lines is not None:
        assert mask.mask[..., 0].sum(axis=1).astype(int).tolist() == lines
        # round(n_ky / R) distinct lines are drawn per frame (Uniform: every R-th line), plus the ACS
        start = acs_start(n_ky, 20)
        assert mask.mask[:, start:start + 20].all()


def test_official_uniform_is_the_projects_uniform_with_20_acs_lines():
    for n_ky, acceleration in ((246, 8), (204, 16), (255, 24), (123, 10)):
        official = make_mask("Uniform", acceleration, 3, n_ky, 64, convention="official")
        project = make_mask("Uniform", acceleration, 3, n_ky, 64, n_acs=20)
        np.testing.assert_array_equal(official.mask, project.mask)


def test_official_radial_spoke_counts_and_acs_square():
    mask = make_mask("ktRadial", 16, 1, 128, 128, convention="official")
    start = acs_start(128, 20)
    assert mask.mask[0, start:start + 20, start:start + 20].all()
    # floor(180 / (0.6 R)) spokes: 37 at R = 8, 18 at R = 16, 12 at R = 24
    from cardiomm_core.masks import official_radial_spokes
    assert [official_radial_spokes(r) for r in (8, 16, 24)] == [37, 18, 12]


def test_fast_rotation_equals_the_full_grid_rotation():
    for side, n_rows, n_cols in ((128, 128, 112), (97, 96, 97)):
        rows = np.arange(acs_start(side, n_rows), acs_start(side, n_rows) + n_rows)
        cols = np.arange(acs_start(side, n_cols), acs_start(side, n_cols) + n_cols)
        line = int(np.floor(side / 2 + 0.5)) - 1
        for angle in (0.0, 45.0, 90.0, 135.0, 137.5, 180.0, 275.0, 33.3):
            np.testing.assert_array_equal(_nearest_rotated_row(side, line, angle, rows, cols),
                                          _nearest_rotated_row_full(side, line, angle, rows, cols))


def test_rotation_matches_skimage_nearest_neighbour_rotate():
    transform = pytest.importorskip("skimage.transform")
    side = 64
    line = side // 2 - 1
    image = np.zeros((side, side))
    image[line, :] = 1
    everything = np.arange(side)
    for angle in (0.0, 17.0, 45.0, 90.0, 137.5, 180.0, 225.0):
        expected = transform.rotate(image, angle, resize=False, order=0, mode="constant", cval=0,
                                    preserve_range=True) > 0
        np.testing.assert_array_equal(_nearest_rotated_row(side, line, angle, everything, everything), expected)


def test_official_masks_refuse_what_they_cannot_make():
    with pytest.raises(ValueError, match="convention"):
        make_mask("Uniform", 4, 1, 64, 64, convention="matlab")
    with pytest.raises(ValueError, match="no spoke"):
        make_mask("ktRadial", 400, 1, 64, 64, convention="official")


# ---- one description of the sampling: the inline sentence is the training sentence ------------

LINE_COUNTS = (96, 112, 123, 156, 246)


def _as_the_buffer_sees_it(mask: np.ndarray, n_slices: int = 2) -> np.ndarray:
    """A mask ``(T, ky, kx|1)`` as the recon gadget builds it: float32 ``(slices, 1, T, ky, kx|1)``."""
    return np.repeat(mask[None, None].astype(np.float32), n_slices, axis=0)


def _training_and_inline(pattern: str, acceleration: int, n_frames: int, n_ky: int, n_kx: int,
                         convention: str, seed: int) -> tuple[str, str, str]:
    from train.data.sample import KspaceSample
    from train.data.undersample import undersample

    mask = make_mask(pattern, acceleration, n_frames, n_ky, n_kx, seed=seed, convention=convention)
    sample = KspaceSample(torch.zeros(1, n_frames, n_ky, n_kx, dtype=torch.complex64), ScanContext(), "x", None, n_kx)
    training = undersample(sample, mask, convention).context.undersampling_sentence()
    buffer = _as_the_buffer_sees_it(mask.mask)
    without_header = sampling_context(ScanContext(), buffer, convention=convention).undersampling_sentence()
    with_header = sampling_context(ScanContext(), buffer, declared_acceleration=int(round(acceleration)),
                                   convention=convention).undersampling_sentence()
    return training, without_header, with_header


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["Uniform", "ktUniform", "ktGaussian"])
def test_inline_sentence_equals_training_sentence_for_every_line_mask(pattern):
    """Every family x R 4..24 x line count (12 frames, cine): the sentence the gadget builds from
    the mask as its buffer holds it, with and without the header's declared acceleration, is the
    sentence training used, which says the nominal R."""
    checked = 0
    for n_ky in LINE_COUNTS:
        for acceleration in range(4, 25):
            training, without_header, with_header = _training_and_inline(pattern, acceleration, 12, n_ky, 1,
                                                                         "project", seed=n_ky + acceleration)
            expected = ScanContext().with_sampling(acceleration, pattern).undersampling_sentence()
            assert training == without_header == with_header == expected, (n_ky, acceleration)
            checked += 1
    assert checked == len(LINE_COUNTS) * 21


@pytest.mark.slow
@pytest.mark.parametrize("n_frames", [1, 3])
def test_with_the_headers_acceleration_few_frames_are_told_what_training_told(n_frames):
    """Mapping-like scans (3 T2 weightings) and single frames: too few lines to recover every
    integer R from the mask alone (e.g. R = 21 and 22 give the same count), so the header's
    declared R decides, and the sentence is the training sentence with its nominal R."""
    for pattern in ("Uniform", "ktUniform", "ktGaussian"):
        for n_ky in LINE_COUNTS:
            for acceleration in range(4, 25):
                training, _, with_header = _training_and_inline(pattern, acceleration, n_frames, n_ky, 1, "project",
                                                                seed=n_ky * acceleration)
                assert training == with_header, (pattern, n_ky, acceleration)
                assert f" {acceleration}x " in training


@pytest.mark.slow
@pytest.mark.parametrize("n_ky, n_kx", [(96, 80), (123, 97), (156, 128)])
def test_inline_sentence_equals_training_sentence_for_radial_masks(n_ky, n_kx):
    for acceleration in (4, 6, 8, 11, 12, 16, 20, 23, 24):
        training, without_header, with_header = _training_and_inline("ktRadial", acceleration, 12, n_ky, n_kx,
                                                                     "project", seed=0)
        expected = ScanContext().with_sampling(acceleration, "ktRadial").undersampling_sentence()
        assert training == without_header == with_header == expected, acceleration


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["Uniform", "ktUniform", "ktGaussian", "ktRadial"])
def test_official_convention_describes_the_papers_protocol(pattern):
    """Official masks at the R the authors train and test with (4, 8, 16, 24): the same sentence
    inline and in training; with a declared R every R fits."""
    for n_ky, n_kx in ((246, 128), (123, 97), (96, 80)):
        for acceleration in (4, 8, 16, 24):
            training, without_header, with_header = _training_and_inline(pattern, acceleration, 12, n_ky, n_kx,
                                                                         "official", seed=7)
            expected = ScanContext().with_sampling(acceleration, pattern).undersampling_sentence()
            assert training == without_header == with_header == expected, (n_ky, acceleration)
    for acceleration in range(4, 25):
        mask = make_mask(pattern, acceleration, 4, 123, 97, seed=acceleration, convention="official")
        assert describe_sampling(_as_the_buffer_sees_it(mask.mask), declared_acceleration=acceleration,
                                 convention="official") == (float(acceleration), pattern)


def test_official_radial_masks_that_are_identical_get_a_trained_or_the_smallest_r():
    # floor(180 / (0.6 R)): R = 19 and R = 20 both give 15 spokes, the same mask
    a = make_mask("ktRadial", 19, 4, 96, 80, convention="official").mask
    b = make_mask("ktRadial", 20, 4, 96, 80, convention="official").mask
    np.testing.assert_array_equal(a, b)
    assert describe_sampling(a, convention="official") == (19.0, "ktRadial")
    assert describe_sampling(a, declared_acceleration=20, convention="official") == (20.0, "ktRadial")


def test_declared_acceleration_that_does_not_fit_is_logged_and_the_mask_wins(caplog):
    mask = make_mask("Uniform", 10, 12, 112, 1).mask
    with caplog.at_level(logging.WARNING, logger="cardiomm_core.prompting"):
        assert describe_sampling(mask, declared_acceleration=2) == (10.0, "Uniform")
    assert "declared acceleration 2 does not fit" in caplog.text and "R = 10" in caplog.text
    caplog.clear()
    gaussian = make_mask("ktGaussian", 8, 12, 156, 1, seed=3).mask
    with caplog.at_level(logging.WARNING, logger="cardiomm_core.prompting"):
        assert describe_sampling(gaussian, declared_acceleration=16) == (8.0, "ktGaussian")
    assert "does not fit" in caplog.text
    # a consistent declaration is used silently, and Uniform R = 10 on 112 lines says 10, not 8.8
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cardiomm_core.prompting"):
        assert describe_sampling(mask, declared_acceleration=10) == (10.0, "Uniform")
    assert caplog.text == ""


def test_describe_sampling_full_torch_and_bad_input():
    assert describe_sampling(np.ones((2, 1, 4, 12, 1), dtype=bool)) == (1.0, "full")
    assert describe_sampling(np.ones((1, 4, 12, 1)), declared_acceleration=4) == (1.0, "full")
    mask = make_mask("ktUniform", 8, 12, 112, 1)
    assert describe_sampling(torch.from_numpy(mask.as_tensor().numpy())) == describe_sampling(mask.mask) \
        == (8.0, "ktUniform")
    with pytest.raises(ValueError, match="3 dimensions"):
        describe_sampling(np.ones((4, 5)))
    with pytest.raises(ValueError, match="real or bool"):
        describe_sampling(np.ones((1, 4, 5), dtype=np.complex64))
    with pytest.raises(ValueError, match="convention"):
        describe_sampling(mask.mask, convention="matlab")
    with pytest.raises(ValueError, match="declared_acceleration"):
        describe_sampling(mask.mask, declared_acceleration=0.5)


def test_prompt_spec_defaults_and_checks():
    assert PromptSpec().to_dict() == {"style": "project", "mask_convention": "project", "acceleration": "nominal"}
    assert PromptSpec.from_dict(None) == PromptSpec.from_dict({}) == PromptSpec()
    with pytest.raises(ValueError, match="style"):
        PromptSpec(style="loud")


# ---- the engine speaks in its checkpoint's style ------------------------------------------------


class RecordingEncoder:
    """A real HashingEncoder that records the sentences it embeds."""

    def __init__(self, dim: int = 64) -> None:
        from cardiomm_core.text import HashingEncoder

        self.inner = HashingEncoder(dim=dim)
        self.name, self.dim, self.seen = self.inner.name, dim, []

    def encode(self, sentences):
        self.seen.append(tuple(sentences))
        return self.inner.encode(sentences)


def test_engine_renders_its_checkpoints_style_and_caches_by_rendered_sentences(tmp_path):
    from cardiomm_core.checkpoint import save_checkpoint
    from cardiomm_core.engine import InferenceEngine
    from cardiomm_core.model import CardioMM, config_by_name

    torch.manual_seed(0)
    model = CardioMM(config_by_name("tiny", 64))
    path = save_checkpoint(tmp_path / "official_style", model, text_encoder_name="hashing-64", text_encoder_dim=64,
                           prompt={"style": "official", "mask_convention": "official"})
    encoder = RecordingEncoder()
    engine = InferenceEngine.from_checkpoint(path, device="cpu", text_encoder=encoder)
    assert engine.prompt == PromptSpec(style="official", mask_convention="official")
    context = ScanContext(modality="LGE", view="four-chamber").with_sampling(16, "ktGaussian")
    engine.embeddings(context)
    engine.embeddings(context)
    assert encoder.seen == [(
        "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: late Gadolinium enhancement, "
        "long-axis.", "Undersampling: 16x random.")]
    # a project-style engine on the same context embeds the project's strings, its own cache entry
    project = InferenceEngine(model, encoder, device="cpu")
    project.embeddings(context)
    assert encoder.seen[-1] == context.sentences("project") and len(encoder.seen) == 2
    # two contexts that differ only where the official words merge share an official entry
    engine.embeddings(ScanContext(modality="LGE", view="three-chamber").with_sampling(16, "ktGaussian"))
    assert len(encoder.seen) == 2
