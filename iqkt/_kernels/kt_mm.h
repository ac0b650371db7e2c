/* mul_mat helpers: KT weight rows dotted with int16-quantized activations.
 *
 * Included from kt_simd.h (after the ISA detection there); used only by the
 * mul_mat kernels in kt_kernels.pxi.  Kept apart from the quantizer helpers.
 *
 * The arithmetic contract, identical on every ISA:
 *   - activations come quantized per block of 32 as x16 (|x16| <= IQKT_MM_XMAX)
 *     with a float scale s (kt_quantize_activations);
 *   - for each weight block, dot = sum_k value_k * x16_k is computed exactly in
 *     int32 (value_k is the signed trellis value, |value| <= 126, so
 *     |dot| <= 32 * 126 * 8000 < 2^31);
 *   - the row result is sum_blocks (float(block_scale) * s) * float(dot).
 * Only the order of that last float sum differs between ISAs (vector lanes),
 * which is why variants agree to ~1e-7 relative rather than bit for bit.
 * AVX512 fixes that order as: 8 partial sums, slot j = blocks j, j+8, j+16, ...
 * each FMA'd in block order, then added by iqkt_mm_sum8; its B = 1, "pairs"
 * batch and GEMM batch kernels all follow it, so they agree bit for bit.
 *
 * Why int16 activations and not int8: a single int8 plane per 32-block was
 * measured at 2.6% error on one golden case (the limit is 1%); int16 blocks are
 * accurate to ~1e-4 and, with the trellis values computed in 32-bit lanes, cost
 * the same as int8 (one vpdpwssd per 16 weights on AVX512-VNNI).
 *
 * Why the trellis is computed, not looked up, in the x86 GEMV kernels: each
 * group needs one 64-byte line of a 512 KiB table that lives in L2.  Measured
 * on Zen4 (4096 x 4096 IQ2, one thread, C prototypes): compute 0.96 ms;
 * vpgatherqq lookups 1.9-2.0 ms (1.9 ms even with the table in L1: the gather
 * instruction itself is slow there); 8 scalar 64-bit loads per 64 weights
 * 1.45 ms (0.82 ms with an L1-resident table, so L2 line traffic is the cap);
 * half lookups / half compute 1.38 ms (the two do not overlap well); AVX2
 * lookups did not beat AVX2 compute either (random 8-byte loads from the
 * 512 KiB table: ~0.7 ns each here, about the cost of computing 8 IQ2 values;
 * IQ2 with 1/4, 1/2, 3/4 of the vectors looked up was not faster than all
 * computed).  Lookups are used where the
 * decoded values are reused many times: the AVX512 GEMM batch kernel, and
 * scalar / NEON.
 *
 * Activation "lanes": each activation row is re-laid out once per call by
 * iqkt_mm_prepare into 4 bytes per element (block stride 128 bytes), in the
 * layout the ISA's inner loop wants:
 *   avx512: uint32 lane = (uint16)x16      (high half zero, for vpdpwssd), in the
 *           step-major order of the AVX512 kernels (depends on the weight type)
 *   avx2:   IQ2/IQ4: uint32 lane = x16 in both 16-bit halves (for vpmaddwd on
 *           byte-pair sums), in the step-major order of the AVX2 kernel
 *           (iqkt_mm_lane_pos_avx2); IQ3: int16 pairs (below)
 * The batch kernels (AVX512 for 2 <= nb < IQKT_MM_GEMM_MIN, AVX2 for
 * nb > IQKT_MM_NB) and the AVX2 IQ3 kernels use int16 pairs instead (2 bytes
 * per element, see iqkt_mm_prepare, iqkt_mm_pair_pos_avx2); the AVX512 GEMM kernel (nb >= IQKT_MM_GEMM_MIN) interleaves
 * the activation rows (iqkt_mm_prepare_rows).
 *   neon:   per block 32 int8 "hi" then 32 int8 "lo" with x16 = 256*hi + lo
 *   scalar: per block 32 int16 x16
 * bsum[block] = sum of the block's x16 (used where the -126 bias of the
 * trellis values is applied after the product).
 */
#ifndef IQKT_KT_MM_H
#define IQKT_KT_MM_H

#include <stdint.h>
#include <string.h>

#include "iqkt_types.h"
#include "kt_decode.h"

#if defined(_MSC_VER)
#  define IQKT_ALWAYS_INLINE static __forceinline
#else
#  define IQKT_ALWAYS_INLINE static inline __attribute__((always_inline))
#endif

/* |x16| bound.  8000 (13 bits + sign): ~1e-4 relative product accuracy,
 * far inside the 1% budget, with wide int32 headroom in every kernel
 * (a group dot is at most 8 * 126 * 8000) and an exact NEON hi/lo split. */
#define IQKT_MM_XMAX 8000
#define IQKT_MM_NB 4              /* activation rows per pass over a weight row */
#define IQKT_MM_TILE 4            /* weight rows per tile in the batch kernels */
#define IQKT_MM_KC 8              /* super-blocks per K chunk in the batch kernels */
#define IQKT_MM_LANE_BYTES 4      /* bytes of lanes per activation element */

/* Type ids and format facts: iqkt_types.h; block decode: kt_decode.h. */
#define iqkt_mm_sb_bytes(type) (iqkt_type_info(type)->block_bytes)

/* Powers of the trellis multiplier: state_k = seed * M^k, so every step of a
 * group is one independent multiply (no serial chain). */
#define IQKT_M1 0xcbac1fedu
#define IQKT_M2 0xc8734169u
#define IQKT_M3 0xbd2b4535u
#define IQKT_M4 0xe50c7d11u
#define IQKT_M5 0x1220d7bdu
#define IQKT_M6 0x94839cf9u
#define IQKT_M7 0x58267985u
#define IQKT_M8 0x60b19b21u

/* Integer block scale of block b of a super-block. */
IQKT_ALWAYS_INLINE int iqkt_mm_block_scale(int type, const uint8_t *sb, int b) {
    return iqkt_block_scale(iqkt_type_info(type), sb, b);
}

/* The fixed order in which the AVX512 kernels add their 8 per-block-slot
 * partial sums (slot j = blocks j, j + 8, j + 16, ... of a row); the B = 1
 * and batch kernels both end with it, which keeps them bit-identical. */
static inline float iqkt_mm_sum8(const float f[8]) {
    return ((f[0] + f[4]) + (f[2] + f[6])) + ((f[1] + f[5]) + (f[3] + f[7]));
}

/* Position (within its super-block) of the activation that the AVX512
 * kernels read at lane-slot e (0..255) of a super-block: see the step-major
 * layout described above iqkt_mm_row_iq23_avx512. */
static inline int iqkt_mm_lane_pos(int type, int e) {
    int l = e & 15, k = (e >> 4) & 7;
    if (type == IQKT_IQ4_KT) {
        int q = e >> 6;
        k = (e >> 4) & 3;
        return 4 * (16 * q + l) + k;
    }
    int h = e >> 7;
    return 8 * (4 * (4 * h + (l & 3)) + (l >> 2)) + k;
}

/* Position (within its super-block) of the activation that the AVX2 kernel
 * reads at lane-slot e (0..255) of a super-block: vector v = e / 64 (IQ4:
 * o = e / 32), step k, lane l; see iqkt_mm_row_avx2. */
static inline int iqkt_mm_lane_pos_avx2(int type, int e) {
    int l = e & 7;
    if (type == IQKT_IQ4_KT)
        return 32 * (e >> 5) + 4 * l + ((e >> 3) & 3);
    return 32 * (2 * (e >> 6) + (l >> 2)) + 8 * (l & 3) + ((e >> 3) & 7);
}

/* Position (within its super-block) of the activation at word h (0, 1) of
 * int32 lane l of vector m (0..15) of the AVX2 "pair" layout: the lane holds
 * two steps of one group (see iqkt_mm_decode_pairs_avx2).  IQ2 / IQ4 pair
 * the steps 2kp, 2kp+1 of the step-major row kernel's lanes (m = 4v + kp,
 * resp. 2o + kp); IQ3 uses block vectors: m = 2b + q holds steps 4q..4q+3 of
 * the 4 groups of block b, lane l = group 2(l >> 2) + ((l >> 1) & 1), steps
 * 4q + 2(l & 1) + h (see iqkt_mm_iq3_pairs_avx2). */
static inline int iqkt_mm_pair_pos_avx2(int type, int m, int l, int h) {
    if (type == IQKT_IQ3_KT)
        return 32 * (m >> 1) + 8 * (2 * (l >> 2) + ((l >> 1) & 1)) + 4 * (m & 1) + 2 * (l & 1) + h;
    int e0 = (type == IQKT_IQ4_KT) ? 32 * (m >> 1) + 16 * (m & 1) + l : 64 * (m >> 2) + 16 * (m & 3) + l;
    return iqkt_mm_lane_pos_avx2(type, e0 + 8 * h);
}

/* Whether the AVX2 kernels read activation rows in the pair layout (2 bytes
 * per element, 512 bytes per super-block) rather than the 4-byte lanes. */
static inline int iqkt_mm_pairs_avx2(int type, int64_t nb) {
    return type == IQKT_IQ3_KT || nb > IQKT_MM_NB;
}

/* Whether a product with nb activation rows uses the batch kernel (AVX512, AVX2)
 * (decoded int16 weight tiles, "pair" activation layout). */
static inline int iqkt_mm_use_batch(int64_t nb) {
#if defined(IQKT_HAVE_AVX512)
    return nb >= 2;
#elif defined(IQKT_HAVE_AVX2)
    return nb > IQKT_MM_NB;   /* up to IQKT_MM_NB rows share one trellis pass */
#else
    (void)nb;
    return 0;
#endif
}

/* Whether a batch product with nb activation rows uses the AVX512 GEMM
 * kernel (activation rows in the lanes) rather than the "pairs" kernel.  Both
 * are bound by vpdpwssd (32 int16 multiply-adds each); the GEMM saves the
 * per-row reductions but pays for codebook lookups and for partly filled
 * 16-row vectors.  Measured on Zen4 (4096 x 4096, one thread, ms, pairs /
 * GEMM): IQ2 nb=16 5.6 / 6.6, 32 9.5 / 10.3, 48 13.6 / 14.1, 64 24.2 / 21.3;
 * IQ4 nb=32 11.8 / 15.0, 48 23.0 / 18.4, 64 29.6 / 23.5 (noisy machine). */
#ifndef IQKT_MM_GEMM_MIN
#define IQKT_MM_GEMM_MIN 40
#endif
static inline int iqkt_mm_use_gemm(int64_t nb) {
#if defined(IQKT_HAVE_AVX512)
    return nb >= IQKT_MM_GEMM_MIN;
#else
    (void)nb;
    return 0;
#endif
}

/* Lanes layout of one activation row for weights of the given type, in a
 * product with nb activation rows (see the header comment). */
static void iqkt_mm_prepare(int type, int64_t nb, const int16_t *x16, int64_t n, uint8_t *lanes, int32_t *bsum) {
    for (int64_t blk = 0; blk < n / 32; blk++) {
        const int16_t *xb = x16 + 32 * blk;
        int32_t s = 0;
        for (int k = 0; k < 32; k++) s += xb[k];
        bsum[blk] = s;
    }
#if defined(IQKT_HAVE_AVX512)
    if (iqkt_mm_use_batch(nb)) {
        /* vector m (0..7) of a super-block, lane l: the activations of steps
         * 2kp and 2kp+1 of that lane, as an int16 pair (see iqkt_mm_decode_pairs). */
        for (int64_t ib = 0; ib < n / 256; ib++) {
            for (int m = 0; m < 8; m++) {
                for (int l = 0; l < 16; l++) {
                    int e0, kp = (type == IQKT_IQ4_KT) ? (m & 1) : (m & 3);
                    if (type == IQKT_IQ4_KT) e0 = 64 * (m >> 1) + 16 * (2 * kp) + l;
                    else e0 = 128 * (m >> 2) + 16 * (2 * kp) + l;
                    int16_t a = x16[256 * ib + iqkt_mm_lane_pos(type, e0)];
                    int16_t c = x16[256 * ib + iqkt_mm_lane_pos(type, e0 + 16)];
                    memcpy(lanes + 512 * ib + 64 * m + 4 * l, &a, 2);
                    memcpy(lanes + 512 * ib + 64 * m + 4 * l + 2, &c, 2);
                }
            }
        }
        return;
    }
    for (int64_t ib = 0; ib < n / 256; ib++) {
        for (int e = 0; e < 256; e++) {
            uint32_t v = (uint16_t)x16[256 * ib + iqkt_mm_lane_pos(type, e)];
            memcpy(lanes + 1024 * ib + 4 * e, &v, 4);
        }
    }
#elif defined(IQKT_HAVE_AVX2)
    if (iqkt_mm_pairs_avx2(type, nb)) {
        /* vector m of a super-block, lane l: the activations of the lane's two
         * steps as an int16 pair (iqkt_mm_pair_pos_avx2) */
        for (int64_t ib = 0; ib < n / 256; ib++)
            for (int m = 0; m < 16; m++)
                for (int l = 0; l < 8; l++)
                    for (int h = 0; h < 2; h++) {
                        int16_t a = x16[256 * ib + iqkt_mm_pair_pos_avx2(type, m, l, h)];
                        memcpy(lanes + 512 * ib + 32 * m + 4 * l + 2 * h, &a, 2);
                    }
        return;
    }
    /* IQ2 / IQ4 step-major lanes (iqkt_mm_lane_pos_avx2) carrying (x16, x16) */
    for (int64_t ib = 0; ib < n / 256; ib++) {
        for (int e = 0; e < 256; e++) {
            uint32_t v = (uint16_t)x16[256 * ib + iqkt_mm_lane_pos_avx2(type, e)] * 0x00010001u;
            memcpy(lanes + 1024 * ib + 4 * e, &v, 4);
        }
    }
#else
    (void)type;
    for (int64_t blk = 0; blk < n / 32; blk++) {
        const int16_t *xb = x16 + 32 * blk;
        uint8_t *lb = lanes + 128 * blk;
#  if defined(IQKT_HAVE_NEON)
        for (int k = 0; k < 32; k++) {
            int hi = (xb[k] + 128) >> 8;          /* floor: lo in [-128, 127] */
            lb[k] = (uint8_t)(int8_t)hi;
            lb[32 + k] = (uint8_t)(int8_t)(xb[k] - 256 * hi);
        }
#  else
        memcpy(lb, xb, 64);
#  endif
    }
#endif
}

/* Lanes of nrows activation rows (x16: nrows x n) into lanes (nrows x
 * IQKT_MM_LANE_BYTES * n bytes) and bsum (nrows x n/32).  Row by row
 * (iqkt_mm_prepare), except for the AVX512 batch kernel, whose layout
 * interleaves the rows: activation rows 16v .. 16v + w - 1 (w <= 16) take
 * bytes [32 v n, 32 v n + 2 w n), holding for block blk and pair p (0..15)
 * w int32 lanes, lane l = x16 elements 2p, 2p + 1 of that block of row 16v + l
 * (int16 pair), at int32 index (16 blk + p) w + l. */
static void iqkt_mm_prepare_rows(int type, int64_t nrows, const int16_t *x16, int64_t n, uint8_t *lanes,
                                 int32_t *bsum) {
#if defined(IQKT_HAVE_AVX512)
    if (iqkt_mm_use_gemm(nrows)) {
        for (int64_t r = 0; r < nrows; r++)
            for (int64_t blk = 0; blk < n / 32; blk++) {
                int32_t s = 0;
                for (int k = 0; k < 32; k++) s += x16[r * n + 32 * blk + k];
                bsum[r * (n / 32) + blk] = s;
            }
        for (int64_t b0 = 0; b0 < nrows; b0 += 16) {
            int w = (int)(nrows - b0 < 16 ? nrows - b0 : 16);
            uint8_t *base = lanes + b0 * 2 * n;
            for (int64_t blk = 0; blk < n / 32; blk++)
                for (int p = 0; p < 16; p++)
                    for (int l = 0; l < w; l++)
                        memcpy(base + 4 * ((16 * blk + p) * w + l), x16 + (b0 + l) * n + 32 * blk + 2 * p, 4);
        }
        return;
    }
#endif
    for (int64_t r = 0; r < nrows; r++)
        iqkt_mm_prepare(type, nrows, x16 + r * n, n, lanes + r * IQKT_MM_LANE_BYTES * n, bsum + r * (n / 32));
}

/* ---- lookup-based block decode (scalar and NEON) ------------------------- */

/* The 32 signed trellis values of block b from the codebook tables cb8
 * (65536 x 8) and cb4 (65536 x 4). */
IQKT_ALWAYS_INLINE void iqkt_mm_decode_block(int type, const uint8_t *sb, int b,
                                        const int8_t *cb8, const int8_t *cb4, int8_t *vals) {
    const iqkt_type_traits *t = iqkt_type_info(type);
    iqkt_decode_values(t, sb, b, t->group_size == 8 ? cb8 : cb4, 1, vals);
}

/* Exact dot of 32 trellis values with one block of lanes. */
static inline int32_t iqkt_mm_block_dot(const int8_t *vals, const uint8_t *lb) {
#if defined(IQKT_HAVE_NEON)
    int8x16_t w0 = vld1q_s8(vals), w1 = vld1q_s8(vals + 16);
    int32x4_t hi = vdotq_s32(vdupq_n_s32(0), w0, vld1q_s8((const int8_t *)lb));
    hi = vdotq_s32(hi, w1, vld1q_s8((const int8_t *)lb + 16));
    int32x4_t lo = vdotq_s32(vdupq_n_s32(0), w0, vld1q_s8((const int8_t *)lb + 32));
    lo = vdotq_s32(lo, w1, vld1q_s8((const int8_t *)lb + 48));
    return 256 * vaddvq_s32(hi) + vaddvq_s32(lo);
#else
    int16_t x[32];
    memcpy(x, lb, 64);
    int32_t s = 0;
    for (int k = 0; k < 32; k++) s += (int32_t)vals[k] * x[k];
    return s;
#endif
}

IQKT_ALWAYS_INLINE void iqkt_mm_row_lookup(int type, const uint8_t *sbs, int64_t nsb,
                                           const uint8_t *lanes, int64_t lstride,
                                           const float *xs, int64_t xstride, int nb, float *out,
                                           const int8_t *cb8, const int8_t *cb4) {
    float acc[IQKT_MM_NB] = {0, 0, 0, 0};
    int8_t vals[32];
    const int sbb = iqkt_mm_sb_bytes(type);
    for (int64_t ib = 0; ib < nsb; ib++) {
        const uint8_t *sb = sbs + ib * sbb;
        for (int b = 0; b < 8; b++) {
            int64_t blk = 8 * ib + b;
            iqkt_mm_decode_block(type, sb, b, cb8, cb4, vals);
            float bs = (float)iqkt_mm_block_scale(type, sb, b);
            for (int bi = 0; bi < nb; bi++) {
                int32_t dot = iqkt_mm_block_dot(vals, lanes + bi * lstride + 128 * blk);
                acc[bi] = acc[bi] + (bs * xs[bi * xstride + blk]) * (float)dot;
            }
        }
    }
    for (int bi = 0; bi < nb; bi++) out[bi] = acc[bi];
}

#if defined(IQKT_HAVE_AVX512) || defined(IQKT_HAVE_AVX2)
/* Sum of the 8 lanes of v in iqkt_mm_sum8's order: ((f0 + f4) + (f2 + f6)) +
 * ((f1 + f5) + (f3 + f7)), with shuffles instead of a store. */
static inline float iqkt_mm_sum8_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

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
#endif

/* ---- AVX512-VNNI: trellis computed in 16 lanes, step-major ---------------
 *
 * A zmm holds step k of 16 different groups (lane = group), so the states
 * are seeds * M^k with no per-group broadcast, and the per-lane integer dot
 * accumulated over the steps is a per-group dot: one int->float convert and
 * one FMA with a per-lane block-scale vector per 16 groups.  The activation
 * lanes are laid out in the same order (iqkt_mm_lane_pos), once per call.
 *
 * IQ2/IQ3 lane order within half h (groups of blocks 4h..4h+3): lane
 * l = 4j + i holds group j of block 4h + i.  With this order the IQ3 sign
 * bits of one step for the 16 lanes are one pext of a 32-bit word.
 * IQ4: lane l of quarter q holds group 16q + l (blocks 2q, 2q+1). */
#if defined(IQKT_HAVE_AVX512)

/* Block dots from per-group dots.  Lane 4j + i of v -> lane i (sum over j). */
static inline __m128i iqkt_mm_sum4x128(__m512i v) {
    __m256i t = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

/* IQ4: v[q] lane l holds a group of block 2q + l / 8; lane b of the result is
 * the sum of block b's 8 lanes. */
static inline __m256i iqkt_mm_sum8x8(const __m512i v[4]) {
    /* 128-bit chunks [a0+a1, a2+a3, b0+b1, b2+b3]: blocks 0..3 (x), 4..7 (y), 4 lanes each */
    __m512i x = _mm512_add_epi32(_mm512_shuffle_i64x2(v[0], v[1], 0x88), _mm512_shuffle_i64x2(v[0], v[1], 0xDD));
    __m512i y = _mm512_add_epi32(_mm512_shuffle_i64x2(v[2], v[3], 0x88), _mm512_shuffle_i64x2(v[2], v[3], 0xDD));
    /* chunk c: [x0+x2, y0+y2, x1+x3, y1+y3]; then lanes 0, 1 = sums of chunk c of x, y */
    __m512i p = _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y));
    p = _mm512_add_epi32(p, _mm512_shuffle_epi32(p, _MM_PERM_BADC));
    const __m512i PERM = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castsi512_si256(_mm512_permutexvar_epi32(PERM, p));
}

/* IQ2/IQ3 seeds (index + 4096) of a super-block in the AVX512 lane order:
 * seeds[h] lane 4j + i = group j of block 4h + i. */
static inline void iqkt_mm_iq23_seeds(const uint8_t *sb, __m512i seeds[2]) {
    /* word o of the permuted index vector: h = o / 16, l = o % 16 -> group 4 * (4h + l%4) + l/4 */
    const __m512i IDXP = _mm512_set_epi16(31, 27, 23, 19, 30, 26, 22, 18, 29, 25, 21, 17, 28, 24, 20, 16,
                                          15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    const __m512i OFF = _mm512_set1_epi32((int)IQKT_TRELLIS_OFFSET);
    __m512i idx = _mm512_permutexvar_epi16(IDXP, _mm512_loadu_si512((const void *)(sb + 4)));
    seeds[0] = _mm512_add_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(idx)), OFF);
    seeds[1] = _mm512_add_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(idx, 1)), OFF);
}

IQKT_ALWAYS_INLINE void iqkt_mm_row_iq23_avx512(const int is_iq3, const uint8_t *sbs, int64_t nsb,
                                                const uint8_t *lanes, int64_t lstride,
                                                const float *xs, int64_t xstride, const int nb,
                                                float *out) {
    static const uint32_t MK[8] = {IQKT_M1, IQKT_M2, IQKT_M3, IQKT_M4, IQKT_M5, IQKT_M6, IQKT_M7, IQKT_M8};
    const __m512i MASK = _mm512_set1_epi32(0x3F3F3F3F);
    const __m512i ONES = _mm512_set1_epi32(0x01010101);
    const __m512i BIAS = _mm512_set1_epi32(-126);
    const __m512i ZERO = _mm512_setzero_si512();
    const int sbb = iqkt_mm_sb_bytes(is_iq3 ? IQKT_IQ3_KT : IQKT_IQ2_KT);
    __m256 facc[IQKT_MM_NB];
    for (int bi = 0; bi < IQKT_MM_NB; bi++) facc[bi] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nsb; ib++) {
        const uint8_t *sb = sbs + ib * sbb;
        __m512i seeds[2];
        iqkt_mm_iq23_seeds(sb, seeds);
        uint32_t wk[8];   /* IQ3: byte j of wk[k] = qh[8j + k]: signs of step k of group j, bit = block */
        if (is_iq3) iqkt_mm_iq3_sign_words(sb, wk);
        float sc[IQKT_MM_NB][8];
        for (int b = 0; b < 8; b++) {
            float bs = (float)iqkt_mm_block_scale(is_iq3 ? IQKT_IQ3_KT : IQKT_IQ2_KT, sb, b);
            for (int bi = 0; bi < nb; bi++) sc[bi][b] = bs * xs[bi * xstride + 8 * ib + b];
        }
        __m512i acc[IQKT_MM_NB][2];   /* [h]: one dpwssd chain per half, the halves interleaved */
        for (int bi = 0; bi < nb; bi++) acc[bi][0] = acc[bi][1] = ZERO;
        for (int k = 0; k < 8; k++) {
            for (int h = 0; h < 2; h++) {
                const uint8_t *lh = lanes + 1024 * ib + 512 * h;
                __m512i st = _mm512_and_si512(_mm512_mullo_epi32(seeds[h], _mm512_set1_epi32((int)MK[k])), MASK);
                __m512i v = _mm512_dpbusd_epi32(BIAS, st, ONES);    /* sum of the 4 masked bytes - 126 */
                if (is_iq3) {
                    v = _mm512_abs_epi32(v);
                    v = _mm512_mask_sub_epi32(v, (__mmask16)_pext_u32(wk[k], 0x0F0F0F0Fu << (4 * h)), ZERO, v);
                }
                for (int bi = 0; bi < nb; bi++)   /* lanes hold (x16, 0) word pairs: adds v * x16 */
                    acc[bi][h] = _mm512_dpwssd_epi32(acc[bi][h], v,
                                                     _mm512_loadu_si512((const void *)(lh + bi * lstride + 64 * k)));
            }
        }
        for (int bi = 0; bi < nb; bi++)   /* lane 4j + i of half h -> block 4h + i */
            facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_set_m128i(iqkt_mm_sum4x128(acc[bi][1]),
                                                                           iqkt_mm_sum4x128(acc[bi][0]))),
                                       _mm256_loadu_ps(sc[bi]), facc[bi]);
    }
    for (int bi = 0; bi < nb; bi++) out[bi] = iqkt_mm_sum8_ps(facc[bi]);
}

/* IQ4 seeds (index + 4096 + 32768 * flag) of groups 16q .. 16q + 15 of a
 * super-block (blocks 2q, 2q + 1), lane l = group 16q + l.  words: the 8 block
 * words in the low half; off: 4096 + 32768 * flag per block, same layout.
 * The 3 high index bits of lane l (block word bits 8 + 3j .. 10 + 3j, j = l % 8)
 * are rotated to bits 12..14 and merged with ql | qh-nibble << 8 by one
 * bit-select. */
IQKT_ALWAYS_INLINE __m512i iqkt_mm_iq4_seeds(const uint8_t *sb, int q, __m512i words, __m512i off) {
    const __m512i ROT = _mm512_setr_epi32(4, 1, 30, 27, 24, 21, 18, 15, 4, 1, 30, 27, 24, 21, 18, 15);
    const __m512i SEL = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                         _mm512_set1_epi32(2 * q));
    __m128i ql = _mm_loadu_si128((const __m128i *)(sb + 32 + 16 * q));
    __m128i qh = _mm_loadu_si128((const __m128i *)(sb + 96 + 16 * (q & 1)));
    if (q >= 2) qh = _mm_srli_epi16(qh, 4);
    qh = _mm_and_si128(qh, _mm_set1_epi8(15));
    __m512i lomid = _mm512_cvtepu16_epi32(_mm256_set_m128i(_mm_unpackhi_epi8(ql, qh), _mm_unpacklo_epi8(ql, qh)));
    __m512i rot = _mm512_rolv_epi32(_mm512_permutexvar_epi32(SEL, words), ROT);
    __m512i id = _mm512_ternarylogic_epi32(_mm512_set1_epi32(0x7000), rot, lomid, 0xCA);   /* mask ? rot : lomid */
    return _mm512_add_epi32(id, _mm512_permutexvar_epi32(SEL, off));
}

static inline __m512i iqkt_mm_iq4_offsets(__m256i w8) {
    return _mm512_castsi256_si512(_mm256_add_epi32(_mm256_slli_epi32(_mm256_and_si256(w8, _mm256_set1_epi32(1)), 15),
                                                   _mm256_set1_epi32((int)IQKT_TRELLIS_OFFSET)));
}

IQKT_ALWAYS_INLINE void iqkt_mm_row_iq4_avx512(const uint8_t *sbs, int64_t nsb,
                                               const uint8_t *lanes, int64_t lstride,
                                               const float *xs, int64_t xstride, const int nb,
                                               float *out) {
    static const uint32_t MK[4] = {IQKT_M1, IQKT_M2, IQKT_M3, IQKT_M4};
    const __m512i MASK = _mm512_set1_epi32(0x3F3F3F3F);
    const __m512i ONES = _mm512_set1_epi32(0x01010101);
    const __m512i BIAS = _mm512_set1_epi32(-126);
    const __m512i ZERO = _mm512_setzero_si512();
    __m256 facc[IQKT_MM_NB];
    for (int bi = 0; bi < IQKT_MM_NB; bi++) facc[bi] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nsb; ib++) {
        const uint8_t *sb = sbs + ib * 128;
        __m512i gd[IQKT_MM_NB][4];
        __m256i w8 = _mm256_loadu_si256((const __m256i *)sb);
        __m512i words = _mm512_castsi256_si512(w8), off = iqkt_mm_iq4_offsets(w8);
        float sc[IQKT_MM_NB][8];
        for (int b = 0; b < 8; b++) {
            float bs = (float)((int)(sb[4 * b] >> 1) - 64);
            for (int bi = 0; bi < nb; bi++) sc[bi][b] = bs * xs[bi * xstride + 8 * ib + b];
        }
        for (int q = 0; q < 4; q++) {    /* groups 16q .. 16q+15 = blocks 2q, 2q+1 */
            __m512i seeds = iqkt_mm_iq4_seeds(sb, q, words, off);
            __m512i acc[IQKT_MM_NB][2];
            for (int bi = 0; bi < nb; bi++) acc[bi][0] = acc[bi][1] = ZERO;
            const uint8_t *lq = lanes + 1024 * ib + 256 * q;
            for (int k = 0; k < 4; k++) {
                __m512i st = _mm512_and_si512(_mm512_mullo_epi32(seeds, _mm512_set1_epi32((int)MK[k])), MASK);
                __m512i v = _mm512_dpbusd_epi32(BIAS, st, ONES);
                for (int bi = 0; bi < nb; bi++)
                    acc[bi][k & 1] = _mm512_dpwssd_epi32(acc[bi][k & 1], v,
                                                         _mm512_loadu_si512((const void *)(lq + bi * lstride + 64 * k)));
            }
            for (int bi = 0; bi < nb; bi++) gd[bi][q] = _mm512_add_epi32(acc[bi][0], acc[bi][1]);
        }
        for (int bi = 0; bi < nb; bi++)
            facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iqkt_mm_sum8x8(gd[bi])), _mm256_loadu_ps(sc[bi]), facc[bi]);
    }
    for (int bi = 0; bi < nb; bi++) out[bi] = iqkt_mm_sum8_ps(facc[bi]);
}

/* Batch kernel for a few activation rows (2 <= nb < IQKT_MM_GEMM_MIN).
 * Each super-block of a weight row is decoded once (trellis computed, as in
 * the B = 1 kernels) into 8 zmm of int16 pairs (steps 2kp, 2kp+1 of a lane's
 * group), so the product with one activation row is one vpdpwssd per 32
 * weights; the group dots are then reduced to block dots, scaled and FMA'd
 * exactly as in the B = 1 kernels, so the result is bit-for-bit the same.
 * Tiles of IQKT_MM_TILE rows share every activation load; K is walked in
 * chunks of IQKT_MM_KC super-blocks so the decoded tile stays in L1. */
IQKT_ALWAYS_INLINE void iqkt_mm_decode_pairs(const int type, const uint8_t *sb, __m512i *dst, __m512 *bsv) {
    static const uint32_t MK[8] = {IQKT_M1, IQKT_M2, IQKT_M3, IQKT_M4, IQKT_M5, IQKT_M6, IQKT_M7, IQKT_M8};
    const __m512i MASK = _mm512_set1_epi32(0x3F3F3F3F);
    const __m512i ZERO = _mm512_setzero_si512();
    const __m512i BYTES = _mm512_set1_epi32(0x01010101);
    const __m512i B126 = _mm512_set1_epi32(-126);
    const __mmask32 HI = 0xAAAAAAAAu;
    const __m512i ONES = BYTES;
    float bsf[8];
    for (int b = 0; b < 8; b++) bsf[b] = (float)iqkt_mm_block_scale(type, sb, b);
    /* per-lane block scales (same lane-to-block map as the value vectors) */
    if (type == IQKT_IQ4_KT) {
        for (int q = 0; q < 4; q++)
            bsv[q] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(bsf[2 * q])), _mm256_set1_ps(bsf[2 * q + 1]), 1);
    } else {
        for (int h = 0; h < 2; h++) bsv[h] = _mm512_broadcast_f32x4(_mm_loadu_ps(bsf + 4 * h));
    }
    if (type == IQKT_IQ4_KT) {
        __m256i w8 = _mm256_loadu_si256((const __m256i *)sb);
        __m512i words = _mm512_castsi256_si512(w8), off = iqkt_mm_iq4_offsets(w8);
        for (int q = 0; q < 4; q++) {
            __m512i seeds = iqkt_mm_iq4_seeds(sb, q, words, off);
            __m512i v[4];
            for (int k = 0; k < 4; k++) {
                __m512i st = _mm512_and_si512(_mm512_mullo_epi32(seeds, _mm512_set1_epi32((int)MK[k])), MASK);
                v[k] = _mm512_dpbusd_epi32(B126, st, ONES);    /* sum of bytes - 126 */
            }
            dst[2 * q] = _mm512_mask_blend_epi16(HI, v[0], _mm512_slli_epi32(v[1], 16));
            dst[2 * q + 1] = _mm512_mask_blend_epi16(HI, v[2], _mm512_slli_epi32(v[3], 16));
        }
        return;
    }
    __m512i seeds[2];
    iqkt_mm_iq23_seeds(sb, seeds);
    uint32_t wk[8];
    if (type == IQKT_IQ3_KT) iqkt_mm_iq3_sign_words(sb, wk);
    for (int h = 0; h < 2; h++) {
        /* lane l = 4j + i belongs to block 4h + i */
        __m512i v[8];
        for (int k = 0; k < 8; k++) {
            __m512i st = _mm512_and_si512(_mm512_mullo_epi32(seeds[h], _mm512_set1_epi32((int)MK[k])), MASK);
            v[k] = _mm512_dpbusd_epi32(B126, st, ONES);
            if (type == IQKT_IQ3_KT) {
                v[k] = _mm512_abs_epi32(v[k]);
                v[k] = _mm512_mask_sub_epi32(v[k], (__mmask16)_pext_u32(wk[k], 0x0F0F0F0Fu << (4 * h)), ZERO, v[k]);
            }
        }
        for (int kp = 0; kp < 4; kp++)
            dst[4 * h + kp] = _mm512_mask_blend_epi16(HI, v[2 * kp], _mm512_slli_epi32(v[2 * kp + 1], 16));
    }
}

IQKT_ALWAYS_INLINE void iqkt_mm_tile_pairs_avx512(const int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                                                  const uint8_t *lanes, int64_t lstride,
                                                  const float *xs, int64_t xstride, int64_t nb, uint8_t *al,
                                                  float *out /* nr x nb */) {
    const int sbb = iqkt_mm_sb_bytes(type);
    __m512i *wbuf = (__m512i *)al;                                       /* TILE * KC * 8 */
    __m512 *bvbuf = (__m512 *)(wbuf + IQKT_MM_TILE * IQKT_MM_KC * 8);    /* TILE * KC * 4, unused */
    float *bbuf = (float *)(bvbuf + IQKT_MM_TILE * IQKT_MM_KC * 4);      /* TILE * KC * 8 */
    __m256 *facc = (__m256 *)(bbuf + IQKT_MM_TILE * IQKT_MM_KC * 8);     /* nb * TILE */
    for (int64_t i = 0; i < nb * IQKT_MM_TILE; i++) facc[i] = _mm256_setzero_ps();
    for (int64_t c0 = 0; c0 < nsb; c0 += IQKT_MM_KC) {
        int kc = (int)(nsb - c0 < IQKT_MM_KC ? nsb - c0 : IQKT_MM_KC);
        /* rows past nr repeat the last row (results dropped) */
        for (int r = 0; r < IQKT_MM_TILE; r++)
            for (int c = 0; c < kc; c++) {
                const uint8_t *sb = q + (r < nr ? r : nr - 1) * rs + 4 + (c0 + c) * sbb;
                iqkt_mm_decode_pairs(type, sb, wbuf + (r * IQKT_MM_KC + c) * 8, bvbuf + (r * IQKT_MM_KC + c) * 4);
                for (int b = 0; b < 8; b++) bbuf[(r * IQKT_MM_KC + c) * 8 + b] = (float)iqkt_mm_block_scale(type, sb, b);
            }
        for (int64_t b = 0; b < nb; b++) {
            __m256 fa[IQKT_MM_TILE];
            for (int r = 0; r < IQKT_MM_TILE; r++) fa[r] = facc[b * IQKT_MM_TILE + r];
            for (int c = 0; c < kc; c++) {
                int64_t ib = c0 + c;
                const uint8_t *lb = lanes + b * lstride + 512 * ib;
                __m256 xsv = _mm256_loadu_ps(xs + b * xstride + 8 * ib);
                __m512i x[8];
                for (int m = 0; m < 8; m++) x[m] = _mm512_loadu_si512((const void *)(lb + 64 * m));
                for (int r = 0; r < IQKT_MM_TILE; r++) {
                    const __m512i *w = wbuf + (r * IQKT_MM_KC + c) * 8;
                    __m256 sc = _mm256_mul_ps(_mm256_loadu_ps(bbuf + (r * IQKT_MM_KC + c) * 8), xsv);
                    __m256i bd;
                    if (type == IQKT_IQ4_KT) {
                        __m512i gd[4];
                        for (int g = 0; g < 4; g++)
                            gd[g] = _mm512_dpwssd_epi32(_mm512_madd_epi16(w[2 * g], x[2 * g]), w[2 * g + 1], x[2 * g + 1]);
                        bd = iqkt_mm_sum8x8(gd);
                    } else {
                        __m128i h[2];
                        for (int g = 0; g < 2; g++) {
                            __m512i a = _mm512_dpwssd_epi32(_mm512_madd_epi16(w[4 * g], x[4 * g]), w[4 * g + 1], x[4 * g + 1]);
                            a = _mm512_dpwssd_epi32(a, w[4 * g + 2], x[4 * g + 2]);
                            a = _mm512_dpwssd_epi32(a, w[4 * g + 3], x[4 * g + 3]);
                            h[g] = iqkt_mm_sum4x128(a);
                        }
                        bd = _mm256_set_m128i(h[1], h[0]);
                    }
                    fa[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(bd), sc, fa[r]);
                }
            }
            for (int r = 0; r < IQKT_MM_TILE; r++) facc[b * IQKT_MM_TILE + r] = fa[r];
        }
    }
    for (int r = 0; r < nr; r++)
        for (int64_t b = 0; b < nb; b++) out[r * nb + b] = iqkt_mm_sum8_ps(facc[b * IQKT_MM_TILE + r]);
}

/* Batch kernel (nb >= IQKT_MM_GEMM_MIN): a small int16 GEMM with the activation rows in the lanes.
 *
 * Weight rows are decoded (codebook lookups) IQKT_MM_TILE rows x IQKT_MM_KC
 * super-blocks at a time into int16 values in natural order; the activations
 * are laid out once per call with 16 activation rows per zmm (see
 * iqkt_mm_prepare_rows), so one vpdpwssd adds a broadcast weight pair times
 * 16 activation rows' pairs.  A tile keeps TILE x 4 zmm of int32 block dots
 * in registers (4 x 16 = 64 activation rows per pass).  Each block dot is the
 * exact int32 dot of the B = 1 kernels, scaled and FMA'd into the partial sum
 * of its block slot (block index mod 8) in block order, and the 8 slots are
 * added by iqkt_mm_sum8: bit-for-bit the B = 1 result. */

#define IQKT_MM_BV 16             /* activation rows per zmm in the batch kernel */

static inline int64_t iqkt_mm_nbv(int64_t nb) { return (nb + IQKT_MM_BV - 1) / IQKT_MM_BV; }

/* Natural-order int16 values of the 8 blocks of super-block sb into dst[256],
 * float block scales into bsf[8]. */
IQKT_ALWAYS_INLINE void iqkt_mm_decode_i16(const int type, const uint8_t *sb, const int8_t *cb8,
                                           const int8_t *cb4, int16_t *dst, float *bsf) {
    for (int b = 0; b < 8; b++) bsf[b] = (float)iqkt_mm_block_scale(type, sb, b);
    if (type == IQKT_IQ4_KT) {
        /* the 16 codebook rows (flag * 32768 + index) of blocks 2q, 2q + 1, as in iqkt_mm_row_iq4_avx512 */
        __m256i w8 = _mm256_loadu_si256((const __m256i *)sb);
        __m512i words = _mm512_castsi256_si512(w8), off = iqkt_mm_iq4_offsets(w8);
        for (int q = 0; q < 4; q++) {
            /* codebook row = seed - 4096 */
            __m512i id = _mm512_sub_epi32(iqkt_mm_iq4_seeds(sb, q, words, off), _mm512_set1_epi32((int)IQKT_TRELLIS_OFFSET));
            uint32_t ids[16];
            _mm512_storeu_si512((void *)ids, id);
            for (int h = 0; h < 2; h++) {
                int32_t g[8];
                for (int j = 0; j < 8; j++) memcpy(&g[j], cb4 + 4 * ids[8 * h + j], 4);
                __m256i v = _mm256_loadu_si256((const __m256i *)g);
                _mm512_storeu_si512((void *)(dst + 32 * (2 * q + h)), _mm512_cvtepi8_epi16(v));
            }
        }
        return;
    }
    __m256i qh = _mm256_setzero_si256();
    if (type == IQKT_IQ3_KT) qh = _mm256_loadu_si256((const __m256i *)(sb + 68));
    for (int b = 0; b < 8; b++) {
        int64_t g[4];
        for (int j = 0; j < 4; j++) memcpy(&g[j], cb8 + 8 * (uint32_t)iqkt_load_u16(sb + 4 + 2 * (4 * b + j)), 8);
        __m256i v = _mm256_setr_epi64x(g[0], g[1], g[2], g[3]);
        if (type == IQKT_IQ3_KT) {   /* |value| with the sign bit of qh for this block */
            v = _mm256_abs_epi8(v);
            v = _mm256_mask_sub_epi8(v, _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << b))),
                                     _mm256_setzero_si256(), v);
        }
        _mm512_storeu_si512((void *)(dst + 32 * b), _mm512_cvtepi8_epi16(v));
    }
}

/* nvv (1..4) consecutive zmm of activation rows, starting at zmm v0, for the
 * blocks of one decoded K chunk.  facc: [TILE][nbv][8 slots] zmm. */
IQKT_ALWAYS_INLINE void iqkt_mm_gemm_avx512(const int nvv, int64_t v0, int64_t nbv, int64_t nb, int64_t n,
                                            int64_t g0, int nblk, const uint8_t *lanes,
                                            const __m512 *xst, const int16_t *wdec, const float *bsf,
                                            __m512 *facc) {
    const int64_t kblk = n / 32;
    const uint8_t *base[4];
    int w[4];
    __mmask16 m[4];
    for (int v = 0; v < nvv; v++) {
        int64_t b0 = IQKT_MM_BV * (v0 + v);
        w[v] = (int)(nb - b0 < IQKT_MM_BV ? nb - b0 : IQKT_MM_BV);
        m[v] = (__mmask16)((1u << w[v]) - 1);
        base[v] = lanes + b0 * 2 * n;
    }
    /* nvv <= 2: two accumulator sets (even / odd pairs) for enough independent vpdpwssd chains */
    const int ns = nvv <= 2 ? 2 : 1;
    for (int blk = 0; blk < nblk; blk++) {
        int64_t g = g0 + blk;
        const int16_t *wb0 = wdec + 32 * blk;
        __m512i acc[2][IQKT_MM_TILE][4];
#pragma GCC unroll 8
        for (int sI = 0; sI < ns; sI++)
#pragma GCC unroll 8
            for (int r = 0; r < IQKT_MM_TILE; r++)
#pragma GCC unroll 8
                for (int v = 0; v < nvv; v++) acc[sI][r][v] = _mm512_setzero_si512();
#pragma GCC unroll 16
        for (int p = 0; p < 16; p++) {
            __m512i X[4];
#pragma GCC unroll 8
            for (int v = 0; v < nvv; v++)
                X[v] = _mm512_maskz_loadu_epi32(m[v], (const void *)(base[v] + 4 * (g * 16 + p) * w[v]));
#pragma GCC unroll 8
            for (int r = 0; r < IQKT_MM_TILE; r++) {
                int32_t pair;
                memcpy(&pair, wb0 + (int64_t)r * IQKT_MM_KC * 256 + 2 * p, 4);
                __m512i wb = _mm512_set1_epi32(pair);
#pragma GCC unroll 8
                for (int v = 0; v < nvv; v++)
                    acc[p % ns][r][v] = _mm512_dpwssd_epi32(acc[p % ns][r][v], wb, X[v]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < IQKT_MM_TILE; r++) {
            __m512 bs = _mm512_set1_ps(bsf[r * IQKT_MM_KC * 8 + blk]);
#pragma GCC unroll 8
            for (int v = 0; v < nvv; v++) {
                __m512i a = ns == 2 ? _mm512_add_epi32(acc[0][r][v], acc[ns - 1][r][v]) : acc[0][r][v];
                __m512 *F = facc + (r * nbv + v0 + v) * 8 + (g & 7);
                *F = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_mul_ps(bs, xst[(v0 + v) * kblk + g]), *F);
            }
        }
    }
}

/* Scratch layout (64-byte aligned): xst [nbv][n/32] zmm of activation scales,
 * facc [TILE][nbv][8] zmm, wdec [TILE][KC * 256] int16, bsf [TILE][KC * 8]. */
static inline int64_t iqkt_mm_scratch_avx512(int64_t nb, int64_t n) {
    return 64 * iqkt_mm_nbv(nb) * (n / 32 + IQKT_MM_TILE * 8) + IQKT_MM_TILE * IQKT_MM_KC * (512 + 32) + 64;
}

IQKT_ALWAYS_INLINE void iqkt_mm_tile_avx512(const int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                                            const uint8_t *lanes, int64_t nb, uint8_t *al,
                                            const int8_t *cb8, const int8_t *cb4, float *out /* nr x nb */) {
    const int sbb = iqkt_mm_sb_bytes(type);
    const int64_t n = 256 * nsb, nbv = iqkt_mm_nbv(nb);
    const __m512 *xst = (const __m512 *)al;
    __m512 *facc = (__m512 *)al + nbv * (n / 32);
    int16_t *wdec = (int16_t *)(facc + IQKT_MM_TILE * nbv * 8);
    float *bsf = (float *)(wdec + IQKT_MM_TILE * IQKT_MM_KC * 256);
    for (int64_t i = 0; i < IQKT_MM_TILE * nbv * 8; i++) facc[i] = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < nsb; c0 += IQKT_MM_KC) {
        int kc = (int)(nsb - c0 < IQKT_MM_KC ? nsb - c0 : IQKT_MM_KC);
        /* rows past nr repeat the last row (results dropped) */
        for (int r = 0; r < IQKT_MM_TILE; r++)
            for (int c = 0; c < kc; c++)
                iqkt_mm_decode_i16(type, q + (r < nr ? r : nr - 1) * rs + 4 + (c0 + c) * sbb, cb8, cb4,
                                   wdec + r * IQKT_MM_KC * 256 + 256 * c, bsf + r * IQKT_MM_KC * 8 + 8 * c);
        for (int64_t v0 = 0; v0 < nbv; v0 += 4) {
            switch (nbv - v0 < 4 ? nbv - v0 : 4) {
            case 1: iqkt_mm_gemm_avx512(1, v0, nbv, nb, n, 8 * c0, 8 * kc, lanes, xst, wdec, bsf, facc); break;
            case 2: iqkt_mm_gemm_avx512(2, v0, nbv, nb, n, 8 * c0, 8 * kc, lanes, xst, wdec, bsf, facc); break;
            case 3: iqkt_mm_gemm_avx512(3, v0, nbv, nb, n, 8 * c0, 8 * kc, lanes, xst, wdec, bsf, facc); break;
            default: iqkt_mm_gemm_avx512(4, v0, nbv, nb, n, 8 * c0, 8 * kc, lanes, xst, wdec, bsf, facc); break;
            }
        }
    }
    for (int r = 0; r < nr; r++)
        for (int64_t b = 0; b < nb; b++) {
            float f[8];
            for (int j = 0; j < 8; j++) {
                float lane[16];
                _mm512_storeu_ps(lane, facc[(r * nbv + b / IQKT_MM_BV) * 8 + j]);
                f[j] = lane[b % IQKT_MM_BV];
            }
            out[r * nb + b] = iqkt_mm_sum8(f);
        }
}

#endif /* IQKT_HAVE_AVX512 */

/* ---- AVX2: trellis computed in 8 lanes ----------------------------------- */
#if defined(IQKT_HAVE_AVX2)

/* Byte sums of the masked states of two trellis steps (multipliers ma, mb)
 * as an int16 pair per lane: word 0 = sum of step a's 4 bytes, word 1 = step
 * b's (0..252, unbiased).  The two states' bytes are paired by blends and a
 * word swap, so one vpmaddubsw sums both: on Zen4 vpmulld, vpmaddubsw and
 * vpmaddwd share two pipes, and this needs one multiply-class op per 16
 * weights for the sums instead of two per 8. */
IQKT_ALWAYS_INLINE __m256i iqkt_mm_pair_sums_avx2(__m256i seeds, __m256i ma, __m256i mb) {
    const __m256i SWAPW = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
                                           2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    const __m256i MASK = _mm256_set1_epi32(0x3F3F3F3F);
    __m256i a0 = _mm256_and_si256(_mm256_mullo_epi32(seeds, ma), MASK);
    __m256i a1 = _mm256_and_si256(_mm256_mullo_epi32(seeds, mb), MASK);
    /* word 0: bytes 0,1 + bytes 2,3 of a0; word 1: bytes 2,3 + bytes 0,1 of a1 */
    __m256i u = _mm256_add_epi32(_mm256_blend_epi16(a0, a1, 0xAA),
                                 _mm256_shuffle_epi8(_mm256_blend_epi16(a1, a0, 0xAA), SWAPW));
    return _mm256_maddubs_epi16(u, _mm256_set1_epi8(1));
}

/* IQ2 seeds (index + 4096) of vector v of the step-major layout: lane l =
 * group l & 3 of block 2v + (l >> 2), i.e. index words 8v .. 8v + 7. */
static inline __m256i iqkt_mm_iq2_seeds_avx2(const uint8_t *sb, int v) {
    return _mm256_add_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(sb + 4 + 16 * v))),
                            _mm256_set1_epi32((int)IQKT_TRELLIS_OFFSET));
}

/* IQ4 seeds (index + 4096 + 32768 * flag) of the 8 blocks of a super-block:
 * seeds[o] lane l = group 8o + l.  Index bits 0..11 (ql byte, qh nibble) are
 * interleaved 16 groups at a time; bits 12..14 and the codebook flag (as bit
 * 15) are spread to the 8 words of a block with scalar shifts and masks, which
 * keeps that bit shuffling off the vector pipes.  Not pdep: it is microcoded
 * (hundreds of cycles) on AMD Zen 1/2, which are AVX2 machines. */
/* the four 3-bit fields of v (bits 0..11) to bits 12..14 of four 16-bit
 * words: one multiply places copies of the 12 bits at 12, 25, 38 and 51 (13
 * apart, so they never overlap or carry), the mask keeps field i of copy i */
static inline uint64_t iqkt_mm_spread_3bit_fields(uint64_t v) {
    const uint64_t COPIES = (1ull << 12) | (1ull << 25) | (1ull << 38) | (1ull << 51);
    return ((v & 0xFFF) * COPIES) & 0x7000700070007000ull;
}

IQKT_ALWAYS_INLINE void iqkt_mm_iq4_seeds_avx2(const uint8_t *sb, __m256i seeds[8]) {
    const __m128i NIB = _mm_set1_epi8(15);
    const uint64_t FLAG = 0x8000800080008000ull;
    const __m128i qh0 = _mm_loadu_si128((const __m128i *)(sb + 96));
    const __m128i qh1 = _mm_loadu_si128((const __m128i *)(sb + 112));
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) {   /* groups 16p .. 16p + 15 = blocks 2p, 2p + 1 */
        __m128i ql = _mm_loadu_si128((const __m128i *)(sb + 32 + 16 * p));
        __m128i qh = (p & 1) ? qh1 : qh0;
        __m128i nib = _mm_and_si128(p >= 2 ? _mm_srli_epi16(qh, 4) : qh, NIB);
        __m128i lw[2] = {_mm_unpacklo_epi8(ql, nib), _mm_unpackhi_epi8(ql, nib)};
        for (int h = 0; h < 2; h++) {
            uint32_t w = iqkt_load_u32(sb + 4 * (2 * p + h));
            uint64_t f = FLAG & ((uint64_t)0 - (w & 1));
            __m128i hw = _mm_insert_epi64(_mm_cvtsi64_si128((long long)(iqkt_mm_spread_3bit_fields(w >> 8) | f)),
                                          (long long)(iqkt_mm_spread_3bit_fields(w >> 20) | f), 1);
            seeds[2 * p + h] = _mm256_add_epi32(_mm256_cvtepu16_epi32(_mm_or_si128(lw[h], hw)), _mm256_set1_epi32((int)IQKT_TRELLIS_OFFSET));
        }
    }
}

/* IQ3 on AVX2, block vectors: vector m = 2b + q of a super-block holds the
 * 16 signed values of steps 4q..4q+3 of the 4 groups of block b as int16
 * pairs (lane l: group 2(l >> 2) + ((l >> 1) & 1), steps 4q + 2(l & 1) + h in
 * word h), so every lane belongs to block b and one vpmaddwd per 16 weights
 * gives block partial dots.  Why this shape: on Zen4 vpmulld, vpmaddubsw,
 * vpmaddwd, vpabs* and vpsign* all share two pipes, so the byte sums of both
 * steps of a lane are paired by blends and one vpmaddubsw, and |value| and the
 * sign with vpsignw on a word whose sign bit is the weight's sign bit (bit b
 * of qh[position]): the qh bytes of vectors 2b + q are gathered into the high
 * bytes of the words once per super-block (iqkt_mm_iq3_sign_bytes_avx2) and
 * shifted left by 7 - b per block. */

/* seeds (index + 4096) of block b's 4 groups in the lanes above */
static inline __m256i iqkt_mm_iq3_seeds_avx2(const uint8_t *sb, int b) {
    const __m256i DUP = _mm256_setr_epi8(0, 1, -1, -1, 0, 1, -1, -1, 2, 3, -1, -1, 2, 3, -1, -1,
                                         4, 5, -1, -1, 4, 5, -1, -1, 6, 7, -1, -1, 6, 7, -1, -1);
    int64_t idx;
    memcpy(&idx, sb + 4 + 8 * b, 8);
    return _mm256_add_epi32(_mm256_shuffle_epi8(_mm256_set1_epi64x(idx), DUP), _mm256_set1_epi32((int)IQKT_TRELLIS_OFFSET));
}

/* The qh bytes of the words of vectors 2b + q (any b) in the words' high bytes,
 * low bytes zero: (iqkt_mm_iq3_sign_bytes_avx2(sb, q) << (7 - b)) has the sign
 * of the weight at bit 15 of its word. */
static inline __m256i iqkt_mm_iq3_sign_bytes_avx2(const uint8_t *sb, const int q) {
    /* byte of qh (within the 128-bit half) holding the sign of word h of lane l */
#define IQKT_Q3SEL(q) -1, 4 * (q), -1, 4 * (q) + 1, -1, 4 * (q) + 2, -1, 4 * (q) + 3, \
                      -1, 8 + 4 * (q), -1, 9 + 4 * (q), -1, 10 + 4 * (q), -1, 11 + 4 * (q)
    const __m256i SEL = q ? _mm256_setr_epi8(IQKT_Q3SEL(1), IQKT_Q3SEL(1)) : _mm256_setr_epi8(IQKT_Q3SEL(0), IQKT_Q3SEL(0));
#undef IQKT_Q3SEL
    return _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(sb + 68)), SEL);
}

/* Signed int16 value pairs of vector 2b + q; sgn: sign of each weight at bit
 * 15 of its word, low byte zero (see iqkt_mm_iq3_sign_bytes_avx2). */
IQKT_ALWAYS_INLINE __m256i iqkt_mm_iq3_pairs_avx2(__m256i seeds, __m256i sgn, const int q) {
    /* multiplier of word h of lane l: M^(k + 1), step k = 4q + 2(l & 1) + h */
    const __m256i M0 = q ? _mm256_setr_epi32(IQKT_M5, IQKT_M7, IQKT_M5, IQKT_M7, IQKT_M5, IQKT_M7, IQKT_M5, IQKT_M7)
                         : _mm256_setr_epi32(IQKT_M1, IQKT_M3, IQKT_M1, IQKT_M3, IQKT_M1, IQKT_M3, IQKT_M1, IQKT_M3);
    const __m256i M1 = q ? _mm256_setr_epi32(IQKT_M6, IQKT_M8, IQKT_M6, IQKT_M8, IQKT_M6, IQKT_M8, IQKT_M6, IQKT_M8)
                         : _mm256_setr_epi32(IQKT_M2, IQKT_M4, IQKT_M2, IQKT_M4, IQKT_M2, IQKT_M4, IQKT_M2, IQKT_M4);
    __m256i t = _mm256_sub_epi16(iqkt_mm_pair_sums_avx2(seeds, M0, M1), _mm256_set1_epi16(126));
    /* s = t ^ sgn: sign bit = t's sign xor the weight's sign, and s == 0 only
     * where t == 0 (|t| <= 126, sgn's low byte is zero), so vpsignw(t, s) = +-|t| */
    return _mm256_sign_epi16(t, _mm256_xor_si256(t, sgn));
}

/* The 8 block scales of a super-block as floats (iqkt_mm_block_scale), in
 * vector lanes: no scalar int -> float converts or store-forwarding of 8
 * scalar stores into a vector load. */
static inline __m256 iqkt_mm_block_scales_avx2(const int type, const uint8_t *sb) {
    if (type == IQKT_IQ4_KT) {   /* ((w & 0xFF) >> 1) - 64 per block word */
        __m256i w = _mm256_loadu_si256((const __m256i *)sb);
        w = _mm256_srli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0xFE)), 1);
        return _mm256_cvtepi32_ps(_mm256_sub_epi32(w, _mm256_set1_epi32(64)));
    }
    /* code of block b: nibble b / 4 of scales[b % 4] */
    __m256i c = _mm256_srlv_epi32(_mm256_set1_epi32((int)iqkt_load_u32(sb)), _mm256_setr_epi32(0, 8, 16, 24, 4, 12, 20, 28));
    c = _mm256_and_si256(c, _mm256_set1_epi32(15));
    if (type == IQKT_IQ3_KT) return _mm256_cvtepi32_ps(c);
    const int16_t *tab = iqkt_type_info(IQKT_IQ2_KT)->scale_values;
    const __m256 T0 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)tab)));
    const __m256 T1 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(tab + 8))));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(T0, c), _mm256_permutevar8x32_ps(T1, c),
                            _mm256_castsi256_ps(_mm256_slli_epi32(c, 28)));   /* code bit 3 -> sign bit */
}

/* Step-major, like the AVX512 kernels: a ymm holds step k of 8 groups
 * (lane = group), so the states are seeds * M^k with no per-group
 * broadcast and the per-lane int dot over the steps is a per-group dot.
 *   IQ2, vector v (0..3) of a super-block: lane l holds group l & 3 of
 *     block 2v + (l >> 2), i.e. the 8 consecutive index words 8v..8v+7.
 *   IQ4, vector o (0..7): lane l holds group l of block o.
 * IQ2/IQ4: vpmaddubsw sums byte pairs of the masked state, vpmaddwd with
 * (x16, x16) lanes adds both pair sums times x16, so a lane gets
 * (sum of 4 bytes) * x16; the -126 bias is added per block once per
 * super-block with the block's sum of x16 (in one lane of the block).
 * IQ3 uses block vectors of signed int16 pairs (iqkt_mm_iq3_pairs_avx2) and
 * the pair layout of the activations.
 * Measured and not kept (Zen4, one thread): IQ2 / IQ4 on int16 pairs as well
 * (iqkt_mm_pair_sums_avx2: fewer multiply-class ops but one more op per 16
 * weights) was 0-10% slower, so these loops are bound by the op count rather
 * than the two multiply pipes; reducing the 8 block vectors of IQ3 / IQ4 to
 * one vector of block dots per super-block (one convert + FMA instead of 8)
 * was 0-25% slower (the shuffles of the reduction cost more). */
IQKT_ALWAYS_INLINE void iqkt_mm_row_avx2(const int type, const uint8_t *sbs, int64_t nsb,
                                         const uint8_t *lanes, int64_t lstride, const int32_t *bsum,
                                         int64_t bstride, const float *xs, int64_t xstride,
                                         const int nb, float *out) {
    static const uint32_t MK[8] = {IQKT_M1, IQKT_M2, IQKT_M3, IQKT_M4, IQKT_M5, IQKT_M6, IQKT_M7, IQKT_M8};
    const __m256i HALF = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256i MASK = _mm256_set1_epi32(0x3F3F3F3F);
    const __m256i ONES8 = _mm256_set1_epi8(1);
    const int sbb = iqkt_mm_sb_bytes(type);
    __m256 facc[IQKT_MM_NB];
    for (int bi = 0; bi < IQKT_MM_NB; bi++) facc[bi] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nsb; ib++) {
        const uint8_t *sb = sbs + ib * sbb;
        float sc[IQKT_MM_NB][8];
        __m256 scv[IQKT_MM_NB];
        const __m256 bsv = iqkt_mm_block_scales_avx2(type, sb);
        for (int bi = 0; bi < nb; bi++) {
            scv[bi] = _mm256_mul_ps(bsv, _mm256_loadu_ps(xs + bi * xstride + 8 * ib));
            _mm256_storeu_ps(sc[bi], scv[bi]);
        }
        if (type == IQKT_IQ3_KT) {
            const __m256i s0 = iqkt_mm_iq3_sign_bytes_avx2(sb, 0), s1 = iqkt_mm_iq3_sign_bytes_avx2(sb, 1);
            const uint8_t *ls = lanes + 512 * ib;   /* pair layout */
#pragma GCC unroll 8
            for (int b = 0; b < 8; b++) {
                __m256i seeds = iqkt_mm_iq3_seeds_avx2(sb, b);
                __m256i p0 = iqkt_mm_iq3_pairs_avx2(seeds, _mm256_slli_epi16(s0, 7 - b), 0);
                __m256i p1 = iqkt_mm_iq3_pairs_avx2(seeds, _mm256_slli_epi16(s1, 7 - b), 1);
                for (int bi = 0; bi < nb; bi++) {
                    const uint8_t *lb = ls + bi * lstride + 64 * b;
                    __m256i acc = _mm256_add_epi32(_mm256_madd_epi16(p0, _mm256_loadu_si256((const __m256i *)lb)),
                                                   _mm256_madd_epi16(p1, _mm256_loadu_si256((const __m256i *)(lb + 32))));
                    facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(sc[bi][b]), facc[bi]);
                }
            }
            continue;
        }
        /* IQ2 / IQ4: one step of 8 groups per vector, (x16, x16) lanes */
        const uint8_t *ls = lanes + 1024 * ib;
        if (type == IQKT_IQ4_KT) {
            __m256i seeds8[8];
            iqkt_mm_iq4_seeds_avx2(sb, seeds8);
#pragma GCC unroll 8
            for (int o = 0; o < 8; o++) {
                __m256i seeds = seeds8[o];
                __m256i acc[IQKT_MM_NB];
                for (int bi = 0; bi < nb; bi++)
                    acc[bi] = _mm256_zextsi128_si256(_mm_cvtsi32_si128(-126 * bsum[bi * bstride + 8 * ib + o]));
                for (int k = 0; k < 4; k++) {
                    __m256i st = _mm256_and_si256(_mm256_mullo_epi32(seeds, _mm256_set1_epi32((int)MK[k])), MASK);
                    __m256i p = _mm256_maddubs_epi16(st, ONES8);
                    for (int bi = 0; bi < nb; bi++) {
                        __m256i L = _mm256_loadu_si256((const __m256i *)(ls + bi * lstride + 128 * o + 32 * k));
                        acc[bi] = _mm256_add_epi32(acc[bi], _mm256_madd_epi16(p, L));
                    }
                }
                for (int bi = 0; bi < nb; bi++)
                    facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[bi]), _mm256_set1_ps(sc[bi][o]), facc[bi]);
            }
            continue;
        }
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            __m256i seeds = iqkt_mm_iq2_seeds_avx2(sb, v);
            __m256i acc[IQKT_MM_NB];
            for (int bi = 0; bi < nb; bi++) {
                const int32_t *bs = bsum + bi * bstride + 8 * ib + 2 * v;
                acc[bi] = _mm256_setr_epi32(-126 * bs[0], 0, 0, 0, -126 * bs[1], 0, 0, 0);
            }
            for (int k = 0; k < 8; k++) {
                __m256i st = _mm256_and_si256(_mm256_mullo_epi32(seeds, _mm256_set1_epi32((int)MK[k])), MASK);
                __m256i p = _mm256_maddubs_epi16(st, ONES8);
                for (int bi = 0; bi < nb; bi++) {
                    __m256i L = _mm256_loadu_si256((const __m256i *)(ls + bi * lstride + 256 * v + 32 * k));
                    acc[bi] = _mm256_add_epi32(acc[bi], _mm256_madd_epi16(p, L));
                }
            }
            __m256i perm = _mm256_add_epi32(HALF, _mm256_set1_epi32(2 * v));
            for (int bi = 0; bi < nb; bi++)
                facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[bi]), _mm256_permutevar8x32_ps(scv[bi], perm),
                                           facc[bi]);
        }
    }
    for (int bi = 0; bi < nb; bi++) out[bi] = iqkt_mm_sum8_ps(facc[bi]);
}

/* Batch kernel (more than IQKT_MM_NB activation rows).  Each super-block of
 * a weight row is decoded once into 16 ymm of int16 pairs (the values of
 * steps 2kp, 2kp+1 of a lane's group, unbiased byte sums; IQ3: the signed
 * block vectors of iqkt_mm_iq3_pairs_avx2), so the product with one activation row is one vpmaddwd per 16
 * weights.  Every lane's int32 dot, bias lane, scale and FMA order equal
 * those of iqkt_mm_row_avx2, so the result is bit-for-bit that of the
 * row kernel. */
IQKT_ALWAYS_INLINE void iqkt_mm_decode_pairs_avx2(const int type, const uint8_t *sb, __m256i *dst, __m256 *bsv) {
    static const uint32_t MK[8] = {IQKT_M1, IQKT_M2, IQKT_M3, IQKT_M4, IQKT_M5, IQKT_M6, IQKT_M7, IQKT_M8};
    *bsv = iqkt_mm_block_scales_avx2(type, sb);
    if (type == IQKT_IQ3_KT) {   /* block vectors, as in iqkt_mm_row_avx2 */
        const __m256i s0 = iqkt_mm_iq3_sign_bytes_avx2(sb, 0), s1 = iqkt_mm_iq3_sign_bytes_avx2(sb, 1);
        for (int b = 0; b < 8; b++) {
            __m256i seeds = iqkt_mm_iq3_seeds_avx2(sb, b);
            dst[2 * b] = iqkt_mm_iq3_pairs_avx2(seeds, _mm256_slli_epi16(s0, 7 - b), 0);
            dst[2 * b + 1] = iqkt_mm_iq3_pairs_avx2(seeds, _mm256_slli_epi16(s1, 7 - b), 1);
        }
        return;
    }
    /* IQ2: vector 4v + kp = steps 2kp, 2kp + 1 of the row kernel's vector v;
     * IQ4: vector 2o + kp = steps 2kp, 2kp + 1 of block o */
    const int nv = (type == IQKT_IQ4_KT) ? 8 : 4, np = (type == IQKT_IQ4_KT) ? 2 : 4;
    __m256i seeds8[8];
    if (type == IQKT_IQ4_KT) iqkt_mm_iq4_seeds_avx2(sb, seeds8);
    for (int v = 0; v < nv; v++) {
        __m256i seeds = (type == IQKT_IQ4_KT) ? seeds8[v] : iqkt_mm_iq2_seeds_avx2(sb, v);
        for (int kp = 0; kp < np; kp++)
            dst[np * v + kp] = iqkt_mm_pair_sums_avx2(seeds, _mm256_set1_epi32((int)MK[2 * kp]),
                                                      _mm256_set1_epi32((int)MK[2 * kp + 1]));
    }
}

IQKT_ALWAYS_INLINE void iqkt_mm_tile_avx2(const int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                                          const uint8_t *lanes, int64_t lstride, const int32_t *bsum,
                                          int64_t bstride, const float *xs, int64_t xstride, int64_t nb,
                                          __m256i *wbuf /* TILE*KC*16 */, __m256 *bbuf /* TILE*KC */,
                                          __m256 *facc /* nb*TILE */, float *out /* nr x nb */) {
    const int sbb = iqkt_mm_sb_bytes(type);
    const __m256i HALF = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    for (int64_t i = 0; i < nb * IQKT_MM_TILE; i++) facc[i] = _mm256_setzero_ps();
    for (int64_t c0 = 0; c0 < nsb; c0 += IQKT_MM_KC) {
        int kc = (int)(nsb - c0 < IQKT_MM_KC ? nsb - c0 : IQKT_MM_KC);
        for (int r = 0; r < IQKT_MM_TILE; r++)
            for (int c = 0; c < kc; c++)
                iqkt_mm_decode_pairs_avx2(type, q + (r < nr ? r : nr - 1) * rs + 4 + (c0 + c) * sbb,
                                          wbuf + (r * IQKT_MM_KC + c) * 16, bbuf + r * IQKT_MM_KC + c);
        for (int64_t b = 0; b < nb; b++) {
            __m256 fa[IQKT_MM_TILE];
            for (int r = 0; r < IQKT_MM_TILE; r++) fa[r] = facc[b * IQKT_MM_TILE + r];
            for (int c = 0; c < kc; c++) {
                int64_t ib = c0 + c;
                const uint8_t *lb = lanes + b * lstride + 512 * ib;
                const int32_t *bs = bsum + b * bstride + 8 * ib;
                __m256 xsv = _mm256_loadu_ps(xs + b * xstride + 8 * ib);
                if (type != IQKT_IQ2_KT) {   /* one block per vector pair */
                    for (int o = 0; o < 8; o++) {
                        __m256i x0 = _mm256_loadu_si256((const __m256i *)(lb + 64 * o));
                        __m256i x1 = _mm256_loadu_si256((const __m256i *)(lb + 64 * o + 32));
                        __m256i bias = (type == IQKT_IQ3_KT) ? _mm256_setzero_si256()
                                       : _mm256_zextsi128_si256(_mm_cvtsi32_si128(-126 * bs[o]));
                        __m256i sel = _mm256_set1_epi32(o);
                        for (int r = 0; r < IQKT_MM_TILE; r++) {
                            const __m256i *w = wbuf + (r * IQKT_MM_KC + c) * 16 + 2 * o;
                            __m256i a = _mm256_add_epi32(bias, _mm256_madd_epi16(w[0], x0));
                            a = _mm256_add_epi32(a, _mm256_madd_epi16(w[1], x1));
                            __m256 scv = _mm256_permutevar8x32_ps(_mm256_mul_ps(bbuf[r * IQKT_MM_KC + c], xsv), sel);
                            fa[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), scv, fa[r]);
                        }
                    }
                } else {
                    for (int vv = 0; vv < 4; vv++) {
                        __m256i x[4];
                        for (int kp = 0; kp < 4; kp++) x[kp] = _mm256_loadu_si256((const __m256i *)(lb + 128 * vv + 32 * kp));
                        __m256i bias = _mm256_setr_epi32(-126 * bs[2 * vv], 0, 0, 0, -126 * bs[2 * vv + 1], 0, 0, 0);
                        __m256i perm = _mm256_add_epi32(HALF, _mm256_set1_epi32(2 * vv));
                        for (int r = 0; r < IQKT_MM_TILE; r++) {
                            const __m256i *w = wbuf + (r * IQKT_MM_KC + c) * 16 + 4 * vv;
                            __m256i a = _mm256_add_epi32(bias, _mm256_madd_epi16(w[0], x[0]));
                            a = _mm256_add_epi32(a, _mm256_madd_epi16(w[1], x[1]));
                            a = _mm256_add_epi32(a, _mm256_madd_epi16(w[2], x[2]));
                            a = _mm256_add_epi32(a, _mm256_madd_epi16(w[3], x[3]));
                            __m256 scv = _mm256_permutevar8x32_ps(_mm256_mul_ps(bbuf[r * IQKT_MM_KC + c], xsv), perm);
                            fa[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), scv, fa[r]);
                        }
                    }
                }
            }
            for (int r = 0; r < IQKT_MM_TILE; r++) facc[b * IQKT_MM_TILE + r] = fa[r];
        }
    }
    for (int r = 0; r < nr; r++)
        for (int64_t b = 0; b < nb; b++) out[r * nb + b] = iqkt_mm_sum8_ps(facc[b * IQKT_MM_TILE + r]);
}

#endif /* IQKT_HAVE_AVX2 */

/* ---- entry: one weight row against nb <= IQKT_MM_NB activation rows ------- */

IQKT_ALWAYS_INLINE void iqkt_mm_row_nb(int type, const uint8_t *sbs, int64_t nsb,
                                       const uint8_t *lanes, int64_t lstride,
                                       const int32_t *bsum, int64_t bstride,
                                       const float *xs, int64_t xstride, const int nb, float *out,
                                       const int8_t *cb8, const int8_t *cb4) {
#if defined(IQKT_HAVE_AVX512)
    (void)bsum; (void)bstride; (void)cb8; (void)cb4;
    if (type == IQKT_IQ4_KT)
        iqkt_mm_row_iq4_avx512(sbs, nsb, lanes, lstride, xs, xstride, nb, out);
    else if (type == IQKT_IQ3_KT)
        iqkt_mm_row_iq23_avx512(1, sbs, nsb, lanes, lstride, xs, xstride, nb, out);
    else
        iqkt_mm_row_iq23_avx512(0, sbs, nsb, lanes, lstride, xs, xstride, nb, out);
#elif defined(IQKT_HAVE_AVX2)
    (void)cb8; (void)cb4;
    if (type == IQKT_IQ2_KT)
        iqkt_mm_row_avx2(IQKT_IQ2_KT, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out);
    else if (type == IQKT_IQ3_KT)
        iqkt_mm_row_avx2(IQKT_IQ3_KT, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out);
    else
        iqkt_mm_row_avx2(IQKT_IQ4_KT, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out);
#else
    (void)bsum; (void)bstride;
    /* a constant type per copy: the decode specialises (kt_decode.h) */
    if (type == IQKT_IQ2_KT)
        iqkt_mm_row_lookup(IQKT_IQ2_KT, sbs, nsb, lanes, lstride, xs, xstride, nb, out, cb8, cb4);
    else if (type == IQKT_IQ3_KT)
        iqkt_mm_row_lookup(IQKT_IQ3_KT, sbs, nsb, lanes, lstride, xs, xstride, nb, out, cb8, cb4);
    else
        iqkt_mm_row_lookup(IQKT_IQ4_KT, sbs, nsb, lanes, lstride, xs, xstride, nb, out, cb8, cb4);
#endif
}

/* Bytes of scratch iqkt_mm_tile needs for nb activation rows (0 if unused). */
static inline int64_t iqkt_mm_tile_scratch(int64_t nb, int64_t n) {
    (void)n;
#if defined(IQKT_HAVE_AVX512)
    if (iqkt_mm_use_gemm(nb))
        return iqkt_mm_scratch_avx512(nb, n);
    if (iqkt_mm_use_batch(nb))
        return 64 * IQKT_MM_TILE * IQKT_MM_KC * 12 + 32 * IQKT_MM_TILE * IQKT_MM_KC + 32 * nb * IQKT_MM_TILE + 64;
#elif defined(IQKT_HAVE_AVX2)
    if (iqkt_mm_use_batch(nb))
        return 32 * (IQKT_MM_TILE * IQKT_MM_KC * 17 + nb * IQKT_MM_TILE) + 64;
#endif
    (void)nb;
    return 0;
}

/* Per-call setup of the batch scratch (activation scales xs, nb x n/32 with
 * row stride xstride); before the first iqkt_mm_tile with this scratch. */
static void iqkt_mm_batch_begin(int64_t nb, int64_t n, const float *xs, int64_t xstride, uint8_t *scratch) {
#if defined(IQKT_HAVE_AVX512)
    if (!iqkt_mm_use_gemm(nb)) return;
    float *xst = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    for (int64_t v = 0; v < iqkt_mm_nbv(nb); v++)
        for (int64_t g = 0; g < n / 32; g++)
            for (int l = 0; l < IQKT_MM_BV; l++) {
                int64_t b = IQKT_MM_BV * v + l;
                xst[(v * (n / 32) + g) * IQKT_MM_BV + l] = b < nb ? xs[b * xstride + g] : 0.0f;
            }
#else
    (void)nb; (void)n; (void)xs; (void)xstride; (void)scratch;
#endif
}

/* Batch product of nr <= IQKT_MM_TILE consecutive weight rows (q, row
 * stride rs, row scales excluded) with nb activation rows in the batch
 * layout: out[r * nb + b].  Only when iqkt_mm_use_batch(nb). */
static void iqkt_mm_tile(int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                         const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                         const float *xs, int64_t xstride, int64_t nb, uint8_t *scratch, float *out,
                         const int8_t *cb8, const int8_t *cb4) {
#if defined(IQKT_HAVE_AVX512)
    (void)bsum; (void)bstride;
    uint8_t *al = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    if (!iqkt_mm_use_gemm(nb)) {
        if (type == IQKT_IQ2_KT)
            iqkt_mm_tile_pairs_avx512(IQKT_IQ2_KT, q, rs, nr, nsb, lanes, lstride, xs, xstride, nb, al, out);
        else if (type == IQKT_IQ3_KT)
            iqkt_mm_tile_pairs_avx512(IQKT_IQ3_KT, q, rs, nr, nsb, lanes, lstride, xs, xstride, nb, al, out);
        else
            iqkt_mm_tile_pairs_avx512(IQKT_IQ4_KT, q, rs, nr, nsb, lanes, lstride, xs, xstride, nb, al, out);
        return;
    }
    if (type == IQKT_IQ2_KT)
        iqkt_mm_tile_avx512(IQKT_IQ2_KT, q, rs, nr, nsb, lanes, nb, al, cb8, cb4, out);
    else if (type == IQKT_IQ3_KT)
        iqkt_mm_tile_avx512(IQKT_IQ3_KT, q, rs, nr, nsb, lanes, nb, al, cb8, cb4, out);
    else
        iqkt_mm_tile_avx512(IQKT_IQ4_KT, q, rs, nr, nsb, lanes, nb, al, cb8, cb4, out);
#elif defined(IQKT_HAVE_AVX2)
    (void)cb8; (void)cb4;
    uint8_t *al = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    __m256i *wbuf = (__m256i *)al;
    __m256 *bbuf = (__m256 *)(al + 32 * IQKT_MM_TILE * IQKT_MM_KC * 16);
    __m256 *facc = (__m256 *)(al + 32 * IQKT_MM_TILE * IQKT_MM_KC * 17);
    if (type == IQKT_IQ2_KT)
        iqkt_mm_tile_avx2(IQKT_IQ2_KT, q, rs, nr, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, wbuf, bbuf, facc, out);
    else if (type == IQKT_IQ3_KT)
        iqkt_mm_tile_avx2(IQKT_IQ3_KT, q, rs, nr, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, wbuf, bbuf, facc, out);
    else
        iqkt_mm_tile_avx2(IQKT_IQ4_KT, q, rs, nr, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, wbuf, bbuf, facc, out);
#else
    (void)type; (void)bsum; (void)bstride; (void)q; (void)rs; (void)nr; (void)nsb; (void)lanes; (void)lstride;
    (void)xs; (void)xstride; (void)nb; (void)scratch; (void)out; (void)cb8; (void)cb4;
#endif
}

/* out[bi] = sum over blocks of (block_scale * xs) * dot, for bi < nb (1..4).
 * The switch gives each activation-row count its own fully unrolled copy. */
static void iqkt_mm_row(int type, const uint8_t *sbs, int64_t nsb,
                        const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                        const float *xs, int64_t xstride, int nb, float *out,
                        const int8_t *cb8, const int8_t *cb4) {
    switch (nb) {
    case 1: iqkt_mm_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 1, out, cb8, cb4); break;
    case 2: iqkt_mm_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 2, out, cb8, cb4); break;
    case 3: iqkt_mm_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 3, out, cb8, cb4); break;
    default: iqkt_mm_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 4, out, cb8, cb4); break;
    }
}

#endif /* IQKT_KT_MM_H */
