"""The computed guest SDK: the ABI header, the runtime and the linker script, installed with
the project, and `computed-guest-cc` to build a guest from C with the flags these hosts need.

The bundled guests (computed/guests/*.c) are built by this same driver, so the SDK a user
gets is the one the project's own guests prove.
"""

from __future__ import annotations

import os

SDK_DIR = os.path.dirname(os.path.abspath(__file__))
INCLUDE_DIR = os.path.join(SDK_DIR, "include")
RUNTIME_DIR = os.path.join(SDK_DIR, "runtime")
LINKER_SCRIPT = os.path.join(SDK_DIR, "guest.ld")
RUNTIME_SOURCES = (os.path.join(RUNTIME_DIR, "crt0.S"), os.path.join(RUNTIME_DIR, "rt.c"))
HEADERS = tuple(os.path.join(INCLUDE_DIR, h) for h in ("computed_guest.h", "computed_rt.h"))
