"""Is an audio file whole? libsndfile (soundfile) reads a cut WAV without a word: it returns the frames that are
there, and `sf.info` reports those, not the count the header declares. So the container is checked here, from
its own bytes:

- WAV (RIFF, WAVE_FORMAT_EXTENSIBLE is the same container) and RF64: the `data` chunk's declared size (RF64:
  the `ds64` chunk's 64-bit one) against the bytes after the chunk header. A size of 0xFFFFFFFF in a RIFF file
  is a streaming writer's "unknown" and is not a shortfall.
- Ogg (Vorbis, Opus, FLAC in Ogg): every page whole, and the last one marked end-of-stream; a file cut at a
  page boundary has whole pages but no end mark.
- Anything else libsndfile knows the length of from its header (FLAC's STREAMINFO): the caller compares the
  frames read with `SoundFile.frames` (audio_in.read_audio).

Not checked: AIFF, W64, MP3 (no declared length that libsndfile keeps); a cut one of those reads short.
"""

from __future__ import annotations

import struct
from pathlib import Path

UNKNOWN_SIZE = 0xFFFFFFFF
OGG_HEADER = 27  # "OggS", version, flags, granule (8), serial, sequence, CRC, segment count
OGG_EOS = 0x04


def truncation(path: str | Path) -> str | None:
    """Why the file is cut short, in words (what is missing), or None when it is whole or not a container this
    module knows."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(12)
        if len(magic) == 12 and magic[:4] in (b"RIFF", b"RF64") and magic[8:12] == b"WAVE":
            return _wav(f, path.stat().st_size, rf64=magic[:4] == b"RF64")
        if magic[:4] == b"OggS":
            return _ogg(f, path.stat().st_size)
    return None


def _wav(f, size: int, rf64: bool) -> str | None:
    pos, block_align, ds64_data = 12, 0, None
    while pos + 8 <= size:
        f.seek(pos)
        cid, n = struct.unpack("<4sI", f.read(8))
        body = pos + 8
        if cid == b"ds64" and n >= 24 and body + 24 <= size:
            _riff_size, ds64_data, _frames = struct.unpack("<QQQ", f.read(24))
        elif cid == b"fmt " and n >= 16 and body + 16 <= size:
            block_align = struct.unpack("<12xH2x", f.read(16))[0]
        elif cid == b"data":
            if n == UNKNOWN_SIZE:
                if not (rf64 and ds64_data is not None):
                    return None
                n = ds64_data
            present = size - body
            if n <= present:
                return None
            missing = n - present
            frames = f" ({missing // block_align} of {n // block_align} frames)" if block_align else ""
            return f"the file is truncated: its data chunk declares {n} bytes, {missing} of them are missing{frames}"
        pos = body + n + (n & 1)  # chunks are padded to an even size
    return None


def _ogg(f, size: int) -> str | None:
    pos, flags, pages = 0, 0, 0
    while pos < size:
        f.seek(pos)
        head = f.read(OGG_HEADER)
        if len(head) < OGG_HEADER:
            return f"the file is truncated: its last Ogg page header is cut after {len(head)} of {OGG_HEADER} bytes"
        if head[:4] != b"OggS":
            return None  # not a page where one must start: corrupt, not cut; libsndfile says what it finds
        flags, nseg = head[5], head[26]
        table = f.read(nseg)
        length = OGG_HEADER + nseg + sum(table)
        if len(table) < nseg or pos + length > size:
            return (f"the file is truncated: Ogg page {pages} needs {length} bytes from byte {pos}, "
                    f"{pos + length - size} of them are missing")
        pos += length
        pages += 1
    if pages and not flags & OGG_EOS:
        return f"the file is truncated: its last Ogg page (page {pages - 1}) is not marked end-of-stream"
    return None
