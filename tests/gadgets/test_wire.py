"""gadgets.protocol.wire: the message ids are Gadgetron's, and every message is framed as its readers expect."""

from __future__ import annotations

import io
import socket

import ismrmrd
import numpy as np
import pytest
from gadgetron.external import constants

from gadgets.protocol import wire
from gadgets.protocol.gadgetron_client import encode_acquisition


def test_message_ids_are_gadgetron_pythons() -> None:
    assert (wire.CONFIG_FILE, wire.CONFIG_SCRIPT, wire.HEADER, wire.CLOSE, wire.TEXT, wire.QUERY, wire.RESPONSE,
            wire.ERROR) == (constants.GADGET_MESSAGE_FILENAME, constants.GADGET_MESSAGE_CONFIG,
                            constants.GADGET_MESSAGE_HEADER, constants.GADGET_MESSAGE_CLOSE,
                            constants.GADGET_MESSAGE_TEXT, constants.GADGET_MESSAGE_QUERY,
                            constants.GADGET_MESSAGE_RESPONSE, constants.GADGET_MESSAGE_ERROR)
    assert (wire.ACQUISITION, wire.IMAGE, wire.RECON_DATA, wire.IMAGE_ARRAY, wire.WAVEFORM, wire.ACQUISITION_BUCKET) \
        == (constants.GADGET_MESSAGE_ISMRMRD_ACQUISITION, constants.GADGET_MESSAGE_ISMRMRD_IMAGE,
            constants.GADGET_MESSAGE_RECON_DATA, constants.GADGET_MESSAGE_IMAGE_ARRAY,
            constants.GADGET_MESSAGE_ISMRMRD_WAVEFORM, constants.GADGET_MESSAGE_BUCKET)
    assert wire.describe(wire.IMAGE) == "image (1022) message" and wire.describe(77) == "message (77) message"


def test_text_framing_and_close() -> None:
    framed = wire.text_message(wire.HEADER, "<ismrmrdHeader/>ü")
    assert framed[:2] == b"\x03\x00" and int.from_bytes(framed[2:6], "little") == len(framed) - 6
    assert framed[6:].decode("utf-8") == "<ismrmrdHeader/>ü"
    assert wire.CLOSE_MESSAGE == b"\x04\x00"
    assert wire.read_message_id(io.BytesIO(framed)) == wire.HEADER
    with pytest.raises(ValueError, match="xml must be str or bytes"):
        wire.length_prefixed(3, "xml")  # type: ignore[arg-type]


def test_error_message_has_a_uint64_length() -> None:
    message = wire.error_message("bad ü")
    message_id, length = wire.ERROR_HEADER.unpack(message[:wire.ERROR_HEADER.size])
    assert message_id == wire.ERROR and length == len("bad ü".encode()) == len(message) - wire.ERROR_HEADER.size


def test_readers_read_what_the_client_writes(rng: np.random.Generator) -> None:
    readers = wire.message_readers()
    assert set(readers) == {wire.ACQUISITION, wire.IMAGE, wire.WAVEFORM, wire.RECON_DATA, wire.IMAGE_ARRAY}
    assert all(readers[i] is wire.SAFE_READERS[i] for i in wire.SAFE_READERS)
    acq = ismrmrd.Acquisition.from_array((rng.standard_normal((2, 8)) + 1j).astype(np.complex64))
    left, right = socket.socketpair()
    with left, right:
        left.sendall(wire.message(wire.ACQUISITION, encode_acquisition(acq)))
        with right.makefile("rb") as source:
            message_id = wire.read_message_id(source)
            back = readers[message_id](source)
    np.testing.assert_array_equal(back.data, acq.data)
