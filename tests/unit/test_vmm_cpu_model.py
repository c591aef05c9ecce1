"""-smp and -cpu as qemu reads them, and the CPUID table the guest sees (cpu_model.py)."""

import re

import pytest

from computed.limits import MAX_VCPUS
from computed.vmm.cpu_model import (
    CPU_MODELS,
    CPUID_1_ECX,
    CPUID_1_EDX,
    CPUID_7_EBX,
    CPUID_80000001_EDX,
    FEATURE_FLAGS,
    CpuModel,
    cpuid_for_vcpu,
    guest_cpuid,
    parse_cpu,
    parse_smp,
)
from computed.vmm.errors import UsageError

# The -cpu of the seed's command line (a Nova host's, tests/unit/test_vmm_config.py).
PENRYN = "Penryn,+dca,+xtpr,+tm2,+est,+vmx,+ds_cpl,+monitor,+pbe,+tm,+ht,+ss,+acpi,+ds,+vme"


@pytest.mark.parametrize("text", ["0", str(MAX_VCPUS + 1), "100000", "two", "-1"])
def test_absurd_smp_is_refused(text):
    with pytest.raises(UsageError, match="-smp"):
        parse_smp(text)


def test_smp_accepts_qemu_cpus_form():
    assert parse_smp("cpus=4").cpus == 4


# --- -smp, by qemu's rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, sockets, cores, threads, cpus",
    [
        ("2", 1, 2, 1, 2),  # since qemu 6.2: cores over sockets
        ("cpus=4", 1, 4, 1, 4),
        ("2,sockets=2,cores=1,threads=1", 2, 1, 1, 2),
        ("4,sockets=2", 2, 2, 1, 4),
        ("8,threads=2", 1, 4, 2, 8),
        ("6,cores=3", 2, 3, 1, 6),
        ("sockets=2,cores=2,threads=2", 2, 2, 2, 8),
        ("4,maxcpus=4,dies=1,clusters=1", 1, 4, 1, 4),
    ],
)
def test_smp_topology_is_computed_as_qemu_does(text, sockets, cores, threads, cpus):
    t = parse_smp(text)
    assert (t.sockets, t.cores, t.threads, t.cpus, t.maxcpus) == (
        sockets, cores, threads, cpus, cpus,
    )  # fmt: skip


@pytest.mark.parametrize(
    "text, words",
    [
        ("6,sockets=2,cores=2", "product of the hierarchy must match maxcpus: sockets (2) * dies "
                                "(1) * cores (2) * threads (1) != maxcpus (6)"),
        ("4,maxcpus=2", "maxcpus (2) must be at least"),
        ("2,maxcpus=4", "does not hot-plug vCPUs"),
        ("2,sockets=0", "greater than zero"),
        ("4,dies=2", "dies > 1 not supported"),
        ("4,clusters=2", "clusters > 1 not supported"),
        ("2,nodes=2", "unknown option 'nodes'"),
        (f"sockets={MAX_VCPUS + 1}", f"1..{MAX_VCPUS}"),
    ],
)  # fmt: skip
def test_bad_topologies_are_refused_in_qemus_words(text, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        parse_smp(text)


def test_apic_ids_leave_room_for_each_level():
    t = parse_smp("12,sockets=2,cores=3,threads=2")  # 1 thread bit, 2 core bits
    assert (t.core_shift, t.package_shift) == (1, 3)
    assert [t.apic_id(i) for i in range(12)] == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]
    assert t.ids(7) == (1, 0, 0, 1)  # socket 1, die 0, core 0, thread 1


# --- -cpu ----------------------------------------------------------------------------------


def test_every_feature_word_names_32_bits_and_no_name_twice():
    names = [n for _w, text in FEATURE_FLAGS for bit in text.split() for n in bit.split("|")]
    assert all(len(text.split()) == 32 for _w, text in FEATURE_FLAGS)
    named = [n for n in names if n != "-"]
    assert len(named) == len(set(named))


def test_cpu_flags_by_qemus_names_and_spellings():
    cpu = parse_cpu("host,+sse4_2,sse4.1=on,-avx2,aes=off,+ds_cpl,+pclmuldq,enforce")
    assert cpu.enable[CPUID_1_ECX] == 1 << 20 | 1 << 19 | 1 << 4 | 1 << 1
    assert cpu.disable == {CPUID_7_EBX: 1 << 5, CPUID_1_ECX: 1 << 25}
    assert (cpu.features, cpu.enforce, cpu.check) == (None, True, True)


def test_penryn_is_its_qemu_feature_set_and_a_leaf_1_edx_flag_names_amds_copy_too():
    cpu = parse_cpu("Penryn,-mmx")
    assert cpu.features[CPUID_1_ECX] == 1 << 0 | 1 << 9 | 1 << 13 | 1 << 19 | 1 << 21 | 1 << 31
    assert (
        cpu.features[CPUID_80000001_EDX] & (1 << 29 | 1 << 20 | 1 << 11)
        == 1 << 29 | 1 << 20 | 1 << 11
    )
    assert cpu.disable == {CPUID_1_EDX: 1 << 23, CPUID_80000001_EDX: 1 << 23}
    assert CPU_MODELS["host"] is None and CPU_MODELS["max"] is None


@pytest.mark.parametrize(
    "text, words",
    [
        ("Haswell", "-cpu Haswell: not supported: the CPU models are host, max, Penryn"),
        ("host,+frobnicate", "unknown CPU flag 'frobnicate'"),
        ("host,hv_time", "unknown CPU flag 'hv_time'"),
        ("host,kvm=off", "unknown CPU flag 'kvm'"),
        ("host,vmx=maybe", "expected \\+FLAG, -FLAG or FLAG=on\\|off"),
        ("host,+vmx,-vmx", "flag 'vmx' is both enabled and disabled"),
    ],
)
def test_bad_cpu_options_are_refused_by_name(text, words):
    with pytest.raises(UsageError, match=words):
        parse_cpu(text)


# --- the CPUID table the guest sees (no bundled guest prints CPUID: the table is tested) ----

INTEL = 0x756E6547  # "Genu"
AMD = 0x68747541  # "Auth"
SIGNIFICANT_INDEX = 1


def supported(vendor: int) -> list[list[int]]:
    """A host's KVM_GET_SUPPORTED_CPUID, cut down: what each rewrite reads."""
    every = 0xFFFFFFFF
    return [
        [0x0, 0, 0, 0x1F, vendor, 0, 0],
        [0x1, 0, 0, 0x000806EC, 0x00100800, every & ~(1 << 27), every & ~(1 << 28)],
        [0x4, 0, SIGNIFICANT_INDEX, 0x1C004121, 0x01C0003F, 0x3F, 0],  # L1d
        [0x4, 1, SIGNIFICANT_INDEX, 0x1C004163, 0x03C0003F, 0x3FFF, 6],  # L3
        [0x4, 2, SIGNIFICANT_INDEX, 0, 0, 0, 0],  # no more caches
        [0x7, 0, SIGNIFICANT_INDEX, 0, every, every, every],
        [0xB, 0, SIGNIFICANT_INDEX, 1, 2, 0x100, 7],  # the host's: 2 threads/core
        [0xB, 1, SIGNIFICANT_INDEX, 4, 16, 0x201, 7],
        [0x80000001, 0, 0, 0, 0, every, every],
        [0x80000008, 0, 0, 0x3030, 0, 0x7001, 0],
        [0x8000001E, 0, 0, 0, 0, 0, 0],
    ]


def leaf(table: list[list[int]], function: int, index: int = 0) -> list[int]:
    (entry,) = [e for e in table if e[0] == function and e[1] == index]
    return entry


def test_topology_in_leaf_1_4_and_0xb_as_the_guest_decodes_it():
    topo = parse_smp("12,sockets=2,cores=3,threads=2")
    table, _ = guest_cpuid(supported(INTEL), CpuModel(), topo)
    vcpu7 = cpuid_for_vcpu(table, topo, 7)  # socket 1, core 0, thread 1: APIC ID 9
    ebx, edx = leaf(vcpu7, 0x1)[4], leaf(vcpu7, 0x1)[6]
    assert ebx >> 24 == 9 and ebx >> 16 & 0xFF == 8  # addressable IDs per package: 1 << 3
    assert edx >> 28 & 1  # HTT: more than one logical processor per package
    l1, l3 = leaf(vcpu7, 0x4, 0)[3], leaf(vcpu7, 0x4, 1)[3]
    assert (l1 >> 26) + 1 == 4 and (l3 >> 26) + 1 == 4  # addressable core IDs per package
    assert (l1 >> 14 & 0xFFF) + 1 == 2 and (l3 >> 14 & 0xFFF) + 1 == 8  # who shares it
    smt, core, end = (leaf(vcpu7, 0xB, i) for i in range(3))
    assert smt[3:] == [1, 2, 1 << 8, 9]  # shift 1, 2 threads, level type SMT, x2APIC ID
    assert core[3:] == [3, 6, 2 << 8 | 1, 9]  # shift 3, 6 per package, level type core
    assert end[3:] == [0, 0, 2, 9] and end[2] == SIGNIFICANT_INDEX
    assert leaf(vcpu7, 0x80000008)[5] == 0x7001  # Intel: AMD's fields left alone


def test_one_thread_per_package_clears_htt_and_the_count():
    topo = parse_smp("2,sockets=2,cores=1,threads=1")  # the seed's
    table, _ = guest_cpuid(supported(INTEL), CpuModel(), topo)
    vcpus = [cpuid_for_vcpu(table, topo, i) for i in range(2)]
    assert [leaf(v, 0x1)[4] >> 24 for v in vcpus] == [0, 1]
    assert all(leaf(v, 0x1)[4] >> 16 & 0xFF == 0 and not leaf(v, 0x1)[6] >> 28 & 1 for v in vcpus)
    assert [leaf(v, 0xB, 1)[6] for v in vcpus] == [0, 1]
    assert leaf(vcpus[0], 0xB, 1)[3:5] == [0, 1]


def test_amd_topology_fields():
    topo = parse_smp("4,cores=2,threads=2")
    table, _ = guest_cpuid(supported(AMD), CpuModel(), topo)
    vcpu3 = cpuid_for_vcpu(table, topo, 3)
    assert leaf(vcpu3, 0x1)[4] >> 16 & 0xFF == 4  # AMD: the logical count
    assert leaf(vcpu3, 0x80000001)[5] & 2  # CmpLegacy
    assert leaf(vcpu3, 0x80000008)[5] & 0xF0FF == 2 << 12 | 3  # ApicIdSize 2, NC 3
    assert leaf(vcpu3, 0x8000001E)[3:6] == [3, 1 << 8 | 1, 0]  # APIC ID, 2 threads core 1


def test_penryn_masks_the_host_and_reports_what_the_host_lacks():
    host = supported(INTEL)
    leaf(host, 0x1)[5] &= ~(1 << 5 | 1 << 18)  # no vmx, no dca
    table, missing = guest_cpuid(host, parse_cpu(PENRYN), parse_smp("2"))
    ecx, edx = leaf(table, 0x1)[5], leaf(table, 0x1)[6]
    assert ecx == parse_cpu(PENRYN).features[CPUID_1_ECX] | (
        1 << 14 | 1 << 8 | 1 << 7 | 1 << 4 | 1 << 3
    )
    assert edx >> 28 & 1 and edx >> 25 & 1  # HTT from the topology (2 cores), sse kept
    assert leaf(table, 0x7)[4:7] == [0, 0, 0]  # nothing of leaf 7 is Penryn's
    assert missing == ["vmx", "dca"]  # +ht is the topology's, never "missing"
    table, missing = guest_cpuid(supported(INTEL), parse_cpu("host,-avx2,+aes"), parse_smp("1"))
    assert not leaf(table, 0x7)[4] >> 5 & 1 and leaf(table, 0x1)[5] >> 25 & 1 and missing == []
