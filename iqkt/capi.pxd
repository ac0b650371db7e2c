# Cython declarations of iqkt's embedding API (iqkt/include/iqkt.h).
#
#     cimport iqkt.capi as kt          # or: from iqkt cimport capi
#     kt.import_iqkt()                 # once, at module level (raises ImportError)
#     ...
#     with nogil:
#         rc = kt.mul_mat(kt.IQ4_KT, &q[0, 0], nrows, n, &x[0, 0], 1, &y[0, 0],
#                         kt.PRECISION_INT8)
#
# The C compiler needs iqkt.get_include() on its include path (the header
# holds the function table and the inline wrappers declared here).  All
# functions are `noexcept nogil`: they return IQKT_OK (0) or a negative error
# code, which strerror() turns into a message.  They dispatch to the kernel
# variant that was in use (iqkt.isa()) when import_iqkt() ran.

from libc.stdint cimport uint8_t, uint32_t, int8_t, int64_t

cdef extern from "iqkt.h":
    enum:
        API_VERSION "IQKT_API_VERSION"
        BLOCK "IQKT_BLOCK"

        IQ2_KT "IQKT_IQ2_KT"
        IQ3_KT "IQKT_IQ3_KT"
        IQ4_KT "IQKT_IQ4_KT"
        IQ1_KT "IQKT_IQ1_KT"

        OK "IQKT_OK"
        ERR_TYPE "IQKT_ERR_TYPE"
        ERR_SIZE "IQKT_ERR_SIZE"
        ERR_NONFINITE_INPUT "IQKT_ERR_NONFINITE_INPUT"
        ERR_NONFINITE_SCALE "IQKT_ERR_NONFINITE_SCALE"
        ERR_NOMEM "IQKT_ERR_NOMEM"
        ERR_IMATRIX "IQKT_ERR_IMATRIX"
        ERR_ARG "IQKT_ERR_ARG"
        ERR_NOT_IMPORTED "IQKT_ERR_NOT_IMPORTED"

        PRECISION_INT8 "IQKT_PRECISION_INT8"
        PRECISION_FLOAT "IQKT_PRECISION_FLOAT"
        PRECISION_INT16 "IQKT_PRECISION_INT16"

    # Fetch and check the function table; raises ImportError on failure
    # (e.g. a header/iqkt version mismatch).  Needs the GIL.
    int import_iqkt "iqkt_import"() except -1
    int import_iqkt_version "iqkt_import_version"(unsigned int version, size_t size) except -1

    # Name of the kernel variant the wrappers call ("avx512", ...).
    const char *variant "iqkt_variant"() noexcept nogil
    # Static message for a return code.
    const char *strerror "iqkt_strerror"(int64_t code) noexcept nogil

    # Bytes per row of n weights, or a negative error code.
    int64_t row_size "iqkt_row_size"(int type_id, int64_t n) noexcept nogil
    # out[i*steps + j]: value j of the trellis started at seeds[i].
    int trellis "iqkt_trellis"(const uint32_t *seeds, int64_t count, int64_t steps,
                               int8_t *out) noexcept nogil
    # x (nrows, n) float32 -> out (nrows, row_size) bytes; imatrix and row_err may be NULL.
    int quantize_rows "iqkt_quantize_rows"(int type_id, const float *x, int64_t nrows, int64_t n,
                                           const float *imatrix, uint8_t *out,
                                           double *row_err) noexcept nogil
    # q (nrows, row_size) bytes -> y (nrows, n) float32; inference: IQ2_KT's 1.05 factor.
    int dequantize_rows "iqkt_dequantize_rows"(int type_id, const uint8_t *q, int64_t nrows,
                                               int64_t n, float *y, int inference) noexcept nogil
    # y (nb, nrows) = x (nb, n) @ W.T for the (nrows, n) quantized W.
    int mul_mat "iqkt_mul_mat"(int type_id, const uint8_t *q, int64_t nrows, int64_t n,
                               const float *x, int64_t nb, float *y, int precision) noexcept nogil
