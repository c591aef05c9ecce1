"""`make demo`: boot the bundled guests and show what a computed host runs.

For now (before the agent and scheduler land) this shows the VMM alone: the
`hello` guest's console, then a 2-vCPU `heartbeat` instance with its vCPU
threads, the kernel's kvm-pit/<pid> worker and the control socket's view.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from computed.vmm.control_client import execute


def vmm_command(workdir: str, name: str, image: str, *extra: str) -> list[str]:
    return [
        os.path.join(os.path.dirname(sys.executable), "computed-vmm"),
        "-name",
        name,
        "-uuid",
        str(uuid.uuid4()),
        "-m",
        "64",
        "-kernel",
        image,
        "-serial",
        f"file:{workdir}/console.log",
        "-control",
        f"unix:{workdir}/control.sock",
        "-pidfile",
        f"{workdir}/vmm.pid",
        *extra,
    ]


def wait_for(path: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {path} did not appear")
        time.sleep(0.02)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def show(title: str) -> None:
    print(f"\n== {title}")


def main() -> None:
    root = tempfile.mkdtemp(prefix="computed-demo-")
    try:
        hello_dir = os.path.join(root, "hello")
        os.mkdir(hello_dir)
        show("hello: boot, print, power off")
        cmd = vmm_command(hello_dir, "instance-00000001", "hello", "-append", "greeting=demo")
        print("$", " ".join(cmd))
        rc = subprocess.run(cmd, timeout=30).returncode
        print(read(f"{hello_dir}/console.log").rstrip())
        print(f"exit status {rc} (0 = guest powered off)")

        hb_dir = os.path.join(root, "heartbeat")
        os.mkdir(hb_dir)
        show("heartbeat: 2 vCPUs, in-kernel PIT at 100 Hz")
        cmd = vmm_command(hb_dir, "instance-00000002", "heartbeat", "-smp", "2")
        proc = subprocess.Popen(cmd)
        try:
            wait_for(f"{hb_dir}/vmm.pid")
            time.sleep(2.5)
            pid = proc.pid
            print(read(f"{hb_dir}/console.log").rstrip())
            show(f"threads of VMM pid {pid} (ps -L)")
            subprocess.run(["ps", "-L", "-o", "pid,tid,comm,time", "-p", str(pid)])
            show("the kernel's PIT worker for this VM")
            subprocess.run(["ps", "-o", "pid,comm,time", "-C", f"kvm-pit/{pid}"])
            show("control socket: query-vm")
            for key, value in execute(f"{hb_dir}/control.sock", "query-vm").items():
                print(f"  {key}: {value}")
            show("control socket: system_powerdown")
            execute(f"{hb_dir}/control.sock", "system_powerdown")
            print(f"exit status {proc.wait(timeout=15)}")
            print(read(f"{hb_dir}/console.log").rstrip().splitlines()[-1])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
