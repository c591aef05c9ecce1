"""The guest SDK: one command builds a guest, the bundled guests are built by it, and what
it builds is what the VMM loads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from computed.guests import sdk
from computed.guests.sdk.cc import CFLAGS, compile_command, split_argv

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUESTS = os.path.join(ROOT, "computed", "guests")
CC = [sys.executable, "-m", "computed.guests.sdk"]


def run(args, cwd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, **kw)


def test_the_flags_ring0_code_needs_are_always_given():
    cmd = compile_command(["g.c"], "g.elf")
    for flag in ("-mgeneral-regs-only", "-fno-stack-protector", "-ffreestanding", "-no-pie",
                 "-mno-red-zone", "-Wl,-z,noexecstack"):  # fmt: skip
        assert flag in cmd
    assert f"-Wl,-T,{sdk.LINKER_SCRIPT}" in cmd and cmd[-2:] == list(sdk.RUNTIME_SOURCES)


def test_gcc_options_pass_through_with_their_values():
    own, passed = split_argv(["-I", "inc", "a.c", "-DX=1", "-o", "a.elf", "-O1", "-v"])
    assert own == ["a.c", "-o", "a.elf", "-v"] and passed == ["-I", "inc", "-DX=1", "-O1"]


def test_bundled_guests_are_built_by_the_sdk(tmp_path):
    dry = run(["make", "-n", "-B", "GUEST_SDK_CC=SDKCC", "images/hello"], GUESTS)
    assert "SDKCC -Werror -o images/hello hello.c" in " ".join(dry.stdout.split()), dry.stdout
    shutil.copy(os.path.join(GUESTS, "hello.c"), tmp_path)
    built = run([*CC, "hello.c", "-o", "hello"], tmp_path)
    assert built.returncode == 0, built.stderr
    with open(os.path.join(GUESTS, "images", "hello"), "rb") as f:
        assert (tmp_path / "hello").read_bytes() == f.read(), "bundled hello drifted from the SDK"


def test_a_vectorisable_loop_builds_without_sse_and_runs(tmp_path):
    (tmp_path / "sum.c").write_text(
        "#include <computed_rt.h>\n"
        "static unsigned a[4096];\n"
        "void guest_main(const struct computed_boot_info *b) {\n"
        "  unsigned s = 0; (void)b;\n"
        "  for (unsigned i = 0; i < 4096; i++) a[i] = i * 3u;\n"
        "  for (unsigned i = 0; i < 4096; i++) s += a[i];\n"
        '  rt_printf("sum=%u\\n", s);\n'
        "}\n"
    )
    built = run([*CC, "-O3", "sum.c"], tmp_path)  # -O3 vectorises where it may
    assert built.returncode == 0, built.stderr
    dump = run(["objdump", "-d", "sum.elf"], tmp_path).stdout
    assert "xmm" not in dump and "ymm" not in dump
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm")
    vmm = run([os.path.join(os.path.dirname(sys.executable), "computed-vmm"), "-name", "s",
               "-m", "16", "-kernel", "./sum.elf", "-serial", "stdio"], tmp_path)  # fmt: skip
    assert vmm.returncode == 0 and "sum=25159680" in vmm.stdout, (vmm.stdout, vmm.stderr)


def test_assembly_without_a_gnu_stack_note_links_quietly(tmp_path):
    (tmp_path / "g.c").write_text(
        "#include <computed_rt.h>\nvoid helper(void);\n"
        "void guest_main(const struct computed_boot_info *b) { (void)b; helper(); }\n"
    )
    (tmp_path / "h.S").write_text(".text\n.globl helper\nhelper:\n\tret\n")
    built = run([*CC, "g.c", "h.S", "-o", "g.elf"], tmp_path)
    assert built.returncode == 0, built.stderr
    assert "executable stack" not in built.stderr, built.stderr


@pytest.mark.parametrize(
    "args,words",
    [
        (["nothere.c"], "nothere.c: no such file"),
        ([], "no source files given"),
        (["notes.txt"], "not a source file"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, words):
    (tmp_path / "notes.txt").write_text("x")
    done = run([*CC, *args], tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("computed-guest-cc: error: ")
    assert words in done.stderr and "Traceback" not in done.stderr


def test_a_compile_error_is_reported_by_gcc_and_summed_up(tmp_path):
    (tmp_path / "broken.c").write_text("void guest_main(void) { nope(); }\n")
    done = run([*CC, "-Werror", "broken.c"], tmp_path)
    assert done.returncode == 1 and "gcc failed" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "broken.elf").exists()


def test_print_cflags_is_for_other_build_systems():
    done = run([*CC, "--print-cflags"], ROOT)
    assert done.returncode == 0 and all(f in done.stdout for f in CFLAGS)
    assert sdk.INCLUDE_DIR in done.stdout


@pytest.mark.skipif(not os.path.exists("/sys/module/kvm_pvm"), reason="a PVM host only")
def test_without_the_sdk_flags_sse_in_ring0_crashes_a_pvm_guest(tmp_path):
    """Why -mgeneral-regs-only (docs/guest-abi.md): ring 0 is emulated here, without SSE."""
    (tmp_path / "fp.c").write_text(
        "#include <computed_rt.h>\n"
        "void guest_main(const struct computed_boot_info *b) {\n"
        "  volatile double x = 1.5; (void)b;\n"
        '  rt_printf("x=%u\\n", (unsigned)(x * 20.0));\n'
        "}\n"
    )
    flags = run([*CC, "--print-cflags"], tmp_path).stdout.split()
    sse = [f for f in flags if f != "-mgeneral-regs-only"]
    assert run(["gcc", *sse, "-c", "fp.c", "-o", "fp.o"], tmp_path).returncode == 0
    assert run([*CC, "fp.o", "-o", "fp.elf"], tmp_path).returncode == 0
    vmm = os.path.join(os.path.dirname(sys.executable), "computed-vmm")
    crashed = run(
        [vmm, "-name", "f", "-m", "16", "-kernel", "./fp.elf", "-serial", "stdio"], tmp_path
    )
    assert crashed.returncode == 4 and "emulation failure" in crashed.stdout, crashed
    # With the SDK the same source does not build: a compile error, not a crash at run time.
    refused = run([*CC, "fp.c", "-o", "ok.elf"], tmp_path)
    assert refused.returncode == 1 and "SSE disabled" in refused.stderr, refused.stderr


# --- the interrupt table written into the image (computed/guests/sdk/prebuilt_idt.py) -------
UD2_GUEST = (
    "#include <computed_rt.h>\n"
    "void guest_main(const struct computed_boot_info *b) {\n"
    '  (void)b; rt_idt_init(); rt_puts("ud2 next\\n"); __asm__ volatile("ud2");\n'
    "}\n"
)
# Compares the table the SDK wrote with the one rt_idt_set() builds from the same plan.
SAME_TABLE_GUEST = (
    "#include <computed_rt.h>\n"
    "struct slot { void *handler; uint8_t vector, dpl; };\n"
    "extern uint64_t rt_idt[256][2];\n"
    "extern const struct slot rt_idt_plan[49];\n"
    "extern volatile uint32_t rt_idt_prebuilt;\n"
    "static uint64_t written[256][2];\n"
    "void guest_main(const struct computed_boot_info *b) {\n"
    "  (void)b;\n"
    "  for (unsigned v = 0; v < 256; v++) { written[v][0] = rt_idt[v][0];"
    " written[v][1] = rt_idt[v][1]; rt_idt[v][0] = rt_idt[v][1] = 0; }\n"
    "  for (unsigned i = 0; i < 49; i++)\n"
    "    rt_idt_set(rt_idt_plan[i].vector, rt_idt_plan[i].handler, rt_idt_plan[i].dpl);\n"
    "  unsigned differ = 0;\n"
    "  for (unsigned v = 0; v < 256; v++)\n"
    "    differ += written[v][0] != rt_idt[v][0] || written[v][1] != rt_idt[v][1];\n"
    '  rt_printf("prebuilt=%u differ=%u\\n", (unsigned)rt_idt_prebuilt, differ);\n'
    "}\n"
)


def _vmm_output(tmp_path, image: str) -> subprocess.CompletedProcess:
    vmm = os.path.join(os.path.dirname(sys.executable), "computed-vmm")
    return run([vmm, "-name", "g", "-m", "16", "-kernel", f"./{image}", "-serial", "stdio"],
               tmp_path)  # fmt: skip


def test_the_sdk_writes_the_interrupt_table_into_the_image(tmp_path):
    from computed.guests.sdk import prebuilt_idt

    (tmp_path / "g.c").write_text(UD2_GUEST)
    assert run([*CC, "g.c", "-o", "g.elf"], tmp_path).returncode == 0
    blob = (tmp_path / "g.elf").read_bytes()
    found = prebuilt_idt.symbols(blob)
    table_at = prebuilt_idt.file_offset(blob, found["rt_idt"][0], 4096)
    flag_at = prebuilt_idt.file_offset(blob, found["rt_idt_prebuilt"][0], 4)
    assert blob[flag_at : flag_at + 4] == b"\x01\0\0\0"
    gates = [blob[table_at + 16 * v : table_at + 16 * (v + 1)] for v in range(256)]
    present = [v for v, g in enumerate(gates) if g != bytes(16)]
    # Exceptions 0-31, the PIC's 16 vectors from 0x20, and the system call gate at 0x80.
    assert present == [*range(48), 0x80]
    syscall = found["rt_syscall_isr"][0]
    assert gates[3] == gates[0x80] == prebuilt_idt.gate(syscall, 3)  # #BP is the gate too
    assert gates[6] == prebuilt_idt.gate(found["exc6"][0], 0)


def test_the_written_table_is_the_one_the_runtime_would_build(tmp_path):
    (tmp_path / "same.c").write_text(SAME_TABLE_GUEST)
    assert run([*CC, "same.c", "-o", "same.elf"], tmp_path).returncode == 0
    done = _vmm_output(tmp_path, "same.elf")
    assert done.returncode == 0 and "prebuilt=1 differ=0" in done.stdout, done


def test_an_image_linked_by_another_build_system_builds_its_table_at_boot(tmp_path):
    (tmp_path / "g.c").write_text(UD2_GUEST)
    flags = run([*CC, "--print-cflags", "--print-ldflags", "--print-runtime"], tmp_path)
    assert run(["gcc", *flags.stdout.split(), "-o", "bare.elf", "g.c"], tmp_path).returncode == 0
    assert run([*CC, "g.c", "-o", "sdk.elf"], tmp_path).returncode == 0
    # The same exception report either way: the table works whether built or written.
    for image in ("bare.elf", "sdk.elf"):
        done = _vmm_output(tmp_path, image)
        assert done.returncode == 5 and "rt: exception 6 " in done.stdout, (image, done)


def test_an_image_without_the_runtime_is_left_as_linked(tmp_path):
    from computed.guests.sdk import prebuilt_idt

    (tmp_path / "s.S").write_text(".globl _start\n_start:\n mov $0x500, %dx\n out %al, %dx\n hlt\n")
    assert run([*CC, "--no-runtime", "s.S", "-o", "s.elf"], tmp_path).returncode == 0
    assert prebuilt_idt.prebuild((tmp_path / "s.elf").read_bytes()) is None
