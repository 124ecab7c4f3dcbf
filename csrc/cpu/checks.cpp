#include "cpu/checks.h"

#include <algorithm>
#include <string>

namespace fastcnn {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Int64: return "int64";
    case DType::Int32: return "int32";
    case DType::Int16: return "int16";
    case DType::Int8: return "int8";
    case DType::UInt8: return "uint8";
    case DType::Bool: return "bool";
  }
  return "unknown";
}

int dtype_size(DType dtype) {
  switch (dtype) {
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    case DType::Float16:
    case DType::BFloat16: return 2;
    case DType::Int64: return 8;
    case DType::Int32: return 4;
    case DType::Int16: return 2;
    case DType::Int8:
    case DType::UInt8:
    case DType::Bool: return 1;
  }
  return 0;
}

namespace cpu {
namespace {

// "(a, b, c)"; one element as "(a,)" when `tuple_comma`, as Python writes a 1-tuple.
std::string tuple_str(const int64_t* v, size_t n, bool tuple_comma) {
  std::string out = "(";
  for (size_t i = 0; i < n; ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  out += n == 1 && tuple_comma ? ",)" : ")";
  return out;
}

std::string shape_str(const TensorView& t) {
  return tuple_str(t.sizes.data(), t.ndim, true);
}

std::string strides_str(const TensorView& t) {
  return tuple_str(t.strides.data(), t.ndim, false);
}

// Whether t has the strides a dense layout with dimension order `order` (outermost first)
// would have. Size-1 dimensions may have any stride; empty dimensions count as size 1, as
// torch computes strides.
bool has_dense_order(const TensorView& t, const int (&order)[4]) {
  int64_t expected = 1;
  for (int k = 3; k >= 0; --k) {
    const int d = order[k];
    if (t.sizes[d] != 1 && t.strides[d] != expected) return false;
    expected *= std::max<int64_t>(t.sizes[d], 1);
  }
  return true;
}

constexpr int kNCHW[4] = {0, 1, 2, 3};
constexpr int kNHWC[4] = {0, 2, 3, 1};

}  // namespace

void check_cpu_float(const char* op, const char* name, const TensorView& t) {
  FASTCNN_CHECK_TYPE(t.dtype == DType::Float32 || t.dtype == DType::Float64, op, ": ", name,
                     " must be float32 or float64 on the CPU, got ", dtype_name(t.dtype));
  check_cpu(op, name, t);
}

void check_cpu(const char* op, const char* name, const TensorView& t) {
  FASTCNN_CHECK(t.device == Device::CPU, op, ": ", name,
                " must be a CPU tensor for the CPU kernels, got a CUDA tensor");
  for (int i = 0; i < t.ndim; ++i) {
    FASTCNN_CHECK(t.sizes[i] >= 0, op, ": ", name, " has a negative size ", shape_str(t));
  }
  if (t.numel() > 0) {
    FASTCNN_CHECK(t.data != nullptr, op, ": ", name, " has a null data pointer");
    FASTCNN_CHECK(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) == 0, op, ": ", name,
                  " data pointer is not aligned to its ", dtype_size(t.dtype), "-byte elements");
  }
}

void check_ndim(const char* op, const char* name, const TensorView& t, int ndim) {
  FASTCNN_CHECK(t.ndim == ndim, op, ": ", name, " must be ", ndim, "-D, got shape ", shape_str(t));
}

std::array<int64_t, 4> dense_strides_4d(const char* op, const char* name, const TensorView& t) {
  check_ndim(op, name, t, 4);
  const bool nchw = has_dense_order(t, kNCHW);
  FASTCNN_CHECK(t.numel() == 0 || nchw || has_dense_order(t, kNHWC), op, ": ", name,
                " must be contiguous or channels_last, got shape ", shape_str(t), " strides ",
                strides_str(t));
  // An empty tensor addresses nothing: any layout will do, so take NCHW.
  const int (&order)[4] = nchw || t.numel() == 0 ? kNCHW : kNHWC;
  std::array<int64_t, 4> strides{};
  int64_t stride = 1;
  for (int k = 3; k >= 0; --k) {
    strides[order[k]] = stride;
    stride *= std::max<int64_t>(t.sizes[order[k]], 1);
  }
  return strides;
}

void check_dense_layout(const char* op, const char* name, const TensorView& t, bool channels_last) {
  check_ndim(op, name, t, 4);
  FASTCNN_CHECK(has_dense_order(t, channels_last ? kNHWC : kNCHW), op, ": ", name, " must be ",
                channels_last ? "channels_last" : "contiguous (NCHW)", ", got shape ", shape_str(t),
                " strides ", strides_str(t));
}

void check_contiguous(const char* op, const char* name, const TensorView& t) {
  FASTCNN_CHECK(t.ndim == 1 || t.ndim == 2, op, ": ", name, " must be 1-D or 2-D, got shape ",
                shape_str(t));
  if (t.numel() == 0) return;  // nothing is addressed
  int64_t expected = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    FASTCNN_CHECK(t.sizes[d] == 1 || t.strides[d] == expected, op, ": ", name,
                  " must be contiguous, got strides ", strides_str(t));
    expected *= t.sizes[d];
  }
}

void check_same_dtype(const char* op, const char* name, const TensorView& t,
                      const TensorView& ref) {
  FASTCNN_CHECK_TYPE(t.dtype == ref.dtype, op, ": ", name, " must have dtype ",
                     dtype_name(ref.dtype), " like the input, got ", dtype_name(t.dtype));
}

void check_sizes(const char* op, const char* name, const TensorView& t,
                 std::initializer_list<int64_t> expected) {
  bool same = t.ndim == static_cast<int>(expected.size());
  int i = 0;
  for (int64_t e : expected) same = same && t.sizes[i++] == e;
  FASTCNN_CHECK(same, op, ": ", name, " must have shape ",
                tuple_str(expected.begin(), expected.size(), true), ", got ", shape_str(t));
}

void check_threads(const char* op, int threads) {
  FASTCNN_CHECK(threads >= 1, op, ": threads must be >= 1, got ", threads);
}

void check_workspace(const char* op, const void* workspace, size_t bytes, size_t needed) {
  FASTCNN_CHECK(bytes >= needed, op, ": workspace must hold at least ", needed, " bytes, got ",
                bytes);
  FASTCNN_CHECK(needed == 0 || workspace != nullptr, op, ": workspace pointer is null");
  FASTCNN_CHECK(reinterpret_cast<uintptr_t>(workspace) % 64 == 0, op,
                ": workspace must be 64-byte aligned");
}

bool is_channels_last(const TensorView& t) {
  return !has_dense_order(t, kNCHW) && has_dense_order(t, kNHWC);
}

}  // namespace cpu
}  // namespace fastcnn
