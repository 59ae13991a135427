// Decode attention over one row's own fp16 cache, for the query heads that share a kv head.
//
// Keys are kept in blocks of 16 columns, ``[block][head_dim][16]``: sixteen scores are then
// 16-lane fused multiply-adds of a key block row by one query element, with no horizontal
// sums. Values are kept one column after another, ``[column][head_dim]``. Each fp16 key and
// value is converted once for all the query heads of its kv head (grouped-query attention).
// A row's result depends on nothing but its own columns and their count.
#pragma once

#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "vecmath.h"

namespace carafe {

constexpr int64_t kKeyBlock = 16;  // key columns per block

// column c of keys (blocked layout) <- k[0:dim], rounded to fp16 (dim <= 512)
static inline void store_key(const float* k, int64_t dim, int64_t c, c10::Half* keys) {
  c10::Half half[512];
  to_half(k, dim, half);
  c10::Half* block = keys + (c / kKeyBlock) * dim * kKeyBlock + c % kKeyBlock;
  for (int64_t d = 0; d < dim; ++d) block[d * kKeyBlock] = half[d];
}

#ifdef CARAFE_AVX512
static inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t i = 0; i < bytes; i += 64) _mm_prefetch(c + i, _MM_HINT_T0);
}

template <int H>
static inline void key_scores_h(const float* q, const c10::Half* keys, int64_t n, int64_t dim, float scale,
                                float* scores, int64_t ld) {
  const int64_t block_bytes = dim * kKeyBlock * 2;
  for (int64_t b = 0; b * kKeyBlock < n; ++b) {
    const c10::Half* block = keys + b * dim * kKeyBlock;
    if ((b + 4) * kKeyBlock < n) prefetch_bytes(block + 4 * dim * kKeyBlock, block_bytes);
    __m512 even[H], odd[H];
#pragma GCC unroll 8
    for (int h = 0; h < H; ++h) even[h] = odd[h] = _mm512_setzero_ps();
    for (int64_t d = 0; d + 1 < dim; d += 2) {
      const __m512 k0 = load_half16(block + d * kKeyBlock), k1 = load_half16(block + (d + 1) * kKeyBlock);
#pragma GCC unroll 8
      for (int h = 0; h < H; ++h) {
        even[h] = _mm512_fmadd_ps(k0, _mm512_set1_ps(q[h * dim + d]), even[h]);
        odd[h] = _mm512_fmadd_ps(k1, _mm512_set1_ps(q[h * dim + d + 1]), odd[h]);
      }
    }
    if (dim % 2) {
      const __m512 k0 = load_half16(block + (dim - 1) * kKeyBlock);
#pragma GCC unroll 8
      for (int h = 0; h < H; ++h) even[h] = _mm512_fmadd_ps(k0, _mm512_set1_ps(q[h * dim + dim - 1]), even[h]);
    }
    const __mmask16 m = tail_mask(n - b * kKeyBlock);
#pragma GCC unroll 8
    for (int h = 0; h < H; ++h)
      _mm512_mask_storeu_ps(scores + h * ld + b * kKeyBlock, m,
                            _mm512_mul_ps(_mm512_add_ps(even[h], odd[h]), _mm512_set1_ps(scale)));
  }
}

// dim == 16 * P
template <int H, int P>
static inline void weighted_values_h(const float* p, int64_t ld, const c10::Half* values, int64_t n, float* out) {
  constexpr int64_t dim = 16 * P;
  __m512 acc[H][P];
#pragma GCC unroll 8
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 8
    for (int d = 0; d < P; ++d) acc[h][d] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; ++i) {
    if (i % 16 == 0 && i + 32 < n) prefetch_bytes(values + (i + 32) * dim, 16 * dim * 2);
    __m512 v[P];
#pragma GCC unroll 8
    for (int d = 0; d < P; ++d) v[d] = load_half16(values + i * dim + 16 * d);
#pragma GCC unroll 8
    for (int h = 0; h < H; ++h) {
      const __m512 w = _mm512_set1_ps(p[h * ld + i]);
#pragma GCC unroll 8
      for (int d = 0; d < P; ++d) acc[h][d] = _mm512_fmadd_ps(w, v[d], acc[h][d]);
    }
  }
#pragma GCC unroll 8
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 8
    for (int d = 0; d < P; ++d) _mm512_storeu_ps(out + h * dim + 16 * d, acc[h][d]);
}
#endif

// scores[h][i] = scale * q[h] . key i, for i < n and the `heads` query heads q (each dim floats, stride dim)
static inline void key_scores(const float* q, int64_t heads, const c10::Half* keys, int64_t n, int64_t dim,
                              float scale, float* scores, int64_t ld) {
#ifdef CARAFE_AVX512
  for (int64_t h0 = 0; h0 < heads; h0 += 4) {
    const float* qh = q + h0 * dim;
    float* sh = scores + h0 * ld;
    switch (std::min<int64_t>(4, heads - h0)) {
      case 4: key_scores_h<4>(qh, keys, n, dim, scale, sh, ld); break;
      case 3: key_scores_h<3>(qh, keys, n, dim, scale, sh, ld); break;
      case 2: key_scores_h<2>(qh, keys, n, dim, scale, sh, ld); break;
      default: key_scores_h<1>(qh, keys, n, dim, scale, sh, ld); break;
    }
  }
#else
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      const c10::Half* block = keys + (i / kKeyBlock) * dim * kKeyBlock + i % kKeyBlock;
      float even = 0.f, odd = 0.f;
      for (int64_t d = 0; d + 1 < dim; d += 2) {
        even = std::fma(static_cast<float>(block[d * kKeyBlock]), q[h * dim + d], even);
        odd = std::fma(static_cast<float>(block[(d + 1) * kKeyBlock]), q[h * dim + d + 1], odd);
      }
      if (dim % 2) even = std::fma(static_cast<float>(block[(dim - 1) * kKeyBlock]), q[h * dim + dim - 1], even);
      scores[h * ld + i] = (even + odd) * scale;
    }
  }
#endif
}

// out[h] = sum_i p[h][i] * value i, for the `heads` query heads (out[h]: dim floats, stride dim)
static inline void weighted_values(const float* p, int64_t heads, int64_t ld, const c10::Half* values, int64_t n,
                                   int64_t dim, float* out) {
#ifdef CARAFE_AVX512
  if (dim == 64 || dim == 128) {
    for (int64_t h0 = 0; h0 < heads; h0 += 3) {
      const float* ph = p + h0 * ld;
      float* oh = out + h0 * dim;
      const int64_t hn = std::min<int64_t>(3, heads - h0);
      if (dim == 64) {
        if (hn == 3) weighted_values_h<3, 4>(ph, ld, values, n, oh);
        else if (hn == 2) weighted_values_h<2, 4>(ph, ld, values, n, oh);
        else weighted_values_h<1, 4>(ph, ld, values, n, oh);
      } else {
        if (hn == 3) weighted_values_h<3, 8>(ph, ld, values, n, oh);
        else if (hn == 2) weighted_values_h<2, 8>(ph, ld, values, n, oh);
        else weighted_values_h<1, 8>(ph, ld, values, n, oh);
      }
    }
    return;
  }
#endif
  for (int64_t h = 0; h < heads; ++h) {
    float* o = out + h * dim;
    std::fill(o, o + dim, 0.f);
    for (int64_t i = 0; i < n; ++i) {
      const float w = p[h * ld + i];
      for (int64_t d = 0; d < dim; ++d) o[d] = std::fma(w, static_cast<float>(values[i * dim + d]), o[d]);
    }
  }
}

// Attention of `heads` query heads q (contiguous, dim each) over n columns of one kv head:
// out (heads x dim) = softmax(q k^T * scale) v. `scratch` is resized as needed.
static inline void attend_group(const float* q, int64_t heads, const c10::Half* keys, const c10::Half* values,
                                int64_t n, int64_t dim, float scale, std::vector<float>& scratch, float* out) {
  const int64_t ld = (n + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
  if (static_cast<int64_t>(scratch.size()) < heads * ld + heads) scratch.resize(heads * ld + heads);
  float* inv = scratch.data() + heads * ld;
  key_scores(q, heads, keys, n, dim, scale, scratch.data(), ld);
  for (int64_t h = 0; h < heads; ++h) {
    float* p = scratch.data() + h * ld;
    inv[h] = 1.f / exp_shifted(p, n, max_of(p, n));
  }
  weighted_values(scratch.data(), heads, ld, values, n, dim, out);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t d = 0; d < dim; ++d) out[h * dim + d] *= inv[h];
}

}  // namespace carafe
