"""/proc look-ups against this very process."""

import os
import threading

from computed.vmm._kvm import lib

from computed import procfs
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


def test_a_kernel_thread_is_looked_for_among_those_made_after_the_mark_first(monkeypatch):
    pids = [str(p) for p in range(10, 40)]  # kthreadd's children, oldest first
    comms = {p: f"worker/{p}" for p in pids} | {"35": "kvm-pit/7", "12": "kvm-pit/8"}
    read: list[str] = []
    monkeypatch.setattr(procfs, "kernel_thread_pids", lambda: pids)
    monkeypatch.setattr(procfs, "read_comm", lambda p: read.append(p) or comms[p])
    assert procfs.find_kernel_thread("kvm-pit/7", made_after=33) == 35
    assert read == ["39", "38", "37", "36", "35"]  # not the 25 threads older than the mark
    read.clear()  # pids wrapped: made after the mark, it has a lower pid; all are read
    assert procfs.find_kernel_thread("kvm-pit/8", made_after=33) == 12
    assert read[:6] == ["39", "38", "37", "36", "35", "34"] and read[-1] == "12"
    assert procfs.find_kernel_thread("kvm-pit/9", made_after=33) is None


def test_a_real_kernel_thread_is_found_whatever_the_mark():
    comms = {pid: procfs.read_comm(pid) for pid in procfs.kernel_thread_pids()}
    oldest, comm = next((p, c) for p, c in comms.items() if list(comms.values()).count(c) == 1)
    assert procfs.find_kernel_thread(comm) == int(oldest)
    assert procfs.find_kernel_thread(comm, made_after=procfs.last_pid()) == int(oldest)
    pid_max = int(procfs.read_text("/proc/sys/kernel/pid_max"))
    assert 0 < procfs.last_pid() <= pid_max  # not ">= our pid": pids wrap (CI saw it)


def test_read_text_reads_to_the_end_past_a_page_and_past_one_read(tmp_path):
    text = "".join(f"line {i}\n" for i in range(20000))  # 188 KB: three reads of 64 KiB
    (tmp_path / "big").write_text(text)
    assert procfs.read_text(str(tmp_path / "big")) == text
    smaps = procfs.read_text("/proc/self/smaps")  # a seq file: a page or so per read
    assert len(smaps) > 4096 and smaps.endswith("\n") and smaps.count("VmFlags:") > 20
