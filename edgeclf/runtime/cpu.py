"""What the machine is: physical core count (the default thread count) and the CPU's name,
stated beside every latency figure. Standard library only; Linux (x86 and ARM boards such as
the Raspberry Pi) read sysfs and /proc, elsewhere ``os.cpu_count`` and ``platform``."""

from __future__ import annotations

import glob
import os
import platform
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


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads not counted), at least 1."""
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
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_summary() -> dict:
    """Machine facts that belong beside a latency figure."""
    return {
        "cpu": cpu_model_name(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
