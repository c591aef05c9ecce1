"""virtio-net data paths: ICMP echo round trips and packets/s. Prints figures; asserts nothing.

    .venv/bin/python bench/net_bench.py [--count 300] [--flood 5000]

- vmm:   a `net` guest under computed-vmm on a tap in a private namespace, once
         with vhost=on (the vhost-<pid> worker, ioeventfd/irqfd: the kernel's
         where /dev/vhost-net exists, else the VMM's own thread) and once with
         vhost=off (vCPU exits): ping RTT p50/p90 (one echo every 10 ms), flood
         ping packets/s, and the CPU time of the thread serving the queues.
- agent: the same guest as an instance on a 1-host dev cluster: a flood ping,
         and the vhost-<pid> worker's CPU time as the agent's stats report it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from computed.devcluster import pki as cluster_pki
from computed.devcluster.cluster import Cluster
from computed.devcluster.plan import make_plan
from computed.procfs import find_kernel_thread, stat_fields

VMM = os.path.join(os.path.dirname(sys.executable), "computed-vmm")
CTL = os.path.join(os.path.dirname(sys.executable), "computectl")
NS, TAP, HOST_IP, GUEST_IP = "cdnetbench", "tapbench", "10.216.0.1", "10.216.0.2"


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def ping_times(ns: list[str], ip: str, count: int) -> list[float]:
    out = sh(*ns, "ping", "-n", "-c", str(count), "-i", "0.01", "-W", "1", ip, check=False)
    return [float(m) for m in re.findall(r"time=([\d.]+) ms", out)]


def flood(ns: list[str], ip: str, count: int) -> float:
    start = time.perf_counter()
    out = sh(*ns, "ping", "-n", "-q", "-f", "-c", str(count), ip, check=False)
    elapsed = time.perf_counter() - start
    received = int(re.search(r"(\d+) received", out).group(1))
    return received / elapsed


def thread_cpu(pid: int, name: str) -> float:
    """CPU seconds of the VMM's thread `name`, or of the kernel thread of that name."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == name:
                return _cpu_seconds(f"/proc/{pid}/task/{tid}/stat")
    kernel = find_kernel_thread(name)
    return _cpu_seconds(f"/proc/{kernel}/stat") if kernel else float("nan")


def _cpu_seconds(stat_path: str) -> float:
    fields = stat_fields(stat_path)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def describe(times: list[float]) -> str:
    xs = sorted(times)
    return (
        f"p50 {statistics.median(xs):.3f} ms, p90 {xs[int(0.9 * len(xs))]:.3f} ms "
        f"(min {xs[0]:.3f}, max {xs[-1]:.3f}, n={len(xs)})"
    )


def bench_vmm(count: int, flood_count: int) -> None:
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "tuntap", "add", TAP, "mode", "tap", "vnet_hdr")
        sh("ip", "-n", NS, "addr", "add", f"{HOST_IP}/24", "dev", TAP)
        sh("ip", "-n", NS, "link", "set", TAP, "up")
        ns = ["ip", "netns", "exec", NS]
        for vhost in ("on", "off"):
            proc = subprocess.Popen([
                *ns, VMM, "-name", "netbench", "-m", "64", "-kernel", "net",
                "-append", f"ip={GUEST_IP}/24 gw={HOST_IP}",
                "-netdev", f"tap,id=n0,ifname={TAP},vhost={vhost}",
                "-device", "virtio-net,netdev=n0", "-serial", "none",
            ])  # fmt: skip
            try:
                time.sleep(1.0)
                ping_times(ns, GUEST_IP, 5)  # ARP and warm-up
                worker = f"vhost-{proc.pid}" if vhost == "on" else "net-rx"
                cpu0 = thread_cpu(proc.pid, worker)
                times = ping_times(ns, GUEST_IP, count)
                pps = flood(ns, GUEST_IP, flood_count)
                cpu = thread_cpu(proc.pid, worker) - cpu0
                path = "kernel" if os.path.exists("/dev/vhost-net") else "userspace"
                label = f"vhost=on ({path} worker)" if vhost == "on" else "vhost=off"
                print(
                    f"vmm {label}: ping RTT {describe(times)}; flood {pps:,.0f} echoes/s; "
                    f"{worker} thread CPU {cpu:.2f} s for {count + flood_count} echoes"
                )
            finally:
                proc.terminate()
                proc.wait()
    finally:
        sh("ip", "netns", "del", NS, check=False)


def bench_agent(count: int, flood_count: int) -> None:
    plan = make_plan(
        hosts=1, subnet="10.217.0.0/24", state_dir="/var/tmp/computed-netbench", tag="nb",
        scheduler_port=18974, etcd_port=12579,
    )  # fmt: skip
    cluster = Cluster(plan)
    cluster.down()
    try:
        cluster.up()
        admin = cluster_pki.admin_files(plan)  # the cluster runs mTLS
        env = {**os.environ, "COMPUTED_SCHEDULER": plan.scheduler_addresses[0],
               "OS_CACERT": admin.ca, "OS_CERT": admin.cert, "OS_KEY": admin.key}  # fmt: skip

        def ctl(*args: str) -> str:
            return subprocess.run(
                [CTL, *args], env=env, check=True, capture_output=True, text=True
            ).stdout

        for _ in range(100):
            hosts = json.loads(ctl("host", "list", "-f", "json"))
            if hosts and all(h["state"] == "up" for h in hosts):
                break
            time.sleep(0.2)
        ip = ctl("server", "create", "nb", "--flavor", "m1.tiny", "--image", "net", "--wait",
                 "-f", "value", "-c", "ip").strip()  # fmt: skip
        time.sleep(1.0)
        ping_times([], ip, 5)
        times = ping_times([], ip, count)
        pps = flood([], ip, flood_count)
        time.sleep(2.5)  # two stats samples later
        shown = json.loads(ctl("server", "show", "nb", "-f", "json"))
        vhost = {k: v for k, v in shown["helpers"].items() if k.startswith("vhost-")}
        print(
            f"agent instance (vhost=on, across the cluster bridge): ping RTT {describe(times)}; "
            f"flood {pps:,.0f} echoes/s; agent stats: {vhost} s of worker CPU"
        )
    finally:
        cluster.down()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--flood", type=int, default=5000)
    a = ap.parse_args()
    bench_vmm(a.count, a.flood)
    bench_agent(a.count, a.flood)


if __name__ == "__main__":
    from tests.ksm_host import ksm_settings

    with ksm_settings():  # its agents start KSM, as the product does: put back as found
        main()
