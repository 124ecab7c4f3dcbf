// Shared device helpers of the CUDA kernels: the device guard, launch checks, float
// conversions for the three dtypes, and the dtype switch. Kernels compute in float.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fastcnn/error.h"
#include "fastcnn/tensor.h"

// Marks the index and operand logic that the kernels run and that host code can run too
// (a host harness can check the gather arithmetic against a reference without a GPU).
#define FASTCNN_HD __host__ __device__ __forceinline__

namespace fastcnn::cuda {

// A CUDA runtime failure; Python sees it as RuntimeError with the op's name.
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void check_cuda(cudaError_t status, const char* op, const char* what) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so the next call starts clean
    throw CudaError(detail::concat(op, ": ", what, " failed: ", cudaGetErrorName(status), " (",
                                   cudaGetErrorString(status), ")"));
  }
}

// After every launch: a bad configuration or an earlier fault surfaces here, not later.
inline void check_launch(const char* op) {
  check_cuda(cudaGetLastError(), op, "kernel launch");
}

// Makes `device` current for the scope and restores the caller's device afterwards.
class DeviceGuard {
 public:
  DeviceGuard(int device, const char* op) {
    check_cuda(cudaGetDevice(&previous_), op, "cudaGetDevice");
    if (previous_ != device) check_cuda(cudaSetDevice(device), op, "cudaSetDevice");
  }
  ~DeviceGuard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

inline cudaStream_t as_stream(void* stream) {
  return static_cast<cudaStream_t>(stream);
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Blocks for a grid-stride loop over `n` items: enough to fill any current GPU, no more.
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = ceil_div(n, threads);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

FASTCNN_HD float to_float(float v) {
  return v;
}
FASTCNN_HD float to_float(__half v) {
  return __half2float(v);
}
FASTCNN_HD float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
FASTCNN_HD T from_float(float v);
template <>
FASTCNN_HD float from_float<float>(float v) {
  return v;
}
template <>
FASTCNN_HD __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
FASTCNN_HD __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// (n, c, h, w) of the element at flat position i of a dense tensor of sizes (N, C, H, W).
template <typename Index>
struct Coords {
  Index n, c, h, w;
};
template <typename Index>
FASTCNN_HD Coords<Index> coords_of(Index i, Index C, Index H, Index W, bool channels_last) {
  Coords<Index> k;
  if (channels_last) {
    k.c = i % C, i /= C;
    k.w = i % W, i /= W;
    k.h = i % H, k.n = i / H;
  } else {
    k.w = i % W, i /= W;
    k.h = i % H, i /= H;
    k.c = i % C, k.n = i / C;
  }
  return k;
}

// Calls f(T{}) with T the device type of `dtype` (float, __half or __nv_bfloat16); the
// entry points have checked the dtype already.
template <typename F>
void dispatch_float(DType dtype, const F& f) {
  switch (dtype) {
    case DType::Float16: f(__half{}); return;
    case DType::BFloat16: f(__nv_bfloat16{}); return;
    default: f(float{}); return;
  }
}

}  // namespace fastcnn::cuda
