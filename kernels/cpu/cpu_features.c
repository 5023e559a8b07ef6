/*
 * cpu_features.c - CPUID checks for the bf16 paths (cpu_features.h). Each answer is read once
 * and kept: under a hypervisor CPUID traps to it (microseconds), and lk_convert asks on every
 * call, which made the tiled attention's row-by-row packing spend most of its time in CPUID.
 */
#include "cpu_features.h"

/* The probe's answer, computed on first use. Threads that race here compute the same value,
 * so relaxed atomics suffice. */
static int cached(int *slot, int (*probe)(void))
{
    int v = __atomic_load_n(slot, __ATOMIC_RELAXED);
    if (v < 0) {
        v = probe();
        __atomic_store_n(slot, v, __ATOMIC_RELAXED);
    }
    return v;
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* CPUID leaf 7, the given sub-leaf; 0 when the CPU has no such leaf. */
static int leaf7(unsigned sub, unsigned *eax, unsigned *edx)
{
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, sub, a, b, c, d);
    *eax = a;
    *edx = d;
    return 1;
}

static int probe_f16c(void)
{
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__builtin_cpu_supports("avx") || !__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    return (ecx >> 29) & 1; /* CPUID.(EAX=1):ECX bit 29 = F16C */
}

static int probe_avx512_bf16(void)
{
    unsigned eax = 0, edx = 0;
    /* avx512f also tells that the OS saves the ZMM registers (XCR0), which CPUID alone does not. */
    if (!__builtin_cpu_supports("avx512f") || !leaf7(1, &eax, &edx)) return 0;
    return (eax >> 5) & 1; /* CPUID.(EAX=7,ECX=1):EAX bit 5 = AVX512_BF16 */
}

static int probe_amx_bf16(void)
{
    unsigned eax = 0, edx = 0;
    if (!leaf7(0, &eax, &edx)) return 0;
    return (edx >> 22) & 1; /* CPUID.(EAX=7,ECX=0):EDX bit 22 = AMX-BF16 */
}
#else
static int probe_f16c(void)
{
    return 0;
}
static int probe_avx512_bf16(void)
{
    return 0;
}
static int probe_amx_bf16(void)
{
    return 0;
}
#endif

static int f16c = -1, avx512_bf16 = -1, amx_bf16 = -1;
int lk_cpu_has_f16c(void)
{
    return cached(&f16c, probe_f16c);
}
int lk_cpu_has_avx512_bf16(void)
{
    return cached(&avx512_bf16, probe_avx512_bf16);
}
int lk_cpu_has_amx_bf16(void)
{
    return cached(&amx_bf16, probe_amx_bf16);
}
