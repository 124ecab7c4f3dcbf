// A borrowed view of a tensor: pointer, sizes, strides (in elements), dtype, device.
// The kernels never own or allocate memory; the caller keeps the storage alive.
#pragma once

#include <array>
#include <cstdint>

namespace fastcnn {

enum class DType { Float32, Float64, Float16, BFloat16, Int64, Int32, Int16, Int8, UInt8, Bool };
enum class Device { CPU, CUDA };

const char* dtype_name(DType dtype);
int dtype_size(DType dtype);

struct TensorView {
  static constexpr int kMaxDims = 4;

  void* data = nullptr;
  int ndim = 0;
  std::array<int64_t, kMaxDims> sizes{};
  std::array<int64_t, kMaxDims> strides{};
  DType dtype = DType::Float32;
  Device device = Device::CPU;
  int device_index = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= sizes[i];
    return n;
  }
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
};

}  // namespace fastcnn
