"""Reading a data file as text in dataset.encoding, a chunk at a time.

A byte that is not valid in the encoding, or a NUL byte (a binary file), ends the run with an
LLMOpsError naming the file and the byte offset of the first bad byte. Lines are split exactly as
``str.splitlines()`` splits them, without holding the whole file and its lines at once.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Iterator

from llmops.core.errors import LLMOpsError

CHUNK = 1 << 20  # bytes read and decoded at a time
DEFAULT_ENCODING = "utf-8"
# every line boundary str.splitlines() knows ("\r\n" is one: a "\r" ending a chunk may be its half)
_BOUNDARIES = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def encoding(cfg) -> str:
    """dataset.encoding as Python's codec name (utf-8 when the key is absent)."""
    name = str(cfg.dataset.get("encoding") or DEFAULT_ENCODING)
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise LLMOpsError(f"dataset.encoding={name!r}: not a text encoding Python knows; expected "
                          f"e.g. utf-8, latin-1 or cp1252") from None


def encoding_settings(cfg) -> dict:
    """The encoding as a row setting: absent for utf-8 (cache keys made before the key existed)."""
    enc = encoding(cfg)
    return {} if enc == DEFAULT_ENCODING else {"encoding": enc}


def _nul_is_a_byte(enc: str) -> bool:
    """Whether the encoding writes U+0000 as one 0x00 byte (ASCII-compatible encodings)."""
    return "\0A".encode(enc).endswith(b"\0A")


def decoded_chunks(path: Path, enc: str, key: str) -> Iterator[str]:
    """The text of `path`, decoded strictly, a chunk at a time (`key` names it in errors)."""
    dec = codecs.getincrementaldecoder(enc)("strict")
    byte_nul = _nul_is_a_byte(enc)
    chars = offset = 0  # characters yielded and bytes read so far
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if byte_nul and (i := chunk.find(b"\0")) >= 0:
                raise LLMOpsError(f"{key}: {path} holds a NUL byte at byte offset {offset + i}: a "
                                  f"binary file, not {enc} text")
            buffered = len(dec.getstate()[0])
            try:
                text = dec.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                at = offset - buffered + e.start
                raise LLMOpsError(f"{key}: {path} is not valid {enc} text: byte "
                                  f"0x{e.object[e.start]:02x} at byte offset {at} ({e.reason}); set "
                                  f"dataset.encoding to the file's encoding or fix the file") from None
            if not byte_nul and (i := text.find("\0")) >= 0:
                raise LLMOpsError(f"{key}: {path} holds a NUL character (character {chars + i}): a "
                                  f"binary file, not {enc} text")
            offset += len(chunk)
            chars += len(text)
            if text:
                yield text
            if not chunk:
                return


def read_text(path: Path, enc: str, key: str) -> str:
    """The whole text of `path` (newlines kept as they are)."""
    return "".join(decoded_chunks(path, enc, key))


def _complete(text: str) -> int:
    """The length of the longest prefix of `text` that ends with a line boundary (a final "\\r"
    does not count: the next chunk may start with its "\\n")."""
    n = len(text)
    ends = [text.rfind(c, 0, n - 1 if c == "\r" else n) for c in _BOUNDARIES]
    return max(ends) + 1


def line_batches(path: Path, enc: str, key: str) -> Iterator[list[str]]:
    """The lines of `path` as ``text.splitlines()`` gives them, in lists of about a chunk."""
    pending: list[str] = []  # the pieces of a line that has not ended yet
    for text in decoded_chunks(path, enc, key):
        cut = _complete(text)
        if cut == 0:
            pending.append(text)
            continue
        head = "".join(pending) + text[:cut] if pending else text[:cut]
        pending = [text[cut:]] if cut < len(text) else []
        yield head.splitlines()
    if pending:
        yield "".join(pending).splitlines()
