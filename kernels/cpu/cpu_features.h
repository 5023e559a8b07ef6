/*
 * cpu_features.h - CPU features that __builtin_cpu_supports cannot name on every compiler we
 * build with (clang 14 knows none of "f16c", "avx512bf16", "amx-bf16"), read from CPUID.
 */
#ifndef LK_CPU_FEATURES_H
#define LK_CPU_FEATURES_H

/* 1 when the CPU converts f16 with F16C (VCVTPH2PS) and the OS saves the AVX state. */
int lk_cpu_has_f16c(void);

/* 1 when the CPU executes AVX512_BF16 instructions (and the OS saves the AVX-512 state). */
int lk_cpu_has_avx512_bf16(void);

/* 1 when the CPU has AMX with bf16 tiles (the OS must still grant the tile state: oneDNN asks). */
int lk_cpu_has_amx_bf16(void);

#endif
