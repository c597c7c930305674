"""The one hash both servers compute for a unique_id, and the buckets it falls into.

h(u) = the first 8 bytes of MD5(u's UTF-8 bytes), read big-endian as a signed
64-bit integer. PostgreSQL, ClickHouse (18.16 as well as current releases) and
Python compute exactly the same value (tests/reconcile check all three), and
both servers order it the same way (bigint / Int64), so streams sorted by it
on either side can be merged.

A bucket is the hash's top BUCKET_BITS bits. Two rows with the same unique_id
(an application's retry) land in the same bucket, so "distinct unique_ids" can
be counted bucket by bucket on each server. A bucket's checksum is the sum of
its distinct hashes modulo 2^64: independent of row order, and changed by any
single id missing or added.

Two distinct ids with the same 64-bit hash are counted as one on both sides; a
missing id can hide behind a present one only in that case (for n ids, a
chance of about n / 2^64 per missing id).
"""

from __future__ import annotations

import hashlib
from typing import Final

BUCKET_BITS: Final = 12
BUCKETS: Final = 1 << BUCKET_BITS
_SHIFT: Final = 64 - BUCKET_BITS
_MASK: Final = BUCKETS - 1
MODULUS: Final = 1 << 64


def pg_hash(text_sql: str) -> str:
    """PostgreSQL expression for h() of a text expression (bigint)."""
    return f"('x' || substr(md5({text_sql}), 1, 16))::bit(64)::bigint"


def pg_bucket(hash_sql: str) -> str:
    """PostgreSQL expression for the bucket of a bigint hash (``>>`` sign-extends, hence the mask)."""
    return f"(({hash_sql} >> {_SHIFT}) & {_MASK})"


def ch_hash(string_sql: str) -> str:
    """ClickHouse expression for h() of a String expression (Int64): MD5 is raw bytes, read little-endian."""
    return f"reinterpretAsInt64(reverse(substring(MD5({string_sql}), 1, 8)))"


def ch_bucket(hash_sql: str) -> str:
    return f"bitAnd(bitShiftRight({hash_sql}, {_SHIFT}), {_MASK})"


def id_hash(unique_id: str | bytes) -> int:
    """h() in Python, for ids read from the slot."""
    data = unique_id.encode() if isinstance(unique_id, str) else unique_id
    return int.from_bytes(hashlib.md5(data, usedforsecurity=False).digest()[:8], "big", signed=True)


def bucket_of(h: int) -> int:
    return (h >> _SHIFT) & _MASK


def checksum(total: int) -> int:
    """A sum of signed hashes as the unsigned value modulo 2^64 (the two servers overflow differently)."""
    return int(total) % MODULUS
