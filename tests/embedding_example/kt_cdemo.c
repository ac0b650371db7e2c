/* Calling iqkt's kernels from C: buffers in, bytes out, GIL released. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "iqkt.h"

static PyObject *kt_error(int64_t rc)
{
    PyErr_Format(PyExc_ValueError, "iqkt: %s (code %lld)", iqkt_strerror(rc), (long long)rc);
    return NULL;
}

/* quantize(type_id, x: float32 buffer of rows*n, n) -> bytes of rows*row_size */
static PyObject *cdemo_quantize(PyObject *self, PyObject *args)
{
    int type_id, rc;
    Py_ssize_t n;
    int64_t rs, rows;
    Py_buffer x;
    PyObject *out;
    if (!PyArg_ParseTuple(args, "iy*n", &type_id, &x, &n))
        return NULL;
    rs = iqkt_row_size(type_id, n);
    if (rs < 0 || x.len % ((Py_ssize_t)sizeof(float) * n) != 0) {
        PyBuffer_Release(&x);
        return rs < 0 ? kt_error(rs) : PyErr_Format(PyExc_ValueError, "x is not whole rows");
    }
    rows = x.len / ((Py_ssize_t)sizeof(float) * n);
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(rows * rs));
    if (out == NULL) {
        PyBuffer_Release(&x);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = iqkt_quantize_rows(type_id, (const float *)x.buf, rows, n, NULL,
                            (uint8_t *)PyBytes_AS_STRING(out), NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    if (rc != IQKT_OK) {
        Py_DECREF(out);
        return kt_error(rc);
    }
    return out;
}

/* dequantize(type_id, q: bytes of rows*row_size, n) -> bytes of rows*n float32 */
static PyObject *cdemo_dequantize(PyObject *self, PyObject *args)
{
    int type_id, rc;
    Py_ssize_t n;
    int64_t rs, rows;
    Py_buffer q;
    PyObject *out;
    if (!PyArg_ParseTuple(args, "iy*n", &type_id, &q, &n))
        return NULL;
    rs = iqkt_row_size(type_id, n);
    if (rs < 0 || q.len % rs != 0) {
        PyBuffer_Release(&q);
        return rs < 0 ? kt_error(rs) : PyErr_Format(PyExc_ValueError, "q is not whole rows");
    }
    rows = q.len / rs;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(rows * n * sizeof(float)));
    if (out == NULL) {
        PyBuffer_Release(&q);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = iqkt_dequantize_rows(type_id, (const uint8_t *)q.buf, rows, n,
                              (float *)PyBytes_AS_STRING(out), 0);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&q);
    if (rc != IQKT_OK) {
        Py_DECREF(out);
        return kt_error(rc);
    }
    return out;
}

/* mul_mat(type_id, q, n, x: float32 buffer of B*n, precision) -> bytes of B*N float32 */
static PyObject *cdemo_mul_mat(PyObject *self, PyObject *args)
{
    int type_id, precision, rc;
    Py_ssize_t n;
    int64_t rs, nrows, nb;
    Py_buffer q, x;
    PyObject *out;
    if (!PyArg_ParseTuple(args, "iy*ny*i", &type_id, &q, &n, &x, &precision))
        return NULL;
    rs = iqkt_row_size(type_id, n);
    if (rs < 0 || q.len % rs != 0 || x.len % ((Py_ssize_t)sizeof(float) * n) != 0) {
        PyBuffer_Release(&q);
        PyBuffer_Release(&x);
        return rs < 0 ? kt_error(rs) : PyErr_Format(PyExc_ValueError, "q or x is not whole rows");
    }
    nrows = q.len / rs;
    nb = x.len / ((Py_ssize_t)sizeof(float) * n);
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(nb * nrows * sizeof(float)));
    if (out == NULL) {
        PyBuffer_Release(&q);
        PyBuffer_Release(&x);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = iqkt_mul_mat(type_id, (const uint8_t *)q.buf, nrows, n, (const float *)x.buf, nb,
                      (float *)PyBytes_AS_STRING(out), precision);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&q);
    PyBuffer_Release(&x);
    if (rc != IQKT_OK) {
        Py_DECREF(out);
        return kt_error(rc);
    }
    return out;
}

static PyObject *cdemo_variant(PyObject *self, PyObject *args)
{
    return PyUnicode_FromString(iqkt_variant());
}

/* import_version(version, size): re-run the import asking for another table
   version/size; raises ImportError if the installed iqkt cannot provide it. */
static PyObject *cdemo_import_version(PyObject *self, PyObject *args)
{
    unsigned int version;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "In", &version, &size))
        return NULL;
    if (iqkt_import_version(version, (size_t)size) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef cdemo_methods[] = {
    {"quantize", cdemo_quantize, METH_VARARGS, "quantize(type_id, x, n) -> bytes"},
    {"dequantize", cdemo_dequantize, METH_VARARGS, "dequantize(type_id, q, n) -> bytes"},
    {"mul_mat", cdemo_mul_mat, METH_VARARGS, "mul_mat(type_id, q, n, x, precision) -> bytes"},
    {"variant", cdemo_variant, METH_NOARGS, "kernel variant in use"},
    {"import_version", cdemo_import_version, METH_VARARGS, "import_version(version, size)"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef cdemo_module = {
    PyModuleDef_HEAD_INIT, "kt_cdemo", "iqkt from C", -1, cdemo_methods
};

PyMODINIT_FUNC PyInit_kt_cdemo(void)
{
    PyObject *m;
    if (iqkt_import() < 0)      /* like import_array(): ImportError on mismatch */
        return NULL;
    m = PyModule_Create(&cdemo_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "API_VERSION", IQKT_API_VERSION) < 0
            || PyModule_AddIntConstant(m, "TABLE_SIZE", (long)sizeof(iqkt_api)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
