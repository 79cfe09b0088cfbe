"""Task ids: well-formed UUID4 strings, unique across batches, threads and a fork."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from ebind import ids
from ebind.ids import format_uuid4, new_task_id
from ebind.validate import check_id


def test_format_sets_version_and_variant() -> None:
    text = format_uuid4(b"\xff" * 16)
    parsed = uuid.UUID(text)
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == text


def test_format_keeps_the_random_bits() -> None:
    assert format_uuid4(bytes(16)) == "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize("raw", [b"", b"\x00" * 15, b"\x00" * 17])
def test_format_refuses_other_lengths(raw: bytes) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        format_uuid4(raw)


def test_ids_are_uuid4_and_pass_the_id_check() -> None:
    for _ in range(10):
        task_id = new_task_id()
        assert uuid.UUID(task_id).version == 4
        assert check_id(task_id, "task_id") == task_id


def test_ids_are_unique_across_several_buffers() -> None:
    n = ids._BATCH * 3 + 7  # crosses buffer refills
    assert len({new_task_id() for _ in range(n)}) == n


def test_threads_never_share_an_id() -> None:
    got: list[list[str]] = [[] for _ in range(4)]

    def run(out: list[str]) -> None:
        out.extend(new_task_id() for _ in range(ids._BATCH))

    threads = [threading.Thread(target=run, args=(out,)) for out in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in got for i in out]
    assert len(set(every)) == len(every) == 4 * ids._BATCH


def test_a_forked_child_does_not_reuse_the_parents_buffer() -> None:
    new_task_id()  # the parent holds a partly used buffer
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id, then leave without running pytest's exit
        os.close(read)
        os.write(write, new_task_id().encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child_id = pipe.read().decode()
    os.waitpid(pid, 0)
    assert uuid.UUID(child_id).version == 4
    assert child_id != new_task_id()  # the parent's next id is not the child's
