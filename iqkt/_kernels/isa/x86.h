/* Helpers shared by the AVX2 and AVX512 variants. */
#ifndef IQKT_ISA_X86_H
#define IQKT_ISA_X86_H

#include <immintrin.h>

/* Sum of the 8 lanes of v in iqkt_mm_sum8's order: ((f0 + f4) + (f2 + f6)) +
 * ((f1 + f5) + (f3 + f7)), with shuffles instead of a store. */
static inline float iqkt_mm_sum8_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The x86 GEMV kernels' shapes follow two facts of the type table: 4 values
 * per codebook index (IQ4_KT; its 15-bit split indices) or 8, and values that
 * are magnitudes signed by a bit plane (IQ3_KT).  The kernels are force-inlined
 * with a constant type, so these fold to constants. */
IQKT_ALWAYS_INLINE int iqkt_mm_groups4(int type) { return iqkt_type_info(type)->group_size == 4; }
IQKT_ALWAYS_INLINE int iqkt_mm_sign_plane(int type) { return iqkt_type_info(type)->sign_plane; }

/* IQ3 sign bits transposed for the step-major kernels: byte j of wk[k] =
 * qh[8j + k], i.e. the signs of step k of group j of every block (bit = block). */
static inline void iqkt_mm_iq3_sign_words(const uint8_t *sb, uint32_t wk[8]) {
    const __m256i QHT = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
                                         0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    __m256i t = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(sb + 68)), QHT);
    __m128i lo = _mm256_castsi256_si128(t), hi = _mm256_extracti128_si256(t, 1);
    _mm_storeu_si128((__m128i *)wk, _mm_unpacklo_epi16(lo, hi));
    _mm_storeu_si128((__m128i *)(wk + 4), _mm_unpackhi_epi16(lo, hi));
}

/* iqkt_mm_dot32_f64 (generic.h's order) in ymm lanes: a holds s8[0..3], b
 * s8[4..7], then s4 = a + b, then (s4[0] + s4[1]) + (s4[2] + s4[3]). */
static inline double iqkt_mm_dot32_f64(const double *w, const double *x) {
    __m256d s[2];
    for (int h = 0; h < 2; h++) {
        const double *wh = w + 4 * h, *xh = x + 4 * h;
        __m256d p0 = _mm256_mul_pd(_mm256_loadu_pd(wh), _mm256_loadu_pd(xh));
        __m256d p1 = _mm256_mul_pd(_mm256_loadu_pd(wh + 8), _mm256_loadu_pd(xh + 8));
        __m256d p2 = _mm256_mul_pd(_mm256_loadu_pd(wh + 16), _mm256_loadu_pd(xh + 16));
        __m256d p3 = _mm256_mul_pd(_mm256_loadu_pd(wh + 24), _mm256_loadu_pd(xh + 24));
        s[h] = _mm256_add_pd(_mm256_add_pd(p0, p1), _mm256_add_pd(p2, p3));
    }
    __m256d s4 = _mm256_add_pd(s[0], s[1]);
    __m128d t = _mm_hadd_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}
#define IQKT_ISA_HAS_MM_DOT32_F64 1

#endif /* IQKT_ISA_X86_H */
