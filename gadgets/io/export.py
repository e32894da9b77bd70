"""Reconstructed ISMRMRD images out in the formats people open: DICOM, NIfTI and PNG.

Geometry comes from each image's ISMRMRD header, whose vectors are in the DICOM patient
coordinate system (LPS, millimetres):

- ``position`` is the centre of the image; ``read_dir`` runs along a row (increasing column
  index, the image's x), ``phase_dir`` down a column (increasing row index, y), ``slice_dir``
  through the slab;
- ``field_of_view`` (mm) over ``matrix_size`` gives the pixel spacing.

So the centre of the first (top-left) pixel is
``position - (nx - 1) / 2 * dx * read_dir - (ny - 1) / 2 * dy * phase_dir``: DICOM's
ImagePositionPatient. NIfTI's world space is RAS, so its affine is the LPS one with the first two
rows negated.

- **DICOM** (:func:`write_dicom`, pydicom): one MR Image Storage file per image,
  ``<folder>/series_<series>/IM_<instance>.dcm``; one study per export, one DICOM series per ISMRMRD
  series, instances numbered 1.. in (slice, contrast, phase) order; magnitude stored as uint16 with a
  rescale slope that gives back the floating-point values; window centre/width from the series'
  0.5th-99.5th percentiles; the series description says whether CardioMM or the conventional
  fallback made the images (meta ``CardioMM.Method`` / ``CardioMM.Fallback``). Patient and study
  fields come from the raw data's ISMRMRD header when given (else anonymous placeholders).
- **NIfTI** (:func:`write_nifti`, nibabel): one file per (series, slice),
  ``series_<series>_slice_<slice>.nii.gz``, shaped ``(x, y, 1, frames)`` with the affine of that
  slice (frames = phases x contrasts). One file per slice is always right, also for slices that are
  not parallel or not evenly spaced.
- **PNG** (:func:`write_png`): a labelled montage per series (rows slices, columns frames), as
  ``cardiomm-view`` draws it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np

from . import PathLike

logger = logging.getLogger(__name__)


#: The formats ``cardiomm-replay --format`` writes; "ismrmrd" is the client's HDF5 layout.
FORMATS = ("ismrmrd", "dicom", "nifti", "png")
#: DICOM MR Image Storage.
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: Window limits, as percentiles of a series' magnitudes.
WINDOW_PERCENTILES = (0.5, 99.5)
_UINT16_MAX = 65535


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class ImageGeometry:
    """Where an image lies, in the patient coordinate system (LPS, mm).

    ``first_pixel`` is the centre of pixel (row 0, column 0); ``read_dir`` / ``phase_dir`` /
    ``slice_dir`` are unit vectors; ``spacing`` is (dx along read, dy along phase, thickness) in mm;
    ``shape`` is (ny rows, nx columns).
    """

    position: np.ndarray
    read_dir: np.ndarray
    phase_dir: np.ndarray
    slice_dir: np.ndarray
    spacing: tuple[float, float, float]
    shape: tuple[int, int]

    @property
    def first_pixel(self) -> np.ndarray:
        dx, dy, _ = self.spacing
        n_y, n_x = self.shape
        return self.position - (n_x - 1) / 2 * dx * self.read_dir - (n_y - 1) / 2 * dy * self.phase_dir

    def pixel_position(self, row: float, column: float) -> np.ndarray:
        """Centre of pixel (row, column) in LPS mm."""
        dx, dy, _ = self.spacing
        return self.first_pixel + column * dx * self.read_dir + row * dy * self.phase_dir

    def affine_lps(self) -> np.ndarray:
        """4 x 4: voxel (column i, row j, k) -> LPS mm."""
        dx, dy, dz = self.spacing
        affine = np.eye(4)
        affine[:3, 0] = self.read_dir * dx
        affine[:3, 1] = self.phase_dir * dy
        affine[:3, 2] = self.slice_dir * dz
        affine[:3, 3] = self.first_pixel
        return affine

    def affine_ras(self) -> np.ndarray:
        """4 x 4: voxel (column i, row j, k) -> RAS mm (NIfTI's world space)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()


def _unit(name: str, vector: Sequence[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError(f"image header {name} {list(v)} is not a direction (zero or not finite)")
    return v / norm


def image_geometry(image: ismrmrd.Image) -> ImageGeometry:
    """The geometry of a 2D ISMRMRD image from its header; ValueError when it has none usable."""
    data = np.asarray(image.data)
    if data.ndim != 4:
        raise ValueError(f"image data must be (channels, z, y, x), got {data.shape}")
    n_y, n_x = int(data.shape[2]), int(data.shape[3])
    fov = [float(v) for v in image.field_of_view]
    if not all(np.isfinite(fov)) or fov[0] <= 0 or fov[1] <= 0:
        raise ValueError(f"image {int(image.image_index)} has no field of view ({fov}): cannot place it in space")
    read_dir = _unit("read_dir", image.read_dir)
    phase_dir = _unit("phase_dir", image.phase_dir)
    slice_dir = _unit("slice_dir", image.slice_dir) if np.linalg.norm(image.slice_dir) > 1e-6 \
        else np.cross(read_dir, phase_dir)
    thickness = fov[2] if np.isfinite(fov[2]) and fov[2] > 0 else 1.0
    return ImageGeometry(position=np.asarray(image.position, dtype=np.float64), read_dir=read_dir,
                         phase_dir=phase_dir, slice_dir=slice_dir,
                         spacing=(fov[0] / n_x, fov[1] / n_y, thickness), shape=(n_y, n_x))


# --------------------------------------------------------------------------- grouping


def _meta(image: ismrmrd.Image, key: str) -> str | None:
    try:
        value = image.meta.get(key)
    except Exception:  # noqa: BLE001 - images from other servers may carry odd meta
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return None if value is None else str(value)


def _frame_key(image: ismrmrd.Image) -> tuple[int, int, int, int]:
    return (int(image.contrast), int(image.set), int(image.repetition), int(image.phase))


def group_series(images: Iterable[ismrmrd.Image]) -> dict[int, dict[int, list[ismrmrd.Image]]]:
    """{series index: {slice: images sorted by (contrast, set, repetition, phase, image_index)}}."""
    grouped: dict[int, dict[int, list[ismrmrd.Image]]] = {}
    for image in images:
        grouped.setdefault(int(image.image_series_index), {}).setdefault(int(image.slice), []).append(image)
    for slices in grouped.values():
        for members in slices.values():
            members.sort(key=lambda im: (*_frame_key(im), int(im.image_index)))
    return {s: dict(sorted(slices.items())) for s, slices in sorted(grouped.items())}


def magnitude(image: ismrmrd.Image) -> np.ndarray:
    """``(y, x)`` float64 magnitude of a 2D image's first channel (non-finite values become 0)."""
    data = np.asarray(image.data)
    if data.ndim != 4 or data.shape[1] != 1:
        raise ValueError(f"only 2D images (channels, 1, y, x) can be exported, got {data.shape}")
    values = np.abs(data[0, 0]).astype(np.float64)
    return np.where(np.isfinite(values), values, 0.0)


def describe_method(images: Sequence[ismrmrd.Image]) -> str:
    """'CardioMM' or 'conventional fallback (<method>)' or 'unknown method', from the images' meta."""
    methods = {(_meta(im, "CardioMM.Method"), _meta(im, "CardioMM.Fallback")) for im in images}
    if len(methods) != 1:
        return "mixed methods"
    method, fallback = methods.pop()
    if method is None:
        return "unknown method"
    if fallback == "true":
        return f"conventional fallback ({method})"
    return "CardioMM" if method == "cardiomm" else method


def window(values: np.ndarray) -> tuple[float, float]:
    """(centre, width) from the 0.5th-99.5th percentiles of ``values``; width at least 1e-6."""
    lo, hi = np.percentile(values, WINDOW_PERCENTILES)
    width = max(float(hi - lo), 1e-6)
    return float(lo + hi) / 2, width


# --------------------------------------------------------------------------- DICOM


@dataclass(frozen=True)
class StudyInfo:
    """Patient and study fields for DICOM, from the raw data's ISMRMRD header when known."""

    patient_name: str = "ANONYMOUS"
    patient_id: str = "CARDIOMM"
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    accession_number: str = ""
    study_description: str = "CardioMM reconstruction"
    institution: str = ""
    manufacturer: str = ""
    model_name: str = ""
    field_strength_t: float | None = None

    @classmethod
    def from_header_xml(cls, xml: str | None) -> StudyInfo:
        """Read what an ISMRMRD header says (subject, study, acquisition system); defaults elsewhere."""
        if not xml:
            return cls()
        try:
            header = ismrmrd.xsd.CreateFromDocument(xml)
        except Exception as exc:  # noqa: BLE001 - a header we cannot parse leaves placeholders
            logger.warning("cannot read patient/study information from the ISMRMRD header (%s): using placeholders",
                           exc)
            return cls()
        values: dict[str, Any] = {}
        for section, attribute, name, convert in _STUDY_FIELDS:
            value = getattr(getattr(header, section, None), attribute, None)
            if value is not None and str(value) != "":
                values[name] = convert(value)
        return cls(**values)


#: (ISMRMRD header section, its attribute, StudyInfo field, conversion to the DICOM value).
_STUDY_FIELDS: tuple[tuple[str, str, str, Any], ...] = (
    ("subjectInformation", "patientName", "patient_name", str),
    ("subjectInformation", "patientID", "patient_id", str),
    ("subjectInformation", "patientBirthdate", "patient_birth_date", lambda v: str(v).replace("-", "")),
    ("subjectInformation", "patientGender", "patient_sex", str),
    ("studyInformation", "studyDate", "study_date", lambda v: str(v).replace("-", "")),
    ("studyInformation", "studyTime", "study_time", lambda v: str(v).replace(":", "").split(".")[0]),
    ("studyInformation", "studyID", "study_id", lambda v: str(v)[:16]),
    ("studyInformation", "accessionNumber", "accession_number", lambda v: str(v)[:16]),
    ("studyInformation", "studyDescription", "study_description", str),
    ("acquisitionSystemInformation", "systemVendor", "manufacturer", str),
    ("acquisitionSystemInformation", "systemModel", "model_name", str),
    ("acquisitionSystemInformation", "institutionName", "institution", str),
    ("acquisitionSystemInformation", "systemFieldStrength_T", "field_strength_t", float),
)


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    for digits in range(12, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.4e}"


def _series_description(series: int, images: Sequence[ismrmrd.Image]) -> str:
    text = f"CardioMM series {series}: {describe_method(images)}"
    return text[:64]


def write_dicom(images: Sequence[ismrmrd.Image], folder: PathLike, *, header_xml: str | None = None,
                when: datetime | None = None) -> list[Path]:
    """Write ``images`` as DICOM MR images under ``folder``; return the files written, in order.

    ``header_xml`` (the raw data's ISMRMRD header) fills patient, study and system fields. Raises
    ValueError for an image without usable geometry or one that is not 2D, before any file is
    written.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    images = list(images)
    if not images:
        raise ValueError("no images to write")
    grouped = group_series(images)
    geometries = {id(im): image_geometry(im) for im in images}  # every check before any write
    pixels = {id(im): magnitude(im) for im in images}
    info = StudyInfo.from_header_xml(header_xml)
    now = when or datetime.now()
    study_uid = generate_uid()
    frame_of_reference = generate_uid()
    folder = Path(folder)
    written: list[Path] = []
    for series, slices in grouped.items():
        members = [im for slice_images in slices.values() for im in slice_images]
        stack = np.stack([pixels[id(im)] for im in members])
        peak = float(stack.max())
        slope = peak / _UINT16_MAX if peak > 0 else 1.0
        centre, width = window(stack)
        series_uid = generate_uid()
        description = _series_description(series, members)
        frames = sorted({_frame_key(im) for im in members})
        frame_number = {key: number for number, key in enumerate(frames, 1)}
        out = folder / f"series_{series:03d}"
        out.mkdir(parents=True, exist_ok=True)
        for instance, image in enumerate(members, 1):
            geometry = geometries[id(image)]
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = pydicom.uid.UID(MR_IMAGE_STORAGE)
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
            path = out / f"IM_{instance:05d}.dcm"
            ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID = MR_IMAGE_STORAGE
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_of_reference
            ds.Modality = "MR"
            ds.ImageType = ["DERIVED", "PRIMARY", "M", "ND"]
            ds.PatientName = info.patient_name
            ds.PatientID = info.patient_id
            ds.PatientBirthDate = info.patient_birth_date
            ds.PatientSex = info.patient_sex if info.patient_sex in ("M", "F", "O") else ""
            ds.StudyDate = info.study_date or now.strftime("%Y%m%d")
            ds.StudyTime = info.study_time or now.strftime("%H%M%S")
            ds.SeriesDate = now.strftime("%Y%m%d")
            ds.SeriesTime = now.strftime("%H%M%S")
            ds.StudyID = info.study_id
            ds.AccessionNumber = info.accession_number
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = info.study_description[:64]
            ds.SeriesDescription = description
            ds.Manufacturer = info.manufacturer
            ds.ManufacturerModelName = info.model_name
            ds.InstitutionName = info.institution
            if info.field_strength_t is not None:
                ds.MagneticFieldStrength = _ds(info.field_strength_t)
            ds.SeriesNumber = series
            ds.InstanceNumber = instance
            ds.AcquisitionNumber = int(image.repetition) + 1
            ds.ScanningSequence = "RM"  # research mode: the sequence is not known here
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.ImagePositionPatient = [_ds(v) for v in geometry.first_pixel]
            ds.ImageOrientationPatient = [_ds(v) for v in (*geometry.read_dir, *geometry.phase_dir)]
            ds.PixelSpacing = [_ds(geometry.spacing[1]), _ds(geometry.spacing[0])]  # row spacing, column spacing
            ds.SliceThickness = _ds(geometry.spacing[2])
            ds.SliceLocation = _ds(float(np.dot(geometry.position, geometry.slice_dir)))
            ds.TemporalPositionIdentifier = frame_number[_frame_key(image)]
            ds.NumberOfTemporalPositions = len(frames)
            ds.CardiacNumberOfImages = len(frames)
            ds.ImageComments = (_meta(image, "ImageComment") or description)[:10240]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = geometry.shape
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = _ds(slope)
            ds.RescaleType = "US"
            ds.WindowCenter = _ds(centre)
            ds.WindowWidth = _ds(width)
            stored = np.clip(np.rint(pixels[id(image)] / slope), 0, _UINT16_MAX).astype(np.uint16)
            ds.PixelData = np.ascontiguousarray(stored).tobytes()
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
    logger.info("wrote %d DICOM images in %d series under %s", len(written), len(grouped), folder)
    return written


# --------------------------------------------------------------------------- NIfTI


def write_nifti(images: Sequence[ismrmrd.Image], folder: PathLike) -> list[Path]:
    """Write one NIfTI-1 file per (series, slice), ``(x, y, 1, frames)`` float32 magnitude with
    the slice's RAS affine; return the files written. ValueError for images without geometry or
    with frames of different geometry within a slice, before any file is written."""
    import nibabel

    images = list(images)
    if not images:
        raise ValueError("no images to write")
    volumes = []
    for series, slices in group_series(images).items():
        for slice_index, members in slices.items():
            geometry = image_geometry(members[0])
            for other in members[1:]:
                g = image_geometry(other)
                if g.shape != geometry.shape or not np.allclose(g.affine_lps(), geometry.affine_lps(), atol=1e-3):
                    raise ValueError(f"series {series} slice {slice_index}: frames differ in geometry "
                                     "(position, orientation or size); cannot stack them in one NIfTI")
            data = np.stack([magnitude(im).T for im in members], axis=-1)  # (x, y, frames)
            volumes.append((series, slice_index, geometry, data[:, :, None, :].astype(np.float32)))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for series, slice_index, geometry, data in volumes:
        image = nibabel.Nifti1Image(data, geometry.affine_ras())
        image.set_sform(geometry.affine_ras(), code=1)  # scanner coordinates
        image.set_qform(geometry.affine_ras(), code=1)
        image.header.set_xyzt_units(xyz="mm", t="unknown")
        path = folder / f"series_{series:03d}_slice_{slice_index:03d}.nii.gz"
        nibabel.save(image, path)
        written.append(path)
    logger.info("wrote %d NIfTI files under %s", len(written), folder)
    return written


# --------------------------------------------------------------------------- PNG


def _label_strip(width: int, text: str, height: int = 14) -> np.ndarray:
    from PIL import Image, ImageDraw

    strip = Image.new("L", (width, height), 0)
    ImageDraw.Draw(strip).text((2, 1), text, fill=255)
    return np.asarray(strip)


def series_montage(slices: dict[int, list[ismrmrd.Image]], *, title: str, max_frames: int | None = None) -> np.ndarray:
    """uint8 montage of one series: a row per slice (labelled ``slice k``), a column per frame
    (labelled ``frame n``), windowed over the whole series (0 to its 99.5th percentile); a title
    strip on top."""
    rows = []
    n_cols = max(len(m) for m in slices.values())
    if max_frames is not None:
        n_cols = min(n_cols, max_frames)
    all_values = np.concatenate([magnitude(im).ravel() for members in slices.values() for im in members])
    top = float(np.percentile(all_values, WINDOW_PERCENTILES[1])) or 1.0
    shapes = {magnitude(members[0]).shape for members in slices.values()}
    if len(shapes) != 1:
        raise ValueError(f"the slices of one series differ in size ({sorted(shapes)}); cannot tile them")
    n_y, n_x = shapes.pop()
    label_w = 56
    header = np.zeros((14, label_w + n_cols * n_x), dtype=np.uint8)
    for column in range(n_cols):
        header[:, label_w + column * n_x:label_w + (column + 1) * n_x] = _label_strip(n_x, f"frame {column + 1}")
    rows.append(header)
    for slice_index, members in slices.items():
        row = np.zeros((n_y, label_w + n_cols * n_x), dtype=np.uint8)
        row[:14, :label_w] = _label_strip(label_w, f"slice {slice_index}")
        for column, image in enumerate(members[:n_cols]):
            tile = np.clip(magnitude(image) / top, 0, 1) * 255
            row[:, label_w + column * n_x:label_w + (column + 1) * n_x] = tile.astype(np.uint8)
        rows.append(row)
    canvas = np.concatenate(rows, axis=0)
    return np.concatenate([_label_strip(canvas.shape[1], title), canvas], axis=0)


def write_png(images: Sequence[ismrmrd.Image], folder: PathLike, *, name: str = "images") -> list[Path]:
    """One labelled PNG montage per series: ``<folder>/<name>_series_<series>.png``."""
    from PIL import Image

    images = list(images)
    if not images:
        raise ValueError("no images to write")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for series, slices in group_series(images).items():
        members = [im for m in slices.values() for im in m]
        title = f"{name}: series {series}, {len(members)} images, {describe_method(members)}"
        path = folder / f"{_safe(name)}_series_{series:03d}.png"
        Image.fromarray(series_montage(slices, title=title)).save(path, format="PNG")
        written.append(path)
    return written


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "images"


def export_images(images: Sequence[ismrmrd.Image], fmt: str, out: PathLike, *, header_xml: str | None = None,
                  name: str = "images") -> list[Path]:
    """Write ``images`` in ``fmt`` (one of FORMATS other than "ismrmrd") under folder ``out``."""
    if fmt == "dicom":
        return write_dicom(images, out, header_xml=header_xml)
    if fmt == "nifti":
        return write_nifti(images, out)
    if fmt == "png":
        return write_png(images, out, name=name)
    raise ValueError(f"format must be one of {FORMATS[1:]} here, got {fmt!r}")
