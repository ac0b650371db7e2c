# Build: python setup.py build_ext --inplace   (iqkt, Cython and setuptools installed)
import iqkt
from Cython.Build import cythonize
from setuptools import Extension, setup

inc = [iqkt.get_include()]          # the folder with iqkt.h

setup(
    name="kt_demo",
    ext_modules=cythonize(
        [Extension("kt_demo", ["kt_demo.pyx"], include_dirs=inc)],
        # Cython finds iqkt/capi.pxd on sys.path (where iqkt is installed).
    ) + [Extension("kt_cdemo", ["kt_cdemo.c"], include_dirs=inc)],
)
