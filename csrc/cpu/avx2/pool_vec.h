// AVX2 vectors for the pooling kernels: 8 floats or 4 doubles, with integer lanes of the same
// width (int32 beside floats, int64 beside doubles) for window indices. Masks are vectors of
// all-ones lanes, as the compare instructions leave them.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace fastcnn::cpu {
namespace {

template <typename T>
struct PoolVec;

inline double hsum(__m256d v) {
  const __m128d pair = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)));
}

template <>
struct PoolVec<float> {
  using V = __m256;
  using I = __m256i;
  using M = __m256;
  using Index = int32_t;
  static constexpr int width = 8;

  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V zero() { return _mm256_setzero_ps(); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  // p[0], p[2], ..., p[14]: reads p[0..16).
  static V load_even(const float* p) {
    const __m256 pairs =
        _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(pairs), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  // p[1], p[3], ..., p[15]: reads p[0..16).
  static V load_odd(const float* p) {
    const __m256 pairs =
        _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _MM_SHUFFLE(3, 1, 3, 1));
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(pairs), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  // p[2 * i] = even[i], p[2 * i + 1] = odd[i]: writes p[0..16). The unpacks interleave within
  // 128-bit lanes (pairs 0, 1, 4, 5 and 2, 3, 6, 7); the lane permutes put them in order.
  static void store_interleaved(float* p, V even, V odd) {
    const __m256 lo = _mm256_unpacklo_ps(even, odd), hi = _mm256_unpackhi_ps(even, odd);
    _mm256_storeu_ps(p, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(p + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
  }
  static V gather(const float* p, I offsets) { return _mm256_i32gather_ps(p, offsets, 4); }
  // The same loads of the columns col + lane (load, load_even) or col + offsets (gather) of a
  // row of W elements, reading -inf outside [0, W) without touching memory there.
  static __m256i inside(__m256i cols, int64_t W) {
    return _mm256_and_si256(_mm256_cmpgt_epi32(cols, _mm256_set1_epi32(-1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(W)), cols));
  }
  static V load(const float* row, int64_t col, int64_t W) {
    const __m256i cols = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(col)), iota(1));
    const __m256i m = inside(cols, W);
    return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_maskload_ps(row + col, m),
                            _mm256_castsi256_ps(m));
  }
  static V load_even(const float* row, int64_t col, int64_t W) {
    const __m256 pairs =
        _mm256_shuffle_ps(load(row, col, W), load(row, col + 8, W), _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(pairs), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  static V gather(const float* row, int64_t col, I offsets, int64_t W) {
    const __m256i cols = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(col)), offsets);
    return _mm256_mask_i32gather_ps(_mm256_set1_ps(-INFINITY), row + col, offsets,
                                    _mm256_castsi256_ps(inside(cols, W)), 4);
  }
  // v > best, or v is NaN: the update rule of a max that keeps the first maximum.
  static M takes(V v, V best) {
    return _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  // Whether every lane of m is set.
  static bool all(M m) { return _mm256_movemask_ps(m) == 0xFF; }
  static V select(M m, V a, V b) { return _mm256_blendv_ps(b, a, m); }
  // The larger of v and best, NaN if either is: vmaxps returns its second operand (best) when
  // one is NaN, and lanes where v is NaN take v.
  static V max(V v, V best) {
    return _mm256_blendv_ps(_mm256_max_ps(v, best), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }

  // Sums of floats are kept in doubles: 8 lanes widen into two vectors of 4.
  struct Acc {
    __m256d lo, hi;
  };
  static Acc acc_zero() { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }
  static Acc acc_add(Acc a, V v) {
    return {_mm256_add_pd(a.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v))),
            _mm256_add_pd(a.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)))};
  }
  static double acc_sum(Acc a) { return hsum(_mm256_add_pd(a.lo, a.hi)); }
  static void acc_store(double* p, Acc a) {
    _mm256_storeu_pd(p, a.lo);
    _mm256_storeu_pd(p + 4, a.hi);
  }

  static I iota(Index step) {
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(step));
  }
  static I iset1(Index v) { return _mm256_set1_epi32(v); }
  static I iadd(I a, I b) { return _mm256_add_epi32(a, b); }
  static I iselect(M m, I a, I b) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(a), m));
  }
  static M ieq(I a, I b) { return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, b)); }
  static I iload(const Index* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void istore(Index* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static void store_index(int64_t* p, I v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 4),
                        _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
  }
};

template <>
struct PoolVec<double> {
  using V = __m256d;
  using I = __m256i;
  using M = __m256d;
  using Index = int64_t;
  static constexpr int width = 4;

  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static V set1(double v) { return _mm256_set1_pd(v); }
  static V zero() { return _mm256_setzero_pd(); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V load_even(const double* p) {
    const __m256d pairs = _mm256_unpacklo_pd(_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4));
    return _mm256_permute4x64_pd(pairs, _MM_SHUFFLE(3, 1, 2, 0));
  }
  static V load_odd(const double* p) {
    const __m256d pairs = _mm256_unpackhi_pd(_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4));
    return _mm256_permute4x64_pd(pairs, _MM_SHUFFLE(3, 1, 2, 0));
  }
  static void store_interleaved(double* p, V even, V odd) {
    const __m256d lo = _mm256_unpacklo_pd(even, odd), hi = _mm256_unpackhi_pd(even, odd);
    _mm256_storeu_pd(p, _mm256_permute2f128_pd(lo, hi, 0x20));
    _mm256_storeu_pd(p + 4, _mm256_permute2f128_pd(lo, hi, 0x31));
  }
  static V gather(const double* p, I offsets) {
    return _mm256_i64gather_pd(p, static_cast<__m256i>(offsets), 8);
  }
  static __m256i inside(__m256i cols, int64_t W) {
    return _mm256_and_si256(_mm256_cmpgt_epi64(cols, _mm256_set1_epi64x(-1)),
                            _mm256_cmpgt_epi64(_mm256_set1_epi64x(W), cols));
  }
  static V load(const double* row, int64_t col, int64_t W) {
    const __m256i m = inside(_mm256_add_epi64(_mm256_set1_epi64x(col), iota(1)), W);
    return _mm256_blendv_pd(_mm256_set1_pd(-INFINITY), _mm256_maskload_pd(row + col, m),
                            _mm256_castsi256_pd(m));
  }
  static V load_even(const double* row, int64_t col, int64_t W) {
    const __m256d pairs = _mm256_unpacklo_pd(load(row, col, W), load(row, col + 4, W));
    return _mm256_permute4x64_pd(pairs, _MM_SHUFFLE(3, 1, 2, 0));
  }
  static V gather(const double* row, int64_t col, I offsets, int64_t W) {
    const __m256i m = inside(_mm256_add_epi64(_mm256_set1_epi64x(col), offsets), W);
    return _mm256_mask_i64gather_pd(_mm256_set1_pd(-INFINITY), row + col, offsets,
                                    _mm256_castsi256_pd(m), 8);
  }
  static M takes(V v, V best) {
    return _mm256_or_pd(_mm256_cmp_pd(v, best, _CMP_GT_OQ), _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
  }
  static bool all(M m) { return _mm256_movemask_pd(m) == 0xF; }
  static V select(M m, V a, V b) { return _mm256_blendv_pd(b, a, m); }
  static V max(V v, V best) {
    return _mm256_blendv_pd(_mm256_max_pd(v, best), v, _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
  }

  using Acc = __m256d;
  static Acc acc_zero() { return _mm256_setzero_pd(); }
  static Acc acc_add(Acc a, V v) { return _mm256_add_pd(a, v); }
  static double acc_sum(Acc a) { return hsum(a); }
  static void acc_store(double* p, Acc a) { _mm256_storeu_pd(p, a); }

  static I iota(Index step) { return _mm256_setr_epi64x(0, step, 2 * step, 3 * step); }
  static I iset1(Index v) { return _mm256_set1_epi64x(v); }
  static I iadd(I a, I b) { return _mm256_add_epi64(a, b); }
  static I iselect(M m, I a, I b) {
    return _mm256_castpd_si256(_mm256_blendv_pd(_mm256_castsi256_pd(b), _mm256_castsi256_pd(a), m));
  }
  static M ieq(I a, I b) { return _mm256_castsi256_pd(_mm256_cmpeq_epi64(a, b)); }
  static I iload(const Index* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void istore(Index* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static void store_index(int64_t* p, I v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
};

}  // namespace
}  // namespace fastcnn::cpu
