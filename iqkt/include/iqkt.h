/*
 * iqkt.h -- C/C++ embedding API of iqkt (IQ1_KT / IQ2_KT / IQ3_KT / IQ4_KT kernels).
 *
 * The kernels live in the Python extension modules of the iqkt package, one
 * per CPU instruction set.  Each exports a table of function pointers
 * (struct iqkt_api) wrapped in a PyCapsule; `iqkt._C_API` is the capsule of
 * the variant in use (iqkt.isa()).  A C or C++ extension includes this
 * header, calls iqkt_import() once with the GIL held (normally in its module
 * init function, like numpy's import_array()), and then calls the iqkt_*()
 * wrappers below from any thread, with or without the GIL.
 *
 *   #include "iqkt.h"      compile with -I $(python -c "import iqkt; print(iqkt.get_include())")
 *
 *   PyMODINIT_FUNC PyInit_mymod(void) {
 *       if (iqkt_import() < 0) return NULL;     (ImportError set)
 *       ...
 *   }
 *
 * The table is looked up once, when iqkt_import() runs: a later
 * iqkt.set_isa() / iqkt.use_isa() does not change the variant an already
 * imported extension calls (every variant returns bit-identical quantized
 * bytes and dequantized values; mul_mat results agree to ~1e-5 relative).
 *
 * The table pointer is `static`: each C file that calls the wrappers must
 * call iqkt_import() itself (it is cheap after the first time).
 *
 * Every function is reentrant and thread-safe: it reads only the caller's
 * buffers and tables built at import, allocates its own scratch memory, and
 * runs single-threaded in the calling thread (split rows across threads to
 * parallelise).  Errors are reported by negative return codes, never by
 * aborting and never through the Python error state.
 *
 * Versioning: IQKT_API_VERSION changes only when the existing members of
 * struct iqkt_api change meaning or layout.  New functions are appended at
 * the end of the struct without changing the version, so a table may be
 * larger than the sizeof(iqkt_api) a caller was compiled with; it may never
 * be smaller.
 */
#ifndef IQKT_H_INCLUDED
#define IQKT_H_INCLUDED

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

/* Type ids (IQKT_IQ2_KT, ...), IQKT_BLOCK and the per-type format table. */
#include "iqkt_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IQKT_API_VERSION 1
/* Name of the capsule (also the module attribute it is reached by). */
#define IQKT_CAPSULE_NAME "iqkt._C_API"

/* Return codes: 0 is success, errors are negative. */
enum {
    IQKT_OK = 0,
    IQKT_ERR_TYPE = -1,             /* unknown type id */
    IQKT_ERR_SIZE = -2,             /* n not a positive multiple of 256, or a negative count */
    IQKT_ERR_NONFINITE_INPUT = -3,  /* NaN/Inf in weights or activations */
    IQKT_ERR_NONFINITE_SCALE = -4,  /* a row scale in the quantized data is NaN/Inf */
    IQKT_ERR_NOMEM = -5,            /* scratch allocation failed */
    IQKT_ERR_IMATRIX = -6,          /* imatrix entry NaN/Inf/negative */
    IQKT_ERR_ARG = -7,              /* NULL pointer where data is needed, or a bad range */
    /* Returned by the wrappers below, not by the kernels: iqkt_import() has
       not succeeded in this C file. */
    IQKT_ERR_NOT_IMPORTED = -100
};

/* Values of the `precision` argument of mul_mat.  0 and 1 keep their
   slots; INT16 was added with the true int8 path (0), which is now what the
   default precision means, as in the reference's own CPU kernels. */
enum {
    IQKT_PRECISION_INT8 = 0,   /* activations as int8 per block of 32 (d = amax / 127, a float scale
                                  per block), exact integer products; ~0.5% relative (the
                                  reference's own activation precision) */
    IQKT_PRECISION_FLOAT = 1,  /* dequantized float weights, float64 accumulation; every value
                                  other than 0 and 2 also selects it, as before */
    IQKT_PRECISION_INT16 = 2   /* activations as int16 per block of 32 (|x16| <= 8000), exact
                                  integer products; ~1e-4 relative */
};

typedef struct iqkt_api {
    /* Header, stable across all versions: check before using anything else. */
    uint32_t abi_version;     /* IQKT_API_VERSION of the iqkt build */
    uint32_t size;            /* sizeof(struct iqkt_api) of the iqkt build */
    const char *variant;      /* kernel variant: "avx512", "avx2_vnni", "avx2", "neon", "scalar" */

    /* Bytes per row of n weights (4-byte row scale included), or a negative
       error code (IQKT_ERR_TYPE, IQKT_ERR_SIZE). */
    int64_t (*row_size)(int type_id, int64_t n);

    /* out[i*steps + j] = value j (in [-126, 126]) of the integer trellis
       started at seeds[i], seeds used as given (the formats add 4096). */
    int (*trellis)(const uint32_t *seeds, int64_t count, int64_t steps, int8_t *out);

    /* Quantize nrows rows of n floats (x, row-major) into
       out[nrows * row_size(type_id, n)].  imatrix: NULL or n finite
       non-negative importances.  row_err: NULL or nrows doubles that receive
       each row's relative squared error.  Bit-identical to iqkt.quantize(). */
    int (*quantize_rows)(int type_id, const float *x, int64_t nrows, int64_t n,
                         const float *imatrix, uint8_t *out, double *row_err);

    /* Decode nrows quantized rows into y[nrows * n].  inference != 0 applies
       the 1.05 factor of IQ2_KT's inference kernels (iqkt.dequantize(...,
       inference=True)). */
    int (*dequantize_rows)(int type_id, const uint8_t *q, int64_t nrows, int64_t n,
                           float *y, int inference);

    /* y[b*nrows + r] = dot(W[r], x[b*n ...]) for the nrows x n quantized
       matrix W (inference values) and nb activation rows x (nb x n, row-major);
       y is nb x nrows, row-major.  precision: IQKT_PRECISION_INT8,
       IQKT_PRECISION_INT16 or IQKT_PRECISION_FLOAT (any other value).  Equal
       to iqkt.mul_mat(..., precision="int8" / "int16" / "float") on the same
       variant. */
    int (*mul_mat)(int type_id, const uint8_t *q, int64_t nrows, int64_t n,
                   const float *x, int64_t nb, float *y, int precision);
} iqkt_api;

/* The table in use in this C file (NULL until iqkt_import() succeeds). */
static const iqkt_api *iqkt_api_table = NULL;

/* Fetch and check the table; the explicit version/size form exists so that
   callers (and tests) can state what they need.  Returns 0, or -1 with an
   ImportError set.  Call with the GIL held. */
static inline int iqkt_import_version(unsigned int version, size_t size)
{
    PyObject *mod, *cap;
    const iqkt_api *api;
    mod = PyImport_ImportModule("iqkt");
    if (mod == NULL)
        return -1;
    cap = PyObject_GetAttrString(mod, "_C_API");
    Py_DECREF(mod);
    if (cap == NULL)
        return -1;
    api = (const iqkt_api *)PyCapsule_GetPointer(cap, IQKT_CAPSULE_NAME);
    Py_DECREF(cap);
    if (api == NULL)
        return -1;
    if (api->abi_version != version) {
        PyErr_Format(PyExc_ImportError,
                     "iqkt C API version mismatch: this extension was compiled against "
                     "iqkt C API version %u, but the installed iqkt (kernel variant '%s') "
                     "provides version %u. Rebuild the extension against the installed "
                     "iqkt (headers in iqkt.get_include()) or install a matching iqkt.",
                     version, api->variant, (unsigned int)api->abi_version);
        return -1;
    }
    if (api->size < size) {
        PyErr_Format(PyExc_ImportError,
                     "iqkt C API too old: this extension needs a function table of %zu "
                     "bytes (C API version %u), but the installed iqkt provides %u bytes. "
                     "Upgrade iqkt or rebuild the extension against the installed one.",
                     size, version, (unsigned int)api->size);
        return -1;
    }
    iqkt_api_table = api;
    return 0;
}

/* Like numpy's import_array(): 0, or -1 with an ImportError set. */
static inline int iqkt_import(void)
{
    return iqkt_import_version(IQKT_API_VERSION, sizeof(iqkt_api));
}

/* ---- wrappers: safe to call without the GIL, from any thread ---- */

static inline const char *iqkt_variant(void)
{
    return iqkt_api_table ? iqkt_api_table->variant : "not imported";
}

static inline int64_t iqkt_row_size(int type_id, int64_t n)
{
    if (iqkt_api_table == NULL)
        return IQKT_ERR_NOT_IMPORTED;
    return iqkt_api_table->row_size(type_id, n);
}

static inline int iqkt_trellis(const uint32_t *seeds, int64_t count, int64_t steps, int8_t *out)
{
    if (iqkt_api_table == NULL)
        return IQKT_ERR_NOT_IMPORTED;
    return iqkt_api_table->trellis(seeds, count, steps, out);
}

static inline int iqkt_quantize_rows(int type_id, const float *x, int64_t nrows, int64_t n,
                                     const float *imatrix, uint8_t *out, double *row_err)
{
    if (iqkt_api_table == NULL)
        return IQKT_ERR_NOT_IMPORTED;
    return iqkt_api_table->quantize_rows(type_id, x, nrows, n, imatrix, out, row_err);
}

static inline int iqkt_dequantize_rows(int type_id, const uint8_t *q, int64_t nrows, int64_t n,
                                       float *y, int inference)
{
    if (iqkt_api_table == NULL)
        return IQKT_ERR_NOT_IMPORTED;
    return iqkt_api_table->dequantize_rows(type_id, q, nrows, n, y, inference);
}

static inline int iqkt_mul_mat(int type_id, const uint8_t *q, int64_t nrows, int64_t n,
                               const float *x, int64_t nb, float *y, int precision)
{
    if (iqkt_api_table == NULL)
        return IQKT_ERR_NOT_IMPORTED;
    return iqkt_api_table->mul_mat(type_id, q, nrows, n, x, nb, y, precision);
}

/* A static English message for a return code (never NULL). */
static inline const char *iqkt_strerror(int64_t code)
{
    switch (code) {
    case IQKT_OK: return "success";
    case IQKT_ERR_TYPE: return "unknown KT type id";
    case IQKT_ERR_SIZE: return "row length must be a positive multiple of 256 and counts non-negative";
    case IQKT_ERR_NONFINITE_INPUT: return "input contains NaN or infinity";
    case IQKT_ERR_NONFINITE_SCALE: return "a row scale in the quantized data is NaN or infinity";
    case IQKT_ERR_NOMEM: return "out of memory";
    case IQKT_ERR_IMATRIX: return "imatrix must be finite and non-negative";
    case IQKT_ERR_ARG: return "invalid argument (NULL pointer or bad range)";
    case IQKT_ERR_NOT_IMPORTED: return "iqkt_import() has not been called successfully";
    default: return "unknown iqkt error code";
    }
}

#ifdef __cplusplus
}
#endif

#endif /* IQKT_H_INCLUDED */
