import threading

import pytest

from computed.store.client import Store
from scheduler.naming import allocate_names, format_names

pytestmark = pytest.mark.integration


def test_names_are_sequential_hex(store):
    assert allocate_names(store, 1) == ["instance-00000001"]
    assert (
        allocate_names(store, 3)
        == format_names(2, 3)
        == ["instance-00000002", "instance-00000003", "instance-00000004"]
    )


def test_concurrent_allocators_never_share_a_name(etcd):
    taken: list[str] = []
    lock = threading.Lock()

    def worker():
        with Store(etcd.endpoint) as s:
            for _ in range(10):
                names = allocate_names(s, 2)
                with lock:
                    taken.extend(names)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == len(set(taken)) == 120
    assert max(taken) == "instance-00000078"
