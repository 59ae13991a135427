// See kernels.h. The AVX512-VNNI path and the scalar path do the same arithmetic in the
// same order (integer dot products per group, then one fused multiply-add per term).
#include "kernels.h"

#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define CARAFE_VNNI 1
#include <immintrin.h>
#endif

namespace carafe {

bool has_vnni() {
#ifdef CARAFE_VNNI
  return true;
#else
  return false;
#endif
}

static inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void quantize_rows(const float* x, int64_t rows, int64_t k, int64_t ldx, int8_t* q, float* d, float* s, int32_t* sum) {
  const int64_t groups = k / kGroup;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* xg = x + r * ldx + g * kGroup;
      int8_t* qg = q + r * k + g * kGroup;
      const int64_t gi = r * groups + g;
#ifdef CARAFE_VNNI
      const __m512 a = _mm512_loadu_ps(xg), b = _mm512_loadu_ps(xg + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
#else
      float amax = 0.f;
      for (int i = 0; i < kGroup; ++i) amax = std::max(amax, std::fabs(xg[i]));
#endif
      const float dg = amax / 127.f;
      const float id = dg != 0.f ? 1.f / dg : 0.f;
#ifdef CARAFE_VNNI
      const __m512 vid = _mm512_set1_ps(id);
      const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, vid));  // round to nearest even
      const __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, vid));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qg), _mm512_cvtepi32_epi8(qa));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qg + 16), _mm512_cvtepi32_epi8(qb));
      const int32_t total = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
#else
      int32_t total = 0;
      for (int i = 0; i < kGroup; ++i) {
        const int32_t v = static_cast<int32_t>(std::nearbyint(xg[i] * id));
        qg[i] = static_cast<int8_t>(v);
        total += v;
      }
#endif
      d[gi] = dg;
      sum[gi] = total;
      s[gi] = dg * static_cast<float>(total);
    }
  }
}

// ---- Q4 ----------------------------------------------------------------------
#ifdef CARAFE_VNNI
// 16 channels' dot products with one group of 32 activations: w[q] holds each channel's weight
// bytes 4q..4q+3; two accumulator chains, so consecutive vpdpbusd do not wait on each other
static inline __m512i dot_group(const __m512i* w, const int8_t* xq) {
  __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], _mm512_set1_epi32(load_i32(xq)));
  __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[1], _mm512_set1_epi32(load_i32(xq + 4)));
  for (int q = 2; q < 8; q += 2) {
    s0 = _mm512_dpbusd_epi32(s0, w[q], _mm512_set1_epi32(load_i32(xq + 4 * q)));
    s1 = _mm512_dpbusd_epi32(s1, w[q + 1], _mm512_set1_epi32(load_i32(xq + 4 * q + 4)));
  }
  return _mm512_add_epi32(s0, s1);
}

constexpr int kPrefetch = 8192;  // bytes ahead of the block being multiplied (a prefetch past the end is harmless)

template <int MB>
static void q4_tile(const QuantRows& x, int64_t r0, const uint8_t* blk, float* y, int64_t ldy) {
  const int64_t groups = x.k / kGroup;
  __m512 acc[MB];
#pragma GCC unroll 8
  for (int r = 0; r < MB; ++r) acc[r] = _mm512_setzero_ps();
  const __m512i low = _mm512_set1_epi8(0x0F);
  for (int64_t g = 0; g < groups; ++g, blk += kQ4Block) {
    // weights stream from memory once per call: ask for the block kPrefetch bytes ahead
    for (int j = 0; j < kQ4Block; j += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetch + j), _MM_HINT_T0);
    __m512i w[8];
    for (int j = 0; j < 4; ++j) {
      const __m512i v = _mm512_loadu_si512(blk + 64 * j);
      w[j] = _mm512_and_si512(v, low);
      w[j + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 256)));
    const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 288)));
#pragma GCC unroll 8
    for (int r = 0; r < MB; ++r) {
      const int8_t* xq = x.q + (r0 + r) * x.k + g * kGroup;
      const int64_t gi = (r0 + r) * groups + g;
      const __m512 f = _mm512_cvtepi32_ps(dot_group(w, xq));
      acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x.d[gi])), f, acc[r]);
      acc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(x.s[gi]), acc[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MB; ++r) _mm512_storeu_ps(y + (r0 + r) * ldy, acc[r]);
}
#else
template <int MB>
static void q4_tile(const QuantRows& x, int64_t r0, const uint8_t* blk, float* y, int64_t ldy) {
  const int64_t groups = x.k / kGroup;
  float acc[MB][kTile] = {};
  for (int64_t g = 0; g < groups; ++g, blk += kQ4Block) {
    const c10::Half* dh = reinterpret_cast<const c10::Half*>(blk + 256);
    const c10::Half* mh = reinterpret_cast<const c10::Half*>(blk + 288);
    for (int r = 0; r < MB; ++r) {
      const int8_t* xq = x.q + (r0 + r) * x.k + g * kGroup;
      const int64_t gi = (r0 + r) * groups + g;
      for (int lane = 0; lane < kTile; ++lane) {
        int32_t s = 0;
        for (int i = 0; i < kGroup; ++i) {
          const int quad = i / 4, b = i % 4;
          const uint8_t byte = blk[64 * (quad % 4) + lane * 4 + b];
          const int nib = quad < 4 ? (byte & 0x0F) : (byte >> 4);
          s += nib * xq[i];
        }
        const float dw = static_cast<float>(dh[lane]), mw = static_cast<float>(mh[lane]);
        acc[r][lane] = std::fma(dw * x.d[gi], static_cast<float>(s), acc[r][lane]);
        acc[r][lane] = std::fma(mw, x.s[gi], acc[r][lane]);
      }
    }
  }
  for (int r = 0; r < MB; ++r) std::memcpy(y + (r0 + r) * ldy, acc[r], sizeof(acc[r]));
}
#endif

template <typename F>
static void by_row_blocks(int64_t rows, F&& f) {
  int64_t r = 0;
  for (; r + 8 <= rows; r += 8) f(std::integral_constant<int, 8>{}, r);
  switch (rows - r) {
    case 7: f(std::integral_constant<int, 7>{}, r); break;
    case 6: f(std::integral_constant<int, 6>{}, r); break;
    case 5: f(std::integral_constant<int, 5>{}, r); break;
    case 4: f(std::integral_constant<int, 4>{}, r); break;
    case 3: f(std::integral_constant<int, 3>{}, r); break;
    case 2: f(std::integral_constant<int, 2>{}, r); break;
    case 1: f(std::integral_constant<int, 1>{}, r); break;
    default: break;
  }
}

void q4_gemm_tiles(const QuantRows& x, const uint8_t* w, int64_t t0, int64_t t1, float* y, int64_t ldy) {
  const int64_t tile_bytes = (x.k / kGroup) * kQ4Block;
  for (int64_t t = t0; t < t1; ++t) {
    by_row_blocks(x.rows, [&](auto mb, int64_t r0) {
      q4_tile<decltype(mb)::value>(x, r0, w + t * tile_bytes, y + t * kTile, ldy);
    });
  }
}

// ---- Q8 ----------------------------------------------------------------------
#ifdef CARAFE_VNNI
template <int MB>
static void q8_tile(const QuantRows& x, int64_t r0, const uint8_t* blk, const float* scale, float* y, int64_t ldy) {
  const int64_t groups = x.k / kGroup;
  __m512 acc[MB];
#pragma GCC unroll 8
  for (int r = 0; r < MB; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g, blk += kQ8Block) {
    for (int j = 0; j < kQ8Block; j += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetch + j), _MM_HINT_T0);
    __m512i w[8];
    for (int j = 0; j < 8; ++j) w[j] = _mm512_loadu_si512(blk + 64 * j);
#pragma GCC unroll 8
    for (int r = 0; r < MB; ++r) {
      const int8_t* xq = x.q + (r0 + r) * x.k + g * kGroup;
      const int64_t gi = (r0 + r) * groups + g;
      const __m512i s = _mm512_sub_epi32(dot_group(w, xq), _mm512_set1_epi32(128 * x.sum[gi]));
      acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x.d[gi]), _mm512_cvtepi32_ps(s), acc[r]);
    }
  }
  const __m512 sc = _mm512_loadu_ps(scale);
#pragma GCC unroll 8
  for (int r = 0; r < MB; ++r) _mm512_storeu_ps(y + (r0 + r) * ldy, _mm512_mul_ps(acc[r], sc));
}
#else
template <int MB>
static void q8_tile(const QuantRows& x, int64_t r0, const uint8_t* blk, const float* scale, float* y, int64_t ldy) {
  const int64_t groups = x.k / kGroup;
  float acc[MB][kTile] = {};
  for (int64_t g = 0; g < groups; ++g, blk += kQ8Block) {
    for (int r = 0; r < MB; ++r) {
      const int8_t* xq = x.q + (r0 + r) * x.k + g * kGroup;
      const int64_t gi = (r0 + r) * groups + g;
      for (int lane = 0; lane < kTile; ++lane) {
        int32_t s = 0;
        for (int i = 0; i < kGroup; ++i) s += blk[64 * (i / 4) + lane * 4 + i % 4] * xq[i];
        s -= 128 * x.sum[gi];
        acc[r][lane] = std::fma(x.d[gi], static_cast<float>(s), acc[r][lane]);
      }
    }
  }
  for (int r = 0; r < MB; ++r)
    for (int lane = 0; lane < kTile; ++lane) y[(r0 + r) * ldy + lane] = acc[r][lane] * scale[lane];
}
#endif

void q8_gemm_tiles(const QuantRows& x, const uint8_t* w, const float* scale, int64_t t0, int64_t t1, float* y,
                   int64_t ldy) {
  const int64_t tile_bytes = (x.k / kGroup) * kQ8Block;
  for (int64_t t = t0; t < t1; ++t) {
    by_row_blocks(x.rows, [&](auto mb, int64_t r0) {
      q8_tile<decltype(mb)::value>(x, r0, w + t * tile_bytes, scale + t * kTile, y + t * kTile, ldy);
    });
  }
}

// ---- packing -------------------------------------------------------------------
void q4_pack(const float* w, int64_t n, int64_t k, uint8_t* out) {
  const int64_t groups = k / kGroup;
  for (int64_t t = 0; t < n / kTile; ++t) {
    for (int64_t g = 0; g < groups; ++g) {
      uint8_t* blk = out + (t * groups + g) * kQ4Block;
      std::memset(blk, 0, 256);
      c10::Half* dh = reinterpret_cast<c10::Half*>(blk + 256);
      c10::Half* mh = reinterpret_cast<c10::Half*>(blk + 288);
      for (int lane = 0; lane < kTile; ++lane) {
        const float* row = w + (t * kTile + lane) * k + g * kGroup;
        float lo = row[0], hi = row[0];
        for (int i = 1; i < kGroup; ++i) lo = std::min(lo, row[i]), hi = std::max(hi, row[i]);
        // GGUF Q4_1: w = q * d + m, q in 0..15, d and m in fp16
        dh[lane] = c10::Half(std::max((hi - lo) / 15.f, 1e-10f));
        mh[lane] = c10::Half(lo);
        const float d = static_cast<float>(dh[lane]), m = static_cast<float>(mh[lane]);
        for (int i = 0; i < kGroup; ++i) {
          const float v = d > 0.f ? std::nearbyint((row[i] - m) / d) : 0.f;
          const int q = static_cast<int>(std::clamp(v, 0.f, 15.f));
          const int quad = i / 4, b = i % 4;
          blk[64 * (quad % 4) + lane * 4 + b] |= static_cast<uint8_t>(quad < 4 ? q : q << 4);
        }
      }
    }
  }
}

void q8_pack(const float* w, int64_t n, int64_t k, uint8_t* out, float* scale) {
  const int64_t groups = k / kGroup;
  for (int64_t ch = 0; ch < n; ++ch) {
    float amax = 0.f;
    for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(w[ch * k + i]));
    scale[ch] = std::max(amax, 1e-8f) / 127.f;
  }
  for (int64_t t = 0; t < n / kTile; ++t) {
    for (int64_t g = 0; g < groups; ++g) {
      uint8_t* blk = out + (t * groups + g) * kQ8Block;
      for (int lane = 0; lane < kTile; ++lane) {
        const int64_t ch = t * kTile + lane;
        for (int i = 0; i < kGroup; ++i) {
          const float q = std::clamp(std::nearbyint(w[ch * k + g * kGroup + i] / scale[ch]), -127.f, 127.f);
          blk[64 * (i / 4) + lane * 4 + i % 4] = static_cast<uint8_t>(static_cast<int>(q) + 128);
        }
      }
    }
  }
}

void q8_rows(const uint8_t* w, const float* scale, int64_t k, const int64_t* ids, int64_t count, float* out) {
  const int64_t groups = k / kGroup;
  for (int64_t j = 0; j < count; ++j) {
    const int64_t id = ids[j], t = id / kTile, lane = id % kTile;
    const uint8_t* tile = w + t * groups * kQ8Block;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t g = i / kGroup, within = i % kGroup;
      const uint8_t byte = tile[g * kQ8Block + 64 * (within / 4) + lane * 4 + within % 4];
      out[j * k + i] = static_cast<float>(static_cast<int>(byte) - 128) * scale[id];
    }
  }
}

void q4_unpack_row(const uint8_t* w, int64_t k, int64_t row, float* out) {
  const int64_t groups = k / kGroup, t = row / kTile, lane = row % kTile;
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* blk = w + (t * groups + g) * kQ4Block;
    const float d = static_cast<float>(reinterpret_cast<const c10::Half*>(blk + 256)[lane]);
    const float m = static_cast<float>(reinterpret_cast<const c10::Half*>(blk + 288)[lane]);
    for (int i = 0; i < kGroup; ++i) {
      const int quad = i / 4, b = i % 4;
      const uint8_t byte = blk[64 * (quad % 4) + lane * 4 + b];
      out[g * kGroup + i] = static_cast<float>(quad < 4 ? (byte & 0x0F) : (byte >> 4)) * d + m;
    }
  }
}

}  // namespace carafe
