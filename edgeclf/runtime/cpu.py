"""What the machine is: physical core count (the default thread count), the CPU's name and its
int8 features, stated beside every latency figure. Standard library only; Linux (x86 and ARM
boards such as the Raspberry Pi) read sysfs and /proc, elsewhere ``os.cpu_count``, ``platform``
and (macOS) ``sysctl``.

Why the int8 features matter: an int8 file is much faster than float32 only where the CPU has
an int8 dot-product instruction (x86: AVX-VNNI / AVX512-VNNI / AMX-INT8; ARM: the dot-product
extension, "asimddp", and i8mm). Without one (AMD Zen 2/3, Intel before Ice Lake, the Raspberry
Pi 4's Cortex-A72) the engines multiply int8 through 16-bit lanes and int8 gains little over
float32; the reports say so beside the figures."""

from __future__ import annotations

import glob
import os
import platform
import struct
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache


def _usable_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _sysfs_cores(usable: set[int] | None) -> int | None:
    cores = set()
    for cpu_dir in glob.glob("/sys/devices/system/cpu/cpu[0-9]*"):
        try:
            cpu = int(os.path.basename(cpu_dir)[3:])
        except ValueError:
            continue
        if usable is not None and cpu not in usable:
            continue
        try:
            with open(os.path.join(cpu_dir, "topology", "core_id")) as f:
                core = f.read().strip()
            with open(os.path.join(cpu_dir, "topology", "physical_package_id")) as f:
                package = f.read().strip()
        except OSError:
            continue
        cores.add((package, core))
    return len(cores) or None


def cgroup_cpu_limit(cpu_max: str | None = None) -> int | None:
    """CPUs a container's quota allows (``docker --cpus=2`` -> 2), or None when unlimited.

    ``cpu_max`` is the text of cgroup v2's ``cpu.max`` ("200000 100000"); read from
    /sys/fs/cgroup (v2, then v1's cfs files) when not given."""
    quota = period = None
    if cpu_max is None:
        try:
            with open("/sys/fs/cgroup/cpu.max") as f:
                cpu_max = f.read()
        except OSError:
            try:
                with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
                    quota = int(f.read())
                with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                    period = int(f.read())
            except (OSError, ValueError):
                return None
    if cpu_max is not None:
        parts = cpu_max.split()
        if len(parts) != 2 or parts[0] == "max":
            return None
        try:
            quota, period = int(parts[0]), int(parts[1])
        except ValueError:
            return None
    if not quota or not period or quota <= 0 or period <= 0:
        return None
    return max(1, -(-quota // period))  # a quota of 1.5 CPUs still runs 2 threads usefully


@lru_cache(maxsize=1)
def usable_cpus() -> int:
    """Logical CPUs this process may use: its affinity, capped by a container's CPU quota."""
    usable = _usable_cpus()
    n = len(usable) if usable else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return max(1, min(n, limit) if limit else n)


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads not counted, a container's CPU
    quota respected), at least 1: the default thread count."""
    return max(1, min(_physical_cores(), usable_cpus()))


def _physical_cores() -> int:
    usable = _usable_cpus()
    n = _sysfs_cores(usable)
    if n is None:
        try:
            with open("/proc/cpuinfo") as f:
                n = cpuinfo_cores(f.read())
        except OSError:
            n = None
        if n is not None and usable:
            n = min(n, len(usable))
    if n is None:
        n = len(usable) if usable else (os.cpu_count() or 1)
    return max(1, n)


def cpuinfo_cores(text: str) -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo text; None when it lists none
    (ARM boards often omit them)."""
    pairs, package = set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            package = value
        elif key == "core id":
            pairs.add((package, value))
    return len(pairs) or None


@lru_cache(maxsize=1)
def cpu_model_name() -> str:
    """The CPU's marketing name ('AMD EPYC', 'Raspberry Pi 5 Model B ...'), else the architecture."""
    names = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if value and key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
                    names.setdefault(key, value)
    except OSError:
        pass
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if key in names:
            return names[key]
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                 text=True, timeout=5)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


# /proc/cpuinfo flag -> the name people know it by. Dot-product instructions first; the vector
# width the engines fall back on without them last.
X86_INT8 = {
    "amx_int8": "AMX-INT8",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx_vnni_int8": "AVX-VNNI-INT8",
}
X86_VECTOR = {"avx512bw": "AVX512BW", "avx2": "AVX2"}
ARM_INT8 = {
    "i8mm": "I8MM",
    "svei8mm": "SVE-I8MM",
    "asimddp": "DOTPROD",
}
ARM_VECTOR = {"sve2": "SVE2", "sve": "SVE", "asimd": "NEON", "neon": "NEON"}

# Linux auxiliary vector (AT_HWCAP / AT_HWCAP2) bits on aarch64 (arch/arm64/include/uapi/asm/hwcap.h).
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_ARM64_HWCAP = {"asimd": 1 << 1, "asimddp": 1 << 20, "sve": 1 << 22}
_ARM64_HWCAP2 = {"sve2": 1 << 1, "svei8mm": 1 << 9, "i8mm": 1 << 13}


@dataclass(frozen=True)
class Int8Features:
    """What the CPU offers int8 inference, as read from the OS.

    ``dot_product``: the int8 dot-product / matrix instructions present ("AVX512-VNNI",
    "AMX-INT8", "DOTPROD", "I8MM"); empty when the CPU has none. ``vector``: the widest
    vector instructions the engines fall back on ("AVX512BW", "AVX2", "NEON"). ``known``:
    False when the OS did not say (then neither list means anything). ``source``: where it
    was read ("/proc/cpuinfo flags", "AT_HWCAP", "sysctl")."""

    arch: str
    dot_product: tuple[str, ...] = ()
    vector: tuple[str, ...] = ()
    known: bool = True
    source: str = ""

    @property
    def has_int8_dot_product(self) -> bool | None:
        """True / False, or None when the OS did not say."""
        return bool(self.dot_product) if self.known else None

    def summary(self) -> str:
        """One phrase: 'int8 dot product: AVX512-VNNI, AMX-INT8' or 'no int8 dot product (AVX2 only)'."""
        if not self.known:
            return "int8 features unknown"
        if self.dot_product:
            return "int8 dot product: " + ", ".join(self.dot_product)
        family = "VNNI/AMX" if _is_x86(self.arch) else "dotprod/i8mm" if _is_arm(self.arch) else "int8 dot product"
        return f"no int8 dot product (no {family}" + (f"; {', '.join(self.vector)} only)" if self.vector else ")")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["has_int8_dot_product"] = self.has_int8_dot_product
        return d


def _is_x86(arch: str) -> bool:
    return arch.lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _is_arm(arch: str) -> bool:
    a = arch.lower()
    return a.startswith(("arm", "aarch64"))


def _pick(present: set[str], table: dict[str, str]) -> tuple[str, ...]:
    out = []
    for flag, name in table.items():
        if flag in present and name not in out:
            out.append(name)
    return tuple(out)


def int8_features_from_cpuinfo(text: str, arch: str | None = None) -> Int8Features:
    """Int8 features from /proc/cpuinfo text: x86's ``flags`` line or ARM's ``Features`` line.

    ``arch`` (``platform.machine()``) decides which line is read when given; otherwise the
    line present does. A text with neither gives ``known=False``."""
    flags = features = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "flags" and flags is None:
            flags = set(value.split())
        elif key == "features" and features is None:
            features = set(value.split())
    if arch is None:
        arch = "x86_64" if flags is not None else "aarch64" if features is not None else "unknown"
    if _is_x86(arch) and flags is not None:
        return Int8Features(arch, _pick(flags, X86_INT8), _pick(flags, X86_VECTOR), True, "/proc/cpuinfo flags")
    if _is_arm(arch) and features is not None:
        return Int8Features(arch, _pick(features, ARM_INT8), _pick(features, ARM_VECTOR), True,
                            "/proc/cpuinfo Features")
    return Int8Features(arch, known=False)


def parse_auxv(data: bytes, *, word: int = 8) -> dict[int, int]:
    """The (type -> value) pairs of a Linux auxiliary vector (/proc/self/auxv)."""
    fmt = "<QQ" if word == 8 else "<II"
    size = struct.calcsize(fmt)
    out = {}
    for off in range(0, len(data) - size + 1, size):
        key, value = struct.unpack_from(fmt, data, off)
        if key == 0:  # AT_NULL ends it
            break
        out[key] = value
    return out


def int8_features_from_hwcap(hwcap: int, hwcap2: int = 0, arch: str = "aarch64") -> Int8Features:
    """Int8 features from aarch64's AT_HWCAP / AT_HWCAP2 bits (where /proc/cpuinfo is unreadable)."""
    present = {n for n, bit in _ARM64_HWCAP.items() if hwcap & bit}
    present |= {n for n, bit in _ARM64_HWCAP2.items() if hwcap2 & bit}
    return Int8Features(arch, _pick(present, ARM_INT8), _pick(present, ARM_VECTOR), True, "AT_HWCAP")


def _darwin_features(arch: str) -> Int8Features:
    import subprocess

    def sysctl(name: str) -> str:
        try:
            out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    if _is_arm(arch):
        present = {flag for flag, key in (("asimddp", "hw.optional.arm.FEAT_DotProd"),
                                          ("i8mm", "hw.optional.arm.FEAT_I8MM")) if sysctl(key) == "1"}
        return Int8Features(arch, _pick(present, ARM_INT8), ("NEON",), True, "sysctl")
    leaf7 = sysctl("machdep.cpu.leaf7_features").lower().split()
    if not leaf7:
        return Int8Features(arch, known=False)
    present = {"avx512_vnni" if f == "avx512vnni" else f for f in leaf7}
    return Int8Features(arch, _pick(present, X86_INT8), _pick(present, X86_VECTOR), True, "sysctl")


@lru_cache(maxsize=1)
def int8_features() -> Int8Features:
    """This CPU's int8 features, read from the OS (cached; never raises)."""
    arch = platform.machine() or "unknown"
    if sys.platform == "darwin":
        return _darwin_features(arch)
    try:
        with open("/proc/cpuinfo") as f:
            found = int8_features_from_cpuinfo(f.read(), arch)
        if found.known:
            return found
    except OSError:
        pass
    if arch.lower() == "aarch64":
        try:
            with open("/proc/self/auxv", "rb") as f:
                aux = parse_auxv(f.read())
            return int8_features_from_hwcap(aux.get(_AT_HWCAP, 0), aux.get(_AT_HWCAP2, 0), arch)
        except OSError:
            pass
    return Int8Features(arch, known=False)
