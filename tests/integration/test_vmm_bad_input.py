"""Bad input gets one clear line on stderr and a distinct exit code, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from computed.vmm.errors import ExitCode
from tests.unit.test_vmm_elf import make_elf
from tests.vmm_harness import VMM

pytestmark = pytest.mark.integration


def run_vmm(*args, env=None):
    return subprocess.run([VMM, *args], capture_output=True, text=True, timeout=30, env=env)


def assert_clean_error(result, code, words):
    assert result.returncode == code, result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "args,code,words",
    [
        (["-kernel", "/nonexistent/image"], ExitCode.BAD_INPUT, "cannot read guest image"),
        (["-kernel", "no-such-guest"], ExitCode.BAD_INPUT, "no bundled guest named"),
        (["-kernel", sys.executable], ExitCode.BAD_INPUT, "not a static executable"),
        (["-kernel", __file__], ExitCode.BAD_INPUT, "not an ELF"),
        (["-kernel", "hello", "-m", "0"], ExitCode.BAD_INPUT, "-m"),
        (["-kernel", "hello", "-smp", "4096"], ExitCode.BAD_INPUT, "-smp"),
        (["-kernel", "hello", "-frobnicate"], ExitCode.BAD_INPUT, "unknown option"),
        (
            ["-kernel", "hello", "-serial", "file:/nonexistent/dir/c.log"],
            ExitCode.BAD_INPUT,
            "No such file",
        ),
    ],
)
def test_bad_arguments(args, code, words):
    assert_clean_error(run_vmm(*args), code, words)


def test_segments_outside_ram_are_refused(tmp_path: Path):
    image = tmp_path / "big"
    image.write_bytes(make_elf([(0x100000, b"\x90" * 16, 64 << 20)]))
    assert_clean_error(
        run_vmm("-kernel", str(image), "-m", "16"), ExitCode.BAD_INPUT, "does not fit"
    )


def test_unusable_kvm_device(tmp_path: Path):
    env = {"COMPUTED_KVM_DEVICE": str(tmp_path / "kvm"), "PATH": "/usr/bin:/bin"}
    assert_clean_error(
        run_vmm("-kernel", "hello", env=env), ExitCode.KVM_UNAVAILABLE, "cannot open"
    )
