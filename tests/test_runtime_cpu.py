"""Default thread count and machine name."""

import os

from edgeclf.runtime.cpu import cgroup_cpu_limit, cpu_model_name, cpuinfo_cores, physical_cores, usable_cpus


def test_physical_cores_is_within_what_the_process_may_use():
    n = physical_cores()
    assert isinstance(n, int) and 1 <= n <= (os.cpu_count() or 1)


def test_cpuinfo_counts_cores_not_hyperthreads():
    two_cores_smt = "".join(f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i // 2}\n\n" for i in range(4))
    assert cpuinfo_cores(two_cores_smt) == 2
    two_sockets = "".join(f"processor : {i}\nphysical id : {i % 2}\ncore id : 0\n\n" for i in range(2))
    assert cpuinfo_cores(two_sockets) == 2
    raspberry_pi = "processor\t: 0\nBogoMIPS\t: 108.00\n\nprocessor\t: 1\n\nModel\t\t: Raspberry Pi 5\n"
    assert cpuinfo_cores(raspberry_pi) is None


def test_cpu_name_and_counts():
    from edgeclf.runtime.latency import system_info

    assert isinstance(cpu_model_name(), str) and cpu_model_name()
    assert 1 <= physical_cores() <= usable_cpus()
    info = system_info()
    assert info.cpu_model == cpu_model_name() and info.usable_cpus == usable_cpus()


def test_container_cpu_quota():
    assert cgroup_cpu_limit("max 100000") is None
    assert cgroup_cpu_limit("200000 100000") == 2
    assert cgroup_cpu_limit("150000 100000") == 2, "1.5 CPUs of quota still run 2 threads"
    assert cgroup_cpu_limit("50000 100000") == 1
    assert cgroup_cpu_limit("garbage") is None
