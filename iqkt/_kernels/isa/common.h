/* ISA-independent pieces every kernel variant shares: byte loads, the
 * (distance, index) order of the nearest-codeword scan, and the GEMV's
 * arithmetic constants.  Included first by kt_isa.h. */
#ifndef IQKT_ISA_COMMON_H
#define IQKT_ISA_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(_MSC_VER) && !defined(__clang__)
#  include <intrin.h>
#endif

#include "iqkt_types.h"
#include "kt_decode.h"

/* The search helpers take the group size (8 or 4) as an argument; forcing
 * them inline lets the caller's constant turn every per-coordinate loop into
 * straight-line code. */
#if defined(__GNUC__) || defined(__clang__)
#  define IQKT_INLINE static inline __attribute__((always_inline))
#else
#  define IQKT_INLINE static __forceinline
#endif
#if defined(_MSC_VER)
#  define IQKT_ALWAYS_INLINE static __forceinline
#else
#  define IQKT_ALWAYS_INLINE static inline __attribute__((always_inline))
#endif

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

/* a * b + c with one rounding: the step of every search distance.  All
 * variants use the fused form (FMA instructions in the SIMD helpers, fmaf
 * here), so they round identically, and on the SIMD builds a step is one
 * instruction instead of two (docs/perf-notes.md).
 * fmaf can be a library call (x86-64 without FMA): the portable scan only
 * uses it for the few codes that can still win (see iqkt_scan_codes). */
static inline float iqkt_fma(float a, float b, float c) { return fmaf(a, b, c); }

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

/* ---- GEMV (see kt_mm.h for the arithmetic contract) ---------------------- */

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

/* The batch kernels' last step: slot vectors stored as lane[j * width + l]
 * (slot j of activation row l), out[l] = iqkt_mm_sum8 of row l's 8 slots for
 * l < count. */
static inline void iqkt_mm_sum8_lanes(const float *lane, int width, int64_t count, float *out) {
    for (int64_t l = 0; l < count; l++) {
        float f[8];
        for (int j = 0; j < 8; j++) f[j] = lane[j * width + l];
        out[l] = iqkt_mm_sum8(f);
    }
}

/* The GEMMs' activation scales, block-major: xst[(g nv + v) width + l] =
 * scale of block g of activation row width v + l (0 past row nb), nv =
 * groups of width rows; into the 64-byte aligned start of scratch. */
static inline void iqkt_mm_scales_block_major(int64_t nb, int64_t n, const float *xs, int64_t xstride, int width,
                                              uint8_t *scratch) {
    float *xst = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    const int64_t nv = (nb + width - 1) / width;
    for (int64_t v = 0; v < nv; v++)
        for (int64_t g = 0; g < n / 32; g++)
            for (int l = 0; l < width; l++) {
                int64_t b = width * v + l;
                xst[(g * nv + v) * width + l] = b < nb ? xs[b * xstride + g] : 0.0f;
            }
}

/* The int8 GEMMs' activation lanes, width rows per vector: rows width v ..
 * width v + width - 1 take bytes [width v n, width (v + 1) n), int32 index
 * (8 blk + p) width + l = the int8 elements 4p .. 4p + 3 of block blk of row
 * width v + l (zero past row nrows); bsv (if not NULL): [n/32][nv][width]
 * int32 = -126 x those rows' block sums from bsum (0 past the last row). */
static inline void iqkt_mm_act8_quads(int64_t nrows, const int16_t *x16, const int32_t *bsum, int64_t n,
                                      int width, uint8_t *lanes, int32_t *bsv) {
    const int64_t nv = (nrows + width - 1) / width;
    for (int64_t v = 0; v < nv; v++)
        for (int64_t blk = 0; blk < n / 32; blk++)
            for (int p = 0; p < 8; p++)
                for (int l = 0; l < width; l++) {
                    int64_t row = width * v + l;
                    uint8_t *dst = lanes + width * v * n + 4 * ((8 * blk + p) * width + l);
                    for (int j = 0; j < 4; j++) dst[j] = row < nrows ? (uint8_t)x16[row * n + 32 * blk + 4 * p + j] : 0;
                }
    if (bsv)
        for (int64_t blk = 0; blk < n / 32; blk++)
            for (int64_t v = 0; v < nv; v++)
                for (int l = 0; l < width; l++) {
                    int64_t row = width * v + l;
                    bsv[(blk * nv + v) * width + l] = row < nrows ? -IQKT_TRELLIS_MAX * bsum[row * (n / 32) + blk] : 0;
                }
}

/* bsum[blk] = sum of the 32 x16 of block blk (the kernels that add the -126
 * bias of the trellis values after the product use it). */
static inline void iqkt_mm_bsums(const int16_t *x16, int64_t n, int32_t *bsum) {
    for (int64_t blk = 0; blk < n / 32; blk++) {
        const int16_t *xb = x16 + 32 * blk;
        int32_t s = 0;
        for (int k = 0; k < 32; k++) s += xb[k];
        bsum[blk] = s;
    }
}

#endif /* IQKT_ISA_COMMON_H */
