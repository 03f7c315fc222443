"""Tokens as people read them: byte fragments merged into their character, whitespace made visible.

>>> visible_whitespace(" idiot\\n")
'␣idiot⏎'
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from aura_core.base.batching import Tokenizer

__all__ = ["Piece", "ReadableToken", "readable_token", "text_pieces", "visible_whitespace"]


@cache
def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte → printable character table (GPT-2 and its descendants)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _token_bytes(tokenizer: Tokenizer, token_id: int) -> bytes | None:
    """The raw bytes a token stands for, when the tokenizer's vocabulary shows them."""
    to_tokens = getattr(tokenizer, "convert_ids_to_tokens", None)
    piece = to_tokens(int(token_id)) if callable(to_tokens) else None
    if not isinstance(piece, str):
        return None
    byte = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)  # SentencePiece's byte fallback
    if byte:
        return bytes([int(byte.group(1), 16)])
    table = _byte_decoder()
    if all(ch in table for ch in piece):
        return bytes(table[ch] for ch in piece)
    return piece.replace("▁", " ").encode("utf-8")


_WHITESPACE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def visible_whitespace(text: str) -> str:
    """Spaces, line breaks, tabs and invisible characters made visible.

    >>> visible_whitespace(" gil\\n")
    '␣gil⏎'
    >>> visible_whitespace("a\\u200bb")
    'a⟨U+200B⟩b'
    """
    out = []
    for ch in text:
        if ch in _WHITESPACE:
            out.append(_WHITESPACE[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn"):
            out.append(f"⟨U+{ord(ch):04X}⟩")
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class ReadableToken:
    """One vocabulary entry as people read it: ``text`` with visible whitespace, and what kind of piece it is.

    Kinds: ``word start`` (after a space), ``word piece`` (continues a word), ``symbol``,
    ``special`` (a control token), ``byte fragment`` (part of one character's bytes, shown as hex).
    """

    token_id: int
    text: str
    kind: str


def readable_token(tokenizer: Tokenizer, token_id: int) -> ReadableToken:
    """How one token reads: ``' gil'`` → ``␣gil`` (word start), a lone UTF-8 byte → ``⟨e2 80⟩`` (byte fragment).

    >>> from aura_core.model.tiny import byte_tokenizer
    >>> tok = byte_tokenizer()
    >>> readable_token(tok, tok.convert_tokens_to_ids("Ã")).text
    '⟨c3⟩'
    """
    token_id = int(token_id)
    decoded = str(tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False))
    specials = set(getattr(tokenizer, "all_special_ids", ()) or ())
    if token_id in specials:
        return ReadableToken(token_id, visible_whitespace(decoded), "special")
    if "\ufffd" in decoded:
        raw = _token_bytes(tokenizer, token_id)
        try:
            if raw is None:
                raise UnicodeDecodeError("utf-8", b"", 0, 1, "unknown bytes")
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            shown = " ".join(f"{b:02x}" for b in raw) if raw else "?"
            return ReadableToken(token_id, f"⟨{shown}⟩", "byte fragment")
    stripped = decoded.lstrip()
    if stripped and stripped[0].isalnum():
        kind = "word start" if stripped != decoded else "word piece"
    else:
        kind = "symbol"
    return ReadableToken(token_id, visible_whitespace(decoded), kind)


@dataclass(frozen=True)
class Piece:
    """Tokens ``start:stop`` of a text shown as one piece: one token, or the byte fragments of one character."""

    text: str
    start: int
    stop: int


# The most tokens one character's bytes are ever split into (UTF-8 holds at most 4 bytes).
_MAX_FRAGMENTS = 4


def text_pieces(tokenizer: Tokenizer, token_ids: Sequence[int]) -> list[Piece]:
    """The text of ``token_ids`` cut at token boundaries, with byte fragments merged into whole characters.

    Decoding grows one token at a time, as streaming detokenisers do: a prefix that ends inside
    a character (``�``) waits for the tokens that complete it.

    >>> from aura_core.model.tiny import byte_tokenizer
    >>> tok = byte_tokenizer()
    >>> [p.text for p in text_pieces(tok, tok("é!")["input_ids"])]
    ['é', '!']
    """
    pieces: list[Piece] = []
    shown = ""
    start = 0
    ids = [int(i) for i in token_ids]
    for stop in range(1, len(ids) + 1):
        text = str(tokenizer.decode(ids[:stop], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        if text.endswith("\ufffd") and stop < len(ids) and stop - start < _MAX_FRAGMENTS:
            continue
        if text.startswith(shown):
            piece = text[len(shown) :]
        else:  # a normaliser rewrote earlier text: fall back to this run's own decoding
            piece = str(tokenizer.decode(ids[start:stop], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        pieces.append(Piece(piece, start, stop))
        shown, start = text, stop
    return pieces
