"""What the machine is: physical core count (the default thread count) and the CPU's name,
stated beside every latency figure. Standard library only; Linux (x86 and ARM boards such as
the Raspberry Pi) read sysfs and /proc, elsewhere ``os.cpu_count`` and ``platform``."""

from __future__ import annotations

import glob
import os
import platform
import sys
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
