/* The per-ISA kernel code, picked by the flags the variant is compiled with
 * (setup.py, from iqkt/_kernels/isa_manifest.py), never at run time.
 *
 * Each ISA lives in its own header, isa/<name>.h, behind one contract: the
 * functions below.  An ISA header defines the ones it does better (and says
 * so with IQKT_ISA_HAS_<NAME>); isa/generic.h, included after it, supplies
 * the portable version of every other one (all of them in the scalar build).
 * Every contract function returns exactly the same value on every ISA
 * (integer arithmetic, or float lanes doing the same operations in the same
 * order), which keeps the variants' quantized bytes identical; GEMV results
 * follow kt_mm.h's arithmetic contract.
 *
 * Nearest-codeword search (blocks of 16 codes, kt_quantize.pxi):
 *   iqkt_scan_codes      distances of nblk blocks, (e, index) minimum
 *   iqkt_scan_masked     the same for the masked blocks of a chunk, bounds re-checked
 *   iqkt_scan_list       the same for a list of blocks
 *   iqkt_append_mask     list the set bits of a block mask
 *   iqkt_le_mask16       mask of bounds <= best
 *   iqkt_block_bounds    lower bounds of 16 blocks from their boxes
 * GEMV / batch products (kt_kernels.pxi, contract in kt_mm.h):
 *   IQKT_ISA_MM_KERNEL_TYPES  bit mask of the types the ISA's GEMV functions
 *                        below handle; kt_mm.h sends the other types to
 *                        generic.h's lookup kernel (iqkt_mm_isa_has_type)
 *   iqkt_mm_use_batch    whether nb activation rows go to the batch kernel
 *   iqkt_mm_prepare      one activation row's lanes (+ block sums)
 *   iqkt_mm_prepare_rows all activation rows' lanes
 *   iqkt_mm_row_nb       one weight row x nb <= IQKT_MM_NB activation rows
 *   iqkt_mm_block_lanes, iqkt_mm_block_dot
 *                        the lookup kernel's per-32-block lanes and exact dot
 *   iqkt_mm_tile_scratch, iqkt_mm_batch_begin, iqkt_mm_tile
 *                        the batch kernel: IQKT_MM_TILE weight rows x nb rows
 * int8 activations (precision "int8", kt_mm.h IQKT_MM_PLAN_ACT8 / _LOOKUP8):
 *   IQKT_ISA_HAS_MM_ACT8 the ISA's own int8 kernels, all of:
 *     iqkt_mm_act8_use, iqkt_mm_act8_use_batch, iqkt_mm_act8_prepare_rows,
 *     iqkt_mm_act8_row_nb, iqkt_mm_act8_tile_scratch, iqkt_mm_act8_batch_begin,
 *     iqkt_mm_act8_tile   (AVX512: vpdpbusd on the trellis state bytes at
 *                        B = 1, int8 GEMM for B >= IQKT_MM_GEMM8_MIN; AVX2:
 *                        vpmaddubsw on the state bytes at B = 1..4, int8
 *                        GEMM with vpsignb / vpmaddubsw for B >= 5;
 *                        avx2_vnni: the same with vpdpbusd on ymm);
 *                        elsewhere generic.h runs the int16-lane kernels
 *   iqkt_mm_dot32_f64    precision "float": one 32-block's dot in double, in
 *                        generic.h's fixed order (x86: ymm lanes, isa/x86.h)
 *   iqkt_mm_block_dot8, IQKT_ISA_MM_LOOKUP8
 *                        the lookup kernel's dot on int8 lanes, and whether
 *                        it is used (NEON: vdotq_s32)
 */
#ifndef IQKT_KT_ISA_H
#define IQKT_KT_ISA_H

#include "isa/common.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#  define IQKT_HAVE_AVX512 1
#  include "isa/avx512.h"
#elif defined(__AVX2__)
#  define IQKT_HAVE_AVX2 1
/* avx2_vnni: the same header, its u8 x s8 dot helpers on vpdpbusd (MSVC has
 * no __AVXVNNI__; the variant's flags define IQKT_MSVC_AVXVNNI instead) */
#  if defined(__AVXVNNI__) || defined(IQKT_MSVC_AVXVNNI)
#    define IQKT_HAVE_AVXVNNI 1
#  endif
#  include "isa/avx2.h"
#elif defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)
#  define IQKT_HAVE_NEON 1
#  include "isa/neon.h"
#endif
#include "isa/generic.h"

#include "kt_mm.h"

#ifndef IQKT_VARIANT
#  define IQKT_VARIANT "scalar"
#endif

static const char *iqkt_variant_name(void) { return IQKT_VARIANT; }

/* The ISA this translation unit's helpers were compiled for (may be less
 * than the variant's name promises if the compiler lacked the flags). */
static const char *iqkt_simd_name(void) { return IQKT_ISA_NAME; }

#endif /* IQKT_KT_ISA_H */
