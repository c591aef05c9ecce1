"""The warm parent's double fork (computed/vmm/zygote.py): a grandchild is given to
nobody before its intermediate parent has exited and it has been re-parented."""

from __future__ import annotations

import os
import time

from computed.vmm import zygote


def test_the_grandchild_waits_until_its_intermediate_parent_has_exited():
    r, w = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:  # the intermediate: fork, then take its time to exit
        try:
            me = os.getpid()
            if os.fork() == 0:
                zygote._await_exit_of(me)
                os.write(w, f"{os.getppid()} {me}".encode())
                os._exit(0)
            time.sleep(0.3)
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as pipe:
            parent, me = map(int, pipe.read().split())
    finally:
        os.waitpid(intermediate, 0)
    assert parent != me  # re-parented (to init or a subreaper) before it went on
