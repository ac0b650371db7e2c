# Embedding API (iqkt/include/iqkt.h): this variant's table of function
# pointers to the raw-pointer kernels, exported as the PyCapsule `_C_API`.
# iqkt/__init__.py hands out the capsule of the variant in use; C code gets
# it through iqkt_import() and Cython code through iqkt/capi.pxd.
#
# The struct layout comes from the header (the one definition downstream
# code compiles against), so this file only fills it in.

from cpython.pycapsule cimport PyCapsule_New

cdef extern from "iqkt.h":
    enum:
        IQKT_API_VERSION
        IQKT_IQ2_KT
        IQKT_IQ3_KT
        IQKT_IQ4_KT
        IQKT_OK
        IQKT_ERR_TYPE
        IQKT_ERR_SIZE
        IQKT_ERR_NONFINITE_INPUT
        IQKT_ERR_NONFINITE_SCALE
        IQKT_ERR_NOMEM
        IQKT_ERR_IMATRIX
        IQKT_ERR_ARG
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


cdef int capi_check_constants() except -1:
    # The header repeats the kernels' type ids and error codes for C callers;
    # refuse to export a table whose codes would be misread.
    cdef int[11] ours = [KT_IQ2, KT_IQ3, KT_IQ4, KT_OK, KT_ERR_TYPE, KT_ERR_SIZE,
                         KT_ERR_NONFINITE_INPUT, KT_ERR_NONFINITE_SCALE, KT_ERR_NOMEM,
                         KT_ERR_IMATRIX, KT_ERR_ARG]
    cdef int[11] header = [IQKT_IQ2_KT, IQKT_IQ3_KT, IQKT_IQ4_KT, IQKT_OK, IQKT_ERR_TYPE,
                           IQKT_ERR_SIZE, IQKT_ERR_NONFINITE_INPUT, IQKT_ERR_NONFINITE_SCALE,
                           IQKT_ERR_NOMEM, IQKT_ERR_IMATRIX, IQKT_ERR_ARG]
    cdef int i
    for i in range(11):
        if ours[i] != header[i]:
            raise ImportError(f"iqkt build error: iqkt.h constant #{i} is {header[i]}, "
                              f"the kernels use {ours[i]}")
    return 0


cdef iqkt_api CAPI_TABLE

capi_check_constants()
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
