// AVX-512 vectors for the pooling kernels: 16 floats or 8 doubles, with integer lanes of the
// same width (int32 beside floats, int64 beside doubles) for window indices.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace fastcnn::cpu {
namespace {

template <typename T>
struct PoolVec;

template <>
struct PoolVec<float> {
  using V = __m512;
  using I = __m512i;
  using M = __mmask16;
  using Index = int32_t;
  static constexpr int width = 16;

  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V zero() { return _mm512_setzero_ps(); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  // p[0], p[2], ..., p[30]: reads p[0..32).
  static V load_even(const float* p) {
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p + 16));
  }
  // p[1], p[3], ..., p[31]: reads p[0..32).
  static V load_odd(const float* p) {
    const __m512i odd =
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), odd, _mm512_loadu_ps(p + 16));
  }
  // p[2 * i] = even[i], p[2 * i + 1] = odd[i]: writes p[0..32).
  static void store_interleaved(float* p, V even, V odd) {
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    _mm512_storeu_ps(p, _mm512_permutex2var_ps(even, lo, odd));
    _mm512_storeu_ps(p + 16, _mm512_permutex2var_ps(even, hi, odd));
  }
  static V gather(const float* p, I offsets) { return _mm512_i32gather_ps(offsets, p, 4); }
  // The same loads of the columns col + lane (load, load_even) or col + offsets (gather) of a
  // row of W elements, reading -inf outside [0, W) without touching memory there.
  static __mmask16 inside(__m512i cols, int64_t W) {
    return _mm512_cmplt_epu32_mask(cols, _mm512_set1_epi32(static_cast<int32_t>(W)));
  }
  static V load(const float* row, int64_t col, int64_t W) {
    const __m512i cols = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(col)), iota(1));
    return _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), inside(cols, W), row + col);
  }
  static V load_even(const float* row, int64_t col, int64_t W) {
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(load(row, col, W), even, load(row, col + 16, W));
  }
  static V gather(const float* row, int64_t col, I offsets, int64_t W) {
    const __m512i cols = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(col)), offsets);
    return _mm512_mask_i32gather_ps(_mm512_set1_ps(-INFINITY), inside(cols, W), offsets, row + col,
                                    4);
  }
  // v > best, or v is NaN: the update rule of a max that keeps the first maximum.
  static M takes(V v, V best) {
    return _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  // Whether every lane of m is set.
  static bool all(M m) { return m == 0xFFFF; }
  static V select(M m, V a, V b) { return _mm512_mask_blend_ps(m, b, a); }
  // The larger of v and best, NaN if either is: vmaxps returns its second operand (best) when
  // one is NaN, and lanes where v is NaN keep v.
  static V max(V v, V best) {
    return _mm512_mask_max_ps(v, _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v, best);
  }

  // Sums of floats are kept in doubles: 16 lanes widen into two vectors of 8.
  struct Acc {
    __m512d lo, hi;
  };
  static Acc acc_zero() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }
  static Acc acc_add(Acc a, V v) {
    return {_mm512_add_pd(a.lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v))),
            _mm512_add_pd(a.hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)))};
  }
  static double acc_sum(Acc a) { return _mm512_reduce_add_pd(_mm512_add_pd(a.lo, a.hi)); }
  static void acc_store(double* p, Acc a) {
    _mm512_storeu_pd(p, a.lo);
    _mm512_storeu_pd(p + 8, a.hi);
  }

  static I iota(Index step) {
    return _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(step));
  }
  static I iset1(Index v) { return _mm512_set1_epi32(v); }
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
  static I iselect(M m, I a, I b) { return _mm512_mask_blend_epi32(m, b, a); }
  static M ieq(I a, I b) { return _mm512_cmpeq_epi32_mask(a, b); }
  static I iload(const Index* p) { return _mm512_loadu_si512(p); }
  static void istore(Index* p, I v) { _mm512_storeu_si512(p, v); }
  static void store_index(int64_t* p, I v) {
    _mm512_storeu_si512(p, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
    _mm512_storeu_si512(p + 8, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
  }
};

template <>
struct PoolVec<double> {
  using V = __m512d;
  using I = __m512i;
  using M = __mmask8;
  using Index = int64_t;
  static constexpr int width = 8;

  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static V set1(double v) { return _mm512_set1_pd(v); }
  static V zero() { return _mm512_setzero_pd(); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static V load_even(const double* p) {
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    return _mm512_permutex2var_pd(_mm512_loadu_pd(p), even, _mm512_loadu_pd(p + 8));
  }
  static V load_odd(const double* p) {
    const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    return _mm512_permutex2var_pd(_mm512_loadu_pd(p), odd, _mm512_loadu_pd(p + 8));
  }
  static void store_interleaved(double* p, V even, V odd) {
    const __m512i lo = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i hi = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    _mm512_storeu_pd(p, _mm512_permutex2var_pd(even, lo, odd));
    _mm512_storeu_pd(p + 8, _mm512_permutex2var_pd(even, hi, odd));
  }
  static V gather(const double* p, I offsets) { return _mm512_i64gather_pd(offsets, p, 8); }
  static __mmask8 inside(__m512i cols, int64_t W) {
    return _mm512_cmplt_epu64_mask(cols, _mm512_set1_epi64(W));
  }
  static V load(const double* row, int64_t col, int64_t W) {
    const __m512i cols = _mm512_add_epi64(_mm512_set1_epi64(col), iota(1));
    return _mm512_mask_loadu_pd(_mm512_set1_pd(-INFINITY), inside(cols, W), row + col);
  }
  static V load_even(const double* row, int64_t col, int64_t W) {
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    return _mm512_permutex2var_pd(load(row, col, W), even, load(row, col + 8, W));
  }
  static V gather(const double* row, int64_t col, I offsets, int64_t W) {
    const __m512i cols = _mm512_add_epi64(_mm512_set1_epi64(col), offsets);
    return _mm512_mask_i64gather_pd(_mm512_set1_pd(-INFINITY), inside(cols, W), offsets, row + col,
                                    8);
  }
  static M takes(V v, V best) {
    return _mm512_cmp_pd_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);
  }
  static bool all(M m) { return m == 0xFF; }
  static V select(M m, V a, V b) { return _mm512_mask_blend_pd(m, b, a); }
  static V max(V v, V best) {
    return _mm512_mask_max_pd(v, _mm512_cmp_pd_mask(v, v, _CMP_ORD_Q), v, best);
  }

  using Acc = __m512d;
  static Acc acc_zero() { return _mm512_setzero_pd(); }
  static Acc acc_add(Acc a, V v) { return _mm512_add_pd(a, v); }
  static double acc_sum(Acc a) { return _mm512_reduce_add_pd(a); }
  static void acc_store(double* p, Acc a) { _mm512_storeu_pd(p, a); }

  static I iota(Index step) {
    return _mm512_mullo_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), _mm512_set1_epi64(step));
  }
  static I iset1(Index v) { return _mm512_set1_epi64(v); }
  static I iadd(I a, I b) { return _mm512_add_epi64(a, b); }
  static I iselect(M m, I a, I b) { return _mm512_mask_blend_epi64(m, b, a); }
  static M ieq(I a, I b) { return _mm512_cmpeq_epi64_mask(a, b); }
  static I iload(const Index* p) { return _mm512_loadu_si512(p); }
  static void istore(Index* p, I v) { _mm512_storeu_si512(p, v); }
  static void store_index(int64_t* p, I v) { _mm512_storeu_si512(p, v); }
};

}  // namespace
}  // namespace fastcnn::cpu
