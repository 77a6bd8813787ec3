// OpenBLAS's CBLAS interface (Debian: libopenblas-dev, via the cblas.h alternative).
#ifndef CBLAS_SHIM_H
#define CBLAS_SHIM_H
#include <cblas.h>
// LAPACK's Householder QR (OpenBLAS bundles LAPACK): PowerSGD orthogonalises its
// low-rank factors with it above rank 2, as torch's powerSGD_hook does.
void sgeqrf_(const int *m, const int *n, float *a, const int *lda, float *tau, float *work, const int *lwork, int *info);
void sorgqr_(const int *m, const int *n, const int *k, float *a, const int *lda, const float *tau, float *work,
             const int *lwork, int *info);
#endif
