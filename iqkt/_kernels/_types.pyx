# cython: language_level=3
"""The KT format table (iqkt/include/iqkt_types.h) for Python code.

Compiled without ISA flags, like _cpu, so iqkt._api can read it at import
on any CPU without loading a kernel variant.
"""

from libc.stdint cimport int16_t, int64_t

cdef extern from "iqkt_types.h" nogil:
    enum:
        IQKT_NTYPES
        IQKT_BLOCK
    ctypedef struct iqkt_type_traits:
        const char *name
        int ggml_type
        int gguf_file_type
        int block_bytes
        int group_size
        int codebook_size
        int codebooks
        int sign_plane
        int scale_code_min
        int scale_code_max
        const int16_t *scale_values
        int scale_abs_max
        float inference_factor
    const iqkt_type_traits *iqkt_type_info(int type)


def _row(int tid):
    cdef const iqkt_type_traits *t = iqkt_type_info(tid)
    return dict(
        id=tid,
        name=t.name.decode("ascii"),
        ggml_type=t.ggml_type,
        gguf_file_type=t.gguf_file_type,
        block_bytes=t.block_bytes,
        group_size=t.group_size,
        codebook_size=t.codebook_size,
        codebooks=t.codebooks,
        sign_plane=bool(t.sign_plane),
        scale_codes=(t.scale_code_min, t.scale_code_max),
        scale_values=(tuple(t.scale_values[c] for c in range(t.scale_code_min, t.scale_code_max + 1))
                      if t.scale_values != NULL else None),
        scale_abs_max=t.scale_abs_max,
        inference_factor=t.inference_factor,
    )


#: Weights per super-block.
BLOCK = IQKT_BLOCK
#: One dict per type id, in id order.
TYPE_TABLE = tuple(_row(i) for i in range(IQKT_NTYPES))
