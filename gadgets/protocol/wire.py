"""Gadgetron's wire protocol in one place: the message ids, how a message is framed, which reader reads which id.

Every message starts with a little-endian ``uint16`` id. The ids are gadgetron-python's constants
(``gadgetron.external.constants``), which match Gadgetron's C++ enums (``core/connection``)::

    1     CONFIG_FILE    1024-byte null-padded name of a config file on the server
    2     CONFIG_SCRIPT  uint32 length + stream-config XML text (CONFIG, to an external node)
    3     HEADER         uint32 length + ISMRMRD XML header
    4     CLOSE          no body: the end of a stream, in either direction
    5     TEXT           uint32 length + text (Gadgetron 4.x reports a failed stream this way)
    6     QUERY          (not sent by this project)
    7     RESPONSE       uint64 correlation id + uint64 length + text
    8     ERROR          uint64 length + text from an external node (uint32 from a Gadgetron server)
    1008  acquisition    1022 image    1023 ReconData    1024 ImageArray    1026 waveform

Who speaks it: :mod:`gadgets.protocol.stream` (a gadget's side, in a worker or a child Gadgetron
started), :mod:`gadgets.protocol.external_peer` (Gadgetron's side, for the local runner),
:mod:`gadgets.protocol.gadgetron_client` (a client of a Gadgetron server). How many bytes a
message may make this process allocate: :mod:`gadgets.protocol.wire_limits`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from .wire_limits import read_acquisition, read_image, read_waveform

CONFIG_FILE = 1
CONFIG_SCRIPT = 2
HEADER = 3
CLOSE = 4
TEXT = 5
QUERY = 6
RESPONSE = 7
ERROR = 8
ACQUISITION = 1008
IMAGE = 1022
RECON_DATA = 1023
IMAGE_ARRAY = 1024
WAVEFORM = 1026
ACQUISITION_BUCKET = 1050

#: Names of the messages, for error texts.
MESSAGE_NAMES = {ACQUISITION: "acquisition", IMAGE: "image", RECON_DATA: "ReconData", IMAGE_ARRAY: "ImageArray",
                 WAVEFORM: "waveform", ACQUISITION_BUCKET: "acquisition bucket", CONFIG_SCRIPT: "CONFIG",
                 HEADER: "HEADER", ERROR: "ERROR", TEXT: "TEXT"}

#: The id that starts every message.
MESSAGE_ID = struct.Struct("<H")
#: The uint32 length before CONFIG_SCRIPT / HEADER / TEXT text.
TEXT_LENGTH = struct.Struct("<I")
#: An external node's ERROR: id + uint64 length.
ERROR_HEADER = struct.Struct("<HQ")
#: RESPONSE: uint64 correlation id + uint64 length.
RESPONSE_HEADER = struct.Struct("<QQ")
#: The uint64 length of an ERROR's text (read after its id).
ERROR_LENGTH = struct.Struct("<Q")
#: CONFIG_FILE's body: a null-padded name of this many bytes.
CONFIG_FILE_NAME_BYTES = 1024

#: The whole CLOSE message.
CLOSE_MESSAGE = MESSAGE_ID.pack(CLOSE)


def message(message_id: int, payload: bytes = b"") -> bytes:
    """A complete message: the uint16 id, then ``payload`` (already framed by the caller)."""
    return MESSAGE_ID.pack(message_id) + payload


def length_prefixed(text: str | bytes, name: str = "text") -> bytes:
    """``text`` (UTF-8) after its uint32 length: the body of CONFIG_SCRIPT, HEADER and TEXT.

    Raises ValueError naming ``name`` for something that is not text or too long for a uint32.
    """
    if isinstance(text, str):
        text = text.encode("utf-8")
    if not isinstance(text, (bytes, bytearray)):
        raise ValueError(f"{name} must be str or bytes, got {type(text).__name__}")
    if len(text) >= 2**32:
        raise ValueError(f"{name} is too long for a uint32 length ({len(text)} bytes)")
    return TEXT_LENGTH.pack(len(text)) + bytes(text)


def text_message(message_id: int, text: str | bytes, name: str = "text") -> bytes:
    """CONFIG_SCRIPT / HEADER / TEXT: the id, the uint32 length, the text."""
    return message(message_id, length_prefixed(text, name))


def error_message(text: str) -> bytes:
    """An external node's ERROR (8): uint16 id, uint64 length, UTF-8 text."""
    payload = text.encode("utf-8", errors="replace")
    return ERROR_HEADER.pack(ERROR, len(payload)) + payload


def read_message_id(source: Any) -> int:
    """The id of the next message of ``source`` (anything with ``read(n)`` giving exactly n bytes)."""
    (message_id,) = MESSAGE_ID.unpack(source.read(MESSAGE_ID.size))
    return message_id


def describe(message_id: int) -> str:
    """``"image (1022) message"``: a message id for error texts."""
    return f"{MESSAGE_NAMES.get(message_id, 'message')} ({message_id}) message"


#: Readers replacing gadgetron-python's for the ids whose objects it sizes from untrusted headers:
#: these check the claimed size against the source's budget before allocating.
SAFE_READERS: dict[int, Callable[[Any], Any]] = {ACQUISITION: read_acquisition, WAVEFORM: read_waveform,
                                                 IMAGE: read_image}


def message_readers() -> dict[int, Callable[[Any], Any]]:
    """Reader by message id for every item an external stream carries (acquisition, waveform, image,
    ReconData, ImageArray): gadgetron-python's, with :data:`SAFE_READERS` in place of its own."""
    from gadgetron.types.image_array import read_image_array
    from gadgetron.types.recon_data import read_recon_data

    readers: dict[int, Callable[[Any], Any]] = {RECON_DATA: read_recon_data, IMAGE_ARRAY: read_image_array}
    readers.update(SAFE_READERS)
    return readers
