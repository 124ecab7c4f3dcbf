// Reads a DLPack capsule (the exchange format every array library exports; torch via
// torch.utils.dlpack.to_dlpack) into a borrowed TensorView, validating what it can.
#pragma once

#include <Python.h>

#include "fastcnn/tensor.h"

namespace fastcnn {

// Throws ValueError / TypeError naming `op` and `name` when the object is not a usable
// DLPack capsule: wrong kind of object, more than 4 dimensions, or an unsupported dtype.
TensorView view_from_dlpack(PyObject* capsule, const char* op, const char* name);

}  // namespace fastcnn
