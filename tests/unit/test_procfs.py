"""/proc look-ups against this very process."""

import os
import threading

from computed.vmm._kvm import lib

from computed.procfs import stat_fields


def test_stat_fields_survive_a_thread_name_with_spaces_and_parentheses():
    seen = {}

    def run():
        lib.vmm_set_thread_name(b"x) S 1 2 (y")  # what a naive split would misread
        tid = threading.get_native_id()
        seen["fields"] = stat_fields(f"/proc/{os.getpid()}/task/{tid}/stat")

    t = threading.Thread(target=run)
    t.start()
    t.join()
    fields = seen["fields"]
    assert fields[0] == "R"  # state: running, it is reading its own stat
    assert int(fields[1]) == os.getppid()  # ppid of a thread is the process's parent
