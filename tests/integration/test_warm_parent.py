"""The warm VMM parent (computed/vmm/zygote.py) driven by the agent's client
(agent/warm_parent.py), from a subreaper subprocess as the agent is (tests/warm_driver.py).
"""

from __future__ import annotations

import textwrap

import pytest

from tests.warm_driver import UUID, drive

pytestmark = pytest.mark.integration


# Whether VMM `pid` uses `other`'s /dev/kvm open file (kcmp KCMP_FILE), not one of its own:
# the warm parent's handle, opened and asked for the host's CPUID once.
KVM_HELPERS = textwrap.dedent(
    """
    def kvm_handles_shared(pid, other):
        import ctypes

        def kvm_fds(p):
            return [int(fd) for fd in os.listdir(f"/proc/{p}/fd")
                    if os.readlink(f"/proc/{p}/fd/{fd}") == "/dev/kvm"]

        kcmp = ctypes.CDLL(None, use_errno=True).syscall
        mine, theirs = kvm_fds(pid), kvm_fds(other)
        return len(mine) == len(theirs) == 1 and kcmp(312, pid, other, 0, mine[0], theirs[0]) == 0
    """
)


DRIVER = KVM_HELPERS + textwrap.dedent(
    """
    versions = iter(["v1", "v1", "v2", "v2"])  # the installed code changes before spawn 3
    parent = WarmParent(state, dict(os.environ), lambda: next(versions), standbys=2)


    def spawn(n, image, console):
        argv = [os.path.join(os.path.dirname(sys.executable), "computed-vmm"),
                "-name", f"instance-{n:08x}", "-uuid", UUID.format(n), "-m", "64",
                "-kernel", image, "-serial", f"file:{console}"]
        started.append(parent.spawn(argv, {1: log, 2: log}))
        return started[-1]


    def exit_code(pid):
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


    def run():
        # 1. a guest that powers off by itself: its exit status reaches the subreaper
        console = os.path.join(state, "hello.log")
        pid = spawn(1, "hello", console)
        out["cmdline"] = open(f"/proc/{pid}/cmdline", "rb").read().decode()
        out["ppid"] = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        out["me"] = os.getpid()
        out["hello_exit"] = exit_code(pid)
        out["hello_console"] = open(console).read()

        # 2. new code, new parent: spawn 3 finds the installed code changed
        console2 = os.path.join(state, "heartbeat.log")
        pid2 = spawn(2, "heartbeat", console2)
        first_parent = parent.pid
        out["shares_kvm_handle"] = kvm_handles_shared(pid2, first_parent)
        pid3 = spawn(3, "hello", os.path.join(state, "hello3.log"))
        second_parent = parent.pid
        out["replaced_for_new_code"] = second_parent not in (None, first_parent)
        out["hello3_exit"] = exit_code(pid3)

        # 3. a running VMM outlives a warm parent that crashes; the next spawn starts one
        os.kill(second_parent, signal.SIGKILL)
        wait_until(lambda: os.path.getsize(console2) > 0, what="output", ignoring=(OSError,))
        size = os.path.getsize(console2)
        wait_until(lambda: os.path.getsize(console2) > size, what="ticks after the parent died")
        pid4 = spawn(4, "hello", os.path.join(state, "hello4.log"))
        out["replaced_after_crash"] = parent.pid not in (None, second_parent)
        out["hello4_exit"] = exit_code(pid4)
        os.kill(pid2, signal.SIGKILL)
        out["killed_exit"] = exit_code(pid2)

    """
)


def test_warm_parent_forks_vmms_the_agent_reaps_and_that_outlive_it(short_tmp):
    out = drive(DRIVER, short_tmp, timeout=120)
    # ps and re-adoption see the VMM's own qemu-like command line
    assert f"-name instance-00000001 -uuid {UUID.format(1)}" in out["cmdline"]
    assert out["ppid"] == out["me"]  # re-parented to the subreaper, not the warm parent
    assert out["hello_exit"] == 0
    assert "Hello from instance-00000001" in out["hello_console"]
    assert out["replaced_for_new_code"] and out["replaced_after_crash"]
    assert out["hello3_exit"] == out["hello4_exit"] == 0
    assert out["killed_exit"] == -9  # a signal death is seen too
    # the warm parent's /dev/kvm handle, opened and asked for the host's CPUID once
    assert out["shares_kvm_handle"]


# Helpers of the standby drivers: the standbys waiting (pid → the shape in their title,
# "64M smp=1 cpu=host"), the kvm-pit threads of a VMM, a process's state.
STANDBY_HELPERS = textwrap.dedent(
    """
    from computed.procfs import kernel_thread_pids, read_comm


    def standbys():
        # the warm parent's standbys are re-parented to us, as its VMMs are
        found = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                title = open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\\0")[0]
                ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == os.getpid() and title.startswith("computed-vmm-standby"):
                found[int(pid)] = title.split(maxsplit=1)[1]
        return found


    def pit_threads(pid):
        return [t for t in kernel_thread_pids() if read_comm(t) == f"kvm-pit/{pid}"]


    def state_of(pid):
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return ""
    """
)

STANDBY_DRIVER = STANDBY_HELPERS + textwrap.dedent(
    """
    from computed.subreaper import reap_strays

    parent = WarmParent(state, dict(os.environ), standbys=2)


    def spawn(n, mib, *extra):
        argv = [os.path.join(os.path.dirname(sys.executable), "computed-vmm"),
                "-name", f"instance-{n:08x}", "-uuid", UUID.format(n), "-m", str(mib),
                "-kernel", "heartbeat", "-append", "hz=0",
                "-serial", f"file:{os.path.join(state, f'{n}.log')}", *extra]
        started.append(parent.spawn(argv, {1: log, 2: log}))
        return started[-1]


    def seccomp_modes(pid):
        modes = set()
        for tid in os.listdir(f"/proc/{pid}/task"):
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith("Seccomp:"):
                    modes.add(int(line.split()[1]))
        return sorted(modes)


    M64, M96 = "64M smp=1 cpu=host", "96M smp=1 cpu=host"


    def run():
        spawn(1, 64)  # starts the warm parent; its standbys learn the size 64
        wait_until(lambda: sorted(standbys().values()) == [M64, M64],
                   what="two 64 MiB standbys", timeout=60)
        waiting = standbys()
        pid = spawn(2, 64)
        out["from_standby"] = pid in waiting
        wait_until(lambda: os.path.getsize(os.path.join(state, "2.log")) > 0, what="output",
                   ignoring=(OSError,))
        out["cmdline"] = open(f"/proc/{pid}/cmdline", "rb").read().decode()
        out["pit_threads"] = len(pit_threads(pid))
        out["fds"] = sorted(int(f) for f in os.listdir(f"/proc/{pid}/fd"))
        # a size no standby guessed: the standby drops its VM and makes one of the right size
        wait_until(lambda: len(standbys()) == 2, what="the pool topped up", timeout=60)
        waiting = standbys()
        pid3 = spawn(3, 96)
        out["wrong_size_from_standby"] = pid3 in waiting
        wait_until(lambda: os.path.getsize(os.path.join(state, "3.log")) > 0, what="output",
                   ignoring=(OSError,))
        out["pit_threads_after_resize"] = len(pit_threads(pid3))
        # the requests move to 96 MiB: the 64 MiB standby left is let go, and the agent
        # (here, the driver) reaps it at its next spawn, not as a stray a minute later
        wait_until(lambda: sorted(standbys().values()) == [M64, M96],
                   what="the pool topped up with the new size", timeout=60)
        retired = [p for p, shape in standbys().items() if shape == M64][0]
        # -sandbox off: no seccomp filter on any thread, though the warm parent read the
        # programs for its confined VMMs; it removes its own files at exit
        pidfile, control = os.path.join(state, "4.pid"), os.path.join(state, "4.sock")
        pid4 = spawn(4, 96, "-pidfile", pidfile, "-control", f"unix:{control}")
        # ended: a zombie, or reaped already if it exited before spawn 4's answer named it
        wait_until(lambda: state_of(retired) in ("Z", ""), what="the retired standby ended")
        spawn(5, 96)
        out["retired_standby"] = state_of(retired) or "reaped"
        out["still_to_reap"] = sorted(parent.reap_ended())
        wait_until(lambda: os.path.exists(pidfile), what="the pidfile")
        out["unconfined_seccomp"] = seccomp_modes(pid4)
        os.kill(pid4, signal.SIGTERM)
        out["unconfined_exit"] = os.waitstatus_to_exitcode(os.waitpid(pid4, 0)[1])
        out["unconfined_files_left"] = [p for p in (pidfile, control) if os.path.exists(p)]
        parent.stop()
        wait_until(lambda: not standbys() or (reap_strays(started) and False),
                   what="standbys gone with their warm parent", timeout=30)
        out["standbys_left"] = len(standbys())

    """
)


def test_standby_vmms_take_requests_with_their_vm_made_ahead(short_tmp):
    """A request goes to a standby that made its VM before it was asked; the VMM it
    becomes has one kvm-pit thread (a wrong guess of size leaves no second VM), and
    the standbys end with their warm parent. A standby let go is reaped by the agent
    at its next spawn. An unconfined VMM carries no seccomp filter, though its warm
    parent read the programs for confined ones."""
    out = drive(STANDBY_DRIVER, short_tmp, timeout=180)
    assert out["from_standby"] and out["wrong_size_from_standby"]
    assert f"-name instance-00000002 -uuid {UUID.format(2)}" in out["cmdline"]
    assert out["pit_threads"] == out["pit_threads_after_resize"] == 1
    assert out["unconfined_seccomp"] == [0]  # SECCOMP_MODE_DISABLED on every thread
    assert out["unconfined_exit"] == 0  # powered off by SIGTERM, not killed by SIGSYS
    assert out["unconfined_files_left"] == []
    assert out["retired_standby"] == "reaped" and out["still_to_reap"] == []
    # stdio, the /dev/kvm and VM fds, vCPU and its own: nothing of the warm parent's
    assert len(out["fds"]) < 16, out["fds"]
    assert out["standbys_left"] == 0


SHAPE_DRIVER = STANDBY_HELPERS + textwrap.dedent(
    """
    import shutil

    from computed.guests.bundled import bundled_dir
    from computed.vmm.control_client import execute

    parent = WarmParent(state, dict(os.environ), standbys=2)
    image = os.path.join(state, "guest.elf")  # an image the operator may replace
    shutil.copy(os.path.join(bundled_dir(), "heartbeat"), image)


    def spawn(n, *shape):
        control = os.path.join(state, f"{n}.sock")
        argv = [os.path.join(os.path.dirname(sys.executable), "computed-vmm"),
                "-name", f"instance-{n:08x}", "-uuid", UUID.format(n), "-m", "64", *shape,
                "-kernel", image, "-append", "hz=0", "-control", f"unix:{control}",
                "-serial", f"file:{os.path.join(state, f'{n}.log')}"]
        started.append(parent.spawn(argv, {1: log, 2: log}))
        return started[-1], control


    def console(n):
        try:
            with open(os.path.join(state, f"{n}.log")) as f:
                return f.read()
        except OSError:
            return ""


    def run():
        spawn(1)  # the standbys learn the shape, and the image to read ahead
        one = "64M smp=1 cpu=host"
        wait_until(lambda: sorted(standbys().values()) == [one, one], timeout=60,
                   what="two standbys made after the first request")
        # a -smp no standby guessed: the VMM drops the shell and makes its own vCPUs
        waiting = standbys()
        made = {p: pit_threads(p) for p in waiting}  # each standby's VM, by its kvm-pit
        pid, control = spawn(2, "-smp", "2")
        out["smp2_from_standby"] = pid in waiting
        wait_until(lambda: os.path.exists(control), what="the control socket")
        cpus = execute(control, "query-cpus-fast")
        out["smp2_cpus"] = [c["props"]["core-id"] for c in cpus]
        out["smp2_pit_threads"] = len(pit_threads(pid))
        out["smp2_new_vm"] = pit_threads(pid) != made.get(pid)
        two = "64M smp=2 cpu=host"
        wait_until(lambda: sorted(standbys().values()) == [one, two], timeout=60,
                   what="the pool topped up with the new shape")
        waiting = standbys()
        made = {p: pit_threads(p) for p in waiting}
        pid, control = spawn(3, "-smp", "2")  # fits: the standby's own VM and vCPUs
        out["fit_from_standby"] = pid in waiting
        wait_until(lambda: "tickless" in console(3), what="the heartbeat's banner")
        out["fit_same_vm"] = pit_threads(pid) == made.get(pid)  # read once the guest runs
        out["fit_cpus"] = len(execute(control, "query-cpus-fast"))
        out["fit_pit"] = [execute(control, "__org.computed_query-vm")["pit-thread-pid"],
                          *map(int, pit_threads(pid))]
        # the image is replaced after the standbys read it: the VMM reads the new one
        wait_until(lambda: len(standbys()) == 2, what="the pool topped up", timeout=60)
        shutil.copy(os.path.join(bundled_dir(), "hello"), image + ".new")
        os.replace(image + ".new", image)
        waiting = standbys()
        pid, _control = spawn(4, "-smp", "2")
        out["replaced_from_standby"] = pid in waiting
        wait_until(lambda: "Hello from instance-00000004" in console(4),
                   what="the new image's greeting")

    """
)


def test_standbys_make_vcpus_and_read_the_image_ahead_for_the_shape_last_asked(short_tmp):
    """A standby makes the vCPUs of the last requests' -smp and -cpu, and reads the
    image they named, while it waits. A request of another shape gets its own vCPUs
    (and no second VM); an image replaced after the standby read it is read anew."""
    out = drive(SHAPE_DRIVER, short_tmp, timeout=180)
    assert out["smp2_from_standby"] and out["fit_from_standby"]
    assert out["smp2_cpus"] == [0, 1] and out["smp2_pit_threads"] == 1
    assert out["smp2_new_vm"]  # the misfit standby's VM was dropped for a new one...
    assert out["fit_same_vm"] and out["fit_cpus"] == 2  # ...the fitting one's kept
    pit, *found = out["fit_pit"]  # the standby looked its kvm-pit thread up ahead
    assert found == [pit]
    assert out["replaced_from_standby"]


CONCURRENT_DRIVER = KVM_HELPERS + textwrap.dedent(
    """
    import threading

    from agent.warm_parent import WarmParentUnavailable
    from computed.procfs import stat_fields

    parent = WarmParent(state, dict(os.environ), standbys=0)  # every VMM forked on demand
    VMM = os.path.join(os.path.dirname(sys.executable), "computed-vmm")


    def argv(n):
        return [VMM, "-name", f"instance-{n:08x}", "-uuid", UUID.format(n), "-m", "64",
                "-kernel", "heartbeat", "-append", "hz=0",
                "-serial", f"file:{os.path.join(state, f'{n}.log')}"]


    def children_of(pid):
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = stat_fields(f"/proc/{entry}/stat")
                except OSError:
                    continue
                if int(fields[1]) == pid:
                    found.append((int(entry), fields[0]))
        return found


    def run():
        started.append(parent.spawn(argv(1), {1: log, 2: log}))  # the warm parent is up
        pids, parents = {}, set()

        def spawn(n):
            pids[n] = pid = parent.spawn(argv(n), {1: log, 2: log})
            parents.add(int(stat_fields(f"/proc/{pid}/stat")[1]))  # as soon as we know it

        threads = [threading.Thread(target=spawn, args=(n,)) for n in range(2, 10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        started.extend(pids.values())
        out["shares_kvm_handle"] = [kvm_handles_shared(p, parent.pid) for p in pids.values()]
        out["cmdlines"] = {n: open(f"/proc/{p}/cmdline", "rb").read().decode()
                           for n, p in pids.items()}
        out["parents"] = sorted(parents)
        out["me"] = os.getpid()
        # a VMM that dies before it answers (an fd it cannot install): no VMM, no answer
        try:
            parent.spawn(argv(10), {1: log, 2: log, 1 << 30: log})
            out["unanswered"] = "answered"
        except WarmParentUnavailable as e:
            out["unanswered"] = str(e)
        started.append(parent.spawn(argv(11), {1: log, 2: log}))
        # the intermediate children are reaped: none is left a zombie under the warm parent
        wait_until(lambda: not children_of(parent.pid), what="the warm parent's children reaped")
        out["zygote_children"] = children_of(parent.pid)

    """
)


def test_concurrent_requests_are_forked_back_to_back_and_each_vmm_answers_for_itself(short_tmp):
    """Requests from many threads go to the warm parent at once; each VMM forked on demand
    answers its own request (its pid, once its title is in place and it is the
    subreaper's child), so the warm parent never waits for one. A VMM that dies before
    answering leaves no answer, and no VMM; the warm parent reaps the intermediate
    children of its double forks."""
    out = drive(CONCURRENT_DRIVER, short_tmp, timeout=180)
    # forked on demand (no standbys), each uses the warm parent's /dev/kvm handle
    assert out["shares_kvm_handle"] == [True] * 8
    for n, cmdline in out["cmdlines"].items():
        assert f"-uuid\0{UUID.format(int(n))}" in cmdline.replace(" ", "\0")
    # every VMM the subreaper's child by the time its pid is known: its to wait for
    assert out["parents"] == [out["me"]]
    assert out["unanswered"] == "warm parent: no answer"
    assert out["zygote_children"] == []
