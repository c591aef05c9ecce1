"""The guest's CPU: `-smp` topology, `-cpu` model and flags, and the CPUID table they make.

Pure: the options are parsed from their text, and the table is built from
KVM_GET_SUPPORTED_CPUID's answer as plain lists (vcpu.py converts KVM's structs
and sets the table), so all of it can be tested without KVM.
"""

from __future__ import annotations

from computed.limits import MAX_VCPUS
from computed.vmm.errors import UsageError
from computed.vmm.qemu_options import keyvals, refuse_unknown_keys

# --- -smp: how many vCPUs, in what topology -------------------------------------------------


def _width(count: int) -> int:
    """Bits an APIC ID field needs for `count` values (qemu's apicid_bitwidth_for_count)."""
    return (count - 1).bit_length()


class SmpTopology:
    """`-smp`: how many vCPUs, in how many sockets of dies of cores of threads.

    APIC IDs are laid out as on qemu's x86 machines: each level gets the bits its
    count needs, threads lowest, so a guest can decode them with CPUID leaf 0xB.
    vCPU `index` is thread `index % threads` of core `index // threads % cores`...
    """

    __slots__ = ("cores", "cpus", "dies", "maxcpus", "sockets", "threads")

    def __init__(
        self, cpus: int, sockets: int = 1, dies: int = 1, cores: int = 1, threads: int = 1
    ) -> None:
        self.cpus, self.sockets, self.dies = cpus, sockets, dies
        self.cores, self.threads = cores, threads
        self.maxcpus = sockets * dies * cores * threads

    @property
    def threads_per_package(self) -> int:
        return self.dies * self.cores * self.threads

    @property
    def core_shift(self) -> int:
        return _width(self.threads)

    @property
    def die_shift(self) -> int:
        return self.core_shift + _width(self.cores)

    @property
    def package_shift(self) -> int:
        return self.die_shift + _width(self.dies)

    def ids(self, index: int) -> tuple[int, int, int, int]:
        """vCPU `index` → (socket, die, core, thread)."""
        t, c, d = self.threads, self.cores, self.dies
        return index // (t * c * d), index // (t * c) % d, index // t % c, index % t

    def apic_id(self, index: int) -> int:
        socket, die, core, thread = self.ids(index)
        return (
            socket << self.package_shift | die << self.die_shift | core << self.core_shift | thread
        )

    def _key(self) -> tuple[int, ...]:
        return self.cpus, self.sockets, self.dies, self.cores, self.threads

    def __eq__(self, other: object) -> bool:  # a standby's vCPUs fit (vm_shell.VmShell.fits)
        return isinstance(other, SmpTopology) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:  # qemu's words, for its error messages and ours
        return (
            f"sockets ({self.sockets}) * dies ({self.dies}) * cores ({self.cores}) * "
            f"threads ({self.threads})"
        )


_SMP_KEYS = ("cpus", "maxcpus", "sockets", "dies", "cores", "threads")
_SMP_ONLY_ONE = ("clusters", "modules", "books", "drawers")  # levels x86 has not


def parse_smp(text: str) -> SmpTopology:
    """`-smp [cpus=]N[,maxcpus=M][,sockets=S][,dies=1][,cores=C][,threads=T]` with qemu's
    rules (since 6.2): omitted levels are computed preferring cores over sockets over
    threads; the product must equal maxcpus. We do not hot-plug, so maxcpus = N."""
    options = keyvals("-smp", text.strip(), implied="cpus")
    refuse_unknown_keys("-smp", options, {*_SMP_KEYS, *_SMP_ONLY_ONE})
    if not all(v.isascii() and v.isdigit() for v in options.values()):
        raise UsageError(f"-smp {text!r}: expected a vCPU count, and counts for its topology")
    given = {key: int(value) for key, value in options.items()}
    if 0 in given.values():
        raise UsageError(f"-smp {text}: CPU topology parameters must be greater than zero")
    for key in ("dies", *_SMP_ONLY_ONE):
        if given.get(key, 1) > 1:
            raise UsageError(f"-smp {text}: {key} > 1 not supported by this machine's topology")
    cpus, maxcpus = given.get("cpus", 0), given.get("maxcpus", 0)
    sockets, cores, threads = (given.get(k, 0) for k in ("sockets", "cores", "threads"))
    if cpus or maxcpus:
        maxcpus = maxcpus or cpus
        if not cores:
            sockets, threads = sockets or 1, threads or 1
            cores = maxcpus // (sockets * threads)
        elif not sockets:
            threads = threads or 1
            sockets = maxcpus // (cores * threads)
        threads = threads or maxcpus // (sockets * cores)
    topology = SmpTopology(max(cpus, 1), sockets or 1, 1, cores or 1, threads or 1)
    topology.cpus = cpus or maxcpus or topology.maxcpus
    maxcpus = maxcpus or topology.maxcpus
    if topology.maxcpus != maxcpus:
        raise UsageError(
            f"-smp {text}: Invalid CPU topology: product of the hierarchy must match maxcpus: "
            f"{topology} != maxcpus ({maxcpus})"
        )
    if maxcpus < topology.cpus:
        raise UsageError(f"-smp {text}: maxcpus ({maxcpus}) must be at least the vCPU count")
    if not 1 <= topology.cpus <= MAX_VCPUS:
        raise UsageError(f"-smp {text!r}: vCPU count must be 1..{MAX_VCPUS}")
    if maxcpus > topology.cpus:
        raise UsageError(
            f"-smp {text}: maxcpus ({maxcpus}) > {topology.cpus} vCPUs: "
            "not supported: computed-vmm does not hot-plug vCPUs"
        )
    return topology


# --- -cpu: which CPUID features the guest sees ------------------------------------------

# A feature word: (CPUID leaf, subleaf, register 0..3 = EAX, EBX, ECX, EDX).
CPUID_1_ECX = (0x1, 0, 2)
CPUID_1_EDX = (0x1, 0, 3)
CPUID_7_EBX = (0x7, 0, 1)
CPUID_7_ECX = (0x7, 0, 2)
CPUID_7_EDX = (0x7, 0, 3)
CPUID_80000001_ECX = (0x80000001, 0, 2)
CPUID_80000001_EDX = (0x80000001, 0, 3)
# qemu's flag names per word, bit 0 first ("-": none we name; "a|b": b is another name
# for a). Written as qemu spells them; "_" and "." are read as "-" (sse4_2 = sse4.2).
FEATURE_FLAGS = (
    (CPUID_1_EDX, "fpu vme de pse tsc msr pae mce cx8 apic - sep mtrr pge mca cmov "
                  "pat pse36 pn clflush - ds acpi mmx fxsr sse sse2 ss ht tm ia64 pbe"),
    (CPUID_1_ECX, "pni|sse3 pclmulqdq|pclmuldq dtes64 monitor ds-cpl vmx smx est tm2 ssse3 cid - "
                  "fma cx16 xtpr pdcm - pcid dca sse4.1 sse4.2 x2apic movbe popcnt tsc-deadline "
                  "aes xsave - avx f16c rdrand hypervisor"),
    (CPUID_7_EBX, "fsgsbase tsc-adjust sgx bmi1 hle avx2 - smep bmi2 erms invpcid rtm - - mpx - "
                  "avx512f avx512dq rdseed adx smap avx512ifma pcommit clflushopt clwb intel-pt "
                  "avx512pf avx512er avx512cd sha-ni avx512bw avx512vl"),
    (CPUID_7_ECX, "- avx512vbmi umip pku - waitpkg avx512vbmi2 - gfni vaes vpclmulqdq avx512vnni "
                  "avx512bitalg - avx512-vpopcntdq - la57 - - - - - rdpid - bus-lock-detect "
                  "cldemote - movdiri movdir64b - sgxlc pks"),
    (CPUID_7_EDX, "- - avx512-4vnniw avx512-4fmaps fsrm - - - avx512-vp2intersect - md-clear - - - "
                  "serialize - tsx-ldtrk - pconfig arch-lbr - - amx-bf16 avx512-fp16 amx-tile "
                  "amx-int8 spec-ctrl stibp - arch-capabilities core-capability ssbd"),
    (CPUID_80000001_ECX, "lahf-lm cmp-legacy svm extapic cr8legacy abm sse4a misalignsse "
                         "3dnowprefetch osvw ibs xop skinit wdt - lwp fma4 tce - nodeid-msr - tbm "
                         "topoext perfctr-core perfctr-nb - - - - - - -"),
    (CPUID_80000001_EDX, "- - - - - - - - - - - syscall - - - - - - - - nx|xd - mmxext - - "
                         "fxsr-opt|ffxsr pdpe1gb rdtscp - lm|i64 3dnowext 3dnow"),
)  # fmt: skip
FEATURE_WORDS = tuple(word for word, _names in FEATURE_FLAGS)
# Leaf-1 EDX bits that AMD repeats in 0x80000001 EDX: a flag there names both.
AMD_EDX_ALIASES = 0x0183F3FF
# Named models: host CPUID masked to the model's features (see docs/vmm.md). qemu adds
# x2apic and hypervisor to every named model under KVM.
CPU_MODELS = {
    "host": None,
    "max": None,  # under KVM, qemu's max is host
    "Penryn": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
    "clflush mmx fxsr sse sse2 pni ssse3 cx16 sse4.1 syscall nx lm lahf-lm x2apic hypervisor",
}
_CPU_PROPERTIES = ("check", "enforce")
_flag_table: dict[str, tuple[tuple[int, int, int], int]] = {}


def _flags() -> dict[str, tuple[tuple[int, int, int], int]]:
    """name → (feature word, bit), built on first use (only -cpu with flags or a model needs it)."""
    if not _flag_table:
        for word, names in FEATURE_FLAGS:
            for bit, spellings in enumerate(names.split()):
                for name in spellings.split("|"):
                    if name != "-":
                        _flag_table[_flag_key(name)] = (word, bit)
    return _flag_table


def _flag_key(name: str) -> str:
    return name.replace("_", "-").replace(".", "-")


def flag_name(word: tuple[int, int, int], bit: int) -> str | None:
    """The name qemu gives bit `bit` of `word` (for messages), or None."""
    for w, names in FEATURE_FLAGS:
        if w == word:
            name = names.split()[bit].split("|")[0]
            return None if name == "-" else name
    return None


def _set_flag(masks: dict[tuple[int, int, int], int], name: str, flag: str) -> None:
    where = _flags().get(_flag_key(name))
    if where is None:
        raise UsageError(f"{flag}: unknown CPU flag {name!r}")
    word, bit = where
    masks[word] = masks.get(word, 0) | 1 << bit
    if word == CPUID_1_EDX and AMD_EDX_ALIASES >> bit & 1:
        masks[CPUID_80000001_EDX] = masks.get(CPUID_80000001_EDX, 0) | 1 << bit


class CpuModel:
    """`-cpu`: the features the guest sees, as masks over what KVM supports on this host.

    `features` is None for host/max (all of it), else per feature word the model's
    bits; `enable`/`disable` are the flags named with +/-/=on/off. `check` warns about
    features the host lacks (qemu's default), `enforce` refuses to start instead.
    """

    __slots__ = ("check", "disable", "enable", "enforce", "features", "name")

    def __init__(
        self,
        name: str = "host",
        features: dict[tuple[int, int, int], int] | None = None,
        enable: dict[tuple[int, int, int], int] | None = None,
        disable: dict[tuple[int, int, int], int] | None = None,
        check: bool = True,
        enforce: bool = False,
    ) -> None:
        self.name, self.features = name, features
        self.enable, self.disable = enable or {}, disable or {}
        self.check, self.enforce = check, enforce

    def __eq__(self, other: object) -> bool:  # a standby's vCPUs fit (vm_shell.VmShell.fits)
        return isinstance(other, CpuModel) and all(
            getattr(self, name) == getattr(other, name) for name in CpuModel.__slots__
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: compared, never a key


def parse_cpu(text: str) -> CpuModel:
    """`-cpu MODEL[,+flag][,-flag][,flag=on|off][,check][,enforce]`."""
    model, *items = text.split(",")
    if model not in CPU_MODELS:
        raise UsageError(f"-cpu {model}: not supported: the CPU models are {', '.join(CPU_MODELS)}")
    cpu = CpuModel(model)
    if CPU_MODELS[model] is not None:
        cpu.features = {}
        for name in CPU_MODELS[model].split():
            _set_flag(cpu.features, name, "-cpu")
    for item in items:
        if item[:1] in ("+", "-"):
            name, on = item[1:], item[0] == "+"
        else:
            name, _eq, value = item.partition("=")
            if value not in ("", "on", "off"):
                raise UsageError(f"-cpu {item}: expected +FLAG, -FLAG or FLAG=on|off")
            on = value != "off"
            if name in _CPU_PROPERTIES:
                setattr(cpu, name, on)
                continue
        _set_flag(cpu.enable if on else cpu.disable, name, "-cpu")
    for word, bits in cpu.enable.items():
        both = bits & cpu.disable.get(word, 0)
        if both:
            name = flag_name(word, both.bit_length() - 1)
            raise UsageError(f"-cpu {text}: flag {name!r} is both enabled and disabled")
    return cpu


# --- the CPUID the guest sees ------------------------------------------------------
# Pure functions over entries as lists [function, index, flags, eax, ebx, ecx, edx], so
# the table can be built and tested without KVM. Built once per machine (`guest_cpuid`:
# -cpu model and flags, -smp topology), then patched per vCPU (`cpuid_for_vcpu`: IDs).
_EAX, _EBX, _ECX, _EDX = 3, 4, 5, 6
_HTT = 1 << 28  # CPUID.01H:EDX: more than one logical processor per package
_CMP_LEGACY = 1 << 1  # CPUID.80000001H:ECX on AMD: the same, the legacy way
# Bits the topology owns whatever -cpu says (qemu sets them from -smp too).
_TOPOLOGY_BITS = {(0x1, 0, 3): _HTT, (0x80000001, 0, 2): _CMP_LEGACY}
_AMD_VENDORS = (0x68747541, 0x6F677948)  # CPUID.0:EBX "Auth"(enticAMD), "Hygo"(nGenuine)
_LEVEL_SMT, _LEVEL_CORE = 1, 2  # leaf 0xB/0x1F level types


def guest_cpuid(
    supported: list[list[int]], cpu: CpuModel, topology: SmpTopology
) -> tuple[list[list[int]], list[str]]:
    """What KVM supports → the table every vCPU shares: the -cpu model's features and
    flags, and the -smp topology. Also returns the features asked for that the host
    lacks (they are left out, as qemu does without `enforce`)."""
    table = [list(entry) for entry in supported]
    missing = _apply_features(table, cpu)
    _apply_topology(table, topology)
    return table, missing


def _find(table: list[list[int]], leaf: int, subleaf: int = 0) -> list[int] | None:
    for entry in table:
        if entry[0] == leaf and entry[1] == subleaf:
            return entry
    return None


def _apply_features(table: list[list[int]], cpu: CpuModel) -> list[str]:
    missing: list[str] = []
    for word in FEATURE_WORDS:
        leaf, subleaf, register = word
        entry = _find(table, leaf, subleaf)
        host = entry[_EAX + register] if entry is not None else 0
        wanted = host if cpu.features is None else cpu.features.get(word, 0)
        wanted = (wanted | cpu.enable.get(word, 0)) & ~cpu.disable.get(word, 0)
        lacking = wanted & ~host & ~_TOPOLOGY_BITS.get(word, 0)
        missing += [
            name
            for bit in range(32)
            if lacking >> bit & 1 and (name := flag_name(word, bit)) is not None
        ]
        if entry is not None:
            entry[_EAX + register] = host & wanted
    return missing


def _apply_topology(table: list[list[int]], topo: SmpTopology) -> None:
    """Leaf 1 (logical count, HTT), leaves 4 and 0x8000001D (who shares each cache),
    0xB and 0x1F (the x2APIC levels), and AMD's 0x80000001/0x80000008 count fields."""
    per_package = topo.threads_per_package
    vendor = _find(table, 0)
    amd = vendor is not None and vendor[_EBX] in _AMD_VENDORS
    for entry in table:
        leaf = entry[0]
        if leaf == 0x1:
            # Intel: addressable IDs per package (a power of two); AMD: the count.
            count = per_package if amd else 1 << topo.package_shift
            entry[_EBX] = (entry[_EBX] & ~0xFF0000) | (min(count, 255) << 16 if count > 1 else 0)
            entry[_EDX] = entry[_EDX] | _HTT if per_package > 1 else entry[_EDX] & ~_HTT
        elif leaf in (0x4, 0x8000001D) and entry[_EAX] & 0x1F:  # a cache descriptor
            level = entry[_EAX] >> 5 & 0x7
            shared = topo.core_shift if level <= 2 else topo.package_shift
            eax = (entry[_EAX] & 0x3FFF) | ((1 << shared) - 1) << 14
            if leaf == 0x4:  # and addressable core IDs per package
                eax |= ((1 << (topo.package_shift - topo.core_shift)) - 1) << 26
            entry[_EAX] = eax
        elif leaf == 0x80000001 and amd:
            bit = _CMP_LEGACY if per_package > 1 else 0
            entry[_ECX] = (entry[_ECX] & ~_CMP_LEGACY) | bit
        elif leaf == 0x80000008 and amd:  # NC and ApicIdCoreIdSize
            entry[_ECX] = (entry[_ECX] & ~0xF0FF) | topo.package_shift << 12 | (per_package - 1)
    for leaf in (0xB, 0x1F):
        old = [entry for entry in table if entry[0] == leaf]
        if old:
            flags = old[0][2]
            table[:] = [entry for entry in table if entry[0] != leaf]
            table += [
                [leaf, 0, flags, topo.core_shift, topo.threads, _LEVEL_SMT << 8, 0],
                [leaf, 1, flags, topo.package_shift, per_package, _LEVEL_CORE << 8 | 1, 0],
                [leaf, 2, flags, 0, 0, 2, 0],  # level type 0: no more levels
            ]


def cpuid_for_vcpu(table: list[list[int]], topo: SmpTopology, index: int) -> list[list[int]]:
    """The shared table with vCPU `index`'s APIC ID where CPUID reports it."""
    apic_id = topo.apic_id(index)
    socket, die, core, _thread = topo.ids(index)
    entries = [list(entry) for entry in table]
    for entry in entries:
        leaf = entry[0]
        if leaf == 0x1:
            entry[_EBX] = (entry[_EBX] & 0x00FFFFFF) | (apic_id & 0xFF) << 24
        elif leaf in (0xB, 0x1F):
            entry[_EDX] = apic_id
        elif leaf == 0x8000001E:
            # AMD topology extensions: extended APIC ID, core ID and threads per core,
            # node ID (one node per socket).
            entry[_EAX] = apic_id
            entry[_EBX] = (topo.threads - 1) << 8 | (die * topo.cores + core) & 0xFF
            entry[_ECX] = socket & 0xFF
    return entries
