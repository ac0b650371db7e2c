# cython: language_level=3
"""Calling iqkt's kernels from Cython on raw pointers, without the GIL."""
from libc.stdint cimport uint8_t, uint32_t, int8_t, int64_t

cimport iqkt.capi as kt

# Once, at import (like numpy's import_array()): fetches the function table of
# the kernel variant iqkt is using; raises ImportError on a version mismatch.
kt.import_iqkt()


cdef int check(int64_t rc) except -1:
    if rc < 0:
        raise ValueError(f"iqkt: {kt.strerror(rc).decode()} (code {rc})")
    return 0


def variant():
    return kt.variant().decode()


def row_size(int type_id, int64_t n):
    cdef int64_t rs = kt.row_size(type_id, n)
    check(rs)
    return rs


def quantize(int type_id, const float[:, ::1] x, uint8_t[:, ::1] out,
             const float[::1] imatrix=None):
    """out (rows, row_size) = quantized x (rows, n); imatrix: None or n importances."""
    cdef const float *im = NULL
    cdef int rc
    if out.shape[0] != x.shape[0] or out.shape[1] != row_size(type_id, x.shape[1]):
        raise ValueError("out has the wrong shape")
    if imatrix is not None:
        if imatrix.shape[0] != x.shape[1]:
            raise ValueError("imatrix length != n")
        im = &imatrix[0]
    with nogil:
        rc = kt.quantize_rows(type_id, &x[0, 0], x.shape[0], x.shape[1], im, &out[0, 0], NULL)
    check(rc)


def dequantize(int type_id, const uint8_t[:, ::1] q, float[:, ::1] out):
    """out (rows, n) = decoded q (rows, row_size)."""
    cdef int rc
    if out.shape[0] != q.shape[0] or q.shape[1] != row_size(type_id, out.shape[1]):
        raise ValueError("q and out shapes do not match")
    with nogil:
        rc = kt.dequantize_rows(type_id, &q[0, 0], q.shape[0], out.shape[1], &out[0, 0], 0)
    check(rc)


def mul_mat_rows(int type_id, const uint8_t[:, ::1] q, const float[:, ::1] x,
                 float[:, ::1] y, bint exact=False):
    """y[b] = W @ x[b] for the quantized W (N, K): one activation row per
    kernel call, in a loop that holds no GIL (other threads keep running)."""
    cdef int64_t b, nrows = q.shape[0], n = x.shape[1]
    cdef int precision = kt.PRECISION_FLOAT if exact else kt.PRECISION_INT8
    cdef int rc = kt.OK
    if q.shape[1] != row_size(type_id, n) or y.shape[0] != x.shape[0] or y.shape[1] != nrows:
        raise ValueError("q, x and y shapes do not match")
    with nogil:
        for b in range(x.shape[0]):
            rc = kt.mul_mat(type_id, &q[0, 0], nrows, n, &x[b, 0], 1, &y[b, 0], precision)
            if rc != kt.OK:
                break
    check(rc)


def mul_mat(int type_id, const uint8_t[:, ::1] q, const float[:, ::1] x,
            float[:, ::1] y, bint exact=False):
    """y (B, N) = x (B, K) @ W.T in one call (the weights are decoded once for all B rows)."""
    cdef int rc
    if q.shape[1] != row_size(type_id, x.shape[1]) or y.shape[0] != x.shape[0] \
            or y.shape[1] != q.shape[0]:
        raise ValueError("q, x and y shapes do not match")
    with nogil:
        rc = kt.mul_mat(type_id, &q[0, 0], q.shape[0], x.shape[1], &x[0, 0], x.shape[0],
                        &y[0, 0], kt.PRECISION_FLOAT if exact else kt.PRECISION_INT8)
    check(rc)


def trellis(const uint32_t[::1] seeds, int8_t[:, ::1] out):
    """out[i, j] = value j of the trellis started at seeds[i]."""
    cdef int rc
    if out.shape[0] != seeds.shape[0]:
        raise ValueError("out needs one row per seed")
    with nogil:
        rc = kt.trellis(&seeds[0], seeds.shape[0], out.shape[1], &out[0, 0])
    check(rc)
