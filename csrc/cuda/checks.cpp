#include "cuda/checks.h"

#include <cstdint>

#include "fastcnn/error.h"

namespace fastcnn::cuda {

int cuda_device_of(const char* op, const char* name, const TensorView& t) {
  FASTCNN_CHECK(t.device == Device::CUDA, op, ": ", name,
                " must be a CUDA tensor for the CUDA kernels, got a CPU tensor");
  return t.device_index;
}

void check_cuda_tensor(const char* op, const char* name, const TensorView& t, int device) {
  FASTCNN_CHECK(t.device == Device::CUDA, op, ": ", name,
                " must be a CUDA tensor for the CUDA kernels, got a CPU tensor");
  FASTCNN_CHECK(t.device_index == device, op, ": ", name, " must be on cuda:", device,
                " like the other tensors, got cuda:", t.device_index);
  for (int i = 0; i < t.ndim; ++i)
    FASTCNN_CHECK(t.sizes[i] >= 0, op, ": ", name, " has a negative size");
  if (t.numel() > 0) {
    FASTCNN_CHECK(t.data != nullptr, op, ": ", name, " has a null data pointer");
    FASTCNN_CHECK(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) == 0, op, ": ", name,
                  " data pointer is not aligned to its ", dtype_size(t.dtype), "-byte elements");
  }
}

void check_cuda_float(const char* op, const char* name, const TensorView& t, int device) {
  FASTCNN_CHECK_TYPE(t.dtype != DType::Float64, op, ": ", name,
                     " is float64, which the CUDA kernels do not take: use float32, float16 or "
                     "bfloat16 on CUDA (float64 runs on the CPU)");
  FASTCNN_CHECK_TYPE(
      t.dtype == DType::Float32 || t.dtype == DType::Float16 || t.dtype == DType::BFloat16, op,
      ": ", name, " must be float32, float16 or bfloat16 on CUDA, got ", dtype_name(t.dtype));
  check_cuda_tensor(op, name, t, device);
}

void check_workspace(const char* op, const TensorView* workspace, size_t needed, int device) {
  if (needed == 0) return;
  FASTCNN_CHECK(workspace != nullptr, op, ": needs a workspace of ", needed, " bytes, got none");
  check_cuda_tensor(op, "workspace", *workspace, device);
  FASTCNN_CHECK(workspace->dtype == DType::UInt8 && workspace->ndim == 1 &&
                    (workspace->sizes[0] <= 1 || workspace->strides[0] == 1),
                op, ": workspace must be a contiguous 1-D uint8 tensor");
  FASTCNN_CHECK(static_cast<size_t>(workspace->sizes[0]) >= needed, op,
                ": workspace must hold at least ", needed, " bytes, got ", workspace->sizes[0]);
  FASTCNN_CHECK(reinterpret_cast<uintptr_t>(workspace->data) % 256 == 0, op,
                ": workspace must be 256-byte aligned (torch's CUDA allocator gives that)");
}

}  // namespace fastcnn::cuda
