"""The CPU's int8 features, parsed from canned /proc/cpuinfo texts and auxiliary vectors of
real machines (excerpts: the lines the parser reads, and the ones around them)."""

import struct

import pytest

from edgeclf.runtime.cpu import (Int8Features, int8_features, int8_features_from_cpuinfo,
                                 int8_features_from_hwcap, parse_auxv)

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl \
avx_vnni avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg amx_bf16 avx512_fp16 amx_tile amx_int8
bugs\t\t: spectre_v1
"""
# AMD EPYC 7003 (Zen 3): AVX2, no AVX-512, no VNNI.
EPYC_MILAN = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc \
pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm \
cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext fsgsbase bmi1 avx2 smep bmi2 erms \
invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt nrip_save \
umip vaes vpclmulqdq rdpid fsrm
"""
# Intel Skylake-SP: AVX-512 but VNNI came only with Cascade Lake.
SKYLAKE_SP = """model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
# Intel Alder Lake desktop: AVX-VNNI on 256-bit registers, no AVX-512.
ALDER_LAKE = """model name\t: 12th Gen Intel(R) Core(TM) i7-12700K
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx_vnni
"""
# Raspberry Pi 4 Model B, 64-bit Raspberry Pi OS: Cortex-A72, Armv8.0, no dot product.
PI4_64 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Hardware\t: BCM2835
Revision\t: c03111
Model\t\t: Raspberry Pi 4 Model B Rev 1.1
"""
# The same board under a 32-bit kernel: arm32 feature names.
PI4_32 = """processor\t: 0
model name\t: ARMv7 Processor rev 3 (v7l)
BogoMIPS\t: 108.00
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer\t: 0x41
CPU architecture: 7
CPU part\t: 0xd08

Hardware\t: BCM2711
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
# Raspberry Pi 5: Cortex-A76, Armv8.2 with the dot-product extension, no i8mm.
PI5 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

Revision\t: c04170
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
# AWS Graviton3 (Neoverse V1): dot product, i8mm, SVE.
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc \
dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 \
i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


@pytest.mark.parametrize("text, arch, dot, vector", [
    (SAPPHIRE_RAPIDS, "x86_64", ("AMX-INT8", "AVX512-VNNI", "AVX-VNNI"), ("AVX512BW", "AVX2")),
    (EPYC_MILAN, "x86_64", (), ("AVX2",)),
    (SKYLAKE_SP, "x86_64", (), ("AVX512BW", "AVX2")),
    (ALDER_LAKE, "x86_64", ("AVX-VNNI",), ("AVX2",)),
    (PI4_64, "aarch64", (), ("NEON",)),
    (PI4_32, "armv7l", (), ("NEON",)),
    (PI5, "aarch64", ("DOTPROD",), ("NEON",)),
    (GRAVITON3, "aarch64", ("I8MM", "SVE-I8MM", "DOTPROD"), ("SVE", "NEON")),
])
def test_cpuinfo_int8_features(text, arch, dot, vector):
    f = int8_features_from_cpuinfo(text, arch)
    assert f.known, f"{arch}: the feature line was not found"
    assert f.dot_product == dot, f"dot product: {f.dot_product} != {dot}"
    assert f.vector == vector, f"vector: {f.vector} != {vector}"
    assert f.has_int8_dot_product is bool(dot)
    # Without arch the line present decides.
    assert int8_features_from_cpuinfo(text).dot_product == dot


def test_summaries_name_what_is_missing():
    assert int8_features_from_cpuinfo(EPYC_MILAN, "x86_64").summary() == "no int8 dot product (no VNNI/AMX; AVX2 only)"
    assert int8_features_from_cpuinfo(PI4_64, "aarch64").summary() == "no int8 dot product (no dotprod/i8mm; NEON only)"
    assert int8_features_from_cpuinfo(PI5, "aarch64").summary() == "int8 dot product: DOTPROD"
    assert "AMX-INT8" in int8_features_from_cpuinfo(SAPPHIRE_RAPIDS, "x86_64").summary()


def test_cpuinfo_without_a_feature_line_is_unknown_not_none():
    f = int8_features_from_cpuinfo("processor : 0\nModel : Some board\n", "aarch64")
    assert not f.known and f.has_int8_dot_product is None
    assert f.summary() == "int8 features unknown"
    # An x86 flags line does not describe an ARM CPU, nor the reverse.
    assert not int8_features_from_cpuinfo(PI5, "x86_64").known
    assert not int8_features_from_cpuinfo(EPYC_MILAN, "aarch64").known


def test_hwcap_bits_of_a_pi5_and_a_graviton3():
    # AT_HWCAP of a Cortex-A76 (Pi 5): fp|asimd|...|asimddp(bit 20); no AT_HWCAP2 i8mm bit.
    pi5 = int8_features_from_hwcap((1 << 0) | (1 << 1) | (1 << 20), 0)
    assert pi5.dot_product == ("DOTPROD",) and pi5.vector == ("NEON",) and pi5.source == "AT_HWCAP"
    pi4 = int8_features_from_hwcap((1 << 0) | (1 << 1), 0)
    assert pi4.dot_product == () and pi4.has_int8_dot_product is False
    g3 = int8_features_from_hwcap((1 << 1) | (1 << 20) | (1 << 22), (1 << 13) | (1 << 9))
    assert g3.dot_product == ("I8MM", "SVE-I8MM", "DOTPROD") and g3.vector == ("SVE", "NEON")


def test_auxv_parser_reads_pairs_until_at_null():
    raw = struct.pack("<8Q", 16, 0x1FFF, 26, 1 << 13, 0, 0, 99, 99)
    assert parse_auxv(raw) == {16: 0x1FFF, 26: 1 << 13}
    assert parse_auxv(struct.pack("<4I", 16, 7, 0, 0), word=4) == {16: 7}


def test_this_machine_is_described():
    f = int8_features()
    assert isinstance(f, Int8Features) and f.arch
    d = f.to_dict()
    assert set(d) >= {"arch", "dot_product", "vector", "known", "source", "has_int8_dot_product"}
