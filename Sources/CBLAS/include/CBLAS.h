// OpenBLAS's CBLAS interface (Debian: libopenblas-dev, via the cblas.h alternative).
#ifndef CBLAS_SHIM_H
#define CBLAS_SHIM_H
#include <cblas.h>
#endif
