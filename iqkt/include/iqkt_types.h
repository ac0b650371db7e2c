/*
 * iqkt_types.h -- the KT formats, one row per type (docs/formats.md says the
 * same in prose).  Everything that differs between IQ1_KT .. IQ4_KT
 * as stored bytes, and the few per-type numbers the kernels and the quantizer
 * need, lives in iqkt_type_traits; code elsewhere reads this table instead
 * of testing type ids.  Ships with iqkt.h (C embedders get the ids from here).
 */
#ifndef IQKT_TYPES_H_INCLUDED
#define IQKT_TYPES_H_INCLUDED

#include <stdint.h>
#include <string.h>

/* Type ids: the order of iqkt.TYPES. */
enum {
    IQKT_IQ2_KT = 0,
    IQKT_IQ3_KT = 1,
    IQKT_IQ4_KT = 2,
    IQKT_IQ1_KT = 3,          /* added last: the ids above are the C API's and stay */
    IQKT_NTYPES = 4
};

/* Super-block length: row lengths n must be positive multiples of it.  A
 * super-block is 8 blocks of 32 weights, each with its own scale. */
#define IQKT_BLOCK 256

/* The integer trellis: state = state * IQKT_TRELLIS_MUL, value = the sum of the
 * four bytes of state & 0x3F3F3F3F, minus 126.  A group starts at
 * seed = index + IQKT_TRELLIS_OFFSET (+ the type's codebook_stride for IQ4_KT's
 * second codebook). */
#define IQKT_TRELLIS_MUL 0xCBAC1FEDu
#define IQKT_TRELLIS_OFFSET 4096u
#define IQKT_TRELLIS_MAX 126

/* Where a super-block keeps its codebook indices. */
enum {
    IQKT_INDEX_U16 = 0,       /* bytes 4..67: one little-endian uint16 per group of 8 */
    IQKT_INDEX_SPLIT15 = 1,   /* 15 bits per group of 4: bits 0..7 in ql (bytes 32..95), 8..11 in
                                 nibbles of qh (bytes 96..127), 12..14 in the block words;
                                 bit 0 of a block word picks the codebook */
    IQKT_INDEX_SPLIT13 = 2    /* 13 bits per group of 8 (group j = 4b + g): bits 0..7 in ql[j]
                                 (bytes 8..39), 8..11 in nibble j / 16 of qh[j % 16] (bytes
                                 40..55), 12 in bit 4 + g of sh[b] (byte b) */
};

/* Where a super-block keeps its 8 block scales. */
enum {
    IQKT_SCALES_NIBBLES = 0,  /* bytes 0..3: block b in nibble b / 4 of byte b % 4 */
    IQKT_SCALES_WORDS = 1,    /* bits 1..7 of the uint32 word of block b (bytes 4b..4b+3) */
    IQKT_SCALES_SH = 2        /* low nibble of byte b (sh[b]) */
};

typedef struct iqkt_type_traits {
    const char *name;               /* "iq2_kt", ... (iqkt.TYPES) */
    int ggml_type;                  /* ggml tensor type id stored in GGUF */
    int gguf_file_type;             /* GGUF general.file_type "MOSTLY_<NAME>" */
    int block_bytes;                /* bytes per super-block of IQKT_BLOCK weights */
    int group_size;                 /* trellis values per codebook index (steps per seed) */
    int codebook_size;              /* indices per codebook */
    int codebooks;                  /* 2: a per-block flag picks codebook 1 (IQ4_KT) */
    int index_layout;               /* IQKT_INDEX_* */
    int sign_plane;                 /* 1: the trellis gives magnitudes, a 32-byte bit plane
                                       at bytes 68..99 the signs (IQ3_KT) */
    int scale_layout;               /* IQKT_SCALES_* */
    int scale_bias;                 /* stored field - scale_bias = the code */
    int scale_code_min, scale_code_max;
    const int16_t *scale_values;    /* code -> block scale; NULL: the code is the scale */
    int scale_abs_max;              /* largest |block scale| */
    float inference_factor;         /* the reference's inference kernels multiply d by it */
    int search_levels;              /* quantizer: grid levels per coordinate of the search index */
} iqkt_type_traits;

/* IQ2_KT's (and IQ1_KT's) non-linear block scales. */
#define IQKT_IQ2_SCALE_VALUES {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

/* The table; NULL for an unknown id. */
static inline const iqkt_type_traits *iqkt_type_info(int type) {
    static const int16_t iq2_scales[16] = IQKT_IQ2_SCALE_VALUES;
    static const iqkt_type_traits table[IQKT_NTYPES] = {
        /* name    ggml gguf bytes G  codebook cbs indices             sign scales               bias code range values      max  inference search */
        {"iq2_kt", 153, 151,  68, 8, 65536,    1,  IQKT_INDEX_U16,     0,   IQKT_SCALES_NIBBLES,  0,   0,  15,   iq2_scales, 127, 1.05f, 2},
        {"iq3_kt", 154, 152, 100, 8, 65536,    1,  IQKT_INDEX_U16,     1,   IQKT_SCALES_NIBBLES,  0,   0,  15,   NULL,        15, 1.0f,  2},
        {"iq4_kt", 155, 153, 128, 4, 32768,    2,  IQKT_INDEX_SPLIT15, 0,   IQKT_SCALES_WORDS,   64, -64,  63,   NULL,        64, 1.0f,  6},
        {"iq1_kt", 158, 156,  56, 8,  8192,    1,  IQKT_INDEX_SPLIT13, 0,   IQKT_SCALES_SH,       0,   0,  15,   iq2_scales, 127, 1.0f,  2},
    };
    return (type >= 0 && type < IQKT_NTYPES) ? &table[type] : NULL;
}

/* Block scale of a code (a known type). */
static inline int iqkt_scale_value(const iqkt_type_traits *t, int code) {
    return t->scale_values ? t->scale_values[code] : code;
}

/* Stored scale code of block b (0..7) of super-block sb. */
static inline int iqkt_block_scale_code(const iqkt_type_traits *t, const uint8_t *sb, int b) {
    if (t->scale_layout == IQKT_SCALES_WORDS)
        return (sb[4 * b] >> 1) - t->scale_bias;
    if (t->scale_layout == IQKT_SCALES_SH)
        return sb[b] & 15;
    return (sb[b & 3] >> (4 * (b >> 2))) & 15;
}

/* Block scale of block b of super-block sb. */
static inline int iqkt_block_scale(const iqkt_type_traits *t, const uint8_t *sb, int b) {
    return iqkt_scale_value(t, iqkt_block_scale_code(t, sb, b));
}

/* Bytes per row of n weights (the float32 row scale included). */
static inline int64_t iqkt_type_row_size(const iqkt_type_traits *t, int64_t n) {
    return 4 + (int64_t)t->block_bytes * (n / IQKT_BLOCK);
}

#endif /* IQKT_TYPES_H_INCLUDED */
