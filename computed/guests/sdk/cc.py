"""computed-guest-cc: build a computed guest image from C (and assembly) sources.

    computed-guest-cc hello.c -o hello.elf
    computed-guest-cc --print-cflags          # for your own build system

It runs one gcc command: the user's sources plus the SDK runtime (crt0, console,
boot info, PIC/PIT, power button, ring 3), linked at 0x100000 by the SDK's
linker script. The flags are the ones ring-0 guest code needs on these hosts:

- `-mgeneral-regs-only`: no SSE/AVX. On a PVM host guest ring 0 is emulated and
  the emulator has no vector instructions, so one auto-vectorised loop ends the
  VM (emulation failure, VMM exit 4). It also keeps interrupt handlers legal.
- `-fno-stack-protector`: there is no TLS (%fs:0x28) for the canary and no
  `__stack_chk_fail`; Debian's gcc turns the protector on by default.
- `-ffreestanding -nostdlib -static -fno-pic -no-pie`: no libc, no loader, ET_EXEC
  (the VMM refuses PIE).
- `-mno-red-zone`: interrupts arrive on the current stack in ring 0.
- `-fcf-protection=none`, no unwind tables, `--build-id=none`: nothing the VMM
  would load for nothing.
- `-z noexecstack`: an assembly file without a `.note.GNU-stack` section would
  otherwise make ld warn about an executable stack. The note means nothing to a
  guest (the identity map is executable everywhere; the linker script discards
  `.note.*`), so the SDK says so once instead of every user adding the section.

After linking it writes the runtime's interrupt descriptor table into the image
(prebuilt_idt.py: guest ring 0 is emulated on PVM hosts, and building the table
at boot took 1.1 ms), and checks the result with the VMM's own loader rules
(computed/guest_image.py), so an image it writes is one the VMM will load.
Stdlib only: it runs with any python3, and from the guests' Makefile.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence

from computed.guest_image import ImageFormatError, validate
from computed.guests.sdk import INCLUDE_DIR, LINKER_SCRIPT, RUNTIME_SOURCES, prebuilt_idt

CFLAGS = (
    "-std=gnu11", "-O2", "-Wall", "-Wextra",
    "-ffreestanding", "-fno-builtin", "-nostdlib", "-static", "-fno-pic", "-no-pie",
    "-mno-red-zone", "-mgeneral-regs-only", "-mcmodel=small", "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fcf-protection=none",
)  # fmt: skip
LDFLAGS = (
    "-Wl,--build-id=none", "-Wl,-z,max-page-size=0x1000", "-Wl,-z,noexecstack",
    "-Wl,--no-dynamic-linker",
)  # fmt: skip
SOURCE_SUFFIXES = (".c", ".S", ".s", ".o", ".a")
ENV_CC = "COMPUTED_GUEST_CC"  # which gcc (default: gcc)


class BuildError(Exception):
    """A one-line reason the guest could not be built."""


def compile_command(
    sources: Sequence[str],
    output: str,
    extra: Sequence[str] = (),
    cc: str = "gcc",
    runtime: bool = True,
) -> list[str]:
    """The gcc command line that builds `output` from `sources`. Pure."""
    cmd = [*shlex.split(cc), *CFLAGS, "-I", INCLUDE_DIR, *extra]
    cmd += [*LDFLAGS, f"-Wl,-T,{LINKER_SCRIPT}", "-o", output, *sources]
    if runtime:
        cmd += RUNTIME_SOURCES
    return cmd


def check_sources(sources: Sequence[str]) -> None:
    if not sources:
        raise BuildError("no source files given (e.g. computed-guest-cc hello.c -o hello.elf)")
    for src in sources:
        if not src.endswith(SOURCE_SUFFIXES):
            raise BuildError(f"{src}: not a source file ({', '.join(SOURCE_SUFFIXES)})")
        if not os.path.isfile(src):
            raise BuildError(f"{src}: no such file")


def build(
    sources: Sequence[str],
    output: str,
    extra: Sequence[str] = (),
    runtime: bool = True,
    verbose: bool = False,
) -> None:
    """Compile and link, write the runtime's interrupt table into the image
    (prebuilt_idt.py), then check the image with the VMM's loader rules."""
    check_sources(sources)
    cc = os.environ.get(ENV_CC, "gcc")
    if shutil.which(shlex.split(cc)[0]) is None:
        raise BuildError(f"no C compiler {cc!r} on PATH (set ${ENV_CC} or install gcc)")
    cmd = compile_command(sources, output, extra, cc, runtime)
    if verbose:
        print(shlex.join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise BuildError(f"{shlex.split(cc)[0]} failed (exit {done.returncode}); see above")
    try:
        prebuilt_idt.write_into(output)
    except (OSError, ValueError, struct.error) as e:
        raise BuildError(f"cannot write the interrupt table into {output}: {e}") from None
    try:
        with open(output, "rb") as f:
            validate(f.read(), output)
    except (OSError, ImageFormatError) as e:
        raise BuildError(f"the image would not load: {e}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="computed-guest-cc",
        description="Build a computed guest image (ELF64, loaded at 0x100000) from C sources "
        "with the guest SDK's runtime. Any gcc option not listed here (-I, -D, -O, -W, -g, "
        "-f..., -m...) is passed on.",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help=".c, .S, .s, .o or .a files")
    p.add_argument("-o", dest="output", metavar="IMAGE", help="the image (default: FIRST.elf)")
    p.add_argument(
        "--no-runtime", action="store_true",
        help="link without the SDK runtime: your code provides _start (the header still applies)",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="print the gcc command")
    p.add_argument(
        "--print-cflags", action="store_true", help="print the compile flags (with -I) and exit"
    )
    p.add_argument("--print-ldflags", action="store_true", help="print the link flags and exit")
    p.add_argument(
        "--print-runtime", action="store_true", help="print the runtime sources and exit"
    )
    return p


_OWN = {"-o", "--no-runtime", "-v", "--verbose", "--print-cflags", "--print-ldflags",
        "--print-runtime", "-h", "--help"}  # fmt: skip
_TAKES_VALUE = {"-I", "-D", "-U", "-include", "-isystem", "-iquote", "-MF", "-MT"}


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(this driver's words, gcc's words): options the driver does not know go to gcc,
    with their separate value for the few that take one (`-I dir`). Pure."""
    own: list[str] = []
    passed: list[str] = []
    words = iter(argv)
    for word in words:
        if word in _TAKES_VALUE:
            passed += [word, next(words, "")]
        elif word.startswith("-") and word != "-" and word not in _OWN:
            passed.append(word)
        else:
            own.append(word)
            if word == "-o":
                own.append(next(words, ""))
    return own, passed


def main(argv: Sequence[str] | None = None) -> None:
    own, extra = split_argv(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(own)
    if args.print_cflags or args.print_ldflags or args.print_runtime:
        words: list[str] = []
        if args.print_cflags:
            words += [*CFLAGS, "-I", INCLUDE_DIR]
        if args.print_ldflags:
            words += [*LDFLAGS, f"-Wl,-T,{LINKER_SCRIPT}"]
        if args.print_runtime:
            words += RUNTIME_SOURCES
        print(shlex.join(words))
        return
    output = args.output
    if not output:
        first = args.sources[0] if args.sources else "a"
        output = os.path.splitext(os.path.basename(first))[0] + ".elf"
    try:
        build(args.sources, output, extra, runtime=not args.no_runtime, verbose=args.verbose)
    except BuildError as e:
        print(f"computed-guest-cc: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
