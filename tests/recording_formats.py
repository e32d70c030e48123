"""Writers of event recordings in the real file formats, from the format specifications.

Each writer encodes ``EVENT_DTYPE`` events (sorted by ``t``) itself, independently of the
readers under test, so that reading a written file back checks the reader:

* ``.npy`` / ``.npz``: NumPy structured arrays with fields x, y, t, p.
* ``.bin``: N-MNIST's 40-bit events (``fake_datasets.encode_nmnist``).
* ``.aedat4``: iniVation's AEDAT 4 container: the magic line ``#!AER-DAT4.0\\r\\n``, a
  size-prefixed flatbuffer ``IOHE`` header (the packets' compression, and a description,
  DV's XML, naming one ``EVTS`` stream with its ``sizeX``/``sizeY``), then packets: stream
  id (u32), size (u32) and a size-prefixed flatbuffer ``EVTS`` ``EventPacket`` whose
  vector holds 16-byte ``Event`` structs (int64 t, int16 x, int16 y, bool on, 3 bytes
  padding), uncompressed or as an LZ4 / Zstandard frame. The flatbuffers are laid out by
  hand (the ``flatbuffers`` package is not a dependency).
* ``.dat``: Prophesee DAT: ``% ...`` header lines, an event type byte (0x0C, CD) and an
  event size byte (8), then per event a u32 timestamp and a u32 with x in bits 0-13, y in
  bits 14-27 and polarity in bits 28-31, little-endian.
* ``.raw`` EVT 2.0: header lines ending ``% end``, then u32 words with the type in bits
  28-31: ``EVT_TIME_HIGH`` (0x8, bits 0-27 = t >> 6) and ``CD_OFF``/``CD_ON`` (0x0/0x1,
  bits 22-27 = t & 63, bits 11-21 = x, bits 0-10 = y).
* ``.raw`` EVT 3.0: u16 words with the type in bits 12-15: ``EVT_ADDR_Y`` (0x0, y),
  ``EVT_ADDR_X`` (0x2, bit 11 polarity, x), ``VECT_BASE_X`` (0x3, polarity, x),
  ``VECT_12`` (0x4, 12 valid bits), ``VECT_8`` (0x5, 8 valid bits), ``EVT_TIME_LOW``
  (0x6, t & 0xFFF) and ``EVT_TIME_HIGH`` (0x8, (t >> 12) & 0xFFF).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from fake_datasets import encode_nmnist
from spikescale.event_store import EVENT_DTYPE

AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"


def _out(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------- numpy, N-MNIST


def structured(events: np.ndarray, dtype=None) -> np.ndarray:
    """The events as a structured array of another field layout (default: t, x, y, p)."""
    dtype = dtype or np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
    out = np.empty(len(events), dtype=dtype)
    for name in ("x", "y", "t", "p"):
        out[name] = events[name]
    return out


def write_npy(path: Path, events: np.ndarray, dtype=None) -> Path:
    np.save(_out(path), structured(events, dtype), allow_pickle=False)
    return Path(path)


def write_npz(path: Path, events: np.ndarray, as_fields: bool = False) -> Path:
    """One structured array ``events``, or (``as_fields``) arrays x, y, t, p."""
    if as_fields:
        np.savez(_out(path), **{n: np.asarray(events[n]) for n in ("x", "y", "t", "p")})
    else:
        np.savez(_out(path), events=structured(events))
    return Path(path)


def write_bin(path: Path, events: np.ndarray) -> Path:
    _out(path).write_bytes(encode_nmnist(events["x"], events["y"], events["t"], events["p"]))
    return Path(path)


# ------------------------------------------------------------------------- AEDAT 4


def _pad(data: bytes, align: int) -> bytes:
    return data + b"\0" * (-len(data) % align)


AEDAT4_COMPRESSION = {"none": 0, "lz4": 1, "zstd": 3}  # the IOHeader's Compression enum


def aedat4_ioheader(width: int, height: int, compression: str = "none") -> bytes:
    """The size-prefixed ``IOHE`` flatbuffer: the packets' compression, one EVTS stream (0)."""
    description = (
        '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
        '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="originalModuleName" type="string">capture</attr>'
        '<attr key="originalOutputName" type="string">events</attr>'
        '<attr key="typeDescription" type="string">Array of events (polarity ON/OFF).</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
        f'<attr key="sizeX" type="int">{width}</attr>'
        f'<attr key="sizeY" type="int">{height}</attr>'
        '<attr key="source" type="string">DVXplorer_test</attr>'
        "</node></node></node></dv>"
    ).encode()
    # offsets from the start of the buffer after the size prefix; the table holds its
    # vtable offset, the description's offset (field 2) and the compression (field 0)
    vtable = struct.pack("<HHHHH", 10, 12, 8, 0, 4)
    vtable_at, table_at = 8, 20
    body = struct.pack("<I", table_at) + b"IOHE" + vtable + b"\0\0"
    string_at = table_at + 12
    body += struct.pack(
        "<iIi", table_at - vtable_at, string_at - (table_at + 4), AEDAT4_COMPRESSION[compression]
    )
    body += _pad(struct.pack("<I", len(description)) + description + b"\0", 4)
    return struct.pack("<I", len(body)) + body


def aedat4_event_packet(events: np.ndarray, stream_id: int = 0, compression: str = "none") -> bytes:
    """One packet: stream id, size, size-prefixed ``EVTS`` flatbuffer of Event structs.

    With ``compression`` ``lz4`` or ``zstd`` the flatbuffer is an LZ4 frame or a Zstandard
    frame (pyarrow's codecs), as DV writes them.
    """
    # offsets from the start of the buffer, size prefix included (the decoder verifies
    # alignment there): vtable at 12, table at 20, vector length at 28, structs from 32
    vtable = struct.pack("<HHH", 6, 8, 4)
    head = struct.pack("<I", 20 - 4) + b"EVTS" + vtable + b"\0\0"
    table = struct.pack("<iI", 20 - 12, 28 - 24)
    elements = np.zeros(
        len(events),
        dtype=np.dtype(
            {
                "names": ["t", "x", "y", "on"],
                "formats": ["<i8", "<i2", "<i2", "u1"],
                "offsets": [0, 8, 10, 12],
                "itemsize": 16,
            }
        ),
    )
    elements["t"], elements["x"], elements["y"] = events["t"], events["x"], events["y"]
    elements["on"] = events["p"]
    body = head + table + struct.pack("<I", len(events)) + elements.tobytes()
    buffer = struct.pack("<I", len(body)) + body
    if compression != "none":
        import pyarrow as pa

        codec = {"lz4": "lz4_frame", "zstd": "zstd"}[compression]
        buffer = pa.compress(buffer, codec=codec, asbytes=True)
    return struct.pack("<II", stream_id, len(buffer)) + buffer


def write_aedat4(
    path: Path,
    events: np.ndarray,
    width: int,
    height: int,
    packets: int = 2,
    compression: str = "none",
) -> Path:
    """An AEDAT 4 file; the events go into ``packets`` packets, compressed as asked."""
    parts = [AEDAT4_MAGIC, aedat4_ioheader(width, height, compression)]
    for chunk in np.array_split(events, packets):
        parts.append(aedat4_event_packet(chunk, compression=compression))
    _out(path).write_bytes(b"".join(parts))
    return Path(path)


# ------------------------------------------------------------------------- Prophesee


def _header(lines: list[str]) -> bytes:
    return "".join(f"% {line}\n" for line in lines).encode()


def write_dat(path: Path, events: np.ndarray, width: int, height: int) -> Path:
    header = _header(
        [
            "Data file containing CD events.",
            "Version 2",
            "Date 2024-05-17 10:11:12",
            f"Height {height}",
            f"Width {width}",
        ]
    )
    words = np.empty((len(events), 2), dtype="<u4")
    words[:, 0] = events["t"]
    words[:, 1] = (
        (events["x"].astype(np.uint32) & 0x3FFF)
        | ((events["y"].astype(np.uint32) & 0x3FFF) << 14)
        | (events["p"].astype(np.uint32) << 28)
    )
    _out(path).write_bytes(header + bytes([0x0C, 8]) + words.tobytes())
    return Path(path)


def raw_header(encoding: str, width: int, height: int, style: str = "format") -> bytes:
    """A RAW header; ``style`` ``format`` (Metavision 4+) or ``evt`` (``% evt 3.0``)."""
    version = encoding[-1]
    lines = ["camera_integrator_name Prophesee", "date 2024-05-17 10:11:12"]
    if style == "evt":
        lines.append(f"evt {version}.0")
    else:
        lines.append(f"format EVT{version};height={height};width={width}")
    lines += [f"geometry {width}x{height}", "plugin_name hal_plugin_imx636_evk4", "end"]
    return _header(lines)


def encode_evt2(events: np.ndarray) -> bytes:
    words = []
    high = None
    for x, y, t, p in zip(events["x"], events["y"], events["t"], events["p"]):
        t = int(t)
        if t >> 6 != high:
            high = t >> 6
            words.append((0x8 << 28) | (high & 0x0FFFFFFF))
        words.append((int(p) << 28) | ((t & 0x3F) << 22) | (int(x) << 11) | int(y))
    return np.asarray(words, dtype="<u4").tobytes()


def encode_evt3(events: np.ndarray, vectorise: bool = True) -> bytes:
    """EVT 3.0 words; with ``vectorise`` runs of events at one (t, y, p) use vector words.

    Every TIME_HIGH step between two events is written, as a sensor does, so the 24-bit
    time base can wrap (every 16.8 s) and still be followed.

    The events are emitted in the order (t, y, p, x) within a timestamp, which is the
    order the decoder gives them back in.
    """
    words: list[int] = []
    high = low = row = None
    order = np.lexsort((events["x"], events["p"], events["y"], events["t"]))
    ev = events[order]
    i = 0
    while i < len(ev):
        t, y, p = int(ev["t"][i]), int(ev["y"][i]), int(ev["p"][i])
        if (t >> 12) != high:
            # a sensor sends every TIME_HIGH step (one each 4096 us), events or not
            first = t >> 12 if high is None else high + 1
            words += [(0x8 << 12) | (h & 0xFFF) for h in range(first, (t >> 12) + 1)]
            high, low = t >> 12, None
        if (t & 0xFFF) != low:
            low = t & 0xFFF
            words.append((0x6 << 12) | low)
        if y != row:
            row = y
            words.append(y & 0x7FF)  # EVT_ADDR_Y, system type 0
        j = i
        while (
            j < len(ev) and int(ev["t"][j]) == t and int(ev["y"][j]) == y and int(ev["p"][j]) == p
        ):
            j += 1
        xs = [int(x) for x in ev["x"][i:j]]
        if vectorise and len(xs) > 1:
            base = xs[0]
            words.append((0x3 << 12) | (p << 11) | base)
            remaining = set(xs)
            while remaining:
                width = 12 if max(remaining) - base >= 8 else 8
                mask = sum(1 << k for k in range(width) if base + k in remaining)
                words.append(((0x4 if width == 12 else 0x5) << 12) | mask)
                remaining -= {base + k for k in range(width)}
                base += width
        else:
            for x in xs:
                words.append((0x2 << 12) | (p << 11) | x)
        i = j
    return np.asarray(words, dtype="<u2").tobytes()


def evt3_order(events: np.ndarray) -> np.ndarray:
    """The events in the order an EVT 3.0 file written by :func:`encode_evt3` holds them."""
    return events[np.lexsort((events["x"], events["p"], events["y"], events["t"]))]


def write_raw(
    path: Path, events: np.ndarray, width: int, height: int, encoding: str, style: str = "format"
) -> Path:
    """A Prophesee RAW file in ``encoding`` ``evt2`` or ``evt3``."""
    body = encode_evt2(events) if encoding == "evt2" else encode_evt3(events)
    _out(path).write_bytes(raw_header(encoding, width, height, style) + body)
    return Path(path)


def event_array(x, y, t, p) -> np.ndarray:
    ev = np.empty(len(x), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev
