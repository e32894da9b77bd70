"""Images out as DICOM, NIfTI and PNG (gadgets.io.export, cardiomm-replay --format) and cardiomm-view.

The geometry checks are independent of the exporter's own formula: the centre pixel of a DICOM
image (from ImagePositionPatient, ImageOrientationPatient and PixelSpacing, as any DICOM reader
computes it) must be the ISMRMRD image's ``position``, and the NIfTI affine must map the centre
voxel to the same point in RAS. The files are read back by pydicom, nibabel and, where Debian's
dcmtk is installed (CI installs it), by ``dcmdump``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
import pytest

from gadgets.io.export import image_geometry, write_dicom, write_nifti
from gadgets.io.image_io import read_images
from gadgets.io.ismrmrd_io import read_xml
from gadgets.tools.replay import EXIT_OK, EXIT_USAGE
from gadgets.tools.replay import main as replay_main
from gadgets.tools.view import main as view_main

CHAINS_DIR = Path(__file__).resolve().parents[2] / "chains"
PYTHON_CHAIN = CHAINS_DIR / "cardiomm_cine_python.xml"

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")


def run(main: Any, args: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def replayed(simulated_scan_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ismrmrd.Image]]:
    """The simulated cine replayed through the python chain (conventional recon), as an images file."""
    out = tmp_path_factory.mktemp("export") / "images.h5"
    code = replay_main([str(simulated_scan_file), "--chain", str(PYTHON_CHAIN), "-o", str(out),
                        "--checkpoint", "none", "-q"])
    assert code == EXIT_OK
    images = [im for members in read_images(out).values() for im in members]
    return out, images


def _oblique_image(n_y: int = 6, n_x: int = 10) -> ismrmrd.Image:
    """A 2D image with an oblique orientation and anisotropic pixels."""
    angle = np.deg2rad(30.0)
    read = np.array([np.cos(angle), np.sin(angle), 0.0])
    phase = np.array([-np.sin(angle) * np.cos(0.4), np.cos(angle) * np.cos(0.4), np.sin(0.4)])
    image = ismrmrd.Image.from_array(np.arange(n_y * n_x, dtype=np.float32).reshape(n_y, n_x))
    image.read_dir[:] = read
    image.phase_dir[:] = phase
    image.slice_dir[:] = np.cross(read, phase)
    image.position[:] = (12.5, -40.0, 7.25)
    image.field_of_view[:] = (250.0, 90.0, 8.0)  # dx = 25 mm, dy = 15 mm
    image.image_series_index = 1
    return image


def _dicom_centre(ds: Any) -> np.ndarray:
    row_dir = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
    col_dir = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    return ipp + (ds.Columns - 1) / 2 * col_spacing * row_dir + (ds.Rows - 1) / 2 * row_spacing * col_dir


def test_geometry_of_an_oblique_image(tmp_path: Path) -> None:
    image = _oblique_image()
    geometry = image_geometry(image)
    assert geometry.spacing == (25.0, 15.0, 8.0)
    np.testing.assert_allclose(geometry.pixel_position(2.5, 4.5), image.position, atol=1e-9)  # the centre
    (path,) = write_dicom([image], tmp_path)
    ds = pydicom.dcmread(path)
    np.testing.assert_allclose(_dicom_centre(ds), image.position, atol=1e-3)
    assert [float(v) for v in ds.PixelSpacing] == [15.0, 25.0]  # row spacing (along phase), column spacing
    np.testing.assert_allclose(ds.pixel_array * float(ds.RescaleSlope), image.data[0, 0], atol=float(ds.RescaleSlope))
    (nifti,) = write_nifti([image], tmp_path / "nii")
    loaded = nibabel.load(nifti)
    centre_ras = loaded.affine @ np.array([4.5, 2.5, 0.0, 1.0])
    np.testing.assert_allclose(centre_ras[:3], np.asarray(image.position) * [-1, -1, 1], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(loaded.dataobj)[:, :, 0, 0], image.data[0, 0].T)


def test_image_without_geometry_is_refused_before_writing(tmp_path: Path) -> None:
    image = _oblique_image()
    image.read_dir[:] = (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="read_dir"):
        write_dicom([image], tmp_path / "dicom")
    assert not (tmp_path / "dicom").exists()


@pytest.mark.slow
def test_replay_to_dicom_matches_the_ismrmrd_headers(simulated_scan_file: Path, replayed: Any, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, images = replayed
    out = tmp_path / "dicom"
    code, _, err = run(replay_main, [simulated_scan_file, "--chain", PYTHON_CHAIN, "--checkpoint", "none",
                                     "--format", "dicom", "-o", out, "-q"], capsys)
    assert code == EXIT_OK, err
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == len(images)
    datasets = [pydicom.dcmread(f) for f in files]
    by_key = {(int(im.slice), int(im.phase)): im for im in images}
    n_phases = len({int(im.phase) for im in images})
    seen = set()
    for ds in datasets:
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert "conventional fallback" in ds.SeriesDescription  # --checkpoint none: marked as such
        phase = int(ds.TemporalPositionIdentifier) - 1
        assert int(ds.NumberOfTemporalPositions) == n_phases
        # slice from the geometry alone: which image has this centre?
        centre = _dicom_centre(ds)
        matches = [key for key, im in by_key.items() if key[1] == phase and np.allclose(im.position, centre, atol=1e-3)]
        assert len(matches) == 1, (centre, phase)
        image = by_key[matches[0]]
        seen.add(matches[0])
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient],
                                   [*image.read_dir, *image.phase_dir], atol=1e-5)
        n_y, n_x = image.data.shape[2:]
        assert (ds.Rows, ds.Columns) == (n_y, n_x)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing],
                                   [image.field_of_view[1] / n_y, image.field_of_view[0] / n_x], rtol=1e-5)
        np.testing.assert_allclose(ds.pixel_array * float(ds.RescaleSlope), np.abs(image.data[0, 0]),
                                   atol=float(ds.RescaleSlope))
        assert float(ds.WindowWidth) > 0
    assert seen == set(by_key)
    # one study, one series per ISMRMRD series, instances 1..n in (slice, phase) order
    header = ismrmrd.xsd.CreateFromDocument(read_xml(simulated_scan_file))  # patient/study from the raw header
    assert {ds.PatientID for ds in datasets} == {header.subjectInformation.patientID}
    assert {str(ds.PatientName) for ds in datasets} == {header.subjectInformation.patientName}
    assert {ds.Manufacturer for ds in datasets} == {header.acquisitionSystemInformation.systemVendor}
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == len({int(im.image_series_index) for im in images})
    assert sorted(int(ds.InstanceNumber) for ds in datasets) == list(range(1, len(datasets) + 1))
    locations = {}
    for ds in datasets:
        locations.setdefault(float(ds.SliceLocation), set()).add(int(ds.TemporalPositionIdentifier))
    assert len(locations) == len({int(im.slice) for im in images})
    assert all(frames == set(range(1, n_phases + 1)) for frames in locations.values())


def test_dcmdump_reads_the_files(replayed: Any, tmp_path: Path) -> None:
    dcmdump = shutil.which("dcmdump")
    if dcmdump is None:
        pytest.skip("dcmdump (Debian dcmtk) is not installed")
    _, images = replayed
    files = write_dicom(images[:2], tmp_path)
    result = subprocess.run([dcmdump, "-E", *map(str, files)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "E: " not in result.stderr and "(0020,0032)" in result.stdout  # ImagePositionPatient present


def test_replay_to_nifti_has_the_scanner_affine(simulated_scan_file: Path, replayed: Any, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _, images = replayed
    out = tmp_path / "nifti"
    code, _, err = run(replay_main, [simulated_scan_file, "--chain", PYTHON_CHAIN, "--checkpoint", "none",
                                     "--format", "nifti", "-o", out, "-q"], capsys)
    assert code == EXIT_OK, err
    files = sorted(out.glob("*.nii.gz"))
    slices = sorted({int(im.slice) for im in images})
    assert len(files) == len(slices)
    for path, slice_index in zip(files, slices):
        members = sorted((im for im in images if int(im.slice) == slice_index), key=lambda im: int(im.phase))
        loaded = nibabel.load(path)
        n_y, n_x = members[0].data.shape[2:]
        assert loaded.shape == (n_x, n_y, 1, len(members))
        centre = loaded.affine @ np.array([(n_x - 1) / 2, (n_y - 1) / 2, 0.0, 1.0])
        np.testing.assert_allclose(centre[:3], np.asarray(members[0].position) * [-1, -1, 1], atol=1e-3)
        data = np.asarray(loaded.dataobj)
        for frame, image in enumerate(members):
            np.testing.assert_allclose(data[:, :, 0, frame], np.abs(image.data[0, 0]).T, rtol=1e-6)


def test_replay_format_png_and_usage_errors(simulated_scan_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "png"
    code, _, err = run(replay_main, [simulated_scan_file, "--chain", PYTHON_CHAIN, "--checkpoint", "none",
                                     "--format", "png", "-o", out, "-q"], capsys)
    assert code == EXIT_OK, err
    assert len(list(out.glob("*.png"))) == 1
    existing = tmp_path / "a_file"
    existing.write_text("keep me")
    code, _, err = run(replay_main, [simulated_scan_file, "--chain", PYTHON_CHAIN, "--format", "dicom",
                                     "-o", existing], capsys)
    assert code == EXIT_USAGE and "existing file" in err and existing.read_text() == "keep me"


def test_view_writes_labelled_montages_and_gifs(replayed: Any, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    path, images = replayed
    code, out, err = run(view_main, [path, "-o", tmp_path / "view", "--gif"], capsys)
    assert code == 0, err
    written = [Path(line) for line in out.split()]
    pngs = [p for p in written if p.suffix == ".png"]
    gifs = [p for p in written if p.suffix == ".gif"]
    n_slices = len({int(im.slice) for im in images})
    n_phases = len({int(im.phase) for im in images})
    n_y, n_x = images[0].data.shape[2:]
    assert len(pngs) == 1 and len(gifs) == n_slices
    with Image.open(pngs[0]) as montage:
        # title strip + frame-label strip + one row per slice; slice labels + one column per frame
        assert montage.size == (56 + n_phases * n_x, 14 + 14 + n_slices * n_y)
    with Image.open(gifs[0]) as gif:
        assert gif.n_frames == n_phases and gif.size == (n_x, n_y)


def test_view_reads_files_written_by_ismrmrd_itself(replayed: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A file written by ismrmrd-python's Dataset.append_image (the layout of Gadgetron's client)."""
    _, images = replayed
    path = tmp_path / "client.h5"
    dataset = ismrmrd.Dataset(str(path), "2026-11-30 10:00:00", create_if_needed=True)
    for image in images:
        dataset.append_image(f"image_{int(image.image_series_index)}", image)
    dataset.close()
    code, out, err = run(view_main, [path, "-o", tmp_path / "view"], capsys)
    assert code == 0, err and len(out.split()) == 1


def test_view_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(view_main, [tmp_path / "missing.h5"], capsys)
    assert code == 2 and "is not a file" in err
    not_hdf5 = tmp_path / "x.h5"
    not_hdf5.write_text("not hdf5")
    code, _, err = run(view_main, [not_hdf5], capsys)
    assert code == 2 and "cannot read images" in err and "Traceback" not in err
