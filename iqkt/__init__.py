"""iqkt: IQ1_KT / IQ2_KT / IQ3_KT / IQ4_KT trellis quantization, byte-compatible with
ik_llama.cpp, with per-CPU-ISA compiled kernels."""

__version__ = "0.1.0"

from ._api import (  # noqa: F401
    EFFORTS,
    GGML_TYPE_IDS,
    GGUF_FILE_TYPE_IDS,
    TYPES,
    QuantizedMatrix,
    dequantize,
    mul_mat,
    quantize,
    row_size,
    trellis,
)
from . import _dispatch
from ._dispatch import (  # noqa: F401
    ALL_ISAS,
    IsaError,
    available_isas,
    isa,
    set_isa,
    show_config,
    use_isa,
)


def get_include() -> str:
    """Folder holding ``iqkt.h``, the C/C++ embedding API header (like
    ``numpy.get_include()``): pass it to the C compiler's include path.

    Cython code ``cimport``s ``iqkt.capi`` (the ``.pxd`` next to this
    package's ``__init__.py``); Cython finds it through ``sys.path`` like
    numpy's, or add ``os.path.dirname(os.path.dirname(iqkt.__file__))`` to
    ``cythonize(include_path=...)``.  Its C code includes ``iqkt.h``, so
    the extension needs this folder as well.
    """
    import os

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


def __getattr__(name):
    # ``iqkt._C_API``: the PyCapsule holding the function table of the kernel
    # variant in use *now*, which iqkt_import() (iqkt.h) reads.  Resolved on
    # access so that it follows IQKT_ISA / set_isa() up to the moment a
    # downstream extension imports it; the extension then keeps that table.
    # ``iqkt.C_API_VERSION``: IQKT_API_VERSION of the compiled kernels.
    if name == "_C_API":
        return _dispatch.module()._C_API
    if name == "C_API_VERSION":
        return _dispatch.module().C_API_VERSION
    raise AttributeError(f"module 'iqkt' has no attribute {name!r}")


__all__ = [
    "TYPES", "EFFORTS", "row_size", "quantize", "dequantize", "mul_mat", "trellis", "QuantizedMatrix",
    "isa", "available_isas", "show_config", "set_isa", "use_isa", "IsaError", "ALL_ISAS",
    "GGML_TYPE_IDS", "GGUF_FILE_TYPE_IDS", "get_include", "C_API_VERSION",
]
