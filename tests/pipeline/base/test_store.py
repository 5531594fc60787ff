"""The object store: the same tests against a local folder and S3 (moto over HTTP)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.base.store import (
    InvalidKey,
    LocalStore,
    ObjectExists,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StorageError,
    check_id,
    get_frame,
    put_frame,
    upload_tree,
)


def test_put_get_roundtrip(store: ObjectStore) -> None:
    store.put_bytes("a/b/c.bin", b"\x00\x01payload")
    assert store.get_bytes("a/b/c.bin") == b"\x00\x01payload"
    assert store.exists("a/b/c.bin")
    assert not store.exists("a/b/other.bin")
    assert not store.exists("a/b")  # a folder-like prefix is not an object


def test_missing_key_is_a_clear_error(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match=r"nope/x\.json does not exist"):
        store.get_bytes("nope/x.json")


def test_refuses_overwrite_unless_asked(store: ObjectStore) -> None:
    store.put_bytes("k/v.txt", b"first")
    with pytest.raises(ObjectExists, match="refusing to overwrite"):
        store.put_bytes("k/v.txt", b"second")
    assert store.get_bytes("k/v.txt") == b"first"
    store.put_bytes("k/v.txt", b"second", overwrite=True)
    assert store.get_bytes("k/v.txt") == b"second"


def test_list_is_sorted_recursive_and_scoped(store: ObjectStore) -> None:
    for key in ("x/2.txt", "x/1.txt", "x/sub/3.txt", "xy/4.txt", "y/5.txt"):
        store.put_bytes(key, b"1")
    assert store.list("x") == ["x/1.txt", "x/2.txt", "x/sub/3.txt"]  # not xy/
    assert store.list("nothing") == []
    assert store.list() == ["x/1.txt", "x/2.txt", "x/sub/3.txt", "xy/4.txt", "y/5.txt"]


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put_bytes("d/one.txt", b"1")
    store.delete("d/one.txt")
    store.delete("d/one.txt")
    assert not store.exists("d/one.txt")
    assert store.list("d") == []


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("../escape.txt", "would leave"),
        ("a/../../etc/passwd", "would leave"),
        ("/etc/passwd", "absolute"),
        ("a\\b.txt", "backslash"),
        ("a/\x00b", "control character"),
        ("a//b", "empty"),
        ("a/.hidden", "reserved for temporary"),
        ("a/b c", "letters, digits"),
        ("", "non-empty"),
    ],
)
def test_keys_never_escape_the_store(store: ObjectStore, key: str, why: str) -> None:
    with pytest.raises(InvalidKey, match=why):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidKey):
        store.exists(key)


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", "..", "a\nb", "", "-lead", "x" * 101])
def test_ids_from_users_are_checked(bad: str) -> None:
    with pytest.raises(InvalidKey, match="batch id"):
        check_id(bad, "batch id")


def test_file_roundtrip_and_uri(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(bytes(range(256)) * 1000)
    store.put_file("files/in.bin", src)
    out = store.get_file("files/in.bin", tmp_path / "out" / "copy.bin")
    assert out.read_bytes() == src.read_bytes()
    uri = store.uri("files/in.bin")
    if isinstance(store, S3Store):
        assert uri == f"s3://{store.bucket}/pipeline-tests/files/in.bin"
    else:
        assert uri.startswith("file:///")
        assert uri.endswith("/store/files/in.bin")


def test_frames_roundtrip(store: ObjectStore, march) -> None:
    put_frame(store, "f/march.parquet", march)
    back = get_frame(store, "f/march.parquet")
    assert back.equals(march)


def test_concurrent_writers_exactly_one_wins(store: ObjectStore) -> None:
    """Two writers racing for one key: the conditional write lets exactly one through."""
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            store.put_bytes("race/key.bin", f"writer {i}".encode())
            outcomes.append("won")
        except ObjectExists:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused", "refused", "refused", "won"]
    assert store.get_bytes("race/key.bin").startswith(b"writer ")


def test_upload_tree_skips_patterns(store: ObjectStore, tmp_path: Path) -> None:
    (tmp_path / "site" / "static").mkdir(parents=True)
    (tmp_path / "site" / "index.html").write_text("<html/>")
    (tmp_path / "site" / "static" / "big.gif").write_bytes(b"GIF89a")
    (tmp_path / "site" / "static" / "s.css").write_text("a{}")
    keys = upload_tree(store, tmp_path / "site", "docs", skip=("*.gif",))
    assert keys == ["docs/index.html", "docs/static/s.css"]
    assert store.list("docs") == ["docs/index.html", "docs/static/s.css"]


# ------------------------------------------------------------------------------ local only


def test_local_writes_leave_no_temporary_files(local_store: LocalStore) -> None:
    local_store.put_bytes("t/a.bin", b"1")
    with pytest.raises(ObjectExists):
        local_store.put_bytes("t/a.bin", b"2")
    names = sorted(p.name for p in (local_store.root / "t").iterdir())
    assert names == ["a.bin"]


def test_local_failed_write_leaves_nothing(local_store: LocalStore) -> None:
    def boom(_fh: object) -> None:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        local_store._write("t/partial.bin", boom, overwrite=False)
    assert not local_store.exists("t/partial.bin")
    assert list((local_store.root / "t").iterdir()) == []


def test_local_store_cannot_be_created_in_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match=r"storage\.root"):
        LocalStore(blocker / "store")


# ------------------------------------------------------------------------------ S3 only


@pytest.fixture
def small_parts_store(s3_server) -> S3Store:
    return S3Store.from_config(
        s3_server.storage(s3_server.new_bucket(), multipart_threshold_mb=5, multipart_chunk_mb=5)
    )


def test_s3_large_file_goes_up_in_parts(small_parts_store: S3Store, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"0123456789abcdef" * (11 * 1024 * 1024 // 16))  # 11 MiB -> 3 parts
    small_parts_store.put_file("big/object.bin", big)
    head = small_parts_store.client.head_object(
        Bucket=small_parts_store.bucket, Key="pipeline-tests/big/object.bin"
    )
    assert head["ETag"].strip('"').endswith("-3")  # S3's ETag of a 3-part upload
    assert small_parts_store.get_bytes("big/object.bin") == big.read_bytes()
    with pytest.raises(ObjectExists):
        small_parts_store.put_file("big/object.bin", big)  # conditional complete refuses


def test_s3_failed_multipart_leaves_no_object(small_parts_store: S3Store) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise OSError("connection reset while reading the source")
            return b"x" * size

    with pytest.raises(OSError, match="connection reset"):
        small_parts_store._multipart("broken/object.bin", Flaky(), overwrite=False)
    assert not small_parts_store.exists("broken/object.bin")
    uploads = small_parts_store.client.list_multipart_uploads(Bucket=small_parts_store.bucket)
    assert uploads.get("Uploads", []) == []  # aborted, not left dangling


def test_s3_missing_bucket_names_the_setting(s3_server) -> None:
    store = S3Store.from_config(s3_server.storage("no-such-bucket-here"))
    with pytest.raises(
        StorageError, match=r"bucket 'no-such-bucket-here' does not exist.*storage\.bucket"
    ):
        store.put_bytes("a.txt", b"1", overwrite=True)


def test_s3_unreachable_endpoint_names_the_setting() -> None:
    import socket

    from pipeline.base.sections import StorageConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = StorageConfig(
        kind="s3",
        bucket="any-bucket",
        endpoint_url=f"http://127.0.0.1:{port}",
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        max_attempts=1,
        connect_timeout_s=1,
    )
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint.*storage\.endpoint_url"):
        S3Store.from_config(config).exists("a.txt")


def test_s3_retry_and_addressing_settings_reach_botocore(s3_server) -> None:
    store = S3Store.from_config(
        s3_server.storage("some-bucket", retries_mode="adaptive", max_attempts=7)
    )
    cfg = store.client.meta.config
    assert cfg.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert cfg.s3 == {"addressing_style": "path"}  # auto + endpoint_url (MinIO) -> path style
