// GEMM micro-kernels: c[MR x NR] = sum_k a[k][MR] * b[k][NR] over packed panels.
// One implementation per ISA, each in its own translation unit compiled with that ISA's
// flags; dispatch.cpp picks one at load time from what the CPU reports.
#pragma once

#include <cstdint>

#include "cpu/isa_select.h"

namespace fastcnn::cpu {

// What run_store does with a finished tile before it lands in memory.
template <typename T>
struct Epilogue {
  bool accumulate = false;      // add the tile to what c holds instead of overwriting it
  const T* bias = nullptr;      // per row (bias[i] for row i); null: none
  const T* col_bias = nullptr;  // per column (col_bias[j] for column j); null: none
  bool relu = false;            // max(v, 0) after the bias; NaN stays NaN, as torch.relu
  bool transposed = false;      // c is column-major: element (i, j) at c[j * ldc + i]
};

template <typename T>
struct MicroKernel {
  int mr;
  int nr;
  // a: packed [kc][mr], b: packed [kc][nr], c: row-major [mr][nr], overwritten.
  void (*run)(int64_t kc, const T* a, const T* b, T* c);
  // The same product, stored straight into the top-left rows x cols corner of a row-major
  // matrix with row stride ldc (column-major with column stride ldc where ep.transposed;
  // rows <= mr, cols <= nr; nothing outside it is touched), through the epilogue. This keeps
  // the tile in registers from the last FMA to memory.
  void (*run_store)(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, int rows, int cols,
                    const Epilogue<T>& ep);
  // run_store with A read in place instead of packed: row i (i < rows) at a + i * lda, its
  // reduction unit-stride (the pixels of an NHWC image in a 1x1 convolution).
  void (*run_store_rows)(int64_t kc, const T* a, int64_t lda, const T* b, T* c, int64_t ldc,
                         int rows, int cols, const Epilogue<T>& ep);
};

struct MicroKernels {
  const char* isa;
  MicroKernel<float> f32;
  MicroKernel<double> f64;
};

MicroKernels microkernels_generic();
#if defined(FASTCNN_X86)
MicroKernels microkernels_avx2();
MicroKernels microkernels_avx512();
#endif

// The set chosen for this CPU (FASTCNN_ISA=generic|avx2|avx512 in the environment narrows it).
const MicroKernels& microkernels();

template <typename T>
const MicroKernel<T>& microkernel() {
  return for_dtype<T>(microkernels());
}

}  // namespace fastcnn::cpu
