import gc
import os
import threading

import pytest

from agent.vmm_stats import (
    KernelThreads,
    ProcStat,
    ThreadClock,
    VmmStats,
    cpu_percent,
    parse_ctx_switches,
    parse_stat,
    parse_statm_rss,
)

# A VMM's /proc/<pid>/stat; the command name may hold spaces and parentheses.
STAT = (
    b"8344 (computed-vmm) S 8324 8344 8344 0 -1 4194304 1898 0 0 0 13 1 0 0 20 0 3 0 "
    b"124368 159059968 3380 18446744073709551615 94027359719424 94027359719765 "
    b"140730494759104 0 0 0 0 16781316 16899 0 0 0 17 1 0 0 0 0 0 94027359731120 "
    b"94027359731736 94027897815040 140730494765279 140730494765586 140730494765586 "
    b"140730494767062 0\n"
)
STATUS_TAIL = (
    b"Cpus_allowed_list:\t0-1\nMems_allowed:\t00000001\nMems_allowed_list:\t0\n"
    b"voluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n"
)


def test_cpu_percent_needs_an_interval():
    assert cpu_percent(None, None, 1.0, 10.0) is None
    assert cpu_percent(1.0, 10.0, 2.0, 10.0) is None  # no time passed


def test_cpu_percent_is_per_host_cpu():
    assert cpu_percent(1.0, 10.0, 1.5, 11.0) == 50.0
    assert cpu_percent(1.0, 10.0, 3.0, 11.0) == 200.0  # two busy vCPUs
    assert cpu_percent(2.0, 10.0, 1.0, 11.0) == 0.0  # a restarted process never goes negative


def test_parse_stat_takes_cpu_ticks_and_threads():
    assert parse_stat(STAT) == ProcStat(utime_ticks=13, stime_ticks=1, threads=3)


def test_parse_statm_rss_is_the_resident_pages():
    assert parse_statm_rss(b"38833 3103 1697 1 0 20141 0\n") == 3103


def test_parse_stat_survives_a_command_name_with_spaces_and_parentheses():
    odd = STAT.replace(b"(computed-vmm)", b"(a) b (c))")
    assert parse_stat(odd) == parse_stat(STAT)


def test_parse_ctx_switches_reads_the_two_counters():
    assert parse_ctx_switches(b"Name:\tcomputed-vmm\n" + STATUS_TAIL) == (1234, 56)


def test_parse_ctx_switches_ignores_lines_after_them_and_a_missing_last_newline():
    later = b"Name:\tx\n" + STATUS_TAIL + b"x86_Thread_features:\t\n"
    assert parse_ctx_switches(later) == (1234, 56)
    assert parse_ctx_switches(b"Name:\tx\n" + STATUS_TAIL.rstrip(b"\n")) == (1234, 56)


def test_parse_ctx_switches_refuses_a_status_without_them():
    with pytest.raises(ValueError):
        parse_ctx_switches(b"Name:\tx\nState:\tZ (zombie)\n")


class FakeKernel:
    """Kernel threads by pid, and a clock, for KernelThreads."""

    def __init__(self, threads: dict[int, str]) -> None:
        self.threads = threads
        self.scans = 0
        self.now = 1000.0

    def list_pids(self) -> list[str]:
        self.scans += 1
        return [str(p) for p in self.threads]

    def read_comm(self, pid: int | str) -> str | None:
        return self.threads.get(int(pid))

    def index(self) -> KernelThreads:
        return KernelThreads(1.0, self.list_pids, self.read_comm, lambda: self.now)


def test_kernel_threads_answers_a_round_of_collectors_from_one_scan():
    k = FakeKernel({100 + i: f"kvm-pit/{i}" for i in range(50)})
    index = k.index()
    assert [index.find(f"kvm-pit/{i}") for i in range(50)] == [100 + i for i in range(50)]
    assert index.find("vhost-7") is None and index.find("vhost-8") is None
    assert k.scans == 1


def test_kernel_threads_rescans_for_a_vmm_started_after_the_scan():
    k = FakeKernel({100: "kvm-pit/1"})
    index = k.index()
    assert index.find("kvm-pit/1") == 100
    k.threads[200] = "kvm-pit/2"
    k.now += 0.1
    assert index.find("kvm-pit/2", since=k.now - 0.05) == 200  # started after the scan
    assert k.scans == 2


def test_kernel_threads_rescans_a_missing_name_once_the_index_is_old():
    k = FakeKernel({})
    index = k.index()
    assert index.find("kvm-pit/1") is None
    k.threads[300] = "kvm-pit/1"
    k.now += 0.5
    assert index.find("kvm-pit/1") is None  # a scan half a second old says no
    k.now += 0.6
    assert index.find("kvm-pit/1") == 300
    assert k.scans == 2


def test_kernel_threads_does_not_trust_a_reused_pid():
    k = FakeKernel({100: "kvm-pit/1"})
    index = k.index()
    assert index.find("kvm-pit/1") == 100
    k.threads[100] = "kworker/0:1"  # kvm-pit/1 ended; its pid went to another thread
    k.now += 2
    assert index.find("kvm-pit/1") is None


def test_a_collector_trusts_only_a_kernel_thread_scan_taken_once_its_vmm_ran():
    """psutil's start time may read up to a second early (a boot time in whole seconds),
    so it cannot say whether a scan saw the VMM's kvm-pit; the time the caller knew the
    VMM to be running can. This process stands in for the VMM."""
    pid = os.getpid()
    k = FakeKernel({})
    index = k.index()
    assert index.find("warm-up") is None  # a scan at 1000.0, before the VMM's VM
    k.threads[4242] = f"kvm-pit/{pid}"
    k.now += 0.2
    before = VmmStats(pid, helpers=index, running_at=k.now - 0.5)  # a bound before the scan
    assert before.pit_pid is None and k.scans == 1
    after = VmmStats(pid, helpers=index, running_at=k.now - 0.1)  # the VMM ran after it
    assert after.pit_pid == 4242 and k.scans == 2
    before.close()
    after.close()


def test_thread_clock_reads_this_thread_and_closes_once():
    clock = ThreadClock(os.getpid(), threading.get_native_id())
    assert clock.read_ns() > 0
    clock.close()
    assert clock.read_ns() is None
    other = os.open("/dev/null", os.O_RDONLY)  # likely takes the number just freed
    try:
        clock.close()
        del clock
        gc.collect()
        os.fstat(other)  # still open: a second close must not have hit it
    finally:
        os.close(other)
