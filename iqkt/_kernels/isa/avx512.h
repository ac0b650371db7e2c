/* AVX512-VNNI variant (avx512f/bw/vl/dq/vnni): the contract of kt_isa.h.
 * Search: 16-lane distances, running minima, compress-stored block lists.
 * GEMV: trellis computed in 16 lanes (B = 1..4), the "pairs" batch kernel
 * (2 <= B < IQKT_MM_GEMM_MIN) and the GEMM kernel with codebook lookups. */
#ifndef IQKT_ISA_AVX512_H
#define IQKT_ISA_AVX512_H

#include "isa/x86.h"

#define IQKT_ISA_NAME "avx512"

/* ---- nearest-codeword search ------------------------------------------- */

/* One 16-code block's distances (AVX512), and the pick of its best lane. */
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

/* Mask of the lanes b < 16 of lb with lb[b] <= best. */
IQKT_INLINE uint32_t iqkt_le_mask16(const float *lb, float best) {
    return (uint32_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(lb), _mm512_set1_ps(best), _CMP_LE_OQ);
}
#define IQKT_ISA_HAS_LE_MASK16 1

IQKT_INLINE void iqkt_scan_codes(const int8_t *vals, const uint16_t *idx, int nblk, int dim,
                                   const float *t, const float *w, float *best_e, int32_t *best_i) {
    float be = *best_e;
    int32_t bi = *best_i;
    for (int b = 0; b < nblk; b++) {
        const int8_t *c = vals + (size_t)b * dim * 16;
        const uint16_t *ib = idx + 16 * b;
        iqkt_pick16(iqkt_dist16(c, dim, t, w), ib, &be, &bi);
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
}
#define IQKT_ISA_HAS_SCAN_MASKED 1

/* Append base + b for every bit b set in mask to list[n..]; returns the new
 * count.  list must have room for n + 16 entries.  No branch per block: the
 * survivors of a chunk's bounds are collected, then scanned together. */
IQKT_INLINE int iqkt_append_mask(int32_t *list, int n, int32_t base, uint32_t mask) {
    __m512i ids = _mm512_add_epi32(_mm512_set1_epi32(base),
                                   _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    /* Register compress + full store (list has 16 spare slots): the
     * compress-to-memory form is microcoded and slow on some cores (Zen 4). */
    _mm512_storeu_si512((void *)(list + n), _mm512_maskz_compress_epi32((__mmask16)mask, ids));
    return n + __builtin_popcount(mask & 0xFFFFu);
}
#define IQKT_ISA_HAS_APPEND_MASK 1

/* Scan the blocks list[0..n) (any order) into the (e, index) minimum.  The
 * blocks are independent, so on AVX512 they keep per-lane running minima
 * and reduce once: no branch per block, and the distance chains of many
 * blocks overlap.  Other ISAs scan block by block; the minimum is the same. */
IQKT_INLINE void iqkt_scan_list(const int8_t *vals, const uint16_t *idx, const int32_t *list, int n,
                                int dim, const float *t, const float *w, float *best_e, int32_t *best_i) {
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
}
#define IQKT_ISA_HAS_BLOCK_BOUNDS 1

/* ---- GEMV ------------------------------------------------------------------ */

/* The types these GEMV kernels handle: all of them. */
#define IQKT_ISA_MM_KERNEL_TYPES ((1u << IQKT_IQ2_KT) | (1u << IQKT_IQ3_KT) | (1u << IQKT_IQ4_KT) | (1u << IQKT_IQ1_KT))

/* Position (within its super-block) of the activation that the AVX512
 * kernels read at lane-slot e (0..255) of a super-block: see the step-major
 * layout described above iqkt_mm_row_g8_avx512. */
static inline int iqkt_mm_lane_pos(int type, int e) {
    int l = e & 15, k = (e >> 4) & 7;
    if (iqkt_mm_groups4(type)) {
        int q = e >> 6;
        k = (e >> 4) & 3;
        return 4 * (16 * q + l) + k;
    }
    int h = e >> 7;
    return 8 * (4 * (4 * h + (l & 3)) + (l >> 2)) + k;
}

/* Whether a product with nb activation rows uses the batch kernels
 * (decoded int16 weight tiles, "pair" activation layout). */
static inline int iqkt_mm_use_batch(int64_t nb) { return nb >= 2; }
#define IQKT_ISA_HAS_MM_USE_BATCH 1

/* Whether a batch product with nb activation rows uses the AVX512 GEMM
 * kernel (activation rows in the lanes) rather than the "pairs" kernel.  Both
 * are bound by vpdpwssd (32 int16 multiply-adds each); the GEMM saves the
 * per-row reductions but pays for codebook lookups and for partly filled
 * 16-row vectors; the crossover was measured near 40 (docs/perf-notes.md). */
#ifndef IQKT_MM_GEMM_MIN
#define IQKT_MM_GEMM_MIN 40
#endif
/* The int8 GEMM (vpdpbusd, 64 multiply-adds each, precision "int8") starts
 * at this many activation rows; up to IQKT_MM_GEMM8_PAIRED (8) rows in the
 * quad-paired form.  Its cost is nearly flat in B up to 8 rows; against the
 * int16-lane "pairs" kernel it breaks even near B = 6 / 3 / 5 (IQ2 / IQ3 /
 * IQ4, docs/perf-notes.md). */
#ifndef IQKT_MM_GEMM8_MIN
#define IQKT_MM_GEMM8_MIN 5
#endif
#if IQKT_MM_GEMM8_MIN < 3
#  error "the quad-paired int8 GEMM needs 10 n bytes of lanes: at least 3 activation rows"
#endif
static inline int iqkt_mm_use_gemm(int64_t nb) {
    return nb >= IQKT_MM_GEMM_MIN;
}

/* Lanes of one activation row (see kt_mm.h). */
static void iqkt_mm_prepare(int type, int64_t nb, const int16_t *x16, int64_t n, uint8_t *lanes, int32_t *bsum) {
    iqkt_mm_bsums(x16, n, bsum);
    if (iqkt_mm_use_batch(nb)) {
        /* vector m (0..7) of a super-block, lane l: the activations of steps
         * 2kp and 2kp+1 of that lane, as an int16 pair (see iqkt_mm_decode_pairs). */
        for (int64_t ib = 0; ib < n / 256; ib++) {
            for (int m = 0; m < 8; m++) {
                for (int l = 0; l < 16; l++) {
                    int e0, kp = iqkt_mm_groups4(type) ? (m & 1) : (m & 3);
                    if (iqkt_mm_groups4(type)) e0 = 64 * (m >> 1) + 16 * (2 * kp) + l;
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
}
#define IQKT_ISA_HAS_MM_PREPARE 1

#define IQKT_MM_BV 16             /* activation rows per zmm in the batch kernel */

static inline int64_t iqkt_mm_nbv(int64_t nb) { return (nb + IQKT_MM_BV - 1) / IQKT_MM_BV; }

/* Lanes of nrows activation rows (x16: nrows x n) into lanes (nrows x
 * IQKT_MM_LANE_BYTES * n bytes) and bsum (nrows x n/32).  Row by row
 * (iqkt_mm_prepare), except for the AVX512 batch kernel, whose layout
 * interleaves the rows: activation rows 16v .. 16v + 15 take bytes
 * [32 v n, 32 v n + 32 n), holding for block blk and pair p (0..15) 16 int32
 * lanes, lane l = x16 elements 2p, 2p + 1 of that block of row 16v + l (int16
 * pair; zero for rows past nrows), at int32 index (16 blk + p) 16 + l. */
static void iqkt_mm_prepare_rows(int type, int64_t nrows, const int16_t *x16, int64_t n, uint8_t *lanes,
                                 int32_t *bsum) {
    if (iqkt_mm_use_gemm(nrows)) {
        for (int64_t r = 0; r < nrows; r++)
            for (int64_t blk = 0; blk < n / 32; blk++) {
                int32_t s = 0;
                for (int k = 0; k < 32; k++) s += x16[r * n + 32 * blk + k];
                bsum[r * (n / 32) + blk] = s;
            }
        /* 16 rows per zmm, the last group padded with zero rows (whole, aligned loads) */
        memset(lanes, 0, (size_t)(iqkt_mm_nbv(nrows) * IQKT_MM_BV * 2 * n));
        for (int64_t b0 = 0; b0 < nrows; b0 += 16) {
            int w = (int)(nrows - b0 < 16 ? nrows - b0 : 16);
            uint8_t *base = lanes + b0 * 2 * n;
            for (int64_t blk = 0; blk < n / 32; blk++)
                for (int p = 0; p < 16; p++)
                    for (int l = 0; l < w; l++)
                        memcpy(base + 4 * ((16 * blk + p) * 16 + l), x16 + (b0 + l) * n + 32 * blk + 2 * p, 4);
        }
        return;
    }
    for (int64_t r = 0; r < nrows; r++)
        iqkt_mm_prepare(type, nrows, x16 + r * n, n, lanes + r * IQKT_MM_LANE_BYTES * n, bsum + r * (n / 32));
}
#define IQKT_ISA_HAS_MM_PREPARE_ROWS 1

/* ---- AVX512-VNNI: trellis computed in 16 lanes, step-major ---------------
 *
 * A zmm holds step k of 16 different groups (lane = group), so the states
 * are seeds * M^k with no per-group broadcast, and the per-lane integer dot
 * accumulated over the steps is a per-group dot: one int->float convert and
 * one FMA with a per-lane block-scale vector per 16 groups.  The activation
 * lanes are laid out in the same order (iqkt_mm_lane_pos), once per call.
 *
 * Groups of 8 (IQ1/IQ2/IQ3), lane order within half h (groups of blocks
 * 4h..4h+3): lane l = 4j + i holds group j of block 4h + i.  With this order the IQ3 sign
 * bits of one step for the 16 lanes are one pext of a 32-bit word.
 * IQ4: lane l of quarter q holds group 16q + l (blocks 2q, 2q+1). */

/* Block dots from per-group dots.  Lane 4j + i of v -> lane i (sum over j). */
static inline __m128i iqkt_mm_sum4x128(__m512i v) {
    __m256i t = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

/* Both halves at once: lane 4j + i of a (b) -> lane i (4 + i), summed over j
 * (6 shuffle/add ops instead of 9 for two iqkt_mm_sum4x128). */
static inline __m256i iqkt_mm_sum4x128x2(__m512i a, __m512i b) {
    __m512i s = _mm512_add_epi32(_mm512_shuffle_i64x2(a, b, 0x44), _mm512_shuffle_i64x2(a, b, 0xEE));
    s = _mm512_add_epi32(_mm512_shuffle_i64x2(s, s, 0x88), _mm512_shuffle_i64x2(s, s, 0xDD));
    return _mm512_castsi512_si256(s);
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

/* Block dots (8 int32, block order) plus bs = -126 * the blocks' activation
 * sums (int8 activations: the kernels add (value + 126) * x, see
 * iqkt_mm_act8_use; the act8 B = 1 lanes come with bsum pre-multiplied). */
static inline __m256i iqkt_mm_act8_unbias(__m256i bd, const int32_t *bs) {
    return _mm256_add_epi32(bd, _mm256_loadu_si256((const __m256i *)bs));
}

/* The 32 codebook indices of a super-block of groups of 8 (IQ1/IQ2/IQ3), word
 * j = group j, read through the type's index layout (iqkt_types.h): the
 * kernels below differ between these types only here and in the sign plane. */
IQKT_ALWAYS_INLINE __m512i iqkt_mm_group8_indices(const int type, const uint8_t *sb) {
    if (iqkt_type_info(type)->index_layout == IQKT_INDEX_U16)
        return _mm512_loadu_si512((const void *)(sb + 4));
    /* IQKT_INDEX_SPLIT13: ql[j] | (nibble j / 16 of qh[j % 16]) << 8 | (bit 4 + j % 4 of sh[j / 4]) << 12 */
    const __m128i DUPW = _mm_setr_epi8(0, -1, 0, -1, 0, -1, 0, -1, 8, -1, 8, -1, 8, -1, 8, -1);
    const __m512i SHBIT = _mm512_set1_epi64(0x0080004000200010ll);   /* word j: 1 << (4 + j % 4) */
    __m512i lo = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(sb + 8)));
    __m128i qh = _mm_loadu_si128((const __m128i *)(sb + 40));
    __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qh, 4), qh), _mm256_set1_epi8(15));
    __m512i idx = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_cvtepu8_epi16(nib), 8));
    /* word j = sh[j / 4]: byte b zero-extended to qword b, then copied to its 4 words */
    __m512i sh = _mm512_shuffle_epi8(_mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)sb)),
                                     _mm512_broadcast_i32x4(DUPW));
    return _mm512_mask_add_epi16(idx, _mm512_test_epi16_mask(sh, SHBIT), idx, _mm512_set1_epi16(0x1000));   /* bit 12 is clear */
}

/* Seeds (index + 4096) of a super-block of groups of 8 in the AVX512 lane
 * order: seeds[h] lane 4j + i = group j of block 4h + i. */
IQKT_ALWAYS_INLINE void iqkt_mm_seeds8(const int type, const uint8_t *sb, __m512i seeds[2]) {
    /* word o of the permuted index vector: h = o / 16, l = o % 16 -> group 4 * (4h + l%4) + l/4 */
    const __m512i IDXP = _mm512_set_epi16(31, 27, 23, 19, 30, 26, 22, 18, 29, 25, 21, 17, 28, 24, 20, 16,
                                          15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    const __m512i OFF = _mm512_set1_epi32((int)IQKT_TRELLIS_OFFSET);
    __m512i idx = _mm512_permutexvar_epi16(IDXP, iqkt_mm_group8_indices(type, sb));
    seeds[0] = _mm512_add_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(idx)), OFF);
    seeds[1] = _mm512_add_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(idx, 1)), OFF);
}

/* The 8 block scales of super-block sb as floats (lane b = block b), read
 * through the type table in vector lanes: the same values as
 * iqkt_mm_block_scale, without a scalar decode per block. */
IQKT_ALWAYS_INLINE __m256 iqkt_mm_block_scales8(const int type, const uint8_t *sb) {
    const iqkt_type_traits *t = iqkt_type_info(type);
    __m256i code;
    if (t->scale_layout == IQKT_SCALES_WORDS) {
        code = _mm256_srli_epi32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)sb), _mm256_set1_epi32(0xFF)), 1);
    } else {   /* 4-bit codes, still to be masked: low nibble of byte b (sh), or nibble b / 4 of byte b % 4 */
        if (t->scale_layout == IQKT_SCALES_SH)
            code = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)sb));
        else
            code = _mm256_srlv_epi32(_mm256_set1_epi32((int)iqkt_load_u32(sb)), _mm256_setr_epi32(0, 8, 16, 24, 4, 12, 20, 28));
        if (t->scale_values && t->scale_bias == 0) {   /* 16 codes: vpermps reads only the low 4 bits, unmasked */
            __m512 table = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)t->scale_values)));
            return _mm512_castps512_ps256(_mm512_permutexvar_ps(_mm512_castsi256_si512(code), table));
        }
        code = _mm256_and_si256(code, _mm256_set1_epi32(15));
    }
    code = _mm256_sub_epi32(code, _mm256_set1_epi32(t->scale_bias));
    if (t->scale_values) {
        __m512i table = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)t->scale_values));
        code = _mm512_castsi512_si256(_mm512_permutexvar_epi32(_mm512_castsi256_si512(code), table));
    }
    return _mm256_cvtepi32_ps(code);
}

IQKT_ALWAYS_INLINE void iqkt_mm_row_g8_avx512(const int type, const int act8, const uint8_t *sbs, int64_t nsb,
                                                const uint8_t *lanes, int64_t lstride,
                                                const int32_t *bsum, int64_t bstride,
                                                const float *xs, int64_t xstride, const int nb,
                                                float *out) {
    static const uint32_t MK[8] = {IQKT_M1, IQKT_M2, IQKT_M3, IQKT_M4, IQKT_M5, IQKT_M6, IQKT_M7, IQKT_M8};
    const __m512i MASK = _mm512_set1_epi32(0x3F3F3F3F);
    const __m512i ONES = _mm512_set1_epi32(0x01010101);
    const __m512i BIAS = _mm512_set1_epi32(-126);
    const __m512i ZERO = _mm512_setzero_si512();
    const int sbb = iqkt_mm_sb_bytes(type), signs = iqkt_mm_sign_plane(type);
    __m256 facc[IQKT_MM_NB];
    for (int bi = 0; bi < IQKT_MM_NB; bi++) facc[bi] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nsb; ib++) {
        const uint8_t *sb = sbs + ib * sbb;
        __m512i seeds[2];
        iqkt_mm_seeds8(type, sb, seeds);
        uint32_t wk[8];   /* sign plane: byte j of wk[k] = qh[8j + k]: signs of step k of group j, bit = block */
        if (signs) iqkt_mm_iq3_sign_words(sb, wk);
        __m256 sc[IQKT_MM_NB];
        {
            __m256 bs = iqkt_mm_block_scales8(type, sb);
            for (int bi = 0; bi < nb; bi++) sc[bi] = _mm256_mul_ps(bs, _mm256_loadu_ps(xs + bi * xstride + 8 * ib));
        }
        __m512i acc[IQKT_MM_NB][2];   /* [h]: one dot chain per half, the halves interleaved */
        for (int bi = 0; bi < nb; bi++) acc[bi][0] = acc[bi][1] = ZERO;
        for (int k = 0; k < 8; k++) {
            for (int h = 0; h < 2; h++) {
                const uint8_t *lh = lanes + 1024 * ib + 512 * h;
                __m512i st = _mm512_and_si512(_mm512_mullo_epi32(seeds[h], _mm512_set1_epi32((int)MK[k])), MASK);
                if (act8) {   /* x in all 4 bytes of its lane: adds (value + 126) * x */
                    for (int bi = 0; bi < nb; bi++)
                        acc[bi][h] = _mm512_dpbusd_epi32(acc[bi][h], st,
                                                         _mm512_loadu_si512((const void *)(lh + bi * lstride + 64 * k)));
                    continue;
                }
                __m512i v = _mm512_dpbusd_epi32(BIAS, st, ONES);    /* sum of the 4 masked bytes - 126 */
                if (signs) {
                    v = _mm512_abs_epi32(v);
                    v = _mm512_mask_sub_epi32(v, (__mmask16)_pext_u32(wk[k], 0x0F0F0F0Fu << (4 * h)), ZERO, v);
                }
                for (int bi = 0; bi < nb; bi++)   /* lanes hold (x16, 0) word pairs: adds v * x16 */
                    acc[bi][h] = _mm512_dpwssd_epi32(acc[bi][h], v,
                                                     _mm512_loadu_si512((const void *)(lh + bi * lstride + 64 * k)));
            }
        }
        for (int bi = 0; bi < nb; bi++) {   /* lane 4j + i of half h -> block 4h + i */
            __m256i bd = iqkt_mm_sum4x128x2(acc[bi][0], acc[bi][1]);
            if (act8) bd = iqkt_mm_act8_unbias(bd, bsum + bi * bstride + 8 * ib);
            facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(bd), sc[bi], facc[bi]);
        }
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

IQKT_ALWAYS_INLINE void iqkt_mm_row_g4_avx512(const int type, const int act8, const uint8_t *sbs, int64_t nsb,
                                               const uint8_t *lanes, int64_t lstride,
                                               const int32_t *bsum, int64_t bstride,
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
        const uint8_t *sb = sbs + ib * iqkt_mm_sb_bytes(type);
        __m512i gd[IQKT_MM_NB][4];
        __m256i w8 = _mm256_loadu_si256((const __m256i *)sb);
        __m512i words = _mm512_castsi256_si512(w8), off = iqkt_mm_iq4_offsets(w8);
        __m256 sc[IQKT_MM_NB];
        {
            __m256 bs = iqkt_mm_block_scales8(type, sb);
            for (int bi = 0; bi < nb; bi++) sc[bi] = _mm256_mul_ps(bs, _mm256_loadu_ps(xs + bi * xstride + 8 * ib));
        }
        for (int q = 0; q < 4; q++) {    /* groups 16q .. 16q+15 = blocks 2q, 2q+1 */
            __m512i seeds = iqkt_mm_iq4_seeds(sb, q, words, off);
            __m512i acc[IQKT_MM_NB][2];
            for (int bi = 0; bi < nb; bi++) acc[bi][0] = acc[bi][1] = ZERO;
            const uint8_t *lq = lanes + 1024 * ib + 256 * q;
            for (int k = 0; k < 4; k++) {
                __m512i st = _mm512_and_si512(_mm512_mullo_epi32(seeds, _mm512_set1_epi32((int)MK[k])), MASK);
                if (act8) {   /* (value + 126) * x, see iqkt_mm_row_g8_avx512 */
                    for (int bi = 0; bi < nb; bi++)
                        acc[bi][k & 1] = _mm512_dpbusd_epi32(acc[bi][k & 1], st,
                                                             _mm512_loadu_si512((const void *)(lq + bi * lstride + 64 * k)));
                    continue;
                }
                __m512i v = _mm512_dpbusd_epi32(BIAS, st, ONES);
                for (int bi = 0; bi < nb; bi++)
                    acc[bi][k & 1] = _mm512_dpwssd_epi32(acc[bi][k & 1], v,
                                                         _mm512_loadu_si512((const void *)(lq + bi * lstride + 64 * k)));
            }
            for (int bi = 0; bi < nb; bi++) gd[bi][q] = _mm512_add_epi32(acc[bi][0], acc[bi][1]);
        }
        for (int bi = 0; bi < nb; bi++) {
            __m256i bd = iqkt_mm_sum8x8(gd[bi]);
            if (act8) bd = iqkt_mm_act8_unbias(bd, bsum + bi * bstride + 8 * ib);
            facc[bi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(bd), sc[bi], facc[bi]);
        }
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
IQKT_ALWAYS_INLINE void iqkt_mm_decode_pairs(const int type, const uint8_t *sb, __m512i *dst) {
    static const uint32_t MK[8] = {IQKT_M1, IQKT_M2, IQKT_M3, IQKT_M4, IQKT_M5, IQKT_M6, IQKT_M7, IQKT_M8};
    const __m512i MASK = _mm512_set1_epi32(0x3F3F3F3F);
    const __m512i ZERO = _mm512_setzero_si512();
    const __m512i BYTES = _mm512_set1_epi32(0x01010101);
    const __m512i B126 = _mm512_set1_epi32(-126);
    const __mmask32 HI = 0xAAAAAAAAu;
    const __m512i ONES = BYTES;
    if (iqkt_mm_groups4(type)) {
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
    const int signs = iqkt_mm_sign_plane(type);
    __m512i seeds[2];
    iqkt_mm_seeds8(type, sb, seeds);
    uint32_t wk[8];
    if (signs) iqkt_mm_iq3_sign_words(sb, wk);
    for (int h = 0; h < 2; h++) {
        /* lane l = 4j + i belongs to block 4h + i */
        __m512i v[8];
        for (int k = 0; k < 8; k++) {
            __m512i st = _mm512_and_si512(_mm512_mullo_epi32(seeds[h], _mm512_set1_epi32((int)MK[k])), MASK);
            v[k] = _mm512_dpbusd_epi32(B126, st, ONES);
            if (signs) {
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
    float *bbuf = (float *)(wbuf + IQKT_MM_TILE * IQKT_MM_KC * 8);       /* TILE * KC * 8 */
    __m256 *facc = (__m256 *)(bbuf + IQKT_MM_TILE * IQKT_MM_KC * 8);     /* nb * TILE */
    for (int64_t i = 0; i < nb * IQKT_MM_TILE; i++) facc[i] = _mm256_setzero_ps();
    for (int64_t c0 = 0; c0 < nsb; c0 += IQKT_MM_KC) {
        int kc = (int)(nsb - c0 < IQKT_MM_KC ? nsb - c0 : IQKT_MM_KC);
        /* rows past nr repeat the last row (results dropped) */
        for (int r = 0; r < IQKT_MM_TILE; r++)
            for (int c = 0; c < kc; c++) {
                const uint8_t *sb = q + (r < nr ? r : nr - 1) * rs + 4 + (c0 + c) * sbb;
                iqkt_mm_decode_pairs(type, sb, wbuf + (r * IQKT_MM_KC + c) * 8);
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
                    if (iqkt_mm_groups4(type)) {
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

/* Natural-order values of the 8 blocks of super-block sb into dst: 256
 * int16 values, or with u8 (the int8 GEMM) 256 bytes value + 126 (0..252,
 * unsigned for vpdpbusd), with u8 == 2 each block's quads in the order
 * 0, 4, 1, 5, 2, 6, 3, 7 (iqkt_mm_gemm8_avx512); float block scales into bsf[8]. */
IQKT_ALWAYS_INLINE void iqkt_mm_decode_tile(const int type, const int u8, const uint8_t *sb, const int8_t *cb8,
                                            const int8_t *cb4, uint8_t *dst, float *bsf) {
    const __m256i B126 = _mm256_set1_epi8((char)IQKT_TRELLIS_MAX);
    _mm256_storeu_ps(bsf, iqkt_mm_block_scales8(type, sb));
    if (iqkt_mm_groups4(type) && u8) {
        /* Computed, not looked up: lane l of quarter q is group 16q + l, whose 4
         * steps are weights 4l .. 4l + 3 of the quarter, so packing each lane's
         * 4 byte sums (value + 126) into its 4 bytes is natural order.  The
         * 4-byte lookups through a spilled index vector cost ~3x more here
         * (4096 x 4096, B = 10..16: 11 ms vs 3.5 ms for IQ2's 8-byte lookups). */
        static const uint32_t MK4[4] = {IQKT_M1, IQKT_M2, IQKT_M3, IQKT_M4};
        const __m512i MASK = _mm512_set1_epi32(0x3F3F3F3F), ONES = _mm512_set1_epi32(0x01010101);
        __m256i w8 = _mm256_loadu_si256((const __m256i *)sb);
        __m512i words = _mm512_castsi256_si512(w8), off = iqkt_mm_iq4_offsets(w8);
        for (int q = 0; q < 4; q++) {
            __m512i seeds = iqkt_mm_iq4_seeds(sb, q, words, off), sum[4];
            for (int k = 0; k < 4; k++) {
                __m512i st = _mm512_and_si512(_mm512_mullo_epi32(seeds, _mm512_set1_epi32((int)MK4[k])), MASK);
                sum[k] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), st, ONES);
            }
            __m512i lo = _mm512_or_si512(sum[0], _mm512_slli_epi32(sum[1], 8));
            __m512i hi = _mm512_or_si512(_mm512_slli_epi32(sum[2], 16), _mm512_slli_epi32(sum[3], 24));
            __m512i z = _mm512_or_si512(lo, hi);
            if (u8 == 2)
                z = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15), z);
            _mm512_storeu_si512((void *)(dst + 64 * q), z);
        }
        return;
    }
    if (iqkt_mm_groups4(type)) {
        /* the 16 codebook rows (flag * 32768 + index) of blocks 2q, 2q + 1, as in iqkt_mm_row_g4_avx512 */
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
                if (u8) _mm256_storeu_si256((__m256i *)(dst + 32 * (2 * q + h)), _mm256_add_epi8(v, B126));
                else _mm512_storeu_si512((void *)(dst + 64 * (2 * q + h)), _mm512_cvtepi8_epi16(v));
            }
        }
        return;
    }
    /* the 32 groups' 8-byte codebook rows by 4 gathers (2 blocks per zmm), measured
     * x1.02-1.08 over 32 scalar loads + inserts (int8 GEMM, B = 8, 4096 x 4096) */
    const iqkt_type_traits *t = iqkt_type_info(type);
    __m512i ids = iqkt_mm_group8_indices(type, sb);
    __m512i qh = _mm512_setzero_si512();
    if (t->sign_plane) qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(sb + 68)));
    __m512i id32[2] = {_mm512_cvtepu16_epi32(_mm512_castsi512_si256(ids)),
                       _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(ids, 1))};
    for (int h = 0; h < 4; h++) {
        __m256i id8 = h & 1 ? _mm512_extracti64x4_epi64(id32[h >> 1], 1) : _mm512_castsi512_si256(id32[h >> 1]);
        __m512i v = _mm512_i32gather_epi64(id8, (const void *)cb8, 8);
        if (t->sign_plane) {   /* blocks 2h, 2h + 1: |value| with the sign bits of qh */
            __m512i sel = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * h))),
                                             _mm256_set1_epi8((char)(1 << (2 * h + 1))), 1);
            v = _mm512_abs_epi8(v);
            v = _mm512_mask_sub_epi8(v, _mm512_test_epi8_mask(qh, sel), _mm512_setzero_si512(), v);
        }
        if (u8 == 2) v = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15), v);
        if (u8) {
            _mm512_storeu_si512((void *)(dst + 64 * h), _mm512_add_epi8(v, _mm512_set1_epi8((char)IQKT_TRELLIS_MAX)));
        } else {
            _mm512_storeu_si512((void *)(dst + 128 * h), _mm512_cvtepi8_epi16(_mm512_castsi512_si256(v)));
            _mm512_storeu_si512((void *)(dst + 128 * h + 64), _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(v, 1)));
        }
    }
}

/* The int8 GEMM for nb <= 8 activation rows (IQKT_MM_GEMM8_PAIRED; the lanes
 * hold 10 n bytes, so nb >= 3): one
 * zmm holds all rows as quad pairs, lane 2l + s = row l's quad p + 4s of a
 * block (p = 0..3), and the weights are stored quad-paired (decode mode 2), so
 * a broadcast 8-byte (quad p, quad p + 4) of a weight row feeds all 16 lanes:
 * 4 vpdpbusd per block and weight row instead of 8 half-empty ones.  Lanes
 * 2l, 2l + 1 are added into row l's block dot (exact), then scaled and FMA'd
 * into its slot as in iqkt_mm_gemm_avx512: the same bits.
 * Activations: int32 (4 blk + p) 16 + 2l + s; bsv [n/32][16] int32, lane 2l =
 * -126 * row l's block sum (iqkt_mm_act8_prepare_gemm).  facc: [TILE][8] ymm. */
#define IQKT_MM_GEMM8_PAIRED 8
IQKT_ALWAYS_INLINE void iqkt_mm_gemm8_avx512(int64_t g0, int nblk, const uint8_t *lanes, const float *xst,
                                             const int32_t *bsv, const uint8_t *wdec, const float *bsf,
                                             __m256 *facc) {
    for (int blk = 0; blk < nblk; blk++) {
        int64_t g = g0 + blk;
        __m512i acc[2][IQKT_MM_TILE];
        __m512i init = _mm512_loadu_si512((const void *)(bsv + 16 * g));
        for (int r = 0; r < IQKT_MM_TILE; r++) {
            acc[0][r] = init;
            acc[1][r] = _mm512_setzero_si512();
        }
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            __m512i X = _mm512_loadu_si512((const void *)(lanes + 64 * (4 * g + p)));
#pragma GCC unroll 8
            for (int r = 0; r < IQKT_MM_TILE; r++) {
                int64_t wq;
                memcpy(&wq, wdec + (int64_t)r * IQKT_MM_KC * 256 + 32 * blk + 8 * p, 8);
                acc[p & 1][r] = _mm512_dpbusd_epi32(acc[p & 1][r], _mm512_set1_epi64(wq), X);
            }
        }
        __m256 xs8 = _mm256_loadu_ps(xst + 16 * g);
#pragma GCC unroll 8
        for (int r = 0; r < IQKT_MM_TILE; r++) {
            __m512i a = _mm512_add_epi32(acc[0][r], acc[1][r]);
            __m256i d = _mm512_cvtepi64_epi32(_mm512_add_epi32(a, _mm512_srli_epi64(a, 32)));
            __m256 *F = facc + r * 8 + (g & 7);
            *F = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d),
                                 _mm256_mul_ps(_mm256_set1_ps(bsf[r * IQKT_MM_KC * 8 + blk]), xs8), *F);
        }
    }
}

/* Where the int8 GEMM's bsv starts in the lanes of nb activation rows. */
static inline int64_t iqkt_mm_act8_bsv_offset(int64_t nb, int64_t n) {
    return (nb <= IQKT_MM_GEMM8_PAIRED ? IQKT_MM_GEMM8_PAIRED : IQKT_MM_BV * iqkt_mm_nbv(nb)) * n;
}

/* nvv (1..4) consecutive zmm of activation rows, starting at zmm v0, for the
 * blocks of one decoded K chunk.  facc: [nbv / 4 rounded up][8 slots][TILE][4]
 * zmm; xst [n/32][nbv] zmm, bsv [n/32][nbv][16]: block-major, so every
 * address of a block is one pointer plus constants (no per-row arithmetic).
 * int16 (act8 = 0): one vpdpwssd adds a broadcast weight pair times 16 rows'
 * activation pairs, 16 per block.  int8 (act8): one vpdpbusd adds a broadcast
 * quad of weights + 126 (unsigned) times 16 rows' activation quads, 8 per
 * block, starting from bsv = -126 * the rows' block sums. */
IQKT_ALWAYS_INLINE void iqkt_mm_gemm_avx512(const int act8, const int nvv, int64_t v0, int64_t nbv, int64_t nb,
                                            int64_t n, int64_t g0, int nblk, const uint8_t *lanes,
                                            const __m512 *xst, const int32_t *bsv, const uint8_t *wdec,
                                            const float *bsf, __m512 *facc) {
    const int NP = act8 ? 8 : 16;           /* weight pairs / quads per block */
    const int EB = act8 ? 1 : 2;            /* bytes per value */
    (void)nb;
    const uint8_t *base[4];   /* 16 rows per zmm, zero rows past nb (iqkt_mm_prepare_rows) */
    for (int v = 0; v < nvv; v++) base[v] = lanes + IQKT_MM_BV * (v0 + v) * EB * n;
    /* nvv <= 2: two accumulator sets (even / odd p) for enough independent chains */
    const int ns = nvv <= 2 ? 2 : 1;
    for (int blk = 0; blk < nblk; blk++) {
        int64_t g = g0 + blk;
        const uint8_t *wb0 = wdec + 32 * EB * blk;
        __m512i acc[2][IQKT_MM_TILE][4];
        /* act8: chain 0 starts at -126 * the rows' block sums (bsv holds them negated) */
        __m512i init[4];
#pragma GCC unroll 8
        for (int v = 0; v < nvv; v++)
            init[v] = act8 ? _mm512_loadu_si512((const void *)(bsv + 16 * (g * nbv + v0 + v))) : _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int sI = 0; sI < ns; sI++)
#pragma GCC unroll 8
            for (int r = 0; r < IQKT_MM_TILE; r++)
#pragma GCC unroll 8
                for (int v = 0; v < nvv; v++) acc[sI][r][v] = sI == 0 ? init[v] : _mm512_setzero_si512();
#pragma GCC unroll 16
        for (int p = 0; p < NP; p++) {
            __m512i X[4];
#pragma GCC unroll 8
            for (int v = 0; v < nvv; v++)
                X[v] = _mm512_load_si512((const void *)(base[v] + 64 * (g * NP + p)));
#pragma GCC unroll 8
            for (int r = 0; r < IQKT_MM_TILE; r++) {
                int32_t word;
                memcpy(&word, wb0 + (int64_t)r * IQKT_MM_KC * 256 * EB + 4 * p, 4);
                __m512i wb = _mm512_set1_epi32(word);
#pragma GCC unroll 8
                for (int v = 0; v < nvv; v++)
                    acc[p % ns][r][v] = act8 ? _mm512_dpbusd_epi32(acc[p % ns][r][v], wb, X[v])
                                             : _mm512_dpwssd_epi32(acc[p % ns][r][v], wb, X[v]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < IQKT_MM_TILE; r++) {
            __m512 bs = _mm512_set1_ps(bsf[r * IQKT_MM_KC * 8 + blk]);
#pragma GCC unroll 8
            for (int v = 0; v < nvv; v++) {
                __m512i a = ns == 2 ? _mm512_add_epi32(acc[0][r][v], acc[ns - 1][r][v]) : acc[0][r][v];
                __m512 *F = facc + (((v0 / 4) * 8 + (g & 7)) * IQKT_MM_TILE + r) * 4 + v;
                *F = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_mul_ps(bs, xst[g * nbv + v0 + v]), *F);
            }
        }
    }
}

/* Scratch layout (64-byte aligned): xst [n/32][nbv] zmm of activation scales,
 * facc [nbv / 4 rounded up][8][TILE][4] zmm, wdec [TILE][KC * 256] int16 (or
 * bytes), bsf [TILE][KC * 8]. */
static inline int64_t iqkt_mm_facc_zmm(int64_t nbv) { return (nbv + 3) / 4 * 4 * 8 * IQKT_MM_TILE; }
static inline int64_t iqkt_mm_scratch_avx512(int64_t nb, int64_t n) {
    return 64 * (iqkt_mm_nbv(nb) * (n / 32) + iqkt_mm_facc_zmm(iqkt_mm_nbv(nb))) + IQKT_MM_TILE * IQKT_MM_KC * (512 + 32) + 64;
}

/* act8: lanes hold int8 activation quads (iqkt_mm_act8_prepare_rows), bsv
 * the -126 * block sums, [n/32][nbv][16] int32; NULL otherwise. */
IQKT_ALWAYS_INLINE void iqkt_mm_tile_avx512(const int type, const int act8, const uint8_t *q, int64_t rs, int nr,
                                            int64_t nsb, const uint8_t *lanes, const int32_t *bsv, int64_t nb,
                                            uint8_t *al, const int8_t *cb8, const int8_t *cb4,
                                            float *out /* nr x nb */) {
    const int sbb = iqkt_mm_sb_bytes(type);
    const int64_t n = 256 * nsb, nbv = iqkt_mm_nbv(nb);
    const int EB = act8 ? 1 : 2;
    const int paired = act8 && nb <= IQKT_MM_GEMM8_PAIRED;
    const __m512 *xst = (const __m512 *)al;
    __m512 *facc = (__m512 *)al + nbv * (n / 32);
    uint8_t *wdec = (uint8_t *)(facc + iqkt_mm_facc_zmm(nbv));
    float *bsf = (float *)(wdec + IQKT_MM_TILE * IQKT_MM_KC * 256 * 2);
    for (int64_t i = 0; i < iqkt_mm_facc_zmm(nbv); i++) facc[i] = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < nsb; c0 += IQKT_MM_KC) {
        int kc = (int)(nsb - c0 < IQKT_MM_KC ? nsb - c0 : IQKT_MM_KC);
        /* rows past nr repeat the last row (results dropped) */
        for (int r = 0; r < IQKT_MM_TILE; r++)
            for (int c = 0; c < kc; c++)
                iqkt_mm_decode_tile(type, paired ? 2 : act8, q + (r < nr ? r : nr - 1) * rs + 4 + (c0 + c) * sbb,
                                    cb8, cb4, wdec + (r * IQKT_MM_KC * 256 + 256 * c) * EB,
                                    bsf + r * IQKT_MM_KC * 8 + 8 * c);
        if (paired) {
            iqkt_mm_gemm8_avx512(8 * c0, 8 * kc, lanes, (const float *)xst, bsv, wdec, bsf, (__m256 *)facc);
            continue;
        }
        for (int64_t v0 = 0; v0 < nbv; v0 += 4) {
            switch (nbv - v0 < 4 ? nbv - v0 : 4) {
            case 1: iqkt_mm_gemm_avx512(act8, 1, v0, nbv, nb, n, 8 * c0, 8 * kc, lanes, xst, bsv, wdec, bsf, facc); break;
            case 2: iqkt_mm_gemm_avx512(act8, 2, v0, nbv, nb, n, 8 * c0, 8 * kc, lanes, xst, bsv, wdec, bsf, facc); break;
            case 3: iqkt_mm_gemm_avx512(act8, 3, v0, nbv, nb, n, 8 * c0, 8 * kc, lanes, xst, bsv, wdec, bsf, facc); break;
            default: iqkt_mm_gemm_avx512(act8, 4, v0, nbv, nb, n, 8 * c0, 8 * kc, lanes, xst, bsv, wdec, bsf, facc); break;
            }
        }
    }
    if (paired) {
        const __m256 *f8 = (const __m256 *)facc;
        for (int r = 0; r < nr; r++) {
            float lane[8][8];
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(lane[j], f8[r * 8 + j]);
            iqkt_mm_sum8_lanes(&lane[0][0], 8, nb, out + r * nb);
        }
        return;
    }
    /* each zmm of slots stored once, then every activation row's 8 slots summed */
    for (int r = 0; r < nr; r++)
        for (int64_t v = 0; v < nbv; v++) {
            float lane[8][IQKT_MM_BV];
            for (int j = 0; j < 8; j++) _mm512_storeu_ps(lane[j], facc[(((v / 4) * 8 + j) * IQKT_MM_TILE + r) * 4 + v % 4]);
            int64_t b0 = IQKT_MM_BV * v;
            iqkt_mm_sum8_lanes(&lane[0][0], IQKT_MM_BV, nb - b0 < IQKT_MM_BV ? nb - b0 : IQKT_MM_BV, out + r * nb + b0);
        }
}


/* One weight row against nb <= IQKT_MM_NB activation rows (see kt_mm.h). */
IQKT_ALWAYS_INLINE void iqkt_mm_row_nb(int type, const uint8_t *sbs, int64_t nsb,
                                       const uint8_t *lanes, int64_t lstride,
                                       const int32_t *bsum, int64_t bstride,
                                       const float *xs, int64_t xstride, const int nb, float *out,
                                       const int8_t *cb8, const int8_t *cb4) {
    (void)cb8; (void)cb4;
    switch (type) {   /* a constant type per copy */
    case IQKT_IQ4_KT: iqkt_mm_row_g4_avx512(IQKT_IQ4_KT, 0, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    case IQKT_IQ3_KT: iqkt_mm_row_g8_avx512(IQKT_IQ3_KT, 0, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    case IQKT_IQ1_KT: iqkt_mm_row_g8_avx512(IQKT_IQ1_KT, 0, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    default: iqkt_mm_row_g8_avx512(IQKT_IQ2_KT, 0, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    }
}
#define IQKT_ISA_HAS_MM_ROW_NB 1


/* Bytes of scratch iqkt_mm_tile needs for nb activation rows. */
static inline int64_t iqkt_mm_tile_scratch(int64_t nb, int64_t n) {
    if (iqkt_mm_use_gemm(nb))
        return iqkt_mm_scratch_avx512(nb, n);
    if (iqkt_mm_use_batch(nb))
        return 64 * IQKT_MM_TILE * IQKT_MM_KC * 8 + 32 * IQKT_MM_TILE * IQKT_MM_KC + 32 * nb * IQKT_MM_TILE + 64;
    return 0;
}
#define IQKT_ISA_HAS_MM_TILE_SCRATCH 1

/* Per-call setup of the batch scratch (activation scales xs, nb x n/32 with
 * row stride xstride); before the first iqkt_mm_tile with this scratch. */
static void iqkt_mm_gemm_scales(int64_t nb, int64_t n, const float *xs, int64_t xstride, uint8_t *scratch) {
    iqkt_mm_scales_block_major(nb, n, xs, xstride, IQKT_MM_BV, scratch);
}

static void iqkt_mm_batch_begin(int64_t nb, int64_t n, const float *xs, int64_t xstride, uint8_t *scratch) {
    if (iqkt_mm_use_gemm(nb)) iqkt_mm_gemm_scales(nb, n, xs, xstride, scratch);
}
#define IQKT_ISA_HAS_MM_BATCH_BEGIN 1

/* The GEMM copy of a type (act8 a constant at each call: int16 or int8 lanes). */
IQKT_ALWAYS_INLINE void iqkt_mm_gemm_by_type_avx512(int type, const int act8, const uint8_t *q, int64_t rs, int nr,
                                                    int64_t nsb, const uint8_t *lanes, const int32_t *bsv,
                                                    int64_t nb, uint8_t *al, const int8_t *cb8, const int8_t *cb4,
                                                    float *out) {
    switch (type) {   /* a constant type per copy */
    case IQKT_IQ2_KT: iqkt_mm_tile_avx512(IQKT_IQ2_KT, act8, q, rs, nr, nsb, lanes, bsv, nb, al, cb8, cb4, out); break;
    case IQKT_IQ3_KT: iqkt_mm_tile_avx512(IQKT_IQ3_KT, act8, q, rs, nr, nsb, lanes, bsv, nb, al, cb8, cb4, out); break;
    case IQKT_IQ1_KT: iqkt_mm_tile_avx512(IQKT_IQ1_KT, act8, q, rs, nr, nsb, lanes, bsv, nb, al, cb8, cb4, out); break;
    default: iqkt_mm_tile_avx512(IQKT_IQ4_KT, act8, q, rs, nr, nsb, lanes, bsv, nb, al, cb8, cb4, out); break;
    }
}

/* Batch product of nr <= IQKT_MM_TILE weight rows (see kt_isa.h). */
static void iqkt_mm_tile(int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                         const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                         const float *xs, int64_t xstride, int64_t nb, uint8_t *scratch, float *out,
                         const int8_t *cb8, const int8_t *cb4) {
    (void)bsum; (void)bstride;
    uint8_t *al = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    if (!iqkt_mm_use_gemm(nb)) {
        switch (type) {
        case IQKT_IQ2_KT: iqkt_mm_tile_pairs_avx512(IQKT_IQ2_KT, q, rs, nr, nsb, lanes, lstride, xs, xstride, nb, al, out); break;
        case IQKT_IQ3_KT: iqkt_mm_tile_pairs_avx512(IQKT_IQ3_KT, q, rs, nr, nsb, lanes, lstride, xs, xstride, nb, al, out); break;
        case IQKT_IQ1_KT: iqkt_mm_tile_pairs_avx512(IQKT_IQ1_KT, q, rs, nr, nsb, lanes, lstride, xs, xstride, nb, al, out); break;
        default: iqkt_mm_tile_pairs_avx512(IQKT_IQ4_KT, q, rs, nr, nsb, lanes, lstride, xs, xstride, nb, al, out); break;
        }
        return;
    }
    iqkt_mm_gemm_by_type_avx512(type, 0, q, rs, nr, nsb, lanes, NULL, nb, al, cb8, cb4, out);
}
#define IQKT_ISA_HAS_MM_TILE 1

/* ---- int8 activations (precision "int8", kt_mm.h IQKT_MM_PLAN_ACT8) ------
 * value + 126 is the sum of the 4 bytes (0..63 each) of the masked trellis
 * state, so with an activation's int8 in all 4 bytes of its lane one
 * vpdpbusd adds (value + 126) * x straight from the state: the byte sum and
 * the int16 multiply of the int16 path go away.  Each block's dot then loses
 * 126 * (sum of its x), from bsum.  Types whose trellis value is the weight
 * (no sign plane: IQ1, IQ2, IQ4); IQ3 keeps the int16-lane kernel. */
/* The int8 GEMM from IQKT_MM_GEMM8_MIN rows, or from 3 (IQ3) / 4 (IQ1) rows,
 * where the int16-lane "pairs" kernel is slower than the (nearly flat in B)
 * quad-paired GEMM already: 4096 x 4096, pairs B = 3 / 4 vs GEMM B = 5: IQ3
 * 2.74 / 2.99 vs 2.55 ms, IQ1 2.21 / 2.50 vs 2.26; IQ2 and IQ4 tie at 4. */
static inline int iqkt_mm_act8_use_batch(int type, int64_t nb) {
    static const int8_t GEMM8_MIN[IQKT_NTYPES] = {[IQKT_IQ2_KT] = IQKT_MM_GEMM8_MIN, [IQKT_IQ3_KT] = 3,
                                                  [IQKT_IQ4_KT] = IQKT_MM_GEMM8_MIN, [IQKT_IQ1_KT] = 4};
    return nb >= (type >= 0 && type < IQKT_NTYPES && GEMM8_MIN[type] ? GEMM8_MIN[type] : IQKT_MM_GEMM8_MIN);
}
static inline int iqkt_mm_act8_use(int type, int64_t nb) {
    return (nb == 1 && !iqkt_type_info(type)->sign_plane) || iqkt_mm_act8_use_batch(type, nb);
}

/* Lanes of the int8 GEMM: activation rows 16v .. 16v + 15 take bytes
 * [16 v n, 16 v n + 16 n), holding for block blk and quad p (0..7) 16 int32
 * lanes, lane l = int8 elements 4p .. 4p + 3 of that block of row 16v + l (zero
 * past the last row), at int32 index (8 blk + p) 16 + l; after all 16 nbv n
 * bytes, bsv: [n/32][nbv][16] int32 = -126 * the block sums of rows 16v + l
 * (0 past the last row). */
static void iqkt_mm_act8_prepare_gemm(int64_t nrows, const int16_t *x16, int64_t n, uint8_t *lanes, int32_t *bsum) {
    int32_t *bsv = (int32_t *)(lanes + iqkt_mm_act8_bsv_offset(nrows, n));
    for (int64_t r = 0; r < nrows; r++)
        iqkt_mm_bsums(x16 + r * n, n, bsum + r * (n / 32));
    if (nrows <= IQKT_MM_GEMM8_PAIRED) {   /* quad pairs, see iqkt_mm_gemm8_avx512 */
        memset(lanes, 0, (size_t)(IQKT_MM_GEMM8_PAIRED * n));
        for (int64_t blk = 0; blk < n / 32; blk++) {
            for (int p = 0; p < 4; p++)
                for (int l = 0; l < nrows; l++)
                    for (int sq = 0; sq < 2; sq++)
                        for (int j = 0; j < 4; j++)
                            lanes[4 * ((4 * blk + p) * 16 + 2 * l + sq) + j] =
                                (uint8_t)x16[l * n + 32 * blk + 4 * (p + 4 * sq) + j];
            for (int l = 0; l < 16; l++) {
                int32_t v = (l % 2 == 0 && l / 2 < nrows) ? -IQKT_TRELLIS_MAX * bsum[(l / 2) * (n / 32) + blk] : 0;
                memcpy(bsv + 16 * blk + l, &v, 4);
            }
        }
        return;
    }
    iqkt_mm_act8_quads(nrows, x16, bsum, n, IQKT_MM_BV, lanes, bsv);
}

/* Lanes: uint32 = x * 0x01010101 (x's byte in all 4 bytes), in the step-major
 * order of the B = 1 kernels (iqkt_mm_lane_pos).  One byte per activation,
 * spread to 4 by a vpshufb per step in the kernel, measured no faster
 * (4096 x 4096 IQ2, B = 1): the shuffle costs what the smaller footprint saves. */
static void iqkt_mm_act8_prepare_rows(int type, int64_t nrows, const int16_t *x16, int64_t n, uint8_t *lanes,
                                      int32_t *bsum) {
    if (iqkt_mm_act8_use_batch(type, nrows)) {
        iqkt_mm_act8_prepare_gemm(nrows, x16, n, lanes, bsum);
        return;
    }
    for (int64_t r = 0; r < nrows; r++) {
        int32_t *bs = bsum + r * (n / 32);
        iqkt_mm_bsums(x16 + r * n, n, bs);
        for (int64_t blk = 0; blk < n / 32; blk++) bs[blk] *= -IQKT_TRELLIS_MAX;   /* see iqkt_mm_act8_unbias */
        for (int64_t ib = 0; ib < n / 256; ib++)
            for (int e = 0; e < 256; e++) {
                uint32_t v = (uint32_t)(uint8_t)x16[r * n + 256 * ib + iqkt_mm_lane_pos(type, e)] * 0x01010101u;
                memcpy(lanes + r * IQKT_MM_LANE_BYTES * n + 1024 * ib + 4 * e, &v, 4);
            }
    }
}

IQKT_ALWAYS_INLINE void iqkt_mm_act8_row_nb(int type, const uint8_t *sbs, int64_t nsb,
                                            const uint8_t *lanes, int64_t lstride,
                                            const int32_t *bsum, int64_t bstride,
                                            const float *xs, int64_t xstride, const int nb, float *out,
                                            const int8_t *cb8, const int8_t *cb4) {
    (void)cb8; (void)cb4;
    switch (type) {   /* no sign plane here (iqkt_mm_act8_use) */
    case IQKT_IQ4_KT: iqkt_mm_row_g4_avx512(IQKT_IQ4_KT, 1, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    case IQKT_IQ1_KT: iqkt_mm_row_g8_avx512(IQKT_IQ1_KT, 1, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    default: iqkt_mm_row_g8_avx512(IQKT_IQ2_KT, 1, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out); break;
    }
}

/* The int8 GEMM (nb >= IQKT_MM_GEMM8_MIN): iqkt_mm_tile_avx512 with act8. */
static inline int64_t iqkt_mm_act8_tile_scratch(int64_t nb, int64_t n) { return iqkt_mm_scratch_avx512(nb, n); }

static void iqkt_mm_act8_batch_begin(int64_t nb, int64_t n, const float *xs, int64_t xstride, uint8_t *scratch) {
    iqkt_mm_gemm_scales(nb, n, xs, xstride, scratch);
}

static void iqkt_mm_act8_tile(int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                              const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                              const float *xs, int64_t xstride, int64_t nb, uint8_t *scratch, float *out,
                              const int8_t *cb8, const int8_t *cb4) {
    (void)lstride; (void)bsum; (void)bstride; (void)xs; (void)xstride;
    uint8_t *al = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    const int32_t *bsv = (const int32_t *)(lanes + iqkt_mm_act8_bsv_offset(nb, 256 * nsb));
    iqkt_mm_gemm_by_type_avx512(type, 1, q, rs, nr, nsb, lanes, bsv, nb, al, cb8, cb4, out);
}
#define IQKT_ISA_HAS_MM_ACT8 1

#endif /* IQKT_ISA_AVX512_H */
