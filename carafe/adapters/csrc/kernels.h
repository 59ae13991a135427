// Carafe's CPU kernels for the fast path (see carafe/adapters/native.py).
//
// Weights are packed in tiles of 16 output channels; inside a tile, groups of 32 inputs.
// Activations are quantized per row in groups of 32 to int8 with one fp32 scale each
// (llama.cpp's Q8 activations), so a dot product is integer arithmetic (AVX512-VNNI
// vpdpbusd: unsigned weight bytes x signed activation bytes) plus one scale per group.
// Every output is computed from its own row alone, in one fixed order, so a row's result
// never depends on how many rows share the call, and the scalar fallback gives the same bits.
#pragma once

#include <cstdint>

namespace carafe {

constexpr int64_t kTile = 16;   // output channels per tile (one zmm of fp32)
constexpr int64_t kGroup = 32;  // inputs per activation scale and per Q4 weight scale/min
constexpr int64_t kQ4Block = 320;  // bytes per (tile, group) of Q4: 256 nibble bytes, 16 fp16 d, 16 fp16 m
constexpr int64_t kQ8Block = 512;  // bytes per (tile, group) of Q8: 16 x 32 unsigned bytes (w + 128)

// Activations of M rows, K inputs, quantized: q int8 [M*K], per (row, group): d (scale),
// s (= d * sum of q, the Q4 minimum's term) and sum (sum of q, the Q8 offset's term).
struct QuantRows {
  const int8_t* q;
  const float* d;
  const float* s;
  const int32_t* sum;
  int64_t rows;
  int64_t k;
};

// x fp32 [rows, k] (row stride ldx) -> q/d/s/sum (caller-owned buffers of rows*k and rows*k/32).
void quantize_rows(const float* x, int64_t rows, int64_t k, int64_t ldx, int8_t* q, float* d, float* s, int32_t* sum);

// y[r, n] = sum_g d[n,g] * xd[r,g] * isum + m[n,g] * xs[r,g], for the output tiles [t0, t1).
// w: [n/16][k/32][320]; y fp32 with row stride ldy.
void q4_gemm_tiles(const QuantRows& x, const uint8_t* w, int64_t t0, int64_t t1, float* y, int64_t ldy);

// y[r, n] = scale[n] * sum_g xd[r,g] * (isum - 128 * xsum[r,g]), for output tiles [t0, t1).
// w: [n/16][k/32][512] unsigned bytes w + 128.
void q8_gemm_tiles(const QuantRows& x, const uint8_t* w, const float* scale, int64_t t0, int64_t t1, float* y,
                   int64_t ldy);

// Packing (fp32 [n, k] row-major in); n % 16 == 0 and k % 32 == 0.
void q4_pack(const float* w, int64_t n, int64_t k, uint8_t* out);
void q8_pack(const float* w, int64_t n, int64_t k, uint8_t* out, float* scale);
// Rows ``ids`` of a Q8-packed table as fp32 [count, k] (an embedding look-up).
void q8_rows(const uint8_t* w, const float* scale, int64_t k, const int64_t* ids, int64_t count, float* out);
// One row of a Q4-packed matrix read back as fp32 (tests).
void q4_unpack_row(const uint8_t* w, int64_t k, int64_t row, float* out);

bool has_vnni();

}  // namespace carafe
