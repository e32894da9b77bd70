"""The ISMRMRD header of a simulated scan: the scan's geometry, sequence, identity and ``CardioMM.*``
user parameters, as a scanner's converter writes them (see :mod:`gadgets.io.simulated_scan` for the
file, and :func:`build_header` for the header's fields)."""

from __future__ import annotations

import ismrmrd
import numpy as np

from cardiomm_core.masks import SamplingMask
from cardiomm_core.phantom import PhantomGeometry, PhantomScan

from .ismrmrd_io import CURRENT_HEADER_VERSION

#: Modalities of the phantom; for all but cine the frames are contrasts.
MODALITIES = ("cine", "mapping", "t1map", "t2map")
#: Trigger delay of the images of a mapping scan (one image per heartbeat, in diastasis), ms.
MAPPING_TRIGGER_DELAY_MS = 550.0
#: Receiver bandwidth per pixel (Hz), which sets the imaging dwell time.
BANDWIDTH_HZ_PER_PIXEL = {"cine": 930.0, "mapping": 1085.0, "t1map": 1085.0, "t2map": 1185.0}
#: Dwell time of the noise measurement, microseconds (differs from the imaging dwell time).
NOISE_DWELL_US = 5.0
#: Relative receiver noise bandwidth written to the header (a typical Siemens value).
RELATIVE_NOISE_BANDWIDTH = 0.793
#: Time-stamp tick, ms.
TICK_MS = 2.5
#: Gyromagnetic ratio of 1H, Hz/T.
GAMMA_HZ_PER_T = 42.577478e6
#: Patient table position (mm): at isocentre.
TABLE_POSITION_MM = (0.0, 0.0, 0.0)
#: Centre of the slice stack (mm, patient coordinates).
STACK_CENTRE_MM = (-12.0, 28.0, 36.0)
#: (TR ms, TE ms, flip angle deg) per modality.
SEQUENCE = {"cine": (3.0, 1.5, 45.0), "mapping": (2.7, 1.1, 35.0), "t1map": (2.7, 1.1, 35.0),
            "t2map": (2.9, 1.2, 40.0)}
#: Protocol name per modality.
PROTOCOL_NAMES = {"cine": "CardioMM_cine_sax", "mapping": "CardioMM_mapping_sax",
                  "t1map": "CardioMM_t1map_sax", "t2map": "CardioMM_t2map_sax"}


# --------------------------------------------------------------------------- geometry

def slice_geometry(slice_positions_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(positions (n_slices, 3), read_dir (3,), phase_dir (3,), slice_dir (3,))`` in mm.

    Double-oblique short-axis directions, orthonormal and right-handed
    (``cross(read_dir, phase_dir) == slice_dir``); slice ``s`` lies at
    ``STACK_CENTRE_MM + slice_positions_mm[s] * slice_dir`` (``(n_slices,)`` offsets along the stack,
    the phantom's ``PhantomGeometry.slice_positions_mm``).
    """
    slice_dir = np.array([-0.55, 0.45, 0.70])
    slice_dir /= np.linalg.norm(slice_dir)
    read_guess = np.array([0.80, 0.55, 0.25])
    read_dir = read_guess - read_guess.dot(slice_dir) * slice_dir
    read_dir /= np.linalg.norm(read_dir)
    phase_dir = np.cross(slice_dir, read_dir)
    offsets = np.asarray(slice_positions_mm, dtype=np.float64).reshape(-1)
    positions = np.asarray(STACK_CENTRE_MM)[None, :] + offsets[:, None] * slice_dir[None, :]
    return positions, read_dir, phase_dir, slice_dir


def imaging_dwell_us(modality: str, nx_encoded: int) -> float:
    """Oversampled dwell time (us) of a readout of ``nx_encoded`` samples."""
    return 1e6 / (BANDWIDTH_HZ_PER_PIXEL[modality] * nx_encoded)


# --------------------------------------------------------------------------- header

#: Subject, study and measurement identity written by the simulator, as siemens_to_ismrmrd writes a
#: scanner's: a Siemens-style four-part ``measurementID`` DEVICE_PATIENT_STUDY_MEASUREMENT (Gadgetron's
#: native NoiseAdjustGadget keys the stored noise covariance on it, with ``patientID``).
SIMULATED_DEVICE_SERIAL = "66091"
SIMULATED_DATE = "2026-01-05"
SIMULATED_TIME = "10:00:00"
SIMULATED_BIRTHDATE = "1970-01-01"


def measurement_uid(seed: int) -> int:
    """The acquisitions' ``measurement_uid`` (and the last part of the measurementID) for ``seed``."""
    return 10_000 + int(seed) % 50_000


def scan_ids(seed: int) -> dict[str, str]:
    """Patient, study and measurement identifiers of the simulated scan with ``seed``.

    Keys: ``patient_id``, ``study_id``, ``measurement_id`` (``DEVICE_PATIENT_STUDY_MEAS``, no other
    underscores), ``study_uid``, ``series_uid_root``, ``frame_of_reference_uid`` (``2.25.N`` UIDs).
    """
    seed = int(seed)
    patient_id = f"CMM{seed:07d}"
    study_id = f"{1_000_000 + seed % 9_000_000}"
    uid = 2 ** 64 + seed * 1_000_003
    return {
        "patient_id": patient_id,
        "study_id": study_id,
        "measurement_id": f"{SIMULATED_DEVICE_SERIAL}_{patient_id}_{study_id}_{measurement_uid(seed)}",
        "study_uid": f"2.25.{uid}1",
        "series_uid_root": f"2.25.{uid}2",
        "frame_of_reference_uid": f"2.25.{uid}3",
    }


def build_header(scan: PhantomScan, mask: SamplingMask, *, modality: str, nominal_acceleration: float,
                 n_slices: int, n_frames: int, n_coils: int, matrix: tuple[int, int],
                 geometry: PhantomGeometry) -> ismrmrd.xsd.ismrmrdHeader:
    """The ISMRMRD header of a simulated scan (see the module docstring for its contents)."""
    x = ismrmrd.xsd
    nx, ny = matrix
    ros = int(scan.readout_oversampling)
    nx_enc = nx * ros
    fov_x, fov_y = (round(float(v), 3) for v in geometry.recon_fov_mm)
    fov_x_enc = fov_x * ros  # from the rounded recon FOV: the FOV ratio is exactly the matrix ratio
    thickness = round(float(geometry.slice_thickness_mm), 3)
    ctx = scan.context
    tr, te, flip = SEQUENCE[modality]
    is_cine = modality == "cine"

    frames_limit = x.limitType(minimum=0, maximum=n_frames - 1, center=0)
    zero = x.limitType(minimum=0, maximum=0, center=0)
    limits = x.encodingLimitsType(
        kspace_encoding_step_0=x.limitType(minimum=0, maximum=nx_enc - 1, center=nx_enc // 2),
        kspace_encoding_step_1=x.limitType(minimum=0, maximum=ny - 1, center=ny // 2),
        kspace_encoding_step_2=zero,
        average=zero,
        slice=x.limitType(minimum=0, maximum=n_slices - 1, center=0),
        contrast=zero if is_cine else frames_limit,
        phase=frames_limit if is_cine else zero,
        repetition=zero,
        set=zero,
        segment=zero,
    )
    full = mask.pattern == "full"
    encoding = x.encodingType(
        encodedSpace=x.encodingSpaceType(
            matrixSize=x.matrixSizeType(x=nx_enc, y=ny, z=1),
            fieldOfView_mm=x.fieldOfViewMm(x=fov_x_enc, y=fov_y, z=thickness)),
        reconSpace=x.encodingSpaceType(
            matrixSize=x.matrixSizeType(x=nx, y=ny, z=1),
            fieldOfView_mm=x.fieldOfViewMm(x=fov_x, y=fov_y, z=thickness)),
        encodingLimits=limits,
        trajectory=x.trajectoryType.CARTESIAN,
        parallelImaging=x.parallelImagingType(
            accelerationFactor=x.accelerationFactorType(
                kspace_encoding_step_1=1 if full else max(1, int(round(nominal_acceleration))),
                kspace_encoding_step_2=1),
            calibrationMode=x.calibrationModeType.OTHER if full else x.calibrationModeType.EMBEDDED),
    )
    frame_times = [float(t) for t in np.asarray(scan.frame_times_ms, dtype=np.float64)]
    sequence = x.sequenceParametersType(TR=[tr], TE=[te], flipAngle_deg=[flip],
                                        sequence_type="TrueFISP")
    if modality in ("t1map", "mapping"):
        sequence.TI = frame_times
    user = x.userParametersType(
        userParameterLong=[
            x.userParameterLongType(name="CardioMM.seed", value=int(scan.seed)),
            x.userParameterLongType(name="CardioMM.n_acs", value=int(mask.n_acs)),
            x.userParameterLongType(name="CardioMM.n_frames", value=int(n_frames)),
        ],
        userParameterDouble=[
            x.userParameterDoubleType(name="CardioMM.nominal_acceleration", value=float(nominal_acceleration)),
            x.userParameterDoubleType(name="CardioMM.realised_acceleration",
                                      value=float(mask.realised_acceleration)),
            x.userParameterDoubleType(name="CardioMM.effective_acceleration",
                                      value=float(mask.effective_acceleration)),
            x.userParameterDoubleType(name="CardioMM.slice_spacing_mm", value=_slice_spacing(geometry)),
            x.userParameterDoubleType(name="CardioMM.time_stamp_tick_ms", value=TICK_MS),
        ],
        userParameterString=[
            x.userParameterStringType(name="CardioMM.pattern", value=mask.pattern),
            x.userParameterStringType(name="CardioMM.modality", value=modality),
            x.userParameterStringType(name="CardioMM.metadata_sentence", value=ctx.metadata_sentence()),
            x.userParameterStringType(name="CardioMM.frame_dimension", value="phase" if is_cine else "contrast"),
            x.userParameterStringType(name="CardioMM.frame_times_ms",
                                      value=",".join(f"{t:.3f}" for t in frame_times)),
        ],
    )
    ids = scan_ids(int(scan.seed))
    return x.ismrmrdHeader(
        version=CURRENT_HEADER_VERSION,
        subjectInformation=x.subjectInformationType(
            patientName=f"CardioMM^Phantom{int(scan.seed)}", patientWeight_kg=70.0, patientHeight_m=1.75,
            patientID=ids["patient_id"], patientBirthdate=SIMULATED_BIRTHDATE, patientGender="O"),
        studyInformation=x.studyInformationType(
            studyDate=SIMULATED_DATE, studyTime=SIMULATED_TIME, studyID=ids["study_id"],
            studyDescription="CardioMM simulated cardiac MR", studyInstanceUID=ids["study_uid"],
            bodyPartExamined="HEART"),
        measurementInformation=x.measurementInformationType(
            measurementID=ids["measurement_id"],
            seriesDate=SIMULATED_DATE,
            seriesTime=SIMULATED_TIME,
            patientPosition=x.patientPositionType.HFS,
            initialSeriesNumber=1,
            protocolName=PROTOCOL_NAMES[modality],
            sequenceName="CardioMM simulated bSSFP",
            seriesDescription=f"CardioMM simulated {ctx.modality}, {mask.pattern} R={nominal_acceleration:g}",
            seriesInstanceUIDRoot=ids["series_uid_root"],
            frameOfReferenceUID=ids["frame_of_reference_uid"],
        ),
        acquisitionSystemInformation=x.acquisitionSystemInformationType(
            systemVendor=ctx.vendor,
            systemModel=ctx.scanner_model,
            systemFieldStrength_T=float(ctx.field_strength_t),
            relativeReceiverNoiseBandwidth=RELATIVE_NOISE_BANDWIDTH,
            receiverChannels=n_coils,
            coilLabel=[x.coilLabelType(coilNumber=c, coilName=f"CMM_Body:{c + 1:02d}") for c in range(n_coils)],
            institutionName="CardioMM synthetic phantom",
            stationName="CARDIOMMSIM",
            deviceSerialNumber=SIMULATED_DEVICE_SERIAL,
        ),
        experimentalConditions=x.experimentalConditionsType(
            H1resonanceFrequency_Hz=int(round(GAMMA_HZ_PER_T * float(ctx.field_strength_t)))),
        encoding=[encoding],
        sequenceParameters=sequence,
        userParameters=user,
    )


def _slice_spacing(geometry: PhantomGeometry) -> float:
    positions = np.asarray(geometry.slice_positions_mm, dtype=np.float64)
    return float(positions[1] - positions[0]) if positions.size > 1 else float(geometry.slice_thickness_mm)
