"""Batches are cut under etcd's per-transaction limits, and bad batches are refused early."""

from __future__ import annotations

import pytest

from computed.store.client import parse_endpoint
from computed.store.ops import (
    MAX_TXN_OPS,
    Delete,
    Put,
    check_unique,
    chunked,
    encode_value,
    prepare,
)
from computed.store.records import LivenessRecord


def test_300_ops_make_chunks_of_at_most_128():
    ops = [Put(f"/k/{i}", "v") for i in range(300)]
    chunks = list(chunked(ops))
    assert [len(c) for c in chunks] == [128, 128, 44]
    assert [op for c in chunks for op in c] == ops  # order kept


def test_exactly_the_limit_is_one_chunk():
    assert len(list(chunked([Put(f"/k/{i}", "") for i in range(MAX_TXN_OPS)]))) == 1


def test_large_values_split_by_bytes():
    ops = [Put(f"/k/{i}", b"x" * 400_000) for i in range(5)]
    sizes = [len(c) for c in chunked(ops, max_bytes=1 << 20)]
    assert sizes == [2, 2, 1]


def test_an_oversized_op_goes_alone():
    ops = [Put("/a", "1"), Put("/big", b"x" * 2_000_000), Put("/b", "2")]
    assert [[op.key for op in c] for c in chunked(ops, max_bytes=1 << 20)] == [
        ["/a"],
        ["/big"],
        ["/b"],
    ]


def test_deletes_count_as_ops():
    ops = [Delete(f"/k/{i}") for i in range(3)]
    assert [len(c) for c in chunked(ops, max_ops=2)] == [2, 1]


def test_nothing_in_nothing_out():
    assert list(chunked([])) == []


def test_a_key_twice_is_refused_by_name():
    with pytest.raises(ValueError, match="'/k/1' appears twice"):
        check_unique([Put("/k/1", "a"), Delete("/k/2"), Delete("/k/1")])


def test_prepare_encodes_once_and_keeps_puts_of_bytes_as_they_are():
    record = LivenessRecord("n", 1.0)
    raw = Put("/c", b"y", lease=0)
    ops = prepare([Put("/a", record), Put("/b", "x", lease=7), raw, Delete("/d")])
    assert ops == [Put("/a", record.to_json().encode()), Put("/b", b"x", 7), raw, Delete("/d")]
    assert ops[2] is raw  # the stats path: not copied (the batch lease is filled in at send)
    with pytest.raises(ValueError, match="appears twice"):
        prepare([Put("/a", "1"), Put("/a", "2")])


def test_values_encode_from_records_text_and_bytes():
    assert encode_value(LivenessRecord("n", 1.0)) == b'{"host_id":"n","started_at":1.0}'
    assert encode_value("é") == "é".encode()
    assert encode_value(b"\x00") == b"\x00"
    with pytest.raises(TypeError, match="dict"):
        encode_value({"a": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:2379", ("127.0.0.1", 2379)),
        ("http://etcd-1.example.org:2379/", ("etcd-1.example.org", 2379)),
        ("[::1]:2379", ("[::1]", 2379)),
    ],
)
def test_endpoints_parse(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["localhost", ":2379", "host:port", "https://h:2379"])
def test_bad_endpoints_are_refused(text):
    with pytest.raises(ValueError, match="etcd endpoint"):
        parse_endpoint(text)


def test_with_tls_files_endpoints_may_say_https_but_not_http():
    assert parse_endpoint("https://10.0.0.1:2379", tls=True) == ("10.0.0.1", 2379)
    assert parse_endpoint("10.0.0.1:2379", tls=True) == ("10.0.0.1", 2379)
    with pytest.raises(ValueError, match="plain http"):
        parse_endpoint("http://10.0.0.1:2379", tls=True)
    with pytest.raises(ValueError, match="needs TLS files"):
        parse_endpoint("https://10.0.0.1:2379")
