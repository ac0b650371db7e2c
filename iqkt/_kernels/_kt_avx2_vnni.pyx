# Kernel variant "avx2_vnni": the shared source, compiled with this variant's ISA flags (setup.py).
include "kt_kernels.pxi"
