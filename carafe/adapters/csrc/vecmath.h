// Small fp32 vector helpers for the decode step, AVX512 with a scalar fallback.
// Each is elementwise or sums in an order fixed by the length alone.
#pragma once

#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#define CARAFE_AVX512 1
#endif

namespace carafe {

#ifdef CARAFE_AVX512
// e^x for x <= 0 .. moderate; 2^n * p(r) with |r| <= ln2/2 (degree-6 polynomial, ~1 ulp)
static inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-103.f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

static inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}
#endif

static inline float sum_squares(const float* x, int64_t n) {
#ifdef CARAFE_AVX512
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
    acc = _mm512_fmadd_ps(v, v, acc);
  }
  return _mm512_reduce_add_ps(acc);
#else
  float acc = 0.f;
  for (int64_t i = 0; i < n; ++i) acc += x[i] * x[i];
  return acc;
#endif
}

#ifdef CARAFE_AVX512
// lane c of the result = the sum of v[c]'s 16 lanes; every column goes through the same adds
static inline __m512 reduce16(const __m512* v) {
  __m512 s1[8], s2[4], s3[2];
  for (int i = 0; i < 8; ++i)
    s1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                          _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; ++i)
    s2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s1[2 * i], s1[2 * i + 1], 0x88),
                          _mm512_shuffle_f32x4(s1[2 * i], s1[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)
    s3[i] = _mm512_add_ps(_mm512_shuffle_ps(s2[2 * i], s2[2 * i + 1], 0x44),
                          _mm512_shuffle_ps(s2[2 * i], s2[2 * i + 1], 0xEE));
  const __m512 s4 = _mm512_add_ps(_mm512_shuffle_ps(s3[0], s3[1], 0x88), _mm512_shuffle_ps(s3[0], s3[1], 0xDD));
  // the tree leaves column c in lane [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15][c]
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), s4);
}
#endif

#ifdef CARAFE_AVX512
static inline __m512 load_half16(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#endif

// out[0:n] = x[0:n] rounded to fp16 (to nearest even)
static inline void to_half(const float* x, int64_t n, c10::Half* out) {
  int64_t i = 0;
#ifdef CARAFE_AVX512
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; i < n; ++i) out[i] = c10::Half(x[i]);
}

static inline float max_of(const float* p, int64_t n) {
#ifdef CARAFE_AVX512
  __m512 top = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < n; i += 16) top = _mm512_max_ps(top, _mm512_mask_loadu_ps(top, tail_mask(n - i), p + i));
  return _mm512_reduce_max_ps(top);
#else
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) top = p[i] > top ? p[i] : top;
  return top;
#endif
}

// p[i] = e^(p[i] - top), returns their sum
static inline float exp_shifted(float* p, int64_t n, float top) {
#ifdef CARAFE_AVX512
  __m512 acc = _mm512_setzero_ps();
  const __m512 t = _mm512_set1_ps(top);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p + i), t));
    _mm512_mask_storeu_ps(p + i, m, e);
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
  }
  return _mm512_reduce_add_ps(acc);
#else
  float acc = 0.f;
  for (int64_t i = 0; i < n; ++i) acc += (p[i] = std::exp(p[i] - top));
  return acc;
#endif
}

#ifdef CARAFE_AVX512
// lora_add for N tokens sharing one adapter: a and b are read once for all of them; each token's
// arithmetic is the same whatever N (two chains over the inputs, then one sum per output block)
template <int N>
static inline void lora_add_n(const float* x, int64_t ldx, int64_t in, const float* a, const float* b, int64_t rank,
                              int64_t width, float* out, int64_t ldo) {
  alignas(64) float low[N][64];
  for (int64_t p = 0; p * 16 < rank; ++p) {
    const __mmask16 m = tail_mask(rank - 16 * p);
    __m512 even[N], odd[N];
#pragma GCC unroll 8
    for (int t = 0; t < N; ++t) even[t] = odd[t] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 1 < in; k += 2) {
      const __m512 a0 = _mm512_maskz_loadu_ps(m, a + k * rank + 16 * p);
      const __m512 a1 = _mm512_maskz_loadu_ps(m, a + (k + 1) * rank + 16 * p);
#pragma GCC unroll 8
      for (int t = 0; t < N; ++t) {
        even[t] = _mm512_fmadd_ps(_mm512_set1_ps(x[t * ldx + k]), a0, even[t]);
        odd[t] = _mm512_fmadd_ps(_mm512_set1_ps(x[t * ldx + k + 1]), a1, odd[t]);
      }
    }
    if (k < in) {
      const __m512 a0 = _mm512_maskz_loadu_ps(m, a + k * rank + 16 * p);
#pragma GCC unroll 8
      for (int t = 0; t < N; ++t) even[t] = _mm512_fmadd_ps(_mm512_set1_ps(x[t * ldx + k]), a0, even[t]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < N; ++t) _mm512_store_ps(low[t] + 16 * p, _mm512_add_ps(even[t], odd[t]));
  }
  for (int64_t o = 0; o < width; o += 16) {
    const __mmask16 m = tail_mask(width - o);
    __m512 d[N];
#pragma GCC unroll 8
    for (int t = 0; t < N; ++t) d[t] = _mm512_setzero_ps();
    for (int64_t j = 0; j < rank; ++j) {
      const __m512 bj = _mm512_maskz_loadu_ps(m, b + j * width + o);
#pragma GCC unroll 8
      for (int t = 0; t < N; ++t) d[t] = _mm512_fmadd_ps(_mm512_set1_ps(low[t][j]), bj, d[t]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < N; ++t)
      _mm512_mask_storeu_ps(out + t * ldo + o, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, out + t * ldo + o), d[t]));
  }
}
#endif

// out_t[0:width] += (x_t @ a) @ b for n tokens t (rows ldx / ldo apart) sharing one LoRA pair:
// a (in, rank), b (rank, width) row-major, rank <= 64
static inline void lora_add(const float* x, int64_t ldx, int64_t n, int64_t in, const float* a, const float* b,
                            int64_t rank, int64_t width, float* out, int64_t ldo) {
#ifdef CARAFE_AVX512
  for (; n >= 8; n -= 8, x += 8 * ldx, out += 8 * ldo) lora_add_n<8>(x, ldx, in, a, b, rank, width, out, ldo);
  switch (n) {
    case 7: lora_add_n<7>(x, ldx, in, a, b, rank, width, out, ldo); break;
    case 6: lora_add_n<6>(x, ldx, in, a, b, rank, width, out, ldo); break;
    case 5: lora_add_n<5>(x, ldx, in, a, b, rank, width, out, ldo); break;
    case 4: lora_add_n<4>(x, ldx, in, a, b, rank, width, out, ldo); break;
    case 3: lora_add_n<3>(x, ldx, in, a, b, rank, width, out, ldo); break;
    case 2: lora_add_n<2>(x, ldx, in, a, b, rank, width, out, ldo); break;
    case 1: lora_add_n<1>(x, ldx, in, a, b, rank, width, out, ldo); break;
    default: break;
  }
#else
  for (int64_t t = 0; t < n; ++t) {
    float low[64];
    for (int64_t j = 0; j < rank; ++j) {
      float even = 0.f, odd = 0.f;
      int64_t k = 0;
      for (; k + 1 < in; k += 2) {
        even = std::fma(x[t * ldx + k], a[k * rank + j], even);
        odd = std::fma(x[t * ldx + k + 1], a[(k + 1) * rank + j], odd);
      }
      if (k < in) even = std::fma(x[t * ldx + k], a[k * rank + j], even);
      low[j] = even + odd;
    }
    for (int64_t o = 0; o < width; ++o) {
      float d = 0.f;
      for (int64_t j = 0; j < rank; ++j) d = std::fma(low[j], b[j * width + o], d);
      out[t * ldo + o] += d;
    }
  }
#endif
}

// out = silu(gate) * up
static inline void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
#ifdef CARAFE_AVX512
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, up + i)));
  }
#else
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
#endif
}

}  // namespace carafe
