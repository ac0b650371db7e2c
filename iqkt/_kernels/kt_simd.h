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


/* ---- Nearest-codeword scan -------------------------------------------------
 * Codes are stored in blocks of 16: for each block, `dim` rows of 16 floats
 * (coordinate-major), then the block's 16 codebook indices live in idx[].
 * Every lane computes e = sum_k (w[k] * (t[k] - c[k])) * (t[k] - c[k]) with
 * the operations in the same order as the scalar loop, and the minimum is
 * taken in the total order (e, index), so every ISA returns the same code. */
#define IQKT_SCAN_LANES 16

static inline int iqkt_better(float e, int32_t i, float be, int32_t bi) {
    return e < be || (e == be && i < bi);
}

/* Lanes whose distance could beat (be, bi) are re-checked one by one in
 * lane order; a block with no lane at or below be (the common case) costs no
 * reduction at all. */
static inline void iqkt_scan_pick(const float *le, const int32_t *idx, float *be, int32_t *bi) {
    for (int l = 0; l < 16; l++)
        if (iqkt_better(le[l], idx[l], *be, *bi)) { *be = le[l]; *bi = idx[l]; }
}

static inline void iqkt_scan_codes(const float *vals, const int32_t *idx, int nblk, int dim,
                                   const float *t, const float *w, float *best_e, int32_t *best_i) {
    float be = *best_e;
    int32_t bi = *best_i;
    for (int b = 0; b < nblk; b++) {
        const float *c = vals + (size_t)b * dim * 16;
        const int32_t *ib = idx + 16 * b;
#if defined(IQKT_HAVE_AVX512)
        __m512 e = _mm512_setzero_ps();
        for (int k = 0; k < dim; k++) {
            __m512 diff = _mm512_sub_ps(_mm512_set1_ps(t[k]), _mm512_loadu_ps(c + 16 * k));
            e = _mm512_add_ps(e, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(w[k]), diff), diff));
        }
        if (_mm512_cmp_ps_mask(e, _mm512_set1_ps(be), _CMP_LE_OQ)) {
            float le[16];
            _mm512_storeu_ps(le, e);
            iqkt_scan_pick(le, ib, &be, &bi);
        }
#elif defined(IQKT_HAVE_AVX2)
        __m256 e0 = _mm256_setzero_ps(), e1 = _mm256_setzero_ps();
        for (int k = 0; k < dim; k++) {
            __m256 tk = _mm256_set1_ps(t[k]), wk = _mm256_set1_ps(w[k]);
            __m256 d0 = _mm256_sub_ps(tk, _mm256_loadu_ps(c + 16 * k));
            __m256 d1 = _mm256_sub_ps(tk, _mm256_loadu_ps(c + 16 * k + 8));
            e0 = _mm256_add_ps(e0, _mm256_mul_ps(_mm256_mul_ps(wk, d0), d0));
            e1 = _mm256_add_ps(e1, _mm256_mul_ps(_mm256_mul_ps(wk, d1), d1));
        }
        __m256 vbe = _mm256_set1_ps(be);
        __m256 le_mask = _mm256_or_ps(_mm256_cmp_ps(e0, vbe, _CMP_LE_OQ), _mm256_cmp_ps(e1, vbe, _CMP_LE_OQ));
        if (_mm256_movemask_ps(le_mask)) {
            float le[16];
            _mm256_storeu_ps(le, e0);
            _mm256_storeu_ps(le + 8, e1);
            iqkt_scan_pick(le, ib, &be, &bi);
        }
#elif defined(IQKT_HAVE_NEON)
        float32x4_t e[4];
        for (int h = 0; h < 4; h++) e[h] = vdupq_n_f32(0.0f);
        for (int k = 0; k < dim; k++) {
            float32x4_t tk = vdupq_n_f32(t[k]), wk = vdupq_n_f32(w[k]);
            for (int h = 0; h < 4; h++) {
                /* vmulq/vaddq, never vfmaq/vmlaq: fused ops would round differently. */
                float32x4_t diff = vsubq_f32(tk, vld1q_f32(c + 16 * k + 4 * h));
                e[h] = vaddq_f32(e[h], vmulq_f32(vmulq_f32(wk, diff), diff));
            }
        }
        float32x4_t vbe = vdupq_n_f32(be);
        uint32x4_t m = vorrq_u32(vorrq_u32(vcleq_f32(e[0], vbe), vcleq_f32(e[1], vbe)),
                                 vorrq_u32(vcleq_f32(e[2], vbe), vcleq_f32(e[3], vbe)));
        if (vmaxvq_u32(m)) {
            float le[16];
            for (int h = 0; h < 4; h++) vst1q_f32(le + 4 * h, e[h]);
            iqkt_scan_pick(le, ib, &be, &bi);
        }
#else
        for (int l = 0; l < 16; l++) {
            float e = 0.0f;
            for (int k = 0; k < dim; k++) {
                float diff = t[k] - c[16 * k + l];
                e = e + (w[k] * diff) * diff;
            }
            if (iqkt_better(e, ib[l], be, bi)) { be = e; bi = ib[l]; }
        }
#endif
    }
    *best_e = be;
    *best_i = bi;
}

#include "kt_mm.h"

#endif /* IQKT_KT_SIMD_H */
