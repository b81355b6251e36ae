"""Cutting a byte stream the way a network may deliver it, for the framers' tests."""

from __future__ import annotations


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` in pieces, cut at each of `cuts` (taken modulo its length + 1); empty pieces
    where cuts coincide, as a read of nothing new would be."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces
