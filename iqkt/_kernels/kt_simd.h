/* Small per-ISA helpers for the KT kernels.
 *
 * The algorithms live once, in kt_kernels.pxi.  This header only supplies
 * tiny building blocks whose best implementation differs per instruction set.
 * Every helper here returns exactly the same value on every ISA (integer
 * arithmetic, or float lanes that perform the same operations in the same
 * order as the scalar code), which is what makes all variants bit-identical.
 *
 * Which branch is compiled is decided by the flags the variant is built with
 * (see setup.py), never at run time.
 */
#ifndef IQKT_KT_SIMD_H
#define IQKT_KT_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#  define IQKT_HAVE_AVX512 1
#  include <immintrin.h>
#elif defined(__AVX2__)
#  define IQKT_HAVE_AVX2 1
#  include <immintrin.h>
#elif defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)
#  define IQKT_HAVE_NEON 1
#  include <arm_neon.h>
#endif

#ifndef IQKT_VARIANT
#  define IQKT_VARIANT "scalar"
#endif

static const char *iqkt_variant_name(void) { return IQKT_VARIANT; }

/* The ISA this translation unit's helpers were compiled for (may be less
 * than the variant's name promises if the compiler lacked the flags). */
static const char *iqkt_simd_name(void) {
#if defined(IQKT_HAVE_AVX512)
    return "avx512";
#elif defined(IQKT_HAVE_AVX2)
    return "avx2";
#elif defined(IQKT_HAVE_NEON)
    return "neon";
#else
    return "scalar";
#endif
}

/* Little-endian loads; every supported target is little-endian. */
static inline uint16_t iqkt_load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t iqkt_load_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline float iqkt_load_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }
static inline void iqkt_store_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void iqkt_store_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void iqkt_store_f32(uint8_t *p, float v) { memcpy(p, &v, 4); }
static inline uint32_t iqkt_f32_bits(float v) { uint32_t u; memcpy(&u, &v, 4); return u; }

/* Exact int8 x int8 dot product of 32 elements (|a|,|b| <= 127 so no overflow). */
static inline int32_t iqkt_dot_i8_32(const int8_t *a, const int8_t *b) {
#if defined(IQKT_HAVE_AVX512) || defined(IQKT_HAVE_AVX2)
    __m256i va = _mm256_loadu_si256((const __m256i *)a);
    __m256i vb = _mm256_loadu_si256((const __m256i *)b);
    /* maddubs wants unsigned x signed: move a's sign onto b. */
    __m256i ua = _mm256_sign_epi8(va, va);
    __m256i sb = _mm256_sign_epi8(vb, va);
#  if defined(IQKT_HAVE_AVX512)
    __m256i acc = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ua, sb);
#  else
    __m256i p16 = _mm256_maddubs_epi16(ua, sb);      /* pairs: |v| <= 2*127*127 fits int16 */
    __m256i acc = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
#  endif
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
#elif defined(IQKT_HAVE_NEON)
    int32x4_t acc = vdupq_n_s32(0);
    acc = vdotq_s32(acc, vld1q_s8(a), vld1q_s8(b));
    acc = vdotq_s32(acc, vld1q_s8(a + 16), vld1q_s8(b + 16));
    return vaddvq_s32(acc);
#else
    int32_t s = 0;
    for (int i = 0; i < 32; i++) s += (int32_t)a[i] * (int32_t)b[i];
    return s;
#endif
}

#endif /* IQKT_KT_SIMD_H */
