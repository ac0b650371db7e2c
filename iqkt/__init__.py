"""iqkt: IQ2_KT / IQ3_KT / IQ4_KT trellis quantization, byte-compatible with
ik_llama.cpp, with per-CPU-ISA compiled kernels."""

__version__ = "0.1.0"

from ._api import (  # noqa: F401
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
from ._dispatch import (  # noqa: F401
    ALL_ISAS,
    IsaError,
    available_isas,
    isa,
    set_isa,
    show_config,
    use_isa,
)

__all__ = [
    "TYPES", "row_size", "quantize", "dequantize", "mul_mat", "trellis", "QuantizedMatrix",
    "isa", "available_isas", "show_config", "set_isa", "use_isa", "IsaError", "ALL_ISAS",
    "GGML_TYPE_IDS", "GGUF_FILE_TYPE_IDS",
]
