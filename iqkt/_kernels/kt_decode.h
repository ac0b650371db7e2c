/* Reading a super-block through the type table (iqkt_types.h): the one place
 * that turns stored bytes into codebook indices and integer trellis values.
 * Dequantization, the float product and the lookup GEMV (scalar, NEON) use
 * it; the x86 GEMV kernels compute the trellis in vector lanes instead
 * (isa headers) and must agree with it bit for bit. */
#ifndef IQKT_KT_DECODE_H
#define IQKT_KT_DECODE_H

#include <stdint.h>
#include <string.h>

#include "iqkt_types.h"

/* Forced inline: callers pass a constant type, and the table's fields then
 * fold into the decode (no per-block table reads or branches). */
#if defined(_MSC_VER) && !defined(__clang__)
#  define IQKT_DECODE_INLINE static __forceinline
#else
#  define IQKT_DECODE_INLINE static inline __attribute__((always_inline))
#endif

/* Bits 0..14 of the index of group g (0..7) of block b, IQKT_INDEX_SPLIT15
 * layout; w is the block's word (bytes 4b..4b+3). */
IQKT_DECODE_INLINE uint32_t iqkt_split15_index(const uint8_t *sb, uint32_t w, int b, int g) {
    int jj = 8 * b + g;
    return sb[32 + jj] | (uint32_t)((sb[96 + (jj & 31)] >> (4 * (jj >> 5))) & 15) << 8
           | ((w >> (8 + 3 * g)) & 7) << 12;
}

/* Row of the type's codebook table holding group g of block b: the index,
 * plus codebook_size when the block's flag picks the second codebook. */
IQKT_DECODE_INLINE uint32_t iqkt_group_index(const iqkt_type_traits *t, const uint8_t *sb, int b, int g) {
    if (t->index_layout == IQKT_INDEX_SPLIT15) {
        uint32_t w;
        memcpy(&w, sb + 4 * b, 4);
        return iqkt_split15_index(sb, w, b, g) + (w & 1) * (uint32_t)t->codebook_size;
    }
    if (t->index_layout == IQKT_INDEX_SPLIT13) {
        int j = 4 * b + g;
        return sb[8 + j] | (uint32_t)((sb[40 + (j & 15)] >> (4 * (j >> 4))) & 15) << 8
               | (uint32_t)((sb[b] >> (4 + g)) & 1) << 12;
    }
    uint16_t idx;
    memcpy(&idx, sb + 4 + 2 * (4 * b + g), 2);
    return idx;
}

/* Whether weight k (0..31) of block b is negative (types with a sign plane). */
IQKT_DECODE_INLINE int iqkt_sign_bit(const uint8_t *sb, int b, int k) {
    return (sb[68 + k] >> b) & 1;
}

/* The 32 trellis values of block b from the type's codebook table cb:
 * signed values, or for a sign-plane type the magnitudes when signed_ == 0. */
IQKT_DECODE_INLINE void iqkt_decode_values(const iqkt_type_traits *t, const uint8_t *sb, int b,
                                      const int8_t *cb, int signed_, int8_t *vals) {
    const int G = t->group_size;
    if (t->index_layout == IQKT_INDEX_SPLIT15) {   /* the block word read once */
        uint32_t w;
        memcpy(&w, sb + 4 * b, 4);
        const int8_t *cbk = cb + (size_t)G * (w & 1) * t->codebook_size;
        uint32_t idx[8];
        for (int g = 0; g < 32 / G; g++) idx[g] = iqkt_split15_index(sb, w, b, g);
        for (int g = 0; g < 32 / G; g++) memcpy(vals + G * g, cbk + (size_t)G * idx[g], G);
    } else {
        for (int g = 0; g < 32 / G; g++)
            memcpy(vals + G * g, cb + (size_t)G * iqkt_group_index(t, sb, b, g), G);
    }
    if (t->sign_plane) {
        for (int k = 0; k < 32; k++) {
            int v = vals[k] < 0 ? -vals[k] : vals[k];
            vals[k] = (int8_t)(signed_ && iqkt_sign_bit(sb, b, k) ? -v : v);
        }
    }
}

/* Weights of nsb super-blocks (sbs) with row scale d, in the reference's
 * float order (d * block_scale) * value.  A sign-plane type negates the float
 * product, so a zero magnitude with its sign bit set is -0.0, as in the
 * reference. */
IQKT_DECODE_INLINE void iqkt_decode_superblocks_t(const int type, const uint8_t *sbs, int64_t nsb, float d,
                                                  const int8_t *cb, float *out) {
    const iqkt_type_traits *t = iqkt_type_info(type);
    int8_t vals[32];
    for (int64_t ib = 0; ib < nsb; ib++) {
        const uint8_t *sb = sbs + ib * t->block_bytes;
        float *o = out + ib * IQKT_BLOCK;
        for (int b = 0; b < 8; b++) {
            float dl = d * (float)iqkt_block_scale(t, sb, b);
            iqkt_decode_values(t, sb, b, cb, 0, vals);
            for (int k = 0; k < 32; k++) {
                float m = dl * (float)vals[k];
                o[32 * b + k] = (t->sign_plane && iqkt_sign_bit(sb, b, k)) ? -m : m;
            }
        }
    }
}

static inline void iqkt_decode_superblocks(int type, const uint8_t *sbs, int64_t nsb, float d,
                                           const int8_t *cb, float *out) {
    switch (type) {   /* one specialised copy per type */
    case IQKT_IQ2_KT: iqkt_decode_superblocks_t(IQKT_IQ2_KT, sbs, nsb, d, cb, out); break;
    case IQKT_IQ3_KT: iqkt_decode_superblocks_t(IQKT_IQ3_KT, sbs, nsb, d, cb, out); break;
    case IQKT_IQ1_KT: iqkt_decode_superblocks_t(IQKT_IQ1_KT, sbs, nsb, d, cb, out); break;
    default: iqkt_decode_superblocks_t(IQKT_IQ4_KT, sbs, nsb, d, cb, out); break;
    }
}

#endif /* IQKT_KT_DECODE_H */
