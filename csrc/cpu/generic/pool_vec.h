// Portable "vectors" of one element for the pooling kernels: the same kernel bodies as the
// SIMD ISAs, run one output (or channel) at a time on any CPU.
#pragma once

#include <cstdint>
#include <limits>

namespace fastcnn::cpu {
namespace {

template <typename T>
struct PoolVec {
  using V = T;
  using I = int64_t;
  using M = bool;
  using Index = int64_t;
  static constexpr int width = 1;

  static V load(const T* p) { return *p; }
  static void store(T* p, V v) { *p = v; }
  static V set1(T v) { return v; }
  static V zero() { return T(0); }
  static V add(V a, V b) { return a + b; }
  static V load_even(const T* p) { return p[0]; }
  static V load_odd(const T* p) { return p[1]; }
  static void store_interleaved(T* p, V even, V odd) {
    p[0] = even;
    p[1] = odd;
  }
  static V gather(const T* p, I) { return *p; }
  // The same loads of column col of a row of W elements, reading -inf outside [0, W).
  static V load(const T* row, int64_t col, int64_t W) {
    return col >= 0 && col < W ? row[col] : -std::numeric_limits<T>::infinity();
  }
  static V load_even(const T* row, int64_t col, int64_t W) { return load(row, col, W); }
  static V gather(const T* row, int64_t col, I, int64_t W) { return load(row, col, W); }
  static M takes(V v, V best) { return v > best || v != v; }
  static bool all(M m) { return m; }
  static V select(M m, V a, V b) { return m ? a : b; }
  // The larger of v and best, NaN if either is.
  static V max(V v, V best) { return takes(v, best) ? v : best; }

  using Acc = double;
  static Acc acc_zero() { return 0; }
  static Acc acc_add(Acc a, V v) { return a + v; }
  static double acc_sum(Acc a) { return a; }
  static void acc_store(double* p, Acc a) { *p = a; }

  static I iota(Index) { return 0; }
  static I iset1(Index v) { return v; }
  static I iadd(I a, I b) { return a + b; }
  static I iselect(M m, I a, I b) { return m ? a : b; }
  static M ieq(I a, I b) { return a == b; }
  static I iload(const Index* p) { return *p; }
  static void istore(Index* p, I v) { *p = v; }
  static void store_index(int64_t* p, I v) { *p = v; }
};

}  // namespace
}  // namespace fastcnn::cpu
