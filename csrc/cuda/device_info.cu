// What the CUDA runtime reports about the visible devices, for fastcnn.info().
// Without a driver or a device every query fails cleanly and reports none.
#include <cuda_runtime.h>

#include <cstring>

#include "fastcnn/ops.h"

namespace fastcnn::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later queries start clean
    return 0;
  }
  return n;
}

bool device_info(int index, DeviceInfo* out) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  std::strncpy(out->name, prop.name, sizeof(out->name) - 1);
  out->name[sizeof(out->name) - 1] = '\0';
  out->major = prop.major;
  out->minor = prop.minor;
  out->total_memory = prop.totalGlobalMem;
  out->multiprocessors = prop.multiProcessorCount;
  return true;
}

int runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : 0;
}

int driver_version() {
  int v = 0;
  return cudaDriverGetVersion(&v) == cudaSuccess ? v : 0;
}

}  // namespace fastcnn::cuda
