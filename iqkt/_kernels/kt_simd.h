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

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(_MSC_VER) && !defined(__clang__)
#  include <intrin.h>
#endif

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

/* The search helpers take the group size (8 or 4) as an argument; forcing
 * them inline lets the caller's constant turn every per-coordinate loop into
 * straight-line code. */
#if defined(__GNUC__) || defined(__clang__)
#  define IQKT_INLINE static inline __attribute__((always_inline))
#else
#  define IQKT_INLINE static __forceinline
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

/* A hint that *p will be read soon (no effect on results). */
static inline void iqkt_prefetch(const void *p) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p);
#else
    (void)p;
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

/* a * b + c with one rounding: the step of every search distance.  All
 * variants use the fused form (FMA instructions in the SIMD helpers, fmaf
 * here), so they round identically, and on the SIMD builds a step is one
 * instruction instead of two (measured x1.10 on AVX2 IQ2/IQ3 quantization).
 * fmaf can be a library call (x86-64 without FMA): the portable scan only
 * uses it for the few codes that can still win (see iqkt_scan_codes). */
static inline float iqkt_fma(float a, float b, float c) { return fmaf(a, b, c); }

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
 * Codes are stored in blocks of 16: for each block, `dim` rows of 16 int8
 * values (coordinate-major, converted exactly to float), then the block's 16
 * codebook indices live in idx[].
 * Every lane's distance is e = fma(w[k] * d, d, e) over k in order, d = t[k]
 * - c[k] (the portable build screens with unfused sums first, then computes
 * exactly this for the lanes that can win), and the minimum is taken in the
 * total order (e, index), so every ISA returns the same code. */
#define IQKT_SCAN_LANES 16

static inline int iqkt_better(float e, int32_t i, float be, int32_t bi) {
    return e < be || (e == be && i < bi);
}

/* Lanes whose distance could beat (be, bi) are re-checked one by one in
 * lane order; a block with no lane at or below be (the common case) costs no
 * reduction at all. */
static inline void iqkt_scan_pick(const float *le, const uint16_t *idx, float *be, int32_t *bi) {
    for (int l = 0; l < 16; l++)
        if (iqkt_better(le[l], idx[l], *be, *bi)) { *be = le[l]; *bi = idx[l]; }
}

/* Index of the lowest set bit of a nonzero mask. */
static inline int iqkt_lowest_bit(uint32_t m) {
#if defined(_MSC_VER) && !defined(__clang__)
    unsigned long i;
    _BitScanForward(&i, m);
    return (int)i;
#else
    return __builtin_ctz(m);
#endif
}

/* One 16-code block's distances (AVX512), and the pick of its best lane. */
#if defined(IQKT_HAVE_AVX512)
IQKT_INLINE __m512 iqkt_dist16(const int8_t *c, int dim, const float *t, const float *w) {
    __m512 e = _mm512_setzero_ps();
    for (int k = 0; k < dim; k++) {
        __m512 ck = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(c + 16 * k))));
        __m512 diff = _mm512_sub_ps(_mm512_set1_ps(t[k]), ck);
        e = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(w[k]), diff), diff, e);
    }
    return e;
}

/* The (e, index) minimum of the lanes of e at or below the best (indices
 * in i), then against the best itself. */
IQKT_INLINE void iqkt_pick16_vec(__m512 e, __m512i i, float *be, int32_t *bi) {
    __mmask16 m = _mm512_cmp_ps_mask(e, _mm512_set1_ps(*be), _CMP_LE_OQ);
    if (m) {
        float mn = _mm512_mask_reduce_min_ps(m, e);
        __mmask16 eq = _mm512_mask_cmp_ps_mask(m, e, _mm512_set1_ps(mn), _CMP_EQ_OQ);
        int32_t j = _mm512_mask_reduce_min_epi32(eq, i);
        if (mn < *be || j < *bi) { *be = mn; *bi = j; }
    }
}

/* iqkt_pick16_vec with the indices read only when a lane can win. */
IQKT_INLINE void iqkt_pick16(__m512 e, const uint16_t *ib, float *be, int32_t *bi) {
    if (_mm512_cmp_ps_mask(e, _mm512_set1_ps(*be), _CMP_LE_OQ))
        iqkt_pick16_vec(e, _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)ib)), be, bi);
}

/* Per lane: (re, ri) = the smaller of (re, ri) and (e, i) in (e, index)
 * order; a NaN e is never taken. */
IQKT_INLINE void iqkt_runmin_step(__m512 *re, __m512i *ri, __m512 e, __m512i i) {
    __mmask16 take = _mm512_cmp_ps_mask(e, *re, _CMP_LT_OQ)
                   | (_mm512_cmp_ps_mask(e, *re, _CMP_EQ_OQ) & _mm512_cmplt_epi32_mask(i, *ri));
    *re = _mm512_mask_mov_ps(*re, take, e);
    *ri = _mm512_mask_mov_epi32(*ri, take, i);
}
#endif

#if defined(IQKT_HAVE_AVX2)
/* One 16-code block's distances on AVX2 (lanes 0-7 in *e0, 8-15 in *e1),
 * the same operations as the scalar loop. */
IQKT_INLINE void iqkt_dist16_avx2(const int8_t *c, int dim, const float *t, const float *w,
                                  __m256 *e0, __m256 *e1) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int k = 0; k < dim; k++) {
        __m256 tk = _mm256_set1_ps(t[k]), wk = _mm256_set1_ps(w[k]);
        /* 8-byte loads: sign-extended straight from memory (no shuffle). */
        __m256 d0 = _mm256_sub_ps(tk, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                        _mm_loadl_epi64((const __m128i *)(c + 16 * k)))));
        __m256 d1 = _mm256_sub_ps(tk, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                        _mm_loadl_epi64((const __m128i *)(c + 16 * k + 8)))));
        a0 = _mm256_fmadd_ps(_mm256_mul_ps(wk, d0), d0, a0);
        a1 = _mm256_fmadd_ps(_mm256_mul_ps(wk, d1), d1, a1);
    }
    *e0 = a0;
    *e1 = a1;
}

/* Per lane: (re, ri) = the smaller of (re, ri) and (e, i) in (e, index)
 * order; a NaN e is never taken. */
IQKT_INLINE void iqkt_runmin_step8(__m256 *re, __m256i *ri, __m256 e, __m256i i) {
    __m256 take = _mm256_or_ps(_mm256_cmp_ps(e, *re, _CMP_LT_OQ),
                               _mm256_and_ps(_mm256_cmp_ps(e, *re, _CMP_EQ_OQ),
                                             _mm256_castsi256_ps(_mm256_cmpgt_epi32(*ri, i))));
    *re = _mm256_blendv_ps(*re, e, take);
    *ri = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(*ri), _mm256_castsi256_ps(i), take));
}

/* Horizontal minima of 8 lanes. */
IQKT_INLINE float iqkt_hmin8_ps(__m256 v) {
    __m128 m4 = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m4 = _mm_min_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_min_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    return _mm_cvtss_f32(m4);
}
IQKT_INLINE int32_t iqkt_hmin8_epi32(__m256i v) {
    __m128i j4 = _mm_min_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    j4 = _mm_min_epi32(j4, _mm_shuffle_epi32(j4, 0x4e));
    j4 = _mm_min_epi32(j4, _mm_shuffle_epi32(j4, 0xb1));
    return _mm_cvtsi128_si32(j4);
}

/* The (e, index) minimum of the lanes of e at or below the best (indices
 * in i), by reductions, then against the best itself.  Lanes above the best
 * (or NaN) are replaced by +inf first, so the minimum is taken over exactly
 * the lanes that could win; only those lanes' indices count (a NaN lane
 * became +inf and must not tie with an all-inf minimum). */
IQKT_INLINE void iqkt_pick8_vec_avx2(__m256 e, __m256i i, float *be, int32_t *bi) {
    __m256 le = _mm256_cmp_ps(e, _mm256_set1_ps(*be), _CMP_LE_OQ);
    if (!_mm256_movemask_ps(le)) return;
    float mn = iqkt_hmin8_ps(_mm256_blendv_ps(_mm256_set1_ps(HUGE_VALF), e, le));
    __m256 sel = _mm256_and_ps(le, _mm256_cmp_ps(e, _mm256_set1_ps(mn), _CMP_EQ_OQ));
    int32_t j = iqkt_hmin8_epi32(_mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)), _mm256_castsi256_ps(i), sel)));
    if (mn < *be || j < *bi) { *be = mn; *bi = j; }
}

/* The same pick for one 16-lane block held in two halves (indices read
 * from ib only when a lane can win). */
IQKT_INLINE void iqkt_pick16_avx2(__m256 e0, __m256 e1, const uint16_t *ib, float *be, int32_t *bi) {
    __m256 vbe = _mm256_set1_ps(*be), inf = _mm256_set1_ps(HUGE_VALF);
    __m256 le0 = _mm256_cmp_ps(e0, vbe, _CMP_LE_OQ), le1 = _mm256_cmp_ps(e1, vbe, _CMP_LE_OQ);
    if (!_mm256_movemask_ps(_mm256_or_ps(le0, le1))) return;
    float mn = iqkt_hmin8_ps(_mm256_min_ps(_mm256_blendv_ps(inf, e0, le0), _mm256_blendv_ps(inf, e1, le1)));
    __m256 vmn = _mm256_set1_ps(mn);
    __m256i big = _mm256_set1_epi32(0x7FFFFFFF);
    __m256i i0 = _mm256_blendv_epi8(big, _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)ib)),
                                    _mm256_castps_si256(_mm256_and_ps(le0, _mm256_cmp_ps(e0, vmn, _CMP_EQ_OQ))));
    __m256i i1 = _mm256_blendv_epi8(big, _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(ib + 8))),
                                    _mm256_castps_si256(_mm256_and_ps(le1, _mm256_cmp_ps(e1, vmn, _CMP_EQ_OQ))));
    int32_t j = iqkt_hmin8_epi32(_mm256_min_epi32(i0, i1));
    if (mn < *be || j < *bi) { *be = mn; *bi = j; }
}
#endif

/* Mask of the lanes b < 16 of lb with lb[b] <= best. */
IQKT_INLINE uint32_t iqkt_le_mask16(const float *lb, float best) {
#if defined(IQKT_HAVE_AVX512)
    return (uint32_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(lb), _mm512_set1_ps(best), _CMP_LE_OQ);
#elif defined(IQKT_HAVE_AVX2)
    __m256 vb = _mm256_set1_ps(best);
    return (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(lb), vb, _CMP_LE_OQ))
         | ((uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(lb + 8), vb, _CMP_LE_OQ)) << 8);
#else
    uint32_t m = 0;
    for (int b = 0; b < 16; b++) m |= (uint32_t)(lb[b] <= best) << b;
    return m;
#endif
}

#if !defined(IQKT_HAVE_AVX512) && !defined(IQKT_HAVE_AVX2) && !defined(IQKT_HAVE_NEON)
/* int8 -> float by table in the portable build: a plain conversion there is
 * a sign extension plus cvtsi2ss with a false dependency, and the scan and
 * the bounds convert 16 and 2 values per coordinate of a block. */
static const float iqkt_i8_f32[256] = {
    -128.f, -127.f, -126.f, -125.f, -124.f, -123.f, -122.f, -121.f, -120.f, -119.f, -118.f, -117.f, -116.f, -115.f, -114.f, -113.f,
    -112.f, -111.f, -110.f, -109.f, -108.f, -107.f, -106.f, -105.f, -104.f, -103.f, -102.f, -101.f, -100.f, -99.f, -98.f, -97.f,
    -96.f, -95.f, -94.f, -93.f, -92.f, -91.f, -90.f, -89.f, -88.f, -87.f, -86.f, -85.f, -84.f, -83.f, -82.f, -81.f,
    -80.f, -79.f, -78.f, -77.f, -76.f, -75.f, -74.f, -73.f, -72.f, -71.f, -70.f, -69.f, -68.f, -67.f, -66.f, -65.f,
    -64.f, -63.f, -62.f, -61.f, -60.f, -59.f, -58.f, -57.f, -56.f, -55.f, -54.f, -53.f, -52.f, -51.f, -50.f, -49.f,
    -48.f, -47.f, -46.f, -45.f, -44.f, -43.f, -42.f, -41.f, -40.f, -39.f, -38.f, -37.f, -36.f, -35.f, -34.f, -33.f,
    -32.f, -31.f, -30.f, -29.f, -28.f, -27.f, -26.f, -25.f, -24.f, -23.f, -22.f, -21.f, -20.f, -19.f, -18.f, -17.f,
    -16.f, -15.f, -14.f, -13.f, -12.f, -11.f, -10.f, -9.f, -8.f, -7.f, -6.f, -5.f, -4.f, -3.f, -2.f, -1.f,
    0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f, 9.f, 10.f, 11.f, 12.f, 13.f, 14.f, 15.f,
    16.f, 17.f, 18.f, 19.f, 20.f, 21.f, 22.f, 23.f, 24.f, 25.f, 26.f, 27.f, 28.f, 29.f, 30.f, 31.f,
    32.f, 33.f, 34.f, 35.f, 36.f, 37.f, 38.f, 39.f, 40.f, 41.f, 42.f, 43.f, 44.f, 45.f, 46.f, 47.f,
    48.f, 49.f, 50.f, 51.f, 52.f, 53.f, 54.f, 55.f, 56.f, 57.f, 58.f, 59.f, 60.f, 61.f, 62.f, 63.f,
    64.f, 65.f, 66.f, 67.f, 68.f, 69.f, 70.f, 71.f, 72.f, 73.f, 74.f, 75.f, 76.f, 77.f, 78.f, 79.f,
    80.f, 81.f, 82.f, 83.f, 84.f, 85.f, 86.f, 87.f, 88.f, 89.f, 90.f, 91.f, 92.f, 93.f, 94.f, 95.f,
    96.f, 97.f, 98.f, 99.f, 100.f, 101.f, 102.f, 103.f, 104.f, 105.f, 106.f, 107.f, 108.f, 109.f, 110.f, 111.f,
    112.f, 113.f, 114.f, 115.f, 116.f, 117.f, 118.f, 119.f, 120.f, 121.f, 122.f, 123.f, 124.f, 125.f, 126.f, 127.f,
};
#endif

IQKT_INLINE void iqkt_scan_codes(const int8_t *vals, const uint16_t *idx, int nblk, int dim,
                                   const float *t, const float *w, float *best_e, int32_t *best_i) {
    float be = *best_e;
    int32_t bi = *best_i;
    for (int b = 0; b < nblk; b++) {
        const int8_t *c = vals + (size_t)b * dim * 16;
        const uint16_t *ib = idx + 16 * b;
#if defined(IQKT_HAVE_AVX512)
        iqkt_pick16(iqkt_dist16(c, dim, t, w), ib, &be, &bi);
#elif defined(IQKT_HAVE_AVX2)
        __m256 e0, e1;
        iqkt_dist16_avx2(c, dim, t, w, &e0, &e1);
        iqkt_pick16_avx2(e0, e1, ib, &be, &bi);
#elif defined(IQKT_HAVE_NEON)
        float32x4_t e[4];
        for (int h = 0; h < 4; h++) e[h] = vdupq_n_f32(0.0f);
        for (int k = 0; k < dim; k++) {
            float32x4_t tk = vdupq_n_f32(t[k]), wk = vdupq_n_f32(w[k]);
            int8x16_t c8 = vld1q_s8(c + 16 * k);
            int16x8_t c16[2] = { vmovl_s8(vget_low_s8(c8)), vmovl_s8(vget_high_s8(c8)) };
            for (int h = 0; h < 4; h++) {
                int16x4_t c4 = (h & 1) ? vget_high_s16(c16[h >> 1]) : vget_low_s16(c16[h >> 1]);
                float32x4_t ck = vcvtq_f32_s32(vmovl_s16(c4));
                /* vfmaq (fused, as every variant); never vmlaq (not fused). */
                float32x4_t diff = vsubq_f32(tk, ck);
                e[h] = vfmaq_f32(e[h], vmulq_f32(wk, diff), diff);
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
        /* Screen with unfused arithmetic (plain loops the compiler can
         * vectorise; fmaf may be a library call here), then take the exact
         * fused distance of the few lanes that could still win.  The two
         * differ by at most 24 roundings of 2^-24 relative (every term is
         * >= 0, so no partial sum exceeds the total), or 24 of 2^-150
         * absolute among subnormals: a lane whose fused distance is <= be
         * has an unfused one <= be * (1 + 2^-17) + 1e-42. */
        float e[16];
        for (int l = 0; l < 16; l++) e[l] = 0.0f;
        for (int k = 0; k < dim; k++)
            for (int l = 0; l < 16; l++) {
                float diff = t[k] - iqkt_i8_f32[c[16 * k + l] + 128];
                e[l] = e[l] + (w[k] * diff) * diff;
            }
        for (int l = 0; l < 16; l++) {
            if (!(e[l] <= be * (1.0f + 1.0f / 131072.0f) + 1e-42f))
                continue;
            float ex = 0.0f;
            for (int k = 0; k < dim; k++) {
                float diff = t[k] - iqkt_i8_f32[c[16 * k + l] + 128];
                ex = iqkt_fma(w[k] * diff, diff, ex);
            }
            if (iqkt_better(ex, ib[l], be, bi)) { be = ex; bi = ib[l]; }
        }
#endif
    }
    *best_e = be;
    *best_i = bi;
}

/* Scan the blocks b (0..15) of a chunk whose bit is set in mask and whose
 * bound lb[b] can still beat the best (re-checked as the best improves).
 * AVX512 scans two blocks at a time: one block's distance is a chain of dim
 * dependent adds, two chains keep the adder busy.  The result is the minimum
 * in (distance, index) order, so it does not depend on the visiting order. */

IQKT_INLINE void iqkt_scan_masked(const int8_t *vals, const uint16_t *idx, uint32_t mask,
                                    const float *lb, int dim, const float *t, const float *w,
                                    float *best_e, int32_t *best_i) {
#if defined(IQKT_HAVE_AVX512)
    __m512 lbv = _mm512_loadu_ps(lb);
    while (mask) {
        int a = iqkt_lowest_bit(mask);
        mask &= mask - 1;
        if (!mask) {
            iqkt_pick16(iqkt_dist16(vals + (size_t)a * dim * 16, dim, t, w), idx + 16 * a, best_e, best_i);
            break;
        }
        int b = iqkt_lowest_bit(mask);
        mask &= mask - 1;
        __m512 ea = iqkt_dist16(vals + (size_t)a * dim * 16, dim, t, w);
        __m512 eb = iqkt_dist16(vals + (size_t)b * dim * 16, dim, t, w);
        iqkt_pick16(ea, idx + 16 * a, best_e, best_i);
        iqkt_pick16(eb, idx + 16 * b, best_e, best_i);
        /* Drop the blocks the improved best now excludes, all at once. */
        mask &= (uint32_t)_mm512_cmp_ps_mask(lbv, _mm512_set1_ps(*best_e), _CMP_LE_OQ);
    }
#elif defined(IQKT_HAVE_AVX2)
    while (mask) {
        int a = iqkt_lowest_bit(mask);
        mask &= mask - 1;
        float before = *best_e;
        iqkt_scan_codes(vals + (size_t)a * dim * 16, idx + 16 * a, 1, dim, t, w, best_e, best_i);
        if (*best_e != before)      /* drop the blocks the improved best excludes, at once */
            mask &= iqkt_le_mask16(lb, *best_e);
    }
#else
    while (mask) {
        int a = iqkt_lowest_bit(mask);
        mask &= mask - 1;
        if (lb[a] <= *best_e)
            iqkt_scan_codes(vals + (size_t)a * dim * 16, idx + 16 * a, 1, dim, t, w, best_e, best_i);
    }
#endif
}

/* Append base + b for every bit b set in mask to list[n..]; returns the new
 * count.  list must have room for n + 16 entries.  No branch per block: the
 * survivors of a chunk's bounds are collected, then scanned together. */
IQKT_INLINE int iqkt_append_mask(int32_t *list, int n, int32_t base, uint32_t mask) {
#if defined(IQKT_HAVE_AVX512)
    __m512i ids = _mm512_add_epi32(_mm512_set1_epi32(base),
                                   _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    /* Register compress + full store (list has 16 spare slots): the
     * compress-to-memory form is microcoded and slow on some cores (Zen 4). */
    _mm512_storeu_si512((void *)(list + n), _mm512_maskz_compress_epi32((__mmask16)mask, ids));
    return n + __builtin_popcount(mask & 0xFFFFu);
#else
    for (int b = 0; b < 16; b++) {
        list[n] = base + b;
        n += (int)((mask >> b) & 1u);
    }
    return n;
#endif
}

/* Scan the blocks list[0..n) (any order) into the (e, index) minimum.  The
 * blocks are independent, so on AVX512 they keep per-lane running minima
 * and reduce once: no branch per block, and the distance chains of many
 * blocks overlap.  Other ISAs scan block by block; the minimum is the same. */
IQKT_INLINE void iqkt_scan_list(const int8_t *vals, const uint16_t *idx, const int32_t *list, int n,
                                int dim, const float *t, const float *w, float *best_e, int32_t *best_i) {
#if defined(IQKT_HAVE_AVX512)
    /* Two independent running minima (even and odd list entries): the
     * compare-and-select of one block waits on the previous block's. */
    __m512 re0 = _mm512_set1_ps(HUGE_VALF), re1 = re0;
    __m512i ri0 = _mm512_set1_epi32(0x7FFFFFFF), ri1 = ri0;
    int j = 0;
    for (; j + 1 < n; j += 2) {
        size_t b0 = (size_t)list[j], b1 = (size_t)list[j + 1];
        __m512 e0 = iqkt_dist16(vals + b0 * dim * 16, dim, t, w);
        __m512 e1 = iqkt_dist16(vals + b1 * dim * 16, dim, t, w);
        __m512i i0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(idx + 16 * b0)));
        __m512i i1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(idx + 16 * b1)));
        iqkt_runmin_step(&re0, &ri0, e0, i0);
        iqkt_runmin_step(&re1, &ri1, e1, i1);
    }
    if (j < n) {
        size_t b0 = (size_t)list[j];
        iqkt_runmin_step(&re0, &ri0, iqkt_dist16(vals + b0 * dim * 16, dim, t, w),
                         _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(idx + 16 * b0))));
    }
    iqkt_runmin_step(&re0, &ri0, re1, ri1);
    iqkt_pick16_vec(re0, ri0, best_e, best_i);
#elif defined(IQKT_HAVE_AVX2)
    __m256 re0 = _mm256_set1_ps(HUGE_VALF), re1 = re0;
    __m256i ri0 = _mm256_set1_epi32(0x7FFFFFFF), ri1 = ri0;
    for (int j = 0; j < n; j++) {
        size_t b = (size_t)list[j];
        __m256 e0, e1;
        iqkt_dist16_avx2(vals + b * dim * 16, dim, t, w, &e0, &e1);
        __m128i i16 = _mm_loadu_si128((const __m128i *)(idx + 16 * b));
        __m128i i16h = _mm_loadu_si128((const __m128i *)(idx + 16 * b + 8));
        iqkt_runmin_step8(&re0, &ri0, e0, _mm256_cvtepu16_epi32(i16));
        iqkt_runmin_step8(&re1, &ri1, e1, _mm256_cvtepu16_epi32(i16h));
    }
    iqkt_runmin_step8(&re0, &ri0, re1, ri1);
    iqkt_pick8_vec_avx2(re0, ri0, best_e, best_i);
#else
    for (int j = 0; j < n; j++)
        iqkt_scan_codes(vals + (size_t)list[j] * dim * 16, idx + 16 * (size_t)list[j], 1, dim, t, w,
                        best_e, best_i);
#endif
}

/* Start fetching the codes and indices of the blocks set in mask (a hint:
 * the scan that follows reads them in turn, each miss would otherwise wait
 * for the previous block's pick). */
IQKT_INLINE void iqkt_prefetch_blocks(const int8_t *vals, const uint16_t *idx, uint32_t mask, int dim) {
    while (mask) {
        int a = iqkt_lowest_bit(mask);
        mask &= mask - 1;
        const int8_t *c = vals + (size_t)a * dim * 16;
        for (int k = 0; k < dim * 16; k += 64)
            iqkt_prefetch(c + k);
        iqkt_prefetch(idx + 16 * a);
    }
}

/* Lower bounds of the scan's distance for nb <= 16 blocks of codes from their
 * bounding boxes: lb[b] = fma(w[k] * g, g, lb[b]) over k, g = the gap
 * between t[k] and [lo, hi] = [box[32*k + b], box[32*k + 16 + b]] (0 inside).
 * Same operations in the same order as the scan with |diff| >= g, and float
 * rounding is monotone, so lb[b] <= every distance the scan computes in block
 * b (the portable build sums unfused and shrinks the result instead): a block
 * with lb[b] > best cannot hold the minimum.  Only which blocks get scanned
 * depends on lb, never the result.  The box of 16 blocks is one
 * contiguous run of dim * 32 int8 (a few cache lines; the values are integers,
 * exact in float); lanes >= nb are garbage.  Returns the mask of the blocks
 * b < nb with lb[b] <= best. */
IQKT_INLINE uint32_t iqkt_block_bounds(const int8_t *box, int nb, int dim, const float *t,
                                       const float *w, float best, float *lb) {
    uint32_t valid = (nb >= 16) ? 0xFFFFu : ((1u << nb) - 1u);
#if defined(IQKT_HAVE_AVX512)
    __m512 e = _mm512_setzero_ps(), zero = _mm512_setzero_ps();
    for (int k = 0; k < dim; k++) {
        __m512 tk = _mm512_set1_ps(t[k]);
        __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(box + 32 * k))));
        __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(box + 32 * k + 16))));
        __m512 g = _mm512_max_ps(_mm512_sub_ps(lo, tk), _mm512_sub_ps(tk, hi));
        g = _mm512_max_ps(g, zero);
        e = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(w[k]), g), g, e);
    }
    _mm512_storeu_ps(lb, e);
    return valid & (uint32_t)_mm512_cmp_ps_mask(e, _mm512_set1_ps(best), _CMP_LE_OQ);
#elif defined(IQKT_HAVE_AVX2)
    __m256 e0 = _mm256_setzero_ps(), e1 = _mm256_setzero_ps(), zero = _mm256_setzero_ps();
    for (int k = 0; k < dim; k++) {
        __m256 tk = _mm256_set1_ps(t[k]), wk = _mm256_set1_ps(w[k]);
        const int8_t *bk = box + 32 * k;     /* 8-byte loads: sign-extended straight from memory */
        __m256 l0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)bk)));
        __m256 l1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(bk + 8))));
        __m256 h0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(bk + 16))));
        __m256 h1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(bk + 24))));
        __m256 g0 = _mm256_max_ps(_mm256_sub_ps(l0, tk), _mm256_sub_ps(tk, h0));
        __m256 g1 = _mm256_max_ps(_mm256_sub_ps(l1, tk), _mm256_sub_ps(tk, h1));
        g0 = _mm256_max_ps(g0, zero);
        g1 = _mm256_max_ps(g1, zero);
        e0 = _mm256_fmadd_ps(_mm256_mul_ps(wk, g0), g0, e0);
        e1 = _mm256_fmadd_ps(_mm256_mul_ps(wk, g1), g1, e1);
    }
    _mm256_storeu_ps(lb, e0);
    _mm256_storeu_ps(lb + 8, e1);
    __m256 vb = _mm256_set1_ps(best);
    return valid & ((uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(e0, vb, _CMP_LE_OQ))
                    | ((uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(e1, vb, _CMP_LE_OQ)) << 8));
#elif defined(IQKT_HAVE_NEON)
    float32x4_t e[4], zero = vdupq_n_f32(0.0f);
    for (int h = 0; h < 4; h++) e[h] = zero;
    for (int k = 0; k < dim; k++) {
        float32x4_t tk = vdupq_n_f32(t[k]), wk = vdupq_n_f32(w[k]);
        int8x16_t l8 = vld1q_s8(box + 32 * k), h8 = vld1q_s8(box + 32 * k + 16);
        int16x8_t l16[2] = { vmovl_s8(vget_low_s8(l8)), vmovl_s8(vget_high_s8(l8)) };
        int16x8_t h16[2] = { vmovl_s8(vget_low_s8(h8)), vmovl_s8(vget_high_s8(h8)) };
        for (int q = 0; q < 4; q++) {
            int16x4_t l4 = (q & 1) ? vget_high_s16(l16[q >> 1]) : vget_low_s16(l16[q >> 1]);
            int16x4_t h4 = (q & 1) ? vget_high_s16(h16[q >> 1]) : vget_low_s16(h16[q >> 1]);
            float32x4_t g = vmaxq_f32(vsubq_f32(vcvtq_f32_s32(vmovl_s16(l4)), tk),
                                      vsubq_f32(tk, vcvtq_f32_s32(vmovl_s16(h4))));
            g = vmaxq_f32(g, zero);
            e[q] = vfmaq_f32(e[q], vmulq_f32(wk, g), g);
        }
    }
    for (int q = 0; q < 4; q++) vst1q_f32(lb + 4 * q, e[q]);
    (void)valid;
    uint32_t m = 0;
    for (int b = 0; b < nb; b++) m |= (uint32_t)(lb[b] <= best) << b;
    return m;
#else
    uint32_t m = 0;
    for (int b = 0; b < nb; b++) lb[b] = 0.0f;
    for (int k = 0; k < dim; k++)
        for (int b = 0; b < nb; b++) {
            float g1 = iqkt_i8_f32[box[32 * k + b] + 128] - t[k];
            float g2 = t[k] - iqkt_i8_f32[box[32 * k + 16 + b] + 128];
            float g = g1 > g2 ? g1 : g2;
            if (!(g > 0.0f)) g = 0.0f;
            lb[b] = lb[b] + (w[k] * g) * g;
        }
    /* Unfused (see the portable scan): shrunk by 2^-18 and 1e-42, more
     * than it can exceed the fused sum by, it stays a lower bound of the
     * scan's distances. */
    for (int b = 0; b < nb; b++) {
        lb[b] = lb[b] * (1.0f - 1.0f / 262144.0f) - 1e-42f;
        m |= (uint32_t)(lb[b] <= best) << b;
    }
    (void)valid;
    return m;
#endif
}

#include "kt_mm.h"

#endif /* IQKT_KT_SIMD_H */
