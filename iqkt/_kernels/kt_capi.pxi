# Embedding API (iqkt/include/iqkt.h): this variant's table of function
# pointers to the raw-pointer kernels, exported as the PyCapsule `_C_API`.
# iqkt/__init__.py hands out the capsule of the variant in use; C code gets
# it through iqkt_import() and Cython code through iqkt/capi.pxd.
#
# The struct layout, type ids and return codes come from the header (the one
# definition downstream code compiles against), so this file only fills it in.

from cpython.pycapsule cimport PyCapsule_New

cdef extern from "iqkt.h":
    enum:
        IQKT_API_VERSION
    const char *IQKT_CAPSULE_NAME

    ctypedef struct iqkt_api:
        uint32_t abi_version
        uint32_t size
        const char *variant
        int64_t (*row_size)(int, int64_t) noexcept nogil
        int (*trellis)(const uint32_t *, int64_t, int64_t, int8_t *) noexcept nogil
        int (*quantize_rows)(int, const float *, int64_t, int64_t, const float *,
                             uint8_t *, double *) noexcept nogil
        int (*dequantize_rows)(int, const uint8_t *, int64_t, int64_t, float *, int) noexcept nogil
        int (*mul_mat)(int, const uint8_t *, int64_t, int64_t, const float *, int64_t,
                       float *, int) noexcept nogil


cdef iqkt_api CAPI_TABLE

CAPI_TABLE.abi_version = IQKT_API_VERSION
CAPI_TABLE.size = sizeof(iqkt_api)
CAPI_TABLE.variant = iqkt_variant_name()
CAPI_TABLE.row_size = kt_row_size
CAPI_TABLE.trellis = kt_trellis
CAPI_TABLE.quantize_rows = kt_quantize_rows
CAPI_TABLE.dequantize_rows = kt_dequantize_rows
CAPI_TABLE.mul_mat = kt_mul_mat

#: PyCapsule named "iqkt._C_API" holding a `const iqkt_api *` (see iqkt.h).
_C_API = PyCapsule_New(<void *>&CAPI_TABLE, IQKT_CAPSULE_NAME, NULL)
C_API_VERSION = IQKT_API_VERSION
