/* NEON variant (armv8.2-a + dotprod): the contract of kt_isa.h.  Search:
 * 4 x 4-lane distances and bounds.  GEMV: the portable lookup kernel
 * (generic.h) with activations split into int8 hi/lo planes
 * (x16 = 256 * hi + lo) and block dots by vdotq_s32. */
#ifndef IQKT_ISA_NEON_H
#define IQKT_ISA_NEON_H

#include <arm_neon.h>

#define IQKT_ISA_NAME "neon"

/* ---- nearest-codeword search ------------------------------------------- */

IQKT_INLINE void iqkt_scan_codes(const int8_t *vals, const uint16_t *idx, int nblk, int dim,
                                   const float *t, const float *w, float *best_e, int32_t *best_i) {
    float be = *best_e;
    int32_t bi = *best_i;
    for (int b = 0; b < nblk; b++) {
        const int8_t *c = vals + (size_t)b * dim * 16;
        const uint16_t *ib = idx + 16 * b;
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
    }
    *best_e = be;
    *best_i = bi;
}
#define IQKT_ISA_HAS_SCAN_CODES 1

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
}
#define IQKT_ISA_HAS_BLOCK_BOUNDS 1

/* ---- GEMV ------------------------------------------------------------------ */

/* Lanes of one 32-block: 32 int8 "hi" then 32 int8 "lo" with x16 = 256*hi + lo. */
static inline void iqkt_mm_block_lanes(const int16_t *xb, uint8_t *lb) {
    for (int k = 0; k < 32; k++) {
        int hi = (xb[k] + 128) >> 8;          /* floor: lo in [-128, 127] */
        lb[k] = (uint8_t)(int8_t)hi;
        lb[32 + k] = (uint8_t)(int8_t)(xb[k] - 256 * hi);
    }
}
#define IQKT_ISA_HAS_MM_BLOCK_LANES 1

/* Exact dot of 32 trellis values with one block of lanes. */
static inline int32_t iqkt_mm_block_dot(const int8_t *vals, const uint8_t *lb) {
    int8x16_t w0 = vld1q_s8(vals), w1 = vld1q_s8(vals + 16);
    int32x4_t hi = vdotq_s32(vdupq_n_s32(0), w0, vld1q_s8((const int8_t *)lb));
    hi = vdotq_s32(hi, w1, vld1q_s8((const int8_t *)lb + 16));
    int32x4_t lo = vdotq_s32(vdupq_n_s32(0), w0, vld1q_s8((const int8_t *)lb + 32));
    lo = vdotq_s32(lo, w1, vld1q_s8((const int8_t *)lb + 48));
    return 256 * vaddvq_s32(hi) + vaddvq_s32(lo);
}
#define IQKT_ISA_HAS_MM_BLOCK_DOT 1

/* Exact dot of 32 trellis values with one block of int8 lanes (precision
 * "int8"): two vdotq_s32, half the int16 split's four. */
static inline int32_t iqkt_mm_block_dot8(const int8_t *vals, const uint8_t *lb) {
    int32x4_t s = vdotq_s32(vdupq_n_s32(0), vld1q_s8(vals), vld1q_s8((const int8_t *)lb));
    s = vdotq_s32(s, vld1q_s8(vals + 16), vld1q_s8((const int8_t *)lb + 16));
    return vaddvq_s32(s);
}
#define IQKT_ISA_HAS_MM_BLOCK_DOT8 1
#define IQKT_ISA_MM_LOOKUP8 1      /* by instruction count; not timed on hardware (QEMU only here) */

#endif /* IQKT_ISA_NEON_H */
