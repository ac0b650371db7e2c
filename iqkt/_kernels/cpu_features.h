/*
 * Runtime CPU feature detection for choosing an iqkt kernel variant.
 *
 * This header must be compiled WITHOUT any ISA flags (-mavx2, /arch:AVX2,
 * -march=...+dotprod): it runs before we know which instructions are safe, so
 * it may only use the baseline instruction set of the target.
 *
 * x86/x86_64: CPUID says what the silicon implements; XGETBV(0) says which
 * register state the OS saves on context switches.  AVX/AVX-512 code is only
 * safe when both agree, hence the separate "os_avx" / "os_avx512" features.
 * aarch64: the kernel (or OS) reports the dot-product extension directly.
 *
 * Supported compilers: GCC, Clang (incl. Apple clang, clang-cl) and MSVC.
 */
#ifndef IQKT_CPU_FEATURES_H
#define IQKT_CPU_FEATURES_H

#include <stddef.h>

/* Inline so that unused helpers draw no warnings; spelled so that it works
 * in any C dialect (plain "inline" is C99, unknown to -std=c89 and old MSVC). */
#if defined(__GNUC__) || defined(__clang__)
#  define IQKT_CPU_INLINE static __inline__
#elif defined(_MSC_VER)
#  define IQKT_CPU_INLINE static __inline
#else
#  define IQKT_CPU_INLINE static
#endif

/* Feature ids: bit positions in the mask returned by iqkt_cpu_detect().
 * Keep in sync with iqkt_cpu_feature_name() below. */
enum {
    IQKT_CPU_AVX2 = 0,
    IQKT_CPU_FMA,
    IQKT_CPU_F16C,
    IQKT_CPU_BMI2,
    IQKT_CPU_POPCNT,
    IQKT_CPU_AVX512F,
    IQKT_CPU_AVX512BW,
    IQKT_CPU_AVX512VL,
    IQKT_CPU_AVX512DQ,
    IQKT_CPU_AVX512VNNI,
    IQKT_CPU_OS_AVX,      /* OS saves YMM state (XCR0 bits 1,2) */
    IQKT_CPU_OS_AVX512,   /* OS saves YMM + opmask + ZMM state (XCR0 bits 1,2,5,6,7) */
    IQKT_CPU_ASIMDDP,     /* aarch64 SDOT/UDOT (FEAT_DotProd) */
    IQKT_CPU_AVX_VNNI,    /* VEX vpdpbusd on xmm/ymm (CPUID.(7,1):EAX bit 4) */
    IQKT_CPU_NFEATURES
};

/* Stable lower-case name of a feature id (NULL if out of range); these are
 * the keys Python sees and the names IQKT_CPU_MASK accepts. */
IQKT_CPU_INLINE const char *iqkt_cpu_feature_name(int feature)
{
    static const char *const names[IQKT_CPU_NFEATURES] = {
        "avx2", "fma", "f16c", "bmi2", "popcnt",
        "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni",
        "os_avx", "os_avx512", "asimddp", "avx_vnni",
    };
    return (feature >= 0 && feature < IQKT_CPU_NFEATURES) ? names[feature] : NULL;
}

enum {
    IQKT_ARCH_OTHER = 0,
    IQKT_ARCH_X86_64 = 1,
    IQKT_ARCH_ARM64 = 2
};

#if defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64) || \
    defined(__i386__) || defined(_M_IX86)
#  define IQKT_CPU_X86 1
#elif defined(__aarch64__) || defined(_M_ARM64)
#  define IQKT_CPU_ARM64 1
#endif

/* ------------------------------------------------------------------ x86 -- */
#if defined(IQKT_CPU_X86)

#  if defined(_MSC_VER) && !defined(__clang__)
#    include <intrin.h>
#    include <immintrin.h>   /* _xgetbv: usable without /arch flags */
#  else
#    include <cpuid.h>
#  endif
#  if defined(__APPLE__)
#    include <sys/sysctl.h>
#  endif

/* CPUID leaf/subleaf into r[0..3] = eax, ebx, ecx, edx.  Returns 0 when the
 * leaf is beyond the CPU's maximum (the registers are then zeroed). */
IQKT_CPU_INLINE int iqkt_cpuid_(unsigned leaf, unsigned sub, unsigned r[4])
{
    r[0] = r[1] = r[2] = r[3] = 0;
#  if defined(_MSC_VER) && !defined(__clang__)
    {
        int regs[4];
        __cpuid(regs, (int)(leaf & 0x80000000u));
        if ((unsigned)regs[0] < leaf)
            return 0;
        __cpuidex(regs, (int)leaf, (int)sub);
        r[0] = (unsigned)regs[0]; r[1] = (unsigned)regs[1];
        r[2] = (unsigned)regs[2]; r[3] = (unsigned)regs[3];
        return 1;
    }
#  else
    /* __get_cpuid_count checks the maximum leaf itself. */
    return __get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3]);
#  endif
}

/* XCR0; the caller must have checked CPUID.1:ECX.OSXSAVE, or this faults.
 * Inline asm rather than the _xgetbv intrinsic: GCC only allows the
 * intrinsic with -mxsave, which we must not pass. */
IQKT_CPU_INLINE unsigned long long iqkt_xgetbv0_(void)
{
#  if defined(_MSC_VER) && !defined(__clang__)
    return (unsigned long long)_xgetbv(0);
#  else
    unsigned eax, edx;
    __asm__ __volatile__("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
#  endif
}

#  if defined(__APPLE__)
/* macOS enables AVX-512 state lazily, on the first AVX-512 instruction, so
 * XCR0 may not show it yet; the kernel advertises support via sysctl. */
IQKT_CPU_INLINE int iqkt_macos_sysctl_flag_(const char *name)
{
    int v = 0;
    size_t len = sizeof v;
    return sysctlbyname(name, &v, &len, NULL, 0) == 0 && v != 0;
}
#  endif

IQKT_CPU_INLINE unsigned iqkt_cpu_detect(void)
{
    unsigned m = 0, l1[4], l7[4], l71[4];
    unsigned long long xcr0 = 0;

    if (!iqkt_cpuid_(1, 0, l1))
        return 0;
    iqkt_cpuid_(7, 0, l7);  /* zeroed if leaf 7 is missing */
    /* sub-leaf 1 exists when leaf 7 sub-leaf 0 reports it (EAX = max sub-leaf) */
    if (l7[0] >= 1) iqkt_cpuid_(7, 1, l71); else l71[0] = l71[1] = l71[2] = l71[3] = 0;

#  define IQKT_SET_(feat, reg, bit) \
        do { if (((reg) >> (bit)) & 1u) m |= 1u << (feat); } while (0)
    IQKT_SET_(IQKT_CPU_FMA,        l1[2], 12);
    IQKT_SET_(IQKT_CPU_POPCNT,     l1[2], 23);
    IQKT_SET_(IQKT_CPU_F16C,       l1[2], 29);
    IQKT_SET_(IQKT_CPU_AVX2,       l7[1], 5);
    IQKT_SET_(IQKT_CPU_BMI2,       l7[1], 8);
    IQKT_SET_(IQKT_CPU_AVX512F,    l7[1], 16);
    IQKT_SET_(IQKT_CPU_AVX512DQ,   l7[1], 17);
    IQKT_SET_(IQKT_CPU_AVX512BW,   l7[1], 30);
    IQKT_SET_(IQKT_CPU_AVX512VL,   l7[1], 31);
    IQKT_SET_(IQKT_CPU_AVX512VNNI, l7[2], 11);
    IQKT_SET_(IQKT_CPU_AVX_VNNI,   l71[0], 4);
#  undef IQKT_SET_

    /* OSXSAVE (CPUID.1:ECX bit 27): the OS uses XSAVE and XGETBV is legal.
     * AVX itself (bit 28) is a prerequisite of every YMM feature. */
    if (((l1[2] >> 27) & 1u) && ((l1[2] >> 28) & 1u)) {
        xcr0 = iqkt_xgetbv0_();
        if ((xcr0 & 0x06u) == 0x06u)             /* SSE + AVX (YMM upper) */
            m |= 1u << IQKT_CPU_OS_AVX;
        if ((xcr0 & 0xe6u) == 0xe6u)             /* + opmask, ZMM_Hi256, Hi16_ZMM */
            m |= 1u << IQKT_CPU_OS_AVX512;
#  if defined(__APPLE__)
        if ((m & (1u << IQKT_CPU_OS_AVX)) && (m & (1u << IQKT_CPU_AVX512F)) &&
            iqkt_macos_sysctl_flag_("hw.optional.avx512f"))
            m |= 1u << IQKT_CPU_OS_AVX512;
#  endif
    }
    return m;
}

/* ---------------------------------------------------------------- arm64 -- */
#elif defined(IQKT_CPU_ARM64)

#  if defined(_WIN32)
#    ifndef WIN32_LEAN_AND_MEAN
#      define WIN32_LEAN_AND_MEAN
#    endif
#    include <windows.h>
#    ifndef PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE
#      define PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE 43
#    endif
#  elif defined(__APPLE__)
#    include <sys/sysctl.h>
#  elif defined(__linux__)
#    include <sys/auxv.h>
#    ifndef HWCAP_ASIMDDP
#      define HWCAP_ASIMDDP (1UL << 20)
#    endif
#  endif

IQKT_CPU_INLINE unsigned iqkt_cpu_detect(void)
{
    int dp = 0;
#  if defined(__ARM_FEATURE_DOTPROD)
    /* The compiler's baseline already assumes it (e.g. Apple arm64 targets
     * M1 and later): every instruction of this module may use it anyway. */
    dp = 1;
#  elif defined(_WIN32)
    dp = IsProcessorFeaturePresent(PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE) != 0;
#  elif defined(__APPLE__)
    {
        int v = 0;
        size_t len = sizeof v;
        dp = sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, NULL, 0) == 0 && v != 0;
    }
#  elif defined(__linux__)
    dp = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#  endif
    /* Other OSes: no portable query; report absent and let scalar run. */
    return dp ? 1u << IQKT_CPU_ASIMDDP : 0u;
}

/* ---------------------------------------------------------------- other -- */
#else

IQKT_CPU_INLINE unsigned iqkt_cpu_detect(void) { return 0; }

#endif

/* Target architecture of this build.  32-bit x86 counts as "other": only
 * the scalar variant is built there. */
IQKT_CPU_INLINE int iqkt_cpu_arch(void)
{
#if defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64)
    return IQKT_ARCH_X86_64;
#elif defined(IQKT_CPU_ARM64)
    return IQKT_ARCH_ARM64;
#else
    return IQKT_ARCH_OTHER;
#endif
}

#endif /* IQKT_CPU_FEATURES_H */
