"""Precompiled decoders: one per :class:`~sanduan.shared.registers.ReadBlock`.

:meth:`ReadBlock.decode` works out each register's layout on every read. A :class:`BlockDecoder`
does it once. Every byte and word order becomes big-endian in one of two byte images of the
block: the registers packed big-endian (ABCD as is; CDAB with the two words of each 32-bit value
swapped) or with the bytes of each register swapped (BADC as is; DCBA with the words swapped).
Each image is built with one ``struct`` call, and all its values come out of a second one, with
formats computed at start-up; raw bit patterns are unpacked only for blocks with sentinels. The
results are those of :meth:`ReadBlock.decode` (tested for every type and order).
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Sequence
from typing import Any

from sanduan.shared.registers import ByteOrder, ReadBlock, RegisterSpec, RegType

__all__ = ["BlockDecoder"]

_VALUE_CHAR = {
    RegType.INT16: "h",
    RegType.UINT16: "H",
    RegType.INT32: "i",
    RegType.UINT32: "I",
    RegType.FLOAT32: "f",
}
_BYTE_SWAPPED = frozenset({ByteOrder.BADC, ByteOrder.DCBA})
_WORD_SWAPPED = frozenset({ByteOrder.CDAB, ByteOrder.DCBA})

# name, sentinel bit patterns (None: no sentinel), scale, offset, plain (no scale or offset)
_Post = tuple[str, frozenset[int] | None, float, float, bool]


class _Image:
    """The values of one image: its pack format, word order and value/bit unpackers."""

    __slots__ = ("bits", "pack", "post", "reorder", "values")

    def __init__(self, block: ReadBlock, specs: list[RegisterSpec], little: bool) -> None:
        n = block.count
        self.pack = struct.Struct(f"{'<' if little else '>'}{n}H").pack
        perm = list(range(n))
        values_fmt = bits_fmt = ">"
        pos = block.address
        post: list[_Post] = []
        for s in sorted(specs, key=lambda s: s.address):
            i = s.address - block.address
            if s.width == 2 and s.order in _WORD_SWAPPED:
                perm[i], perm[i + 1] = perm[i + 1], perm[i]
            pad = 2 * (s.address - pos)
            if pad:
                values_fmt += f"{pad}x"
                bits_fmt += f"{pad}x"
            values_fmt += _VALUE_CHAR[s.type]
            bits_fmt += "H" if s.width == 1 else "I"
            pos = s.address + s.width
            post.append(
                (
                    s.name,
                    s.sentinel_bits or None,
                    s.scale,
                    s.offset,
                    s.scale == 1.0 and s.offset == 0.0,
                )
            )
        self.reorder: Callable[[Sequence[int]], Any] | None = (
            operator.itemgetter(*perm) if perm != list(range(n)) else None
        )
        self.values = struct.Struct(values_fmt).unpack_from
        self.bits = struct.Struct(bits_fmt).unpack_from if any(p[1] for p in post) else None
        self.post = tuple(post)

    def decode(self, regs: Sequence[int], out: dict[str, float]) -> None:
        image = self.pack(*(regs if self.reorder is None else self.reorder(regs)))
        values = self.values(image)
        if self.bits is None:
            for (name, _, scale, offset, plain), v in zip(self.post, values, strict=True):
                out[name] = float(v) if plain else v * scale + offset
            return
        bits = self.bits(image)
        for (name, sentinels, scale, offset, plain), v, b in zip(
            self.post, values, bits, strict=True
        ):
            if sentinels is not None and b in sentinels:
                out[name] = math.nan
            else:
                out[name] = float(v) if plain else v * scale + offset


class BlockDecoder:
    """Decodes the registers of one read block to ``{register name: value}`` like
    :meth:`ReadBlock.decode`, with the layout worked out once."""

    __slots__ = ("_count", "_images", "block")

    def __init__(self, block: ReadBlock) -> None:
        self.block = block
        self._count = block.count
        swapped = [s for s in block.registers if s.order in _BYTE_SWAPPED]
        straight = [s for s in block.registers if s.order not in _BYTE_SWAPPED]
        images = []
        if straight:
            images.append(_Image(block, straight, little=False))
        if swapped:
            images.append(_Image(block, swapped, little=True))
        self._images = tuple(images)

    def decode(self, regs: Sequence[int]) -> dict[str, float]:
        """Decode the block's registers (as returned by the read); ValueError for a wrong
        count, like :meth:`ReadBlock.decode`."""
        if len(regs) != self._count:
            return self.block.decode(regs)  # raises the same ValueError
        out: dict[str, float] = {}
        try:
            for image in self._images:
                image.decode(regs, out)
        except struct.error:  # not 16-bit registers: let the block say what is wrong
            return self.block.decode(regs)
        return out
