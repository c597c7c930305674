"""Names, streams and lock keys of a sharded outbox (no servers)."""

from __future__ import annotations

import pytest

from cdc.names import NameError_
from cdc.shards.layout import (
    MAX_SHARDS, ShardCountError, check_count, lock_key, member_key, reshard_key, shards_of, split_key, unsharded,
)
from cdc.pg.shard_setup import require_row_filters
from cdc.shards import ShardError


def test_one_shard_is_todays_slot_and_publication_with_stream_zero_and_no_filter() -> None:
    shard = unsharded("cdc_outbox", "cdc_outbox")
    assert (shard.slot, shard.publication, shard.stream, shard.row_filter) == ("cdc_outbox", "cdc_outbox", 0, None)


def test_first_generation_names_end_in_the_shard_index_later_ones_carry_the_generation() -> None:
    first = shards_of("cdc_outbox", "pub", 1, 4)
    assert [s.slot for s in first] == ["cdc_outbox_0", "cdc_outbox_1", "cdc_outbox_2", "cdc_outbox_3"]
    assert [s.publication for s in first] == ["pub_0", "pub_1", "pub_2", "pub_3"]
    assert first[2].row_filter == "((shard_hash % 4) = 2)"
    third = shards_of("cdc_outbox", "pub", 3, 8)
    assert third[7].slot == "cdc_outbox_g3_7" and third[7].publication == "pub_g3_7"


def test_every_slot_of_every_generation_has_its_own_stream() -> None:
    streams = [s.stream for g in (1, 2, 3) for s in shards_of("s", "p", g, MAX_SHARDS)]
    assert len(set(streams)) == len(streams) and 0 not in streams


def test_a_generation_of_one_shard_has_no_row_filter() -> None:
    (only,) = shards_of("s", "p", 2, 1)
    assert only.row_filter is None and only.slot == "s_g2_0"


@pytest.mark.parametrize("count", [0, -1, MAX_SHARDS + 1])
def test_shard_counts_outside_one_to_sixty_four_are_refused(count: int) -> None:
    with pytest.raises(ShardCountError, match="between 1 and 64"):
        check_count(count)


def test_names_too_long_for_the_suffix_are_refused_with_what_to_do() -> None:
    with pytest.raises(NameError_, match="choose shorter names"):
        shards_of("s" * 60, "p", 12, 64)


def test_lock_keys_are_stable_distinct_and_split_like_pg_locks_shows_them() -> None:
    keys = {lock_key(f"cdc_outbox_{k}") for k in range(64)} | {member_key("w1"), reshard_key("cdc_outbox")}
    assert len(keys) == 66
    assert lock_key("cdc_outbox_0") == lock_key("cdc_outbox_0")
    key = -2
    assert split_key(key) == (0xFFFFFFFF, 0xFFFFFFFE)
    high, low = split_key(lock_key("x"))
    assert ((high << 32) | low) == lock_key("x") & 0xFFFFFFFFFFFFFFFF


@pytest.mark.parametrize("version", [90624, 130012, 140015, 149999])
def test_servers_before_15_are_refused_in_one_line(version: int) -> None:
    with pytest.raises(ShardError, match=r"PostgreSQL 15 or newer .* this server is (9|13|14):") as refused:
        require_row_filters(version)
    assert "\n" not in str(refused.value) and str(refused.value).endswith("or upgrade PostgreSQL")


@pytest.mark.parametrize("version", [150000, 150014, 180001])
def test_servers_from_15_on_may_shard(version: int) -> None:
    require_row_filters(version)
