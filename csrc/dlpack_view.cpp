#include "dlpack_view.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "fastcnn/error.h"

namespace fastcnn {
namespace {

// The DLPack ABI (dlpack.h, v0.8 and v1.x), restated: only the fields read here.
struct DLDevice {
  int32_t device_type;  // 1 = CPU, 2 = CUDA, 3 = CUDA host
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;  // 0 int, 1 uint, 2 float, 4 bfloat, 6 bool
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // null: compact row-major
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
struct DLPackVersion {
  uint32_t major;
  uint32_t minor;
};
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned*);
  uint64_t flags;
  DLTensor dl_tensor;
};

DType dtype_of(const DLDataType& t, const char* op, const char* name) {
  if (t.lanes == 1) {
    switch (t.code << 8 | t.bits) {
      case 2 << 8 | 32: return DType::Float32;
      case 2 << 8 | 64: return DType::Float64;
      case 2 << 8 | 16: return DType::Float16;
      case 4 << 8 | 16: return DType::BFloat16;
      case 0 << 8 | 64: return DType::Int64;
      case 0 << 8 | 32: return DType::Int32;
      case 0 << 8 | 16: return DType::Int16;
      case 0 << 8 | 8: return DType::Int8;
      case 1 << 8 | 8: return DType::UInt8;
      case 6 << 8 | 8: return DType::Bool;
    }
  }
  throw TypeError(detail::concat(op, ": ", name, " has a dtype no kernel takes (DLPack code ",
                                 static_cast<int>(t.code), ", ", static_cast<int>(t.bits),
                                 " bits, ", t.lanes, " lanes)"));
}

// Every size non-negative, and the element count and the bytes the view spans fit in int64:
// the kernels index in int64, so a view beyond that could address anything.
void check_extent(const DLTensor& t, DType dtype, const char* op, const char* name) {
  int64_t numel = 1, last = 0;  // `last`: offset of the farthest element, in elements
  bool overflow = false;
  for (int d = 0; d < t.ndim; ++d) {
    FASTCNN_CHECK(t.shape[d] >= 0, op, ": ", name, " has a negative size ", t.shape[d],
                  " in dimension ", d);
    overflow |= __builtin_mul_overflow(numel, t.shape[d], &numel);
  }
  for (int d = t.ndim - 1; d >= 0 && numel > 0 && t.strides; --d) {
    int64_t step = 0;
    overflow |= t.strides[d] == INT64_MIN ||
                __builtin_mul_overflow(t.shape[d] - 1, std::abs(t.strides[d]), &step) ||
                __builtin_add_overflow(last, step, &last);
  }
  int64_t bytes = 0;
  overflow |= __builtin_mul_overflow(std::max(numel, last + 1), dtype_size(dtype), &bytes);
  FASTCNN_CHECK(!overflow, op, ": ", name,
                " is too large: its element count or the bytes it spans overflow 64 bits");
}

}  // namespace

TensorView view_from_dlpack(PyObject* obj, const char* op, const char* name) {
  const DLTensor* t = nullptr;
  if (PyCapsule_IsValid(obj, "dltensor")) {
    t = &static_cast<DLManagedTensor*>(PyCapsule_GetPointer(obj, "dltensor"))->dl_tensor;
  } else if (PyCapsule_IsValid(obj, "dltensor_versioned")) {
    auto* m =
        static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(obj, "dltensor_versioned"));
    FASTCNN_CHECK(m->version.major == 1, op, ": ", name, " is a DLPack ", m->version.major,
                  ".x capsule; fastcnn reads DLPack 1.x");
    t = &m->dl_tensor;
  } else {
    throw TypeError(detail::concat(
        op, ": ", name, " must be an unused DLPack capsule (torch.utils.dlpack.to_dlpack)"));
  }
  TensorView v;
  FASTCNN_CHECK(t->ndim >= 0 && t->ndim <= TensorView::kMaxDims, op, ": ", name,
                " must have at most ", TensorView::kMaxDims, " dimensions, got ", t->ndim);
  v.ndim = t->ndim;
  v.dtype = dtype_of(t->dtype, op, name);
  check_extent(*t, v.dtype, op, name);
  int64_t stride = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.sizes[d] = t->shape[d];
    v.strides[d] = t->strides ? t->strides[d] : stride;
    stride *= t->shape[d];
  }
  if (t->device.device_type == 1 || t->device.device_type == 3) {
    v.device = Device::CPU;
  } else if (t->device.device_type == 2) {
    v.device = Device::CUDA;
  } else {
    throw ValueError(detail::concat(op, ": ", name, " is on an unsupported device (DLPack type ",
                                    t->device.device_type, ")"));
  }
  v.device_index = t->device.device_id;
  v.data = static_cast<char*>(t->data) + t->byte_offset;
  return v;
}

}  // namespace fastcnn
