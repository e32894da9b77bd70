"""Issue 10, item 6: connections have limits.

A handshake has one deadline in all (a peer trickling a byte at a time cannot keep it open), a
silent connection in the data phase is closed after ``--connection-timeout``, connections over
``--max-concurrent`` get a busy ERROR naming the limit, and SIGTERM ends idle connections at
once. Verdicts come from what the worker says and does, never from how fast; every wait is a
hang guard.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.gadgets.harness import CONFIG, HEADER, config_xml, encode_string
from tests.reliability.network_helpers import (
    GUARD,
    U16,
    error_texts,
    handshake,
    images_of,
    play_gadgetron,
    read_answer,
    start_worker,
    stop_worker,
    wait_closed_by_peer,
)

pytestmark = pytest.mark.slow  # every test here takes seconds (processes, servers): `make test-fast` skips them


def test_handshake_has_one_deadline_in_all(tiny_scan, tmp_path):
    worker, port = start_worker("--checkpoint", "none", "--handshake-timeout", "2",
                                env={"CARDIOMM_CACHE_DIR": str(tmp_path)})
    try:
        message = encode_string(CONFIG, config_xml({"checkpoint": "none"}))
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
            end = time.monotonic() + GUARD  # hang guard only
            try:
                while time.monotonic() < end and sent < len(message):
                    sock.sendall(message[sent:sent + 1])  # one byte at a time: each recv is quick
                    sent += 1
                    time.sleep(0.25)
            except OSError:
                pass  # closed by the worker while we trickle
            assert wait_closed_by_peer(sock) == b""
        result = play_gadgetron(port, tiny_scan[2], tiny_scan[3], {"checkpoint": "none"})
        assert result.errors == [] and len(images_of(result)) == 4
    finally:
        assert stop_worker(worker) == 0
    assert sent < len(message), "the whole CONFIG got through one byte at a time"
    assert "did not arrive within 2 s" in worker.log, worker.log


def test_silent_connection_is_closed_in_the_data_phase(tiny_scan, tmp_path):
    worker, port = start_worker("--checkpoint", "none", "--connection-timeout", "1",
                                env={"CARDIOMM_CACHE_DIR": str(tmp_path)})
    try:
        with handshake(port, tiny_scan[2]) as sock:
            errors, closed = read_answer(sock)  # we send nothing more
        assert closed and len(errors) == 1 and "sent nothing for 1 s" in errors[0], (errors, worker.log)
        result = play_gadgetron(port, tiny_scan[2], tiny_scan[3], {"checkpoint": "none"})
        assert result.errors == [] and len(images_of(result)) == 4
    finally:
        assert stop_worker(worker) == 0
    assert "Traceback" not in worker.log


def test_connections_over_the_limit_get_a_busy_error(tiny_scan, tmp_path):
    worker, port = start_worker("--checkpoint", "none", "--max-concurrent", "2",
                                env={"CARDIOMM_CACHE_DIR": str(tmp_path)})
    idle = []
    try:
        idle = [handshake(port, tiny_scan[2]) for _ in range(2)]
        for _ in range(2):  # a scan is refused while both slots are held
            with handshake(port, tiny_scan[2]) as sock:
                texts = error_texts(wait_closed_by_peer(sock))
            assert len(texts) == 1 and "busy" in texts[0] and "--max-concurrent 2" in texts[0], texts
        idle.pop().close()  # a slot frees up: the next scan is served
        for _ in range(int(GUARD * 4)):
            result = play_gadgetron(port, tiny_scan[2], tiny_scan[3], {"checkpoint": "none"})
            if not result.errors:
                break
            assert "busy" in result.errors[0]  # the freed slot not yet noticed: try again
            time.sleep(0.25)
        assert result.errors == [] and len(images_of(result)) == 4
    finally:
        for sock in idle:
            sock.close()
        assert stop_worker(worker) == 0
    assert "refused" in worker.log


def test_sigterm_ends_idle_connections_at_once(tiny_scan, tmp_path):
    worker, port = start_worker("--checkpoint", "none", env={"CARDIOMM_CACHE_DIR": str(tmp_path)})
    try:
        idle = [handshake(port, tiny_scan[2]) for _ in range(3)]
        half_open = socket.create_connection(("127.0.0.1", port), timeout=GUARD)  # no handshake at all
        for _ in range(int(GUARD * 10)):  # wait until the worker has accepted all four
            if worker.log.count("connection ") >= 4 and worker.log.count("running with") >= 3:
                break
            time.sleep(0.1)
        worker.proc.send_signal(signal.SIGTERM)
        for sock in idle + [half_open]:
            wait_closed_by_peer(sock)  # each is closed by the worker (hang guard GUARD)
            sock.close()
        assert worker.wait_exit(GUARD) == 0, worker.log
    finally:
        worker.kill()
    log = worker.log
    assert "received SIGTERM" in log and "closed 4 idle connection(s)" in log, log
    assert "still running" not in log  # nothing waited for the shutdown grace


#: What a peer may send instead of CONFIG and HEADER, and what the ERROR back must name.
BAD_HANDSHAKES = {
    "header that is not XML": (encode_string(CONFIG, config_xml({"checkpoint": "none"}))
                               + encode_string(HEADER, "<ismrmrdHeader><not closed"), "ParserError"),
    "acquisition before CONFIG": (U16.pack(1008) + bytes(64), "were not CONFIG"),
    "header without required fields": (encode_string(CONFIG, config_xml({"checkpoint": "none"}))
                                       + encode_string(HEADER, "<ismrmrdHeader/>"), "experimentalConditions"),
}


@pytest.mark.parametrize("case", sorted(BAD_HANDSHAKES))
def test_a_handshake_it_cannot_read_gets_an_error_back(tiny_scan, tmp_path, case):
    """Gadgetron (or any peer) is told in one ERROR why its CONFIG/HEADER were refused, instead of
    a bare close; the worker goes on serving."""
    data, named = BAD_HANDSHAKES[case]
    worker, port = start_worker("--checkpoint", "none", env={"CARDIOMM_CACHE_DIR": str(tmp_path)})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
            sock.sendall(data)
            errors, _closed = read_answer(sock)
        assert len(errors) == 1, (errors, worker.log)
        assert errors[0].startswith("cardiomm-worker: no valid CONFIG/HEADER: ") and named in errors[0], errors[0]
        result = play_gadgetron(port, tiny_scan[2], tiny_scan[3], {"checkpoint": "none"})
        assert result.errors == [] and len(images_of(result)) == 4
    finally:
        assert stop_worker(worker) == 0
    assert "no valid CONFIG/HEADER" in worker.log
