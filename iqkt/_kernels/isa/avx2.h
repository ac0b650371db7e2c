/* AVX2 variant (avx2, fma, f16c, bmi2, popcnt): the contract of kt_isa.h.
 * Search: two 8-lane halves per 16-code block.  GEMV: trellis computed in 8
 * lanes (B = 1..4, up to IQKT_MM_NB rows share one trellis pass) and a batch
 * kernel with decoded int16 pairs (B > IQKT_MM_NB); for int8 activations the
 * row kernel on byte lanes and an int8 GEMM (B >= IQKT_MM_GEMM8_MIN).
 * Also the avx2_vnni variant: the same kernels with AVX-VNNI's vpdpbusd
 * in iqkt_dpbusd_avx2 / iqkt_dpbusd2_avx2, and the int8 GEMM on biased
 * weights (IQKT_MM_GEMM8_BIASED). */
#ifndef IQKT_ISA_AVX2_H
#define IQKT_ISA_AVX2_H

#include "isa/x86.h"

#ifdef IQKT_HAVE_AVXVNNI
#  define IQKT_ISA_NAME "avx2_vnni"   /* the same kernels, u8 x s8 dots on vpdpbusd */
#else
#  define IQKT_ISA_NAME "avx2"
#endif

/* ---- nearest-codeword search ------------------------------------------- */

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

/* Mask of the lanes b < 16 of lb with lb[b] <= best. */
IQKT_INLINE uint32_t iqkt_le_mask16(const float *lb, float best) {
    __m256 vb = _mm256_set1_ps(best);
    return (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(lb), vb, _CMP_LE_OQ))
         | ((uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(lb + 8), vb, _CMP_LE_OQ)) << 8);
}
#define IQKT_ISA_HAS_LE_MASK16 1

IQKT_INLINE void iqkt_scan_codes(const int8_t *vals, const uint16_t *idx, int nblk, int dim,
                                   const float *t, const float *w, float *best_e, int32_t *best_i) {
    float be = *best_e;
    int32_t bi = *best_i;
    for (int b = 0; b < nblk; b++) {
        const int8_t *c = vals + (size_t)b * dim * 16;
        const uint16_t *ib = idx + 16 * b;
        __m256 e0, e1;
        iqkt_dist16_avx2(c, dim, t, w, &e0, &e1);
        iqkt_pick16_avx2(e0, e1, ib, &be, &bi);
    }
    *best_e = be;
    *best_i = bi;
}
#define IQKT_ISA_HAS_SCAN_CODES 1

/* Scan the blocks b (0..15) of a chunk whose bit is set in mask and whose
 * bound lb[b] can still beat the best (re-checked as the best improves).
 * AVX512 scans two blocks at a time: one block's distance is a chain of dim
 * dependent adds, two chains keep the adder busy.  The result is the minimum
 * in (distance, index) order, so it does not depend on the visiting order. */
IQKT_INLINE void iqkt_scan_masked(const int8_t *vals, const uint16_t *idx, uint32_t mask,
                                    const float *lb, int dim, const float *t, const float *w,
                                    float *best_e, int32_t *best_i) {
    while (mask) {
        int a = iqkt_lowest_bit(mask);
        mask &= mask - 1;
        float before = *best_e;
        iqkt_scan_codes(vals + (size_t)a * dim * 16, idx + 16 * a, 1, dim, t, w, best_e, best_i);
        if (*best_e != before)      /* drop the blocks the improved best excludes, at once */
            mask &= iqkt_le_mask16(lb, *best_e);
    }
}
#define IQKT_ISA_HAS_SCAN_MASKED 1

/* Scan the blocks list[0..n) (any order) into the (e, index) minimum.  The
 * blocks are independent, so on AVX512 they keep per-lane running minima
 * and reduce once: no branch per block, and the distance chains of many
 * blocks overlap.  Other ISAs scan block by block; the minimum is the same. */
IQKT_INLINE void iqkt_scan_list(const int8_t *vals, const uint16_t *idx, const int32_t *list, int n,
                                int dim, const float *t, const float *w, float *best_e, int32_t *best_i) {
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
}
#define IQKT_ISA_HAS_SCAN_LIST 1

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
}
#define IQKT_ISA_HAS_BLOCK_BOUNDS 1

/* ---- GEMV ------------------------------------------------------------------ */

/* The types these GEMV kernels handle: all of them. */
#define IQKT_ISA_MM_KERNEL_TYPES ((1u << IQKT_IQ2_KT) | (1u << IQKT_IQ3_KT) | (1u << IQKT_IQ4_KT) | (1u << IQKT_IQ1_KT))

/* Position (within its super-block) of the activation that the AVX2 kernel
 * reads at lane-slot e (0..255) of a super-block: vector v = e / 64 (IQ4:
 * o = e / 32), step k, lane l; see iqkt_mm_row_avx2. */
static inline int iqkt_mm_lane_pos_avx2(int type, int e) {
    int l = e & 7;
    if (iqkt_mm_groups4(type))
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
    if (iqkt_mm_sign_plane(type))
        return 32 * (m >> 1) + 8 * (2 * (l >> 2) + ((l >> 1) & 1)) + 4 * (m & 1) + 2 * (l & 1) + h;
    int e0 = iqkt_mm_groups4(type) ? 32 * (m >> 1) + 16 * (m & 1) + l : 64 * (m >> 2) + 16 * (m & 3) + l;
    return iqkt_mm_lane_pos_avx2(type, e0 + 8 * h);
}

/* Whether the AVX2 kernels read activation rows in the pair layout (2 bytes
 * per element, 512 bytes per super-block) rather than the 4-byte lanes. */
static inline int iqkt_mm_pairs_avx2(int type, int64_t nb) {
    return iqkt_mm_sign_plane(type) || nb > IQKT_MM_NB;
}

/* Whether a product with nb activation rows uses the batch kernel. */
static inline int iqkt_mm_use_batch(int64_t nb) {
    return nb > IQKT_MM_NB;   /* up to IQKT_MM_NB rows share one trellis pass */
}
#define IQKT_ISA_HAS_MM_USE_BATCH 1

/* Lanes of one activation row (see kt_mm.h). */
static void iqkt_mm_prepare(int type, int64_t nb, const int16_t *x16, int64_t n, uint8_t *lanes, int32_t *bsum) {
    iqkt_mm_bsums(x16, n, bsum);
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
}
#define IQKT_ISA_HAS_MM_PREPARE 1

/* ---- AVX2: trellis computed in 8 lanes ----------------------------------- */

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

/* Seeds (index + 4096) of vector v of the step-major layout, types with
 * groups of 8 (IQ1/IQ2): lane l = group l & 3 of block 2v + (l >> 2), i.e.
 * groups 8v .. 8v + 7, read through the type's index layout (iqkt_types.h). */
IQKT_ALWAYS_INLINE __m256i iqkt_mm_seeds8_avx2(const int type, const uint8_t *sb, const int v) {
    const __m256i OFF = _mm256_set1_epi32((int)IQKT_TRELLIS_OFFSET);
    if (iqkt_type_info(type)->index_layout == IQKT_INDEX_U16)
        return _mm256_add_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(sb + 4 + 16 * v))), OFF);
    /* IQKT_INDEX_SPLIT13: ql[j] | (nibble j / 16 of qh[j % 16]) << 8 | (bit 4 + j % 4 of sh[j / 4]) << 12;
     * sh[2v], sh[2v + 1] shifted to bit 12 <- bit 4 + (l & 3) + 8 (l >> 2) */
    __m128i qh = _mm_loadl_epi64((const __m128i *)(sb + 40 + 8 * (v & 1)));
    if (v >= 2) qh = _mm_srli_epi16(qh, 4);
    __m256i lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(sb + 8 + 8 * v)));
    __m256i mid = _mm256_slli_epi32(_mm256_cvtepu8_epi32(_mm_and_si128(qh, _mm_set1_epi8(15))), 8);
    __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)((uint32_t)iqkt_load_u16(sb + 2 * v) << 12)),
                                                    _mm256_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15)),
                                  _mm256_set1_epi32(0x1000));
    return _mm256_add_epi32(_mm256_or_si256(_mm256_or_si256(lo, mid), hi), OFF);
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
IQKT_ALWAYS_INLINE __m256 iqkt_mm_block_scales_avx2(const int type, const uint8_t *sb) {
    const iqkt_type_traits *t = iqkt_type_info(type);
    __m256i c;
    if (t->scale_layout == IQKT_SCALES_WORDS) {   /* (w & 0xFF) >> 1 per block word */
        c = _mm256_srli_epi32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)sb), _mm256_set1_epi32(0xFE)), 1);
    } else if (t->scale_layout == IQKT_SCALES_SH) {   /* low nibble of byte b */
        c = _mm256_and_si256(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)sb)), _mm256_set1_epi32(15));
    } else {   /* code of block b: nibble b / 4 of scales[b % 4] */
        c = _mm256_srlv_epi32(_mm256_set1_epi32((int)iqkt_load_u32(sb)), _mm256_setr_epi32(0, 8, 16, 24, 4, 12, 20, 28));
        c = _mm256_and_si256(c, _mm256_set1_epi32(15));
    }
    if (t->scale_bias) c = _mm256_sub_epi32(c, _mm256_set1_epi32(t->scale_bias));
    if (!t->scale_values) return _mm256_cvtepi32_ps(c);
    /* 16-entry table (codes 0..15): two 8-float halves, code bit 3 picks the half */
    const __m256 T0 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)t->scale_values)));
    const __m256 T1 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(t->scale_values + 8))));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(T0, c), _mm256_permutevar8x32_ps(T1, c),
                            _mm256_castsi256_ps(_mm256_slli_epi32(c, 28)));   /* code bit 3 -> sign bit */
}

/* acc + per int32 lane the sum of the 4 byte products u8 x s8 (vpdpbusd on
 * avx2_vnni).  Without VNNI: vpmaddubsw + vpmaddwd with ones, exact while the
 * int16 pair sums do not saturate, which every caller's operands ensure. */
IQKT_ALWAYS_INLINE __m256i iqkt_dpbusd_avx2(__m256i acc, __m256i u, __m256i s) {
#ifdef IQKT_HAVE_AVXVNNI
    return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/* The same for two operand pairs; without VNNI their int16 pair sums are
 * added before one vpmaddwd, so those sums must fit int16 too. */
IQKT_ALWAYS_INLINE __m256i iqkt_dpbusd2_avx2(__m256i acc, __m256i u0, __m256i s0, __m256i u1, __m256i s1) {
#ifdef IQKT_HAVE_AVXVNNI
    return _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(acc, u0, s0), u1, s1);
#else
    __m256i w = _mm256_add_epi16(_mm256_maddubs_epi16(u0, s0), _mm256_maddubs_epi16(u1, s1));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(w, _mm256_set1_epi16(1)));
#endif
}

/* Block dots minus 126 * the blocks' activation sums (int8 lanes add
 * (value + 126) * x, see iqkt_mm_row_avx2). */
static inline __m256i iqkt_mm_act8_unbias_avx2(__m256i bd, const int32_t *bs) {
    return _mm256_sub_epi32(bd, _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)bs),
                                                   _mm256_set1_epi32(IQKT_TRELLIS_MAX)));
}

/* Block dots (lane b = block b) from 8 vectors whose lanes all belong to
 * block b of vector b (IQ3's block vectors, IQ4's step-major vectors). */
static inline __m256i iqkt_mm_block_dots8x8_avx2(const __m256i a[8]) {
    /* hadd pairs: lanes [a0 0..3, a1 0..3, a2 0..3, a3 0..3 | the same of lanes 4..7] */
    __m256i lo = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    __m256i hi = _mm256_hadd_epi32(_mm256_hadd_epi32(a[4], a[5]), _mm256_hadd_epi32(a[6], a[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
}

/* Block dots from the 4 step-major vectors of groups of 8 (vector v, lanes
 * 0..3: block 2v, lanes 4..7: block 2v + 1). */
static inline __m256i iqkt_mm_block_dots4x8_avx2(const __m256i a[4]) {
    /* lanes [blocks 0, 2, 4, 6 | 1, 3, 5, 7] */
    __m256i d = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    return _mm256_permutevar8x32_epi32(d, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* int8 lanes: the per-lane dots of nsteps trellis steps of 8 groups (seeds)
 * with nb activation rows' lanes (x in all 4 bytes, 32 bytes per step from
 * ls), two steps per iqkt_dpbusd2_avx2; (value + 126) * x, unbiased later. */
IQKT_ALWAYS_INLINE void iqkt_mm_act8_steps_avx2(const int nsteps, __m256i seeds, const uint8_t *ls,
                                                int64_t lstride, const int nb, __m256i *acc) {
    static const uint32_t MK[8] = {IQKT_M1, IQKT_M2, IQKT_M3, IQKT_M4, IQKT_M5, IQKT_M6, IQKT_M7, IQKT_M8};
    const __m256i MASK = _mm256_set1_epi32(0x3F3F3F3F);
    for (int bi = 0; bi < nb; bi++) acc[bi] = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int k = 0; k < nsteps; k += 2) {
        __m256i st0 = _mm256_and_si256(_mm256_mullo_epi32(seeds, _mm256_set1_epi32((int)MK[k])), MASK);
        __m256i st1 = _mm256_and_si256(_mm256_mullo_epi32(seeds, _mm256_set1_epi32((int)MK[k + 1])), MASK);
        for (int bi = 0; bi < nb; bi++) {
            const uint8_t *lk = ls + bi * lstride + 32 * k;
            acc[bi] = iqkt_dpbusd2_avx2(acc[bi], st0, _mm256_loadu_si256((const __m256i *)lk),
                                        st1, _mm256_loadu_si256((const __m256i *)(lk + 32)));
        }
    }
}

/* Step-major, like the AVX512 kernels: a ymm holds step k of 8 groups
 * (lane = group), so the states are seeds * M^k with no per-group
 * broadcast and the per-lane int dot over the steps is a per-group dot.
 *   IQ1/IQ2, vector v (0..3) of a super-block: lane l holds group l & 3 of
 *     block 2v + (l >> 2), i.e. groups 8v..8v+7 (iqkt_mm_seeds8_avx2).
 *   IQ4, vector o (0..7): lane l holds group l of block o.
 * IQ1/IQ2/IQ4: vpmaddubsw sums byte pairs of the masked state, vpmaddwd with
 * (x16, x16) lanes adds both pair sums times x16, so a lane gets
 * (sum of 4 bytes) * x16; the -126 bias is added per block once per
 * super-block with the block's sum of x16 (in one lane of the block).
 * IQ3 uses block vectors of signed int16 pairs (iqkt_mm_iq3_pairs_avx2) and
 * the pair layout of the activations.
 * act8 (int8 activations, kt_mm.h IQKT_MM_PLAN_ACT8): the lanes of IQ1/IQ2/IQ4
 * hold x in all 4 bytes, so vpmaddubsw of the masked state (bytes 0..63) gives
 * (byte pair sum) * x; two steps' words (<= 2 * 126 * 127 < 32767) are added
 * before one vpmaddwd with ones: (value + 126) * x per lane without the byte
 * sum step.  The lane dots are reduced to block dots per super-block, the
 * -126 * block sums subtracted, and each block FMA'd into slot (block mod 8)
 * as on AVX512, the order the int8 GEMM (iqkt_mm_gemm8_avx2) reproduces.
 * (Variants measured and not kept: docs/perf-notes.md.) */
IQKT_ALWAYS_INLINE void iqkt_mm_row_avx2(const int type, const int act8, const uint8_t *sbs, int64_t nsb,
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
        __m256i lane_dots[IQKT_MM_NB][8];   /* act8: per-vector lane dots, reduced to block dots below */
        const __m256 bsv = iqkt_mm_block_scales_avx2(type, sb);
        for (int bi = 0; bi < nb; bi++) {
            scv[bi] = _mm256_mul_ps(bsv, _mm256_loadu_ps(xs + bi * xstride + 8 * ib));
            _mm256_storeu_ps(sc[bi], scv[bi]);
        }
        if (iqkt_mm_sign_plane(type)) {
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
                    if (act8) lane_dots[bi][b] = acc;
                    else facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(sc[bi][b]), facc[bi]);
                }
            }
            if (act8)
                for (int bi = 0; bi < nb; bi++)   /* signed values: no bias */
                    facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iqkt_mm_block_dots8x8_avx2(lane_dots[bi])),
                                               scv[bi], facc[bi]);
            continue;
        }
        /* IQ2 / IQ4: one step of 8 groups per vector, (x16, x16) lanes */
        const uint8_t *ls = lanes + 1024 * ib;
        if (iqkt_mm_groups4(type)) {
            __m256i seeds8[8];
            iqkt_mm_iq4_seeds_avx2(sb, seeds8);
#pragma GCC unroll 8
            for (int o = 0; o < 8; o++) {
                __m256i seeds = seeds8[o];
                __m256i acc[IQKT_MM_NB];
                if (act8) {
                    iqkt_mm_act8_steps_avx2(4, seeds, ls + 128 * o, lstride, nb, acc);
                    for (int bi = 0; bi < nb; bi++) lane_dots[bi][o] = acc[bi];
                    continue;
                }
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
            if (act8)
                for (int bi = 0; bi < nb; bi++) {
                    __m256i bd = iqkt_mm_act8_unbias_avx2(iqkt_mm_block_dots8x8_avx2(lane_dots[bi]),
                                                          bsum + bi * bstride + 8 * ib);
                    facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(bd), scv[bi], facc[bi]);
                }
            continue;
        }
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            __m256i seeds = iqkt_mm_seeds8_avx2(type, sb, v);
            __m256i acc[IQKT_MM_NB];
            if (act8) {
                iqkt_mm_act8_steps_avx2(8, seeds, ls + 256 * v, lstride, nb, acc);
                for (int bi = 0; bi < nb; bi++) lane_dots[bi][v] = acc[bi];
                continue;
            }
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
        if (act8)
            for (int bi = 0; bi < nb; bi++) {
                __m256i bd = iqkt_mm_act8_unbias_avx2(iqkt_mm_block_dots4x8_avx2(lane_dots[bi]),
                                                      bsum + bi * bstride + 8 * ib);
                facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(bd), scv[bi], facc[bi]);
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
    if (iqkt_mm_sign_plane(type)) {   /* block vectors, as in iqkt_mm_row_avx2 */
        const __m256i s0 = iqkt_mm_iq3_sign_bytes_avx2(sb, 0), s1 = iqkt_mm_iq3_sign_bytes_avx2(sb, 1);
        for (int b = 0; b < 8; b++) {
            __m256i seeds = iqkt_mm_iq3_seeds_avx2(sb, b);
            dst[2 * b] = iqkt_mm_iq3_pairs_avx2(seeds, _mm256_slli_epi16(s0, 7 - b), 0);
            dst[2 * b + 1] = iqkt_mm_iq3_pairs_avx2(seeds, _mm256_slli_epi16(s1, 7 - b), 1);
        }
        return;
    }
    /* IQ1/IQ2: vector 4v + kp = steps 2kp, 2kp + 1 of the row kernel's vector v;
     * IQ4: vector 2o + kp = steps 2kp, 2kp + 1 of block o */
    const int g4 = iqkt_mm_groups4(type), nv = g4 ? 8 : 4, np = g4 ? 2 : 4;
    __m256i seeds8[8];
    if (g4) iqkt_mm_iq4_seeds_avx2(sb, seeds8);
    for (int v = 0; v < nv; v++) {
        __m256i seeds = g4 ? seeds8[v] : iqkt_mm_seeds8_avx2(type, sb, v);
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
                if (iqkt_mm_sign_plane(type) || iqkt_mm_groups4(type)) {   /* one block per vector pair */
                    for (int o = 0; o < 8; o++) {
                        __m256i x0 = _mm256_loadu_si256((const __m256i *)(lb + 64 * o));
                        __m256i x1 = _mm256_loadu_si256((const __m256i *)(lb + 64 * o + 32));
                        __m256i bias = iqkt_mm_sign_plane(type) ? _mm256_setzero_si256()
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


/* The row kernel's copy for a type (act8 a constant at each call: int16 or
 * int8 lanes). */
IQKT_ALWAYS_INLINE void iqkt_mm_row_by_type_avx2(int type, const int act8, const uint8_t *sbs, int64_t nsb,
                                                 const uint8_t *lanes, int64_t lstride,
                                                 const int32_t *bsum, int64_t bstride,
                                                 const float *xs, int64_t xstride, const int nb, float *out) {
    switch (type) {   /* a constant type per copy */
    case IQKT_IQ2_KT: iqkt_mm_row_avx2(IQKT_IQ2_KT, act8, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    case IQKT_IQ3_KT: iqkt_mm_row_avx2(IQKT_IQ3_KT, act8, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    case IQKT_IQ1_KT: iqkt_mm_row_avx2(IQKT_IQ1_KT, act8, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    default: iqkt_mm_row_avx2(IQKT_IQ4_KT, act8, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    }
}

/* One weight row against nb <= IQKT_MM_NB activation rows (see kt_mm.h). */
IQKT_ALWAYS_INLINE void iqkt_mm_row_nb(int type, const uint8_t *sbs, int64_t nsb,
                                       const uint8_t *lanes, int64_t lstride,
                                       const int32_t *bsum, int64_t bstride,
                                       const float *xs, int64_t xstride, const int nb, float *out,
                                       const int8_t *cb8, const int8_t *cb4) {
    (void)cb8; (void)cb4;
    iqkt_mm_row_by_type_avx2(type, 0, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out);
}
#define IQKT_ISA_HAS_MM_ROW_NB 1

/* Bytes of scratch iqkt_mm_tile needs for nb activation rows. */
static inline int64_t iqkt_mm_tile_scratch(int64_t nb, int64_t n) {
    (void)n;
    if (iqkt_mm_use_batch(nb))
        return 32 * (IQKT_MM_TILE * IQKT_MM_KC * 17 + nb * IQKT_MM_TILE) + 64;
    return 0;
}
#define IQKT_ISA_HAS_MM_TILE_SCRATCH 1

/* Batch product of nr <= IQKT_MM_TILE weight rows (see kt_isa.h). */
static void iqkt_mm_tile(int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                         const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                         const float *xs, int64_t xstride, int64_t nb, uint8_t *scratch, float *out,
                         const int8_t *cb8, const int8_t *cb4) {
    (void)cb8; (void)cb4;
    uint8_t *al = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    __m256i *wbuf = (__m256i *)al;
    __m256 *bbuf = (__m256 *)(al + 32 * IQKT_MM_TILE * IQKT_MM_KC * 16);
    __m256 *facc = (__m256 *)(al + 32 * IQKT_MM_TILE * IQKT_MM_KC * 17);
    switch (type) {   /* a constant type per copy */
    case IQKT_IQ2_KT: iqkt_mm_tile_avx2(IQKT_IQ2_KT, q, rs, nr, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, wbuf, bbuf, facc, out); break;
    case IQKT_IQ3_KT: iqkt_mm_tile_avx2(IQKT_IQ3_KT, q, rs, nr, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, wbuf, bbuf, facc, out); break;
    case IQKT_IQ1_KT: iqkt_mm_tile_avx2(IQKT_IQ1_KT, q, rs, nr, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, wbuf, bbuf, facc, out); break;
    default: iqkt_mm_tile_avx2(IQKT_IQ4_KT, q, rs, nr, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, wbuf, bbuf, facc, out); break;
    }
}
#define IQKT_ISA_HAS_MM_TILE 1

/* ---- int8 activations (precision "int8", kt_mm.h IQKT_MM_PLAN_ACT8) ------
 * Every type and batch size: the row kernel with act8 (B <= IQKT_MM_NB per
 * pass, below IQKT_MM_GEMM8_MIN) and an int8 GEMM above.  Both add each block's
 * exact dot into slot (block mod 8) in block order (as on AVX512), so a
 * row's result does not depend on B. */

/* The int8 GEMM starts at this many activation rows: its cost is flat for
 * B = 2..8 (decode-bound) and ties 4 rows of the row kernel (docs/perf-notes.md). */
#ifndef IQKT_MM_GEMM8_MIN
#define IQKT_MM_GEMM8_MIN 5
#endif
#if IQKT_MM_GEMM8_MIN < 2
#  error "the int8 GEMM's lanes (8 n bytes per 8 rows) need at least 2 activation rows"
#endif
#define IQKT_MM_BV8 8             /* activation rows per ymm in the int8 GEMM */

/* The int8 GEMM's form.  With AVX-VNNI (vpdpbusd, no int16 saturation) it dots
 * weights + 126 (u8) against the signed activations, each block starting from
 * -126 x the rows' block sums (bsv), as on AVX512.  Without it vpmaddubsw's
 * int16 pairs would overflow there, so it takes |w| and vpsignb'd activations. */
#ifdef IQKT_HAVE_AVXVNNI
#  define IQKT_MM_GEMM8_BIASED 1
#else
#  define IQKT_MM_GEMM8_BIASED 0
#endif

static inline int iqkt_mm_act8_use_batch(int type, int64_t nb) { (void)type; return nb >= IQKT_MM_GEMM8_MIN; }
static inline int iqkt_mm_act8_use(int type, int64_t nb) { (void)type; (void)nb; return 1; }

static inline int64_t iqkt_mm_nbv8(int64_t nb) { return (nb + IQKT_MM_BV8 - 1) / IQKT_MM_BV8; }

/* Lanes.  Row kernel: IQ1/IQ2/IQ4 uint32 = x * 0x01010101 (x's byte in all 4
 * bytes) in the step-major order of iqkt_mm_lane_pos_avx2; IQ3 the int16 pair
 * layout of iqkt_mm_prepare.  GEMM (nrows >= IQKT_MM_GEMM8_MIN): activation
 * rows 8v .. 8v + 7 take bytes [8 v n, 8 (v + 1) n), int32 index (8 blk + p) 8 + l
 * = int8 elements 4p .. 4p + 3 of block blk of row 8v + l (zero past the last
 * row): 8 rows' quads per ymm for one broadcast weight quad; with
 * IQKT_MM_GEMM8_BIASED then bsv (iqkt_mm_act8_bsv_avx2). */
static inline int32_t *iqkt_mm_act8_bsv_avx2(const uint8_t *lanes, int64_t nb, int64_t n) {
    /* [n/32][nbv][8] int32 = -126 x the block sums of rows 8v + l (0 past the
     * last row); 9 nbv n <= 4 nb n bytes of lanes for nb >= 5 */
    return (int32_t *)(lanes + 8 * iqkt_mm_nbv8(nb) * n);
}

static void iqkt_mm_act8_prepare_rows(int type, int64_t nrows, const int16_t *x16, int64_t n, uint8_t *lanes,
                                      int32_t *bsum) {
    for (int64_t r = 0; r < nrows; r++)
        iqkt_mm_bsums(x16 + r * n, n, bsum + r * (n / 32));
    if (iqkt_mm_act8_use_batch(type, nrows)) {
        iqkt_mm_act8_quads(nrows, x16, bsum, n, IQKT_MM_BV8, lanes,
                           IQKT_MM_GEMM8_BIASED ? iqkt_mm_act8_bsv_avx2(lanes, nrows, n) : NULL);
        return;
    }
    for (int64_t r = 0; r < nrows; r++) {
        uint8_t *lr = lanes + r * IQKT_MM_LANE_BYTES * n;
        if (iqkt_mm_sign_plane(type)) {
            iqkt_mm_prepare(type, 1, x16 + r * n, n, lr, bsum + r * (n / 32));
            continue;
        }
        for (int64_t ib = 0; ib < n / 256; ib++)
            for (int e = 0; e < 256; e++) {
                uint32_t v = (uint32_t)(uint8_t)x16[r * n + 256 * ib + iqkt_mm_lane_pos_avx2(type, e)] * 0x01010101u;
                memcpy(lr + 1024 * ib + 4 * e, &v, 4);
            }
    }
}

IQKT_ALWAYS_INLINE void iqkt_mm_act8_row_nb(int type, const uint8_t *sbs, int64_t nsb,
                                            const uint8_t *lanes, int64_t lstride,
                                            const int32_t *bsum, int64_t bstride,
                                            const float *xs, int64_t xstride, const int nb, float *out,
                                            const int8_t *cb8, const int8_t *cb4) {
    (void)cb8; (void)cb4;
    iqkt_mm_row_by_type_avx2(type, 1, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out);
}

/* One super-block of a weight row decoded for the int8 GEMM, block scales as
 * floats (bsf[8]).  IQKT_MM_GEMM8_BIASED: the 256 values + 126 (u8) in natural
 * order in wabs (wsg unused).  Otherwise the signed values (wsg) and their
 * magnitudes (wabs): vpmaddubsw (u8 x s8, int16 pairs that saturate) takes |w|
 * and the activations signed by w (vpsignb): 2 * 126 * 127 < 32767, where
 * value + 126 against signed x would overflow.
 * IQ4: computed (lane l of block o's vector is group l = weights 4l .. 4l + 3,
 * so its 4 byte sums packed into its 4 bytes are natural order); groups of 8:
 * 8-byte codebook rows, IQ3 signed by its bit plane. */
IQKT_ALWAYS_INLINE void iqkt_mm_decode_tile8_avx2(const int type, const uint8_t *sb, const int8_t *cb8,
                                                  int8_t *wsg, uint8_t *wabs, float *bsf) {
    const __m256i B126 = _mm256_set1_epi8((char)IQKT_TRELLIS_MAX);
    _mm256_storeu_ps(bsf, iqkt_mm_block_scales_avx2(type, sb));
    if (iqkt_mm_groups4(type)) {
        __m256i seeds8[8];
        iqkt_mm_iq4_seeds_avx2(sb, seeds8);
        for (int o = 0; o < 8; o++) {
            /* words (step 0, step 2) and (step 1, step 3): bytes s0, s1, s2, s3 once interleaved */
            __m256i s02 = iqkt_mm_pair_sums_avx2(seeds8[o], _mm256_set1_epi32((int)IQKT_M1), _mm256_set1_epi32((int)IQKT_M3));
            __m256i s13 = iqkt_mm_pair_sums_avx2(seeds8[o], _mm256_set1_epi32((int)IQKT_M2), _mm256_set1_epi32((int)IQKT_M4));
            __m256i wb = _mm256_or_si256(s02, _mm256_slli_epi32(s13, 8));   /* values + 126 */
            if (IQKT_MM_GEMM8_BIASED) {
                _mm256_storeu_si256((__m256i *)(wabs + 32 * o), wb);
                continue;
            }
            __m256i w = _mm256_sub_epi8(wb, B126);
            _mm256_storeu_si256((__m256i *)(wsg + 32 * o), w);
            _mm256_storeu_si256((__m256i *)(wabs + 32 * o), _mm256_abs_epi8(w));
        }
        return;
    }
    uint32_t rows[32];   /* codebook row of group j = seed - 4096 */
    for (int v = 0; v < 4; v++)
        _mm256_storeu_si256((__m256i *)(rows + 8 * v), _mm256_sub_epi32(iqkt_mm_seeds8_avx2(type, sb, v),
                                                                         _mm256_set1_epi32((int)IQKT_TRELLIS_OFFSET)));
    const __m256i qh = iqkt_mm_sign_plane(type) ? _mm256_loadu_si256((const __m256i *)(sb + 68)) : _mm256_setzero_si256();
    for (int b = 0; b < 8; b++) {
        int64_t g[4];
        for (int j = 0; j < 4; j++) memcpy(&g[j], cb8 + 8 * (size_t)rows[4 * b + j], 8);
        __m256i w = _mm256_setr_epi64x(g[0], g[1], g[2], g[3]);
        __m256i a = _mm256_abs_epi8(w);
        if (iqkt_mm_sign_plane(type)) {   /* |value|, negated where bit b of the weight's qh byte is set */
            const __m256i bit = _mm256_set1_epi8((char)(1 << b));
            __m256i neg = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
            w = _mm256_sub_epi8(_mm256_xor_si256(a, neg), neg);
        }
        if (IQKT_MM_GEMM8_BIASED) {
            _mm256_storeu_si256((__m256i *)(wabs + 32 * b), _mm256_add_epi8(w, B126));
            continue;
        }
        _mm256_storeu_si256((__m256i *)(wsg + 32 * b), w);
        _mm256_storeu_si256((__m256i *)(wabs + 32 * b), a);
    }
}

/* Quad p of block g (blk within the decoded chunk) for TILE weight rows x nvv
 * ymm of 8 activation rows (iqkt_mm_gemm8_avx2). */
IQKT_ALWAYS_INLINE void iqkt_mm_gemm8_quad_avx2(const int nvv, int p, int64_t g, int blk, const uint8_t *const *xb,
                                                const int8_t *wsg, const uint8_t *wabs, __m256i acc[][2]) {
    __m256i X[2];
#pragma GCC unroll 2
    for (int v = 0; v < nvv; v++)
        X[v] = _mm256_load_si256((const __m256i *)(xb[v] + 32 * (8 * g + p)));
#pragma GCC unroll 4
    for (int r = 0; r < IQKT_MM_TILE; r++) {
        int32_t a, sg = 0;
        memcpy(&a, wabs + (int64_t)r * IQKT_MM_KC * 256 + 32 * blk + 4 * p, 4);
        if (!IQKT_MM_GEMM8_BIASED) memcpy(&sg, wsg + (int64_t)r * IQKT_MM_KC * 256 + 32 * blk + 4 * p, 4);
        const __m256i wa = _mm256_set1_epi32(a), ws = _mm256_set1_epi32(sg);
#pragma GCC unroll 2
        for (int v = 0; v < nvv; v++)
            acc[r][v] = iqkt_dpbusd_avx2(acc[r][v], wa, IQKT_MM_GEMM8_BIASED ? X[v] : _mm256_sign_epi8(X[v], ws));
    }
}

/* nvv (1, 2) ymm of 8 activation rows, starting at ymm v0, against the
 * decoded K chunk of a tile (IQKT_MM_TILE weight rows x nblk blocks): per
 * weight quad, vpsignb and iqkt_dpbusd_avx2 (vpmaddubsw + vpmaddwd) add 32
 * products into 8 rows' int32 block dots (4 x 2 accumulators fit the 16 ymm);
 * IQKT_MM_GEMM8_BIASED: one vpdpbusd of the weights + 126, from bsv.  Each
 * block dot is scaled and FMA'd into its row's slot (block mod 8), as in
 * iqkt_mm_row_avx2.  facc: [TILE][nbv][8 slots] ymm; xst: [nbv][n/32] ymm. */
IQKT_ALWAYS_INLINE void iqkt_mm_gemm8_avx2(const int nvv, int64_t v0, int64_t nbv, int64_t n, int64_t g0,
                                           int nblk, const uint8_t *lanes, const __m256 *xst, const int32_t *bsv,
                                           const int8_t *wsg, const uint8_t *wabs, const float *bsf,
                                           __m256 *facc) {
    /* block-major scales and partial sums: a block's addresses are these
     * pointers plus constants */
    const uint8_t *xb[2];
    for (int v = 0; v < nvv; v++) xb[v] = lanes + 8 * (v0 + v) * n;
    __m256 *fg = facc + (v0 / 2) * 8 * IQKT_MM_TILE * 2;
    for (int blk = 0; blk < nblk; blk++) {
        const int64_t g = g0 + blk;
        __m256i acc[IQKT_MM_TILE][2];
#pragma GCC unroll 4
        for (int r = 0; r < IQKT_MM_TILE; r++)
#pragma GCC unroll 2
            for (int v = 0; v < nvv; v++)
                acc[r][v] = IQKT_MM_GEMM8_BIASED ? _mm256_loadu_si256((const __m256i *)(bsv + 8 * (g * nbv + v0 + v)))
                                                 : _mm256_setzero_si256();
        /* the quads unrolled where VNNI leaves registers free; the sign trick's
         * extra temporaries spill when unrolled (plain AVX2 0.90-0.97x) */
        if (IQKT_MM_GEMM8_BIASED) {
#pragma GCC unroll 8
            for (int p = 0; p < 8; p++) iqkt_mm_gemm8_quad_avx2(nvv, p, g, blk, xb, wsg, wabs, acc);
        } else {
#pragma GCC unroll 1
            for (int p = 0; p < 8; p++) iqkt_mm_gemm8_quad_avx2(nvv, p, g, blk, xb, wsg, wabs, acc);
        }
#pragma GCC unroll 4
        for (int r = 0; r < IQKT_MM_TILE; r++) {
            const __m256 bs = _mm256_set1_ps(bsf[r * IQKT_MM_KC * 8 + blk]);
#pragma GCC unroll 2
            for (int v = 0; v < nvv; v++) {
                __m256 *F = fg + ((g & 7) * IQKT_MM_TILE + r) * 2 + v;
                *F = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][v]), _mm256_mul_ps(bs, xst[g * nbv + v0 + v]), *F);
            }
        }
    }
}

/* Scratch (64-byte aligned): xst [n/32][nbv] ymm of activation scales,
 * facc [nbv / 2 rounded up][8 slots][TILE][2] ymm, wsg and wabs [TILE][KC *
 * 256] bytes each, bsf [TILE][KC * 8] floats. */
static inline int64_t iqkt_mm_facc_ymm_avx2(int64_t nbv) { return (nbv + 1) / 2 * 2 * 8 * IQKT_MM_TILE; }
static inline int64_t iqkt_mm_act8_tile_scratch(int64_t nb, int64_t n) {
    if (nb < IQKT_MM_GEMM8_MIN) return 0;
    return 32 * (iqkt_mm_nbv8(nb) * (n / 32) + iqkt_mm_facc_ymm_avx2(iqkt_mm_nbv8(nb)))
           + IQKT_MM_TILE * IQKT_MM_KC * (2 * 256 + 32) + 64;
}

static void iqkt_mm_act8_batch_begin(int64_t nb, int64_t n, const float *xs, int64_t xstride, uint8_t *scratch) {
    iqkt_mm_scales_block_major(nb, n, xs, xstride, IQKT_MM_BV8, scratch);
}

IQKT_ALWAYS_INLINE void iqkt_mm_tile8_avx2(const int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                                           const uint8_t *lanes, int64_t nb, uint8_t *al, const int8_t *cb8,
                                           float *out /* nr x nb */) {
    const int sbb = iqkt_mm_sb_bytes(type);
    const int64_t n = 256 * nsb, nbv = iqkt_mm_nbv8(nb);
    const __m256 *xst = (const __m256 *)al;
    __m256 *facc = (__m256 *)al + nbv * (n / 32);
    int8_t *wsg = (int8_t *)(facc + iqkt_mm_facc_ymm_avx2(nbv));
    uint8_t *wabs = (uint8_t *)wsg + IQKT_MM_TILE * IQKT_MM_KC * 256;
    float *bsf = (float *)(wabs + IQKT_MM_TILE * IQKT_MM_KC * 256);
    const int32_t *bsv = iqkt_mm_act8_bsv_avx2(lanes, nb, n);
    for (int64_t i = 0; i < iqkt_mm_facc_ymm_avx2(nbv); i++) facc[i] = _mm256_setzero_ps();
    for (int64_t c0 = 0; c0 < nsb; c0 += IQKT_MM_KC) {
        int kc = (int)(nsb - c0 < IQKT_MM_KC ? nsb - c0 : IQKT_MM_KC);
        /* rows past nr repeat the last row (results dropped) */
        for (int r = 0; r < IQKT_MM_TILE; r++)
            for (int c = 0; c < kc; c++) {
                int64_t o = (int64_t)r * IQKT_MM_KC * 256 + 256 * c;
                iqkt_mm_decode_tile8_avx2(type, q + (r < nr ? r : nr - 1) * rs + 4 + (c0 + c) * sbb, cb8,
                                          wsg + o, wabs + o, bsf + r * IQKT_MM_KC * 8 + 8 * c);
            }
        int64_t v0 = 0;
        for (; v0 + 2 <= nbv; v0 += 2)
            iqkt_mm_gemm8_avx2(2, v0, nbv, n, 8 * c0, 8 * kc, lanes, xst, bsv, wsg, wabs, bsf, facc);
        if (v0 < nbv)
            iqkt_mm_gemm8_avx2(1, v0, nbv, n, 8 * c0, 8 * kc, lanes, xst, bsv, wsg, wabs, bsf, facc);
    }
    /* each row's 8 slots added in iqkt_mm_sum8's order */
    for (int r = 0; r < nr; r++)
        for (int64_t v = 0; v < nbv; v++) {
            float lane[8][IQKT_MM_BV8];
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(lane[j], facc[(((v / 2) * 8 + j) * IQKT_MM_TILE + r) * 2 + v % 2]);
            int64_t b0 = IQKT_MM_BV8 * v;
            iqkt_mm_sum8_lanes(&lane[0][0], IQKT_MM_BV8, nb - b0 < IQKT_MM_BV8 ? nb - b0 : IQKT_MM_BV8, out + r * nb + b0);
        }
}

static void iqkt_mm_act8_tile(int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                              const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                              const float *xs, int64_t xstride, int64_t nb, uint8_t *scratch, float *out,
                              const int8_t *cb8, const int8_t *cb4) {
    (void)lstride; (void)bsum; (void)bstride; (void)xs; (void)xstride; (void)cb4;
    uint8_t *al = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    switch (type) {   /* a constant type per copy */
    case IQKT_IQ2_KT: iqkt_mm_tile8_avx2(IQKT_IQ2_KT, q, rs, nr, nsb, lanes, nb, al, cb8, out); break;
    case IQKT_IQ3_KT: iqkt_mm_tile8_avx2(IQKT_IQ3_KT, q, rs, nr, nsb, lanes, nb, al, cb8, out); break;
    case IQKT_IQ1_KT: iqkt_mm_tile8_avx2(IQKT_IQ1_KT, q, rs, nr, nsb, lanes, nb, al, cb8, out); break;
    default: iqkt_mm_tile8_avx2(IQKT_IQ4_KT, q, rs, nr, nsb, lanes, nb, al, cb8, out); break;
    }
}
#define IQKT_ISA_HAS_MM_ACT8 1

#endif /* IQKT_ISA_AVX2_H */
