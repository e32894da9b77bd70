"""Issue 10: property-based fuzzing of the wire readers (hypothesis).

Random, mutated and truncated messages, built around real ones (a ReconData of the tiny scan,
acquisitions, images) with length and dimension fields replaced by hostile values:

* in-process, through the gadget child's guarded readers over a socket pair: every message ends
  in an item, CLOSE or an exception (never a hang: every read has a timeout), and tracemalloc's
  peak stays within a small multiple of the per-message cap (:data:`CAP`), whatever is claimed;
* against a worker subprocess (``--max-message-mb 1``): the worker survives every message,
  closes every connection by itself, its peak RSS does not grow by the claims, and it then serves
  a valid scan whose images equal those of a direct run.

Hypothesis settings are modest (``max_examples`` 150 / 25, ``deadline=None``); no timing verdicts.
"""

from __future__ import annotations

import socket
import struct
import threading
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gadgets.protocol.stream import guard_connection, iter_items
from gadgets.protocol.wire_limits import MessageBudget
from gadgets.recon import CardioMMRecon
from tests.gadgets.harness import CONFIG, HEADER, config_xml, encode_item, encode_string
from tests.reliability.network_helpers import (
    GUARD,
    U16,
    U64,
    assert_same_images,
    images_of,
    make_tiny_scan,
    play_gadgetron,
    proc_memory_kib,
    start_worker,
    stop_worker,
    wait_closed_by_peer,
)

#: Per-message cap of the in-process fuzz (bytes).
CAP = 256 * 1024
#: Allowed peak of traced allocations while reading one fuzzed stream: the bytes read become
#: objects (ctypes headers, numpy views) worth at most a few times the bytes, plus fixed costs.
PEAK_BOUND = 4 * CAP + 2 * 2**20
MESSAGE_IDS = (1008, 1022, 1023, 1024, 1026, 1050, 4, 5, 8, 0, 65535)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return make_tiny_scan(tmp_path_factory.mktemp("fuzz_scan"))


def _valid_messages(recon_data) -> list[bytes]:
    import ismrmrd
    import numpy as np

    acquisition = ismrmrd.Acquisition.from_array(np.ones((2, 32), np.complex64))
    image = ismrmrd.Image.from_array(np.ones((1, 1, 12, 16), np.float32))
    return [encode_item(recon_data[0]), encode_item(acquisition), encode_item(image)]


HOSTILE_NUMBERS = st.one_of(
    st.sampled_from([0, 1, 2**16 - 1, 2**27, 2**31, 2**32 - 1, 2**32, 2**40, 2**61, 2**63, 2**64 - 1]),
    st.integers(min_value=0, max_value=2**64 - 1),
)


@st.composite
def fuzzed_stream(draw, valid: list[bytes]) -> bytes:
    """Some messages, each a mutated valid one or a hostile id + fields + random bytes, maybe truncated."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            message = bytearray(draw(st.sampled_from(valid)))
            for _ in range(draw(st.integers(0, 4))):  # overwrite length/dimension-sized fields
                position = draw(st.integers(2, len(message) - 8))
                message[position:position + 8] = U64.pack(draw(HOSTILE_NUMBERS))
            cut = draw(st.one_of(st.none(), st.integers(0, len(message))))
            parts.append(bytes(message if cut is None else message[:cut]))
        else:
            body = b"".join(U64.pack(n) if isinstance(n, int) else n
                            for n in draw(st.lists(st.one_of(HOSTILE_NUMBERS, st.binary(max_size=64)), max_size=8)))
            parts.append(U16.pack(draw(st.sampled_from(MESSAGE_IDS))) + body)
    if draw(st.booleans()):
        parts.append(U16.pack(4))  # CLOSE
    return b"".join(parts)


def _read_guarded(data: bytes, header) -> tuple[str, int]:
    """Read ``data`` through the gadget child's guarded connection; (how it ended, traced peak)."""
    from gadgetron.external.connection import Connection as GtConnection

    ours, theirs = socket.socketpair()

    class Connection:
        def __init__(self) -> None:
            self.socket = GtConnection.SocketWrapper(theirs)
            self.readers = GtConnection._default_readers()
            self.header = header

    connection = Connection()
    guard_connection(connection)
    connection.socket.budget = MessageBudget(CAP, f"the fuzz cap of {CAP} bytes")
    theirs.settimeout(GUARD)  # a hang guard: the writer always closes, so no read waits for it

    def write() -> None:
        try:
            ours.sendall(data)
        except OSError:
            pass
        finally:
            try:
                ours.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    writer = threading.Thread(target=write, daemon=True)
    tracemalloc.start()
    writer.start()
    try:
        for _ in iter_items(connection):
            pass
        outcome = "close"
    except Exception as exc:  # noqa: BLE001 - every failure is an outcome; handle() turns it into an ERROR
        outcome = type(exc).__name__
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        ours.close()
        theirs.close()
        writer.join(GUARD)
    assert not writer.is_alive()
    return outcome, peak


@pytest.mark.slow
def test_fuzzed_streams_stay_within_the_cap_in_process(scan):
    _path, header, _xml, recon_data = scan
    valid = _valid_messages(recon_data)
    outcomes: dict[str, int] = {}

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(fuzzed_stream(valid))
    def check(data: bytes) -> None:
        outcome, peak = _read_guarded(data, header)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert outcome != "timeout" and "Timeout" not in outcome
        assert peak < PEAK_BOUND, f"{peak} bytes traced for a stream of {len(data)} bytes ({outcome})"

    check()
    assert outcomes.get("MessageTooLarge", 0) > 0, outcomes  # the claims were exercised


def test_valid_stream_reads_under_the_derived_limit(scan):
    _path, header, _xml, recon_data = scan
    data = b"".join(encode_item(item) for item in recon_data) + U16.pack(4)
    # with the limit the header allows (not the fuzz cap), real ReconData go through
    from gadgetron.external.connection import Connection as GtConnection

    ours, theirs = socket.socketpair()

    class Connection:
        def __init__(self) -> None:
            self.socket = GtConnection.SocketWrapper(theirs)
            self.readers = GtConnection._default_readers()
            self.header = header

    connection = Connection()
    guard_connection(connection)
    writer = threading.Thread(target=ours.sendall, args=(data,), daemon=True)
    writer.start()
    items = list(iter_items(connection))
    writer.join(GUARD)
    ours.close()
    theirs.close()
    assert len(items) == len(recon_data)


@pytest.mark.slow
def test_fuzzed_streams_never_break_the_worker(scan, tmp_path):
    _path, header, xml, recon_data = scan
    valid = _valid_messages(recon_data)
    handshake = encode_string(CONFIG, config_xml({"checkpoint": "none"})) + encode_string(HEADER, xml)
    worker, port = start_worker("--checkpoint", "none", "--max-message-mb", "1", "--handshake-timeout", "10",
                                "--connection-timeout", "10", env={"CARDIOMM_CACHE_DIR": str(tmp_path)})
    try:
        # a valid scan first: imports and the first reconstruction's allocations are in the baseline,
        # so the bound below measures what the fuzzed streams add, whichever examples are drawn
        warm = play_gadgetron(port, xml, recon_data, {"checkpoint": "none"})
        assert warm.errors == [] and warm.closed, worker.log[-3000:]
        before = proc_memory_kib(worker.proc.pid)["VmHWM"]
        sent = [0]

        @settings(max_examples=25, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.one_of(
            fuzzed_stream(valid).map(lambda body: handshake + body),  # after a valid handshake
            st.tuples(st.integers(0, len(handshake)), st.binary(max_size=64)).map(
                lambda cut: handshake[:cut[0]] + cut[1]),  # a truncated or corrupted handshake
            st.binary(max_size=256).map(lambda b: struct.pack("<HI", 2, len(b)) + b),  # garbage CONFIG
        ))
        def check(data: bytes) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
                try:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the worker may have closed already
                wait_closed_by_peer(sock)  # the worker ends every connection (hang guard GUARD)
            assert worker.proc.poll() is None, worker.log[-3000:]
            sent[0] += 1

        check()
        after = proc_memory_kib(worker.proc.pid)["VmHWM"]
        result = play_gadgetron(port, xml, recon_data, {"checkpoint": "none"})
    finally:
        assert stop_worker(worker) == 0, worker.log[-3000:]
    expected = list(CardioMMRecon(checkpoint="none")(iter(recon_data), header))
    assert result.errors == [] and result.closed
    assert_same_images(images_of(result), expected)
    assert (after - before) / 1024 < 64, f"worker peak RSS grew by {(after - before) / 1024:.0f} MiB"
    assert sent[0] >= 25
