// torch.ops.carafe.* and torch.classes.carafe.Decoder: the native side of the fast path.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <vector>

#include "kernels.h"

namespace carafe {
class Decoder;  // decode.cpp
void register_decoder(torch::Library& m);

namespace {

at::Tensor as_rows(const at::Tensor& x, int64_t k, const char* what) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) == k, what, ": expected fp32 input with ", k, " features");
  return x.reshape({-1, k}).contiguous();
}

std::vector<int64_t> out_shape(const at::Tensor& x, int64_t n) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  return shape;
}

struct Quantized {
  std::vector<int8_t> q;
  std::vector<float> d, s;
  std::vector<int32_t> sum;
  QuantRows rows;
  Quantized(const at::Tensor& x, int64_t k) {
    const int64_t m = x.size(0);
    q.resize(m * k);
    d.resize(m * k / kGroup);
    s.resize(m * k / kGroup);
    sum.resize(m * k / kGroup);
    const float* xp = x.data_ptr<float>();
    // rows are quantized apart: split them over the threads for long prefills
    at::parallel_for(0, m, 64, [&](int64_t r0, int64_t r1) {
      quantize_rows(xp + r0 * k, r1 - r0, k, k, q.data() + r0 * k, d.data() + r0 * k / kGroup,
                    s.data() + r0 * k / kGroup, sum.data() + r0 * k / kGroup);
    });
    rows = QuantRows{q.data(), d.data(), s.data(), sum.data(), m, k};
  }
};

int64_t grain(int64_t tiles, int64_t rows) { return tiles * rows < 24 ? tiles : 1; }

at::Tensor op_q4_pack(const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.size(0) % kTile == 0 && w.size(1) % kGroup == 0,
              "q4_pack: (n, k) with n % 16 == 0 and k % 32 == 0");
  const at::Tensor wf = w.to(at::kFloat).contiguous();
  const int64_t n = w.size(0), k = w.size(1);
  at::Tensor out = at::empty({n / kTile, k / kGroup, kQ4Block}, at::kByte);
  q4_pack(wf.data_ptr<float>(), n, k, out.data_ptr<uint8_t>());
  return out;
}

std::tuple<at::Tensor, at::Tensor> op_q8_pack(const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.size(0) % kTile == 0 && w.size(1) % kGroup == 0,
              "q8_pack: (n, k) with n % 16 == 0 and k % 32 == 0");
  const at::Tensor wf = w.to(at::kFloat).contiguous();
  const int64_t n = w.size(0), k = w.size(1);
  at::Tensor out = at::empty({n / kTile, k / kGroup, kQ8Block}, at::kByte);
  at::Tensor scale = at::empty({n}, at::kFloat);
  q8_pack(wf.data_ptr<float>(), n, k, out.data_ptr<uint8_t>(), scale.data_ptr<float>());
  return {out, scale};
}

at::Tensor op_q4_linear(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(w.scalar_type() == at::kByte && w.dim() == 3 && w.size(2) == kQ4Block, "q4_linear: packed Q4 weight");
  const int64_t k = w.size(1) * kGroup, n = w.size(0) * kTile, tiles = w.size(0);
  const at::Tensor xr = as_rows(x, k, "q4_linear");
  Quantized xq(xr, k);
  at::Tensor y = at::empty({xr.size(0), n}, at::kFloat);
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, tiles, grain(tiles, xr.size(0)),
                   [&](int64_t t0, int64_t t1) { q4_gemm_tiles(xq.rows, wp, t0, t1, yp, n); });
  return y.view(out_shape(x, n));
}

at::Tensor op_q8_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
  TORCH_CHECK(w.scalar_type() == at::kByte && w.dim() == 3 && w.size(2) == kQ8Block, "q8_linear: packed Q8 weight");
  const int64_t k = w.size(1) * kGroup, n = w.size(0) * kTile, tiles = w.size(0);
  const at::Tensor xr = as_rows(x, k, "q8_linear");
  const at::Tensor sc = scale.contiguous();
  Quantized xq(xr, k);
  at::Tensor y = at::empty({xr.size(0), n}, at::kFloat);
  const uint8_t* wp = w.data_ptr<uint8_t>();
  const float* sp = sc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, tiles, grain(tiles, xr.size(0)),
                   [&](int64_t t0, int64_t t1) { q8_gemm_tiles(xq.rows, wp, sp, t0, t1, yp, n); });
  return y.view(out_shape(x, n));
}

at::Tensor op_q8_rows(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& ids) {
  const int64_t k = w.size(1) * kGroup, n = w.size(0) * kTile;
  const at::Tensor flat = ids.reshape({-1}).to(at::kLong).contiguous();
  TORCH_CHECK(flat.numel() == 0 || (flat.min().item<int64_t>() >= 0 && flat.max().item<int64_t>() < n),
              "q8_rows: id out of range");
  at::Tensor out = at::empty({flat.numel(), k}, at::kFloat);
  q8_rows(w.data_ptr<uint8_t>(), scale.contiguous().data_ptr<float>(), k, flat.data_ptr<int64_t>(), flat.numel(),
          out.data_ptr<float>());
  std::vector<int64_t> shape(ids.sizes().begin(), ids.sizes().end());
  shape.push_back(k);
  return out.view(shape);
}

at::Tensor op_q4_unpack(const at::Tensor& w) {
  const int64_t k = w.size(1) * kGroup, n = w.size(0) * kTile;
  at::Tensor out = at::empty({n, k}, at::kFloat);
  for (int64_t row = 0; row < n; ++row) q4_unpack_row(w.data_ptr<uint8_t>(), k, row, out.data_ptr<float>() + row * k);
  return out;
}

bool op_vnni() { return has_vnni(); }

}  // namespace
}  // namespace carafe

TORCH_LIBRARY(carafe, m) {
  m.def("q4_pack(Tensor w) -> Tensor", &carafe::op_q4_pack);
  m.def("q8_pack(Tensor w) -> (Tensor, Tensor)", &carafe::op_q8_pack);
  m.def("q4_linear(Tensor x, Tensor w) -> Tensor", &carafe::op_q4_linear);
  m.def("q8_linear(Tensor x, Tensor w, Tensor scale) -> Tensor", &carafe::op_q8_linear);
  m.def("q8_rows(Tensor w, Tensor scale, Tensor ids) -> Tensor", &carafe::op_q8_rows);
  m.def("q4_unpack(Tensor w) -> Tensor", &carafe::op_q4_unpack);
  m.def("vnni() -> bool", &carafe::op_vnni);
  carafe::register_decoder(m);
}
