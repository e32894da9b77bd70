"""cardiomm-replay (gadgets.tools.replay): local replays, --server mode against the fake server, exit codes."""

from __future__ import annotations

import io
import re
import socket
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from gadgets.io.image_io import list_image_groups, read_images
from gadgets.protocol.chain_format import Chain, Stage, load_chain
from gadgets.tools.replay import EXIT_CONNECTION, EXIT_FAILED, EXIT_OK, EXIT_USAGE, Progress, main, parse_server
from tests.gadgets.fake_server import FakeGadgetronServer

CHAINS_DIR = Path(__file__).resolve().parents[2] / "chains"
PYTHON_CHAIN = CHAINS_DIR / "cardiomm_cine_python.xml"


def replay(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the CLI in-process; (exit status, stderr). argparse errors exit with SystemExit(2)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


def write_chain(chain: Chain, folder: Path, name: str = "chain.yaml") -> Path:
    path = folder / name
    path.write_text(chain.to_yaml())
    return path


def test_parse_server() -> None:
    assert parse_server("gadgetron.local:9003") == ("gadgetron.local", 9003)
    assert parse_server("localhost") == ("localhost", 9002)
    assert parse_server("[::1]:9002") == ("::1", 9002)
    for bad in ("host:port", ":9002", "host:70000"):
        with pytest.raises(Exception, match="HOST:PORT"):
            parse_server(bad)


def test_local_replay_writes_images_as_the_client_does(simulated_scan_file: Path, simulated_scan_summary: Any,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, preview = tmp_path / "out.h5", tmp_path / "preview.png"
    code, err = replay([simulated_scan_file, "--chain", PYTHON_CHAIN, "-o", out, "--checkpoint", "none",
                        "--preview", preview], capsys)
    assert code == EXIT_OK, err
    (group,) = list_image_groups(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", group)  # the client's default group name
    n_images = simulated_scan_summary.n_slices * simulated_scan_summary.n_frames
    nx, ny = simulated_scan_summary.matrix
    with h5py.File(out, "r") as f:
        series = f[group]["image_1"]
        assert set(series) == {"data", "header", "attributes"}
        assert series["data"].shape == (n_images, 1, 1, ny, nx) and series["data"].dtype == np.float32
    images = read_images(out, group)[1]
    assert {(im.slice, im.phase) for im in images} == {(s, p) for s in range(simulated_scan_summary.n_slices)
                                                       for p in range(simulated_scan_summary.n_frames)}
    assert all(im.meta["CardioMM.Method"] == "cg_sense" for im in images)
    summary = err.strip().splitlines()
    assert any(f"{n_images} images in 1 series (image_1: {n_images} x {nx}x{ny})" in line for line in summary)
    assert "acquisitions/s" in err and "cg_sense (fallback)" in err
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(preview) as picture:  # labelled: title and frame strips, a slice-label column
        assert picture.size == (56 + simulated_scan_summary.n_frames * nx, 28 + simulated_scan_summary.n_slices * ny)
    # appending a second run to the same file and group, as the client does
    code, err = replay([simulated_scan_file, "--chain", PYTHON_CHAIN, "-o", out, "--group", group, "-q",
                        "--checkpoint", "none"], capsys)
    assert code == EXIT_OK, err
    assert len(read_images(out, group)[1]) == 2 * n_images


def test_checkpoint_path_reaches_the_recon(simulated_scan_file: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from cardiomm_core.checkpoint import save_checkpoint
    from cardiomm_core.model import CardioMM, config_by_name

    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "tiny", CardioMM(config_by_name("tiny", 64)),
                                 text_encoder_name="hashing", text_encoder_dim=64)
    out = tmp_path / "out.h5"
    code, err = replay([simulated_scan_file, "--chain", CHAINS_DIR / "cardiomm_cine_native.yaml", "-o", out,
                        "--group", "g", "--checkpoint", checkpoint, "--device", "cpu", "-q"], capsys)
    assert code == EXIT_OK, err
    images = read_images(out, "g")[1]
    assert {im.meta["CardioMM.Method"] for im in images} == {"cardiomm"}
    assert {im.meta["CardioMM.Fallback"] for im in images} == {"false"}
    assert "tiny.safetensors" in images[0].meta["CardioMM.Model"]
    assert "method cardiomm: " in err


@pytest.mark.parametrize("args, message", [
    ([], "give --chain"),
    (["--config", "default.xml"], "give --server HOST:PORT too"),
    (["--server", "127.0.0.1:9"], "exactly one of --config"),
    (["--server", "127.0.0.1:9", "--config", "x.xml", "--chain", PYTHON_CHAIN], "exactly one of --config"),
    (["--server", "127.0.0.1:9", "--config", "x.xml", "--checkpoint", "none"], "cannot change --config"),
    (["--chain", "missing_chain.xml"], "does not exist"),
    (["--chain", PYTHON_CHAIN, "--header-version", "-1"], "--header-version must be >= 0"),
])
def test_usage_errors_exit_2(simulated_scan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             args: list[Any], message: str) -> None:
    code, err = replay([simulated_scan_file, "-o", tmp_path / "out.h5", *args], capsys)
    assert code == EXIT_USAGE
    assert message in err
    assert not (tmp_path / "out.h5").exists()


def test_missing_input_and_bad_chains_exit_2(simulated_scan_file: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, err = replay([tmp_path / "nope.h5", "--chain", PYTHON_CHAIN, "-o", tmp_path / "o.h5"], capsys)
    assert code == EXIT_USAGE and "is not a file" in err
    broken = Chain(name="broken", stages=(Stage(kind="native", dll="gadgetron_mricore", classname="ExtractGadget"),))
    code, err = replay([simulated_scan_file, "--chain", write_chain(broken, tmp_path), "-o", tmp_path / "o.h5"],
                       capsys)
    assert code == EXIT_USAGE and "ExtractGadget" in err and "broken" in err
    bad_param = load_chain(PYTHON_CHAIN).with_properties("CoilCompression", n_coils="eight")
    code, err = replay([simulated_scan_file, "--chain", write_chain(bad_param, tmp_path, "bad.yaml"),
                        "-o", tmp_path / "o.h5"], capsys)
    assert code == EXIT_USAGE and "n_coils" in err and "'eight'" in err


def test_chain_failure_and_no_images_exit_1(simulated_scan_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    failing = Chain(name="failing", stages=(Stage(kind="python", module="tests.gadgets.harness",
                                                  target="EchoGadget", properties={"fail_after": "3"}),))
    out = tmp_path / "o.h5"
    code, err = replay([simulated_scan_file, "--chain", write_chain(failing, tmp_path), "-o", out], capsys)
    assert code == EXIT_FAILED
    assert "chain failing failed" in err and "EchoGadget was told to fail after 3" in err
    front_end = Chain(name="front_end", stages=load_chain(PYTHON_CHAIN).stages[:3])
    code, err = replay([simulated_scan_file, "--chain", write_chain(front_end, tmp_path, "f.yaml"), "-o", out],
                       capsys)
    assert code == EXIT_FAILED and "produced no images" in err
    assert not out.exists()


def test_progress_lines_are_throttled() -> None:
    stream = io.StringIO()
    progress = Progress(10, stream=stream, interval=0.0)
    progress.update(sent=5, images=2)
    assert stream.getvalue().startswith("replay: 5/10 items sent (50%), 2 images")
    quiet = io.StringIO()
    Progress(10, stream=quiet, interval=3600.0).update(sent=5)
    assert quiet.getvalue() == ""


def test_server_by_config_name(shepp_logan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.h5"
    with FakeGadgetronServer("echo", timeout=120) as server:
        code, err = replay([shepp_logan_file, "--server", f"127.0.0.1:{server.port}", "--config", "default.xml",
                            "-o", out, "--group", "g", "--header-version", "14", "-q"], capsys)
    assert code == EXIT_OK, err
    assert server.received.config_name == "default.xml" and server.received.config_text is None
    assert "<version>14</version>" in server.received.header
    assert server.received.close and server.received.message_ids[:2] == [1, 3]
    images = read_images(out, "g")[1]
    assert len(images) == len(server.sent_images) == 2  # one per repetition of the fixture file
    for got, sent in zip(images, server.sent_images):
        np.testing.assert_array_equal(got.data, sent.data)
    assert "server: fake gadgetron" in err and "has ISMRMRD header version" not in err


def test_server_gets_the_chain_xml_with_overrides(shepp_logan_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGadgetronServer("echo", timeout=120) as server:
        code, err = replay([shepp_logan_file, "--server", f"127.0.0.1:{server.port}", "--chain",
                            CHAINS_DIR / "cardiomm_cine_worker.yaml", "--checkpoint", "none", "-o",
                            tmp_path / "out.h5", "-q"], capsys)
    assert code == EXIT_OK, err
    text = server.received.config_text
    assert text.startswith("<?xml") and "<version>2</version>" in text
    assert '<connect port="18000" address="localhost"' in text
    assert '<property name="checkpoint" value="none"/>' in text
    # The Debian file's header version 8 is sent unchanged, with a clear warning.
    assert "<version>8</version>" in server.received.header
    assert "has ISMRMRD header version 8" in err and "--header-version 14" in err


@pytest.mark.parametrize("message_id", [5, 8])
def test_server_error_is_printed_and_exits_1(shepp_logan_file: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str], message_id: int) -> None:
    with FakeGadgetronServer("error", timeout=120, fail_after=3, error_text="Failed to store item",
                             error_message_id=message_id) as server:
        code, err = replay([shepp_logan_file, "--server", f"127.0.0.1:{server.port}", "--config", "x.xml",
                            "-o", tmp_path / "out.h5", "-q"], capsys)
    assert code == EXIT_FAILED
    assert "server error: [Connection Main Thread] ERROR: Failed to store item" in err


def test_vanishing_or_absent_server_exits_3(shepp_logan_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGadgetronServer("vanish", timeout=120, fail_after=2) as server:
        code, err = replay([shepp_logan_file, "--server", f"127.0.0.1:{server.port}", "--config", "x.xml",
                            "-o", tmp_path / "out.h5", "-q"], capsys)
    assert code == EXIT_CONNECTION and "without CLOSE" in err
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    code, err = replay([shepp_logan_file, "--server", f"127.0.0.1:{port}", "--config", "x.xml",
                        "-o", tmp_path / "out.h5", "-q"], capsys)
    assert code == EXIT_CONNECTION and f"cannot reach the Gadgetron server at 127.0.0.1:{port}" in err


# --------------------------------------------------------------------------- explicit mistakes fail before the scan


def _tiny_checkpoint(folder: Path) -> Path:
    from cardiomm_core.checkpoint import save_checkpoint
    from cardiomm_core.model import CardioMM, config_by_name

    torch.manual_seed(0)
    return save_checkpoint(folder / "tiny", CardioMM(config_by_name("tiny", 64)), text_encoder_name="hashing",
                           text_encoder_dim=64)


def test_missing_checkpoint_is_one_line_and_exit_2_before_the_scan(simulated_scan_file: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "out.h5"
    missing = tmp_path / "nonexistent.safetensors"
    run = subprocess.run([sys.executable, "-m", "gadgets.tools.replay", str(simulated_scan_file), "--chain",
                          str(PYTHON_CHAIN), "-o", str(out), "--checkpoint", str(missing), "-q"],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == EXIT_USAGE, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "nonexistent.safetensors" in lines[0] and "does not exist" in lines[0], run.stderr
    assert "--allow-fallback" in lines[0]
    assert not out.exists()  # nothing reconstructed, nothing written


def test_allow_fallback_keeps_the_marked_fallback(simulated_scan_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.h5"
    code, err = replay([simulated_scan_file, "--chain", PYTHON_CHAIN, "-o", out, "--group", "g", "-q",
                        "--checkpoint", tmp_path / "nonexistent.safetensors", "--allow-fallback"], capsys)
    assert code == EXIT_OK, err
    images = read_images(out, "g")[1]
    assert images and {im.meta["CardioMM.Fallback"] for im in images} == {"true"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line_and_exit_2(simulated_scan_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.h5"
    code, err = replay([simulated_scan_file, "--chain", PYTHON_CHAIN, "-o", out, "--checkpoint",
                        _tiny_checkpoint(tmp_path), "--device", "cuda", "-q"], capsys)
    assert code == EXIT_USAGE
    assert "CUDA is not available" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("damage", ["json", "weights", "architecture"])
def test_a_checkpoint_that_cannot_load_is_refused_before_the_scan(simulated_scan_file: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  damage: str) -> None:
    import json

    weights = _tiny_checkpoint(tmp_path)
    meta_path = weights.with_suffix(".json")
    if damage == "json":
        meta_path.write_text(meta_path.read_text()[:-40])  # truncated JSON
    elif damage == "weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated weights
    else:
        meta = json.loads(meta_path.read_text())
        meta["architecture"]["chans"] = int(meta["architecture"]["chans"]) * 2  # JSON no longer matches the weights
        meta_path.write_text(json.dumps(meta))
    out = tmp_path / "out.h5"
    code, err = replay([simulated_scan_file, "--chain", PYTHON_CHAIN, "-o", out, "--checkpoint", weights,
                        "--device", "cpu", "-q"], capsys)
    assert code == EXIT_USAGE, err
    assert "cannot load checkpoint" in err and "tiny.safetensors" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["text_file", "folder", "no_parent"])
def test_unusable_output_is_refused_before_the_scan(simulated_scan_file: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str], kind: str) -> None:
    out = {"text_file": tmp_path / "notes.txt", "folder": tmp_path, "no_parent": tmp_path / "nope" / "o.h5"}[kind]
    if kind == "text_file":
        out.write_text("not HDF5")
    code, err = replay([simulated_scan_file, "--chain", PYTHON_CHAIN, "-o", out, "--checkpoint", "none", "-q"], capsys)
    assert code == EXIT_USAGE
    assert "-o" in err and "Traceback" not in err and str(out) in err
    if kind == "text_file":
        assert out.read_text() == "not HDF5"
def test_config_that_is_a_local_file_is_sent_as_xml(shepp_logan_file: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``--config chains/X.xml`` (a file here) is sent as the chain's XML (message 2), with a note;
    Gadgetron would look a CONFIG by name up in its own config folder only."""
    with FakeGadgetronServer("echo", timeout=120) as server:
        code, err = replay([shepp_logan_file, "--server", f"127.0.0.1:{server.port}", "--config", PYTHON_CHAIN,
                            "--checkpoint", "none", "-o", tmp_path / "out.h5", "--header-version", "14", "-q"],
                           capsys)
    assert code == EXIT_OK, err
    assert server.received.config_name is None and server.received.message_ids[:2] == [2, 3]
    assert server.received.config_text == load_chain(PYTHON_CHAIN).with_properties(
        "CardioMMRecon", checkpoint="none").to_xml()
    assert f"--config {PYTHON_CHAIN} is a local file: sending its XML" in err


def test_config_with_a_folder_that_does_not_exist_is_a_usage_error(shepp_logan_file: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, err = replay([shepp_logan_file, "--server", "127.0.0.1:9", "--config", tmp_path / "nowhere" / "x.xml",
                        "-o", tmp_path / "out.h5"], capsys)
    assert code == EXIT_USAGE and "is not a local file" in err and "--config x.xml" in err
