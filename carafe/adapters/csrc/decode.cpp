// The forward pass of a Llama-family model in native code, over rows that each bring
// some new tokens: one for a decoding stream, a chunk of its prompt for one being prefilled.
//
// Each row owns its KV buffer (carafe/adapters/kv_rows.py) holding only its own tokens, in
// fp16; a pass appends the rows' new keys and values and every new token attends to its
// row's columns up to itself. A token's result therefore depends on nothing but its row's
// earlier tokens: a prompt gives the same keys, values and logits prefilled at once, in
// chunks, beside other rows, or after a prefix-cache hit, and a decode step is a one-token
// prefill. The matrix products run over all the pass's tokens at once (kernels.h), so
// decoding rows and prompt chunks share one read of the weights. LoRA deltas are added per
// token from its row's adapter (registered once by id, never stacked).
//
// A pass runs in one OpenMP parallel region (torch's own thread pool): each phase of a layer
// is split across the threads (tokens for the per-token work, output tiles for the products,
// attention by work) with a barrier between phases, so the small per-token work is shared
// and no phase pays for starting threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "attention.h"
#include "kernels.h"
#include "vecmath.h"

namespace carafe {

namespace {

void check_q4(const at::Tensor& w, const char* what) {
  TORCH_CHECK(w.scalar_type() == at::kByte && w.dim() == 3 && w.size(2) == kQ4Block && w.is_contiguous(), what,
              " must be a packed Q4 weight");
}

// [begin, end) of n items for thread tid of n_threads
struct Share {
  int64_t begin, end;
  Share(int64_t n, int tid, int n_threads) : begin(n * tid / n_threads), end(n * (tid + 1) / n_threads) {}
};

// one layer input's activations quantized for the kernels (tokens x k)
struct Quantized {
  std::vector<int8_t> q;
  std::vector<float> d, s;
  std::vector<int32_t> sum;
  int64_t tokens = 0, k = 0;

  void reserve(int64_t n, int64_t max_k) {
    q.resize(n * max_k);
    d.resize(n * max_k / kGroup);
    s.resize(n * max_k / kGroup);
    sum.resize(n * max_k / kGroup);
  }
  // quantize tokens [t0, t1) of x (tokens x width); every thread its own tokens, then a barrier
  void rows(const float* x, int64_t width, int64_t t0, int64_t t1) {
    const int64_t g = t0 * width / kGroup;
    if (t1 > t0)
      quantize_rows(x + t0 * width, t1 - t0, width, width, q.data() + t0 * width, d.data() + g, s.data() + g,
                    sum.data() + g);
  }
  QuantRows view(int64_t n, int64_t width) const { return QuantRows{q.data(), d.data(), s.data(), sum.data(), n, width}; }
};

}  // namespace

class Decoder : public torch::CustomClassHolder {
 public:
  // dims: layers, hidden, heads, kv_heads, head_dim, intermediate, vocab
  // tensors: per layer attn_norm, qkv, o, mlp_norm, gate_up, down (Q4); then norm, embed (Q8), embed
  // scales, head (Q8), head scales, inv_freq
  Decoder(std::vector<at::Tensor> tensors, std::vector<int64_t> dims, double eps)
      : layers_(dims.at(0)),
        hidden_(dims.at(1)),
        heads_(dims.at(2)),
        kv_heads_(dims.at(3)),
        head_dim_(dims.at(4)),
        inter_(dims.at(5)),
        vocab_(dims.at(6)),
        eps_(static_cast<float>(eps)),
        tensors_(std::move(tensors)) {
    TORCH_CHECK(static_cast<int64_t>(tensors_.size()) == layers_ * 6 + 6, "Decoder: wrong number of tensors");
    TORCH_CHECK(head_dim_ % 2 == 0 && head_dim_ <= 512 && hidden_ % kGroup == 0 && inter_ % kGroup == 0 &&
                    heads_ % kv_heads_ == 0 && (heads_ * head_dim_) % kGroup == 0,
                "Decoder: unsupported shape");
    for (int64_t l = 0; l < layers_; ++l) {
      for (int j : {1, 2, 4, 5}) check_q4(tensors_[l * 6 + j], "layer weight");
    }
  }

  // An adapter under `id` (> 0): A (in, rank) and B·scaling (rank, out) fp32 per (layer, module)
  // in the order q, k, v, o, gate, up, down; an empty tensor where it does not touch a module.
  void add_adapter(int64_t id, std::vector<at::Tensor> a, std::vector<at::Tensor> b) {
    TORCH_CHECK(id > 0, "add_adapter: ids start at 1 (0 is the base model)");
    TORCH_CHECK(static_cast<int64_t>(a.size()) == layers_ * 7 && a.size() == b.size(), "add_adapter: 7 per layer");
    const int64_t q_w = heads_ * head_dim_, kv_w = kv_heads_ * head_dim_;
    const int64_t in[7] = {hidden_, hidden_, hidden_, q_w, hidden_, hidden_, inter_};
    const int64_t out[7] = {q_w, kv_w, kv_w, hidden_, inter_, inter_, hidden_};
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i].numel() == 0) continue;
      TORCH_CHECK(a[i].scalar_type() == at::kFloat && b[i].scalar_type() == at::kFloat && a[i].dim() == 2 &&
                      b[i].dim() == 2 && a[i].size(1) == b[i].size(0) && a[i].size(0) == in[i % 7] &&
                      b[i].size(1) == out[i % 7] && a[i].size(1) <= 64,
                  "add_adapter: A (in, rank <= 64) and B (rank, out) fp32 of the module's shape");
      a[i] = a[i].contiguous();
      b[i] = b[i].contiguous();
    }
    std::lock_guard<std::mutex> lock(mu_);
    adapters_[id] = Adapter{std::move(a), std::move(b)};
  }

  void remove_adapter(int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    adapters_.erase(id);
  }

  // ids: (tokens,) int64, the rows' new tokens one row after another; counts, lengths: (rows,)
  // int64, each row's number of new tokens (>= 1) and of columns already in its buffer. kv: per
  // row (layers, 2, kv_heads, capacity >= length + count, head_dim) fp16, keys in blocks of 16
  // columns (attention.h), values one column after another; capacity % 16 == 0. The new tokens
  // take positions length.. and their keys and values are written there. adapters: (rows,) int64
  // adapter id per row (0: the base model), or empty. Returns the logits (rows, vocab) of each
  // row's last new token, or of every new token (tokens, vocab) with all_logits.
  at::Tensor forward(at::Tensor ids, at::Tensor counts, std::vector<at::Tensor> kv, at::Tensor lengths,
                     at::Tensor adapters, bool all_logits) {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t rows = counts.numel();
    TORCH_CHECK(ids.scalar_type() == at::kLong && counts.scalar_type() == at::kLong &&
                    lengths.scalar_type() == at::kLong && lengths.numel() == rows,
                "forward: ids, counts and lengths are int64, counts and lengths one per row");
    TORCH_CHECK(static_cast<int64_t>(kv.size()) == rows, "forward: one KV buffer per row");
    ids = ids.contiguous();
    counts = counts.contiguous();
    lengths = lengths.contiguous();
    const int64_t* count = counts.data_ptr<int64_t>();
    const int64_t* len = lengths.data_ptr<int64_t>();
    int64_t tokens = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const at::Tensor& t = kv[r];
      TORCH_CHECK(count[r] >= 1 && len[r] >= 0, "forward: each row brings at least one token");
      TORCH_CHECK(t.scalar_type() == at::kHalf && t.is_contiguous() && t.dim() == 5 && t.size(0) == layers_ &&
                      t.size(1) == 2 && t.size(2) == kv_heads_ && t.size(3) >= len[r] + count[r] &&
                      t.size(3) % kKeyBlock == 0 && t.size(4) == head_dim_,
                  "forward: a row's KV buffer has the wrong shape or no room");
      tokens += count[r];
    }
    TORCH_CHECK(ids.numel() == tokens, "forward: ids must hold every row's new tokens");
    const int64_t* id = ids.data_ptr<int64_t>();
    for (int64_t t = 0; t < tokens; ++t) TORCH_CHECK(id[t] >= 0 && id[t] < vocab_, "forward: token id out of range");

    // where each token belongs: its row, its position, its adapter
    row_.resize(tokens);
    pos_.resize(tokens);
    lora_.assign(tokens, nullptr);
    kv_.resize(rows);
    const bool with_adapters = adapters.defined() && adapters.numel() == rows;
    if (with_adapters) adapters = adapters.contiguous();
    bool lora = false;
    for (int64_t r = 0, t = 0; r < rows; ++r) {
      const Adapter* adapter = nullptr;
      if (with_adapters && adapters.data_ptr<int64_t>()[r] != 0) {
        auto it = adapters_.find(adapters.data_ptr<int64_t>()[r]);
        TORCH_CHECK(it != adapters_.end(), "forward: adapter ", adapters.data_ptr<int64_t>()[r], " is not loaded");
        adapter = &it->second;
        lora = true;
      }
      kv_[r] = RowKV{reinterpret_cast<c10::Half*>(kv[r].data_ptr()), kv[r].size(3)};
      for (int64_t j = 0; j < count[r]; ++j, ++t) {
        row_[t] = r;
        pos_[t] = len[r] + j;
        lora_[t] = adapter;
      }
    }

    const int64_t q_w = heads_ * head_dim_, kv_w = kv_heads_ * head_dim_, qkv_w = q_w + 2 * kv_w;
    h_.resize(tokens * hidden_);
    x_.resize(tokens * hidden_);
    qkv_.resize(tokens * qkv_w);
    attn_.resize(tokens * q_w);
    proj_.resize(tokens * hidden_);
    gate_up_.resize(tokens * 2 * inter_);
    act_.resize(tokens * inter_);
    rope_.resize(tokens * head_dim_ * 2);
    quant_.reserve(tokens, std::max({hidden_, q_w, inter_}));

    // embeddings and rotary angles, once for all layers
    q8_rows(tensors_[layers_ * 6 + 1].data_ptr<uint8_t>(), tensors_[layers_ * 6 + 2].data_ptr<float>(), hidden_, id,
            tokens, h_.data());
    const float* inv_freq = tensors_[layers_ * 6 + 5].data_ptr<float>();
    const int64_t half = head_dim_ / 2;
    for (int64_t t = 0; t < tokens; ++t) {
      float* c = rope_.data() + t * head_dim_ * 2;
      float* s = c + head_dim_;
      const float p = static_cast<float>(pos_[t]);
      for (int64_t i = 0; i < half; ++i) {
        const float f = p * inv_freq[i];
        c[i] = c[i + half] = std::cos(f);
        s[i] = -std::sin(f);  // rotate_half(x) * sin: the first half takes -x[i + half]
        s[i + half] = std::sin(f);
      }
    }
    // attention tasks (token, kv head) and their work (columns), to share them out evenly
    work_.resize(tokens * kv_heads_ + 1);
    work_[0] = 0;
    for (int64_t task = 0; task < tokens * kv_heads_; ++task) work_[task + 1] = work_[task] + pos_[task / kv_heads_] + 1;
    // the output head: each row's last new token, or every new token
    const int64_t out_rows = all_logits ? tokens : rows;
    last_.resize(out_rows);
    for (int64_t r = 0, t = 0; r < out_rows; ++r) {
      if (all_logits) {
        last_[r] = r;
      } else {
        t += count[r];
        last_[r] = t - 1;
      }
    }
    at::Tensor logits = at::empty({out_rows, vocab_}, at::kFloat);

#pragma omp parallel num_threads(static_cast<int>(std::max(1, at::get_num_threads())))
    {
      const int tid = omp_get_thread_num(), n_threads = omp_get_num_threads();
      const Share own(tokens, tid, n_threads);
      for (int64_t l = 0; l < layers_; ++l) {
        const at::Tensor* w = &tensors_[l * 6];
        norm_rows(h_.data(), w[0].data_ptr<float>(), own, x_.data());
        quant_.rows(x_.data(), hidden_, own.begin, own.end);
#pragma omp barrier
        q4_share(quant_.view(tokens, hidden_), w[1], qkv_.data(), tid, n_threads);
#pragma omp barrier
        if (lora) {
          add_lora(l, 0, x_.data(), hidden_, own, qkv_.data(), qkv_w, 0, q_w);
          add_lora(l, 1, x_.data(), hidden_, own, qkv_.data(), qkv_w, q_w, kv_w);
          add_lora(l, 2, x_.data(), hidden_, own, qkv_.data(), qkv_w, q_w + kv_w, kv_w);
        }
        rotate_and_store(own, l);
#pragma omp barrier
        attend(l, tid, n_threads);
#pragma omp barrier
        quant_.rows(attn_.data(), q_w, own.begin, own.end);
#pragma omp barrier
        q4_share(quant_.view(tokens, q_w), w[2], proj_.data(), tid, n_threads);
#pragma omp barrier
        if (lora) add_lora(l, 3, attn_.data(), q_w, own, proj_.data(), hidden_, 0, hidden_);
        add_rows(h_.data(), proj_.data(), own);
        norm_rows(h_.data(), w[3].data_ptr<float>(), own, x_.data());
        quant_.rows(x_.data(), hidden_, own.begin, own.end);
#pragma omp barrier
        q4_share(quant_.view(tokens, hidden_), w[4], gate_up_.data(), tid, n_threads);
#pragma omp barrier
        if (lora) {
          add_lora(l, 4, x_.data(), hidden_, own, gate_up_.data(), 2 * inter_, 0, inter_);
          add_lora(l, 5, x_.data(), hidden_, own, gate_up_.data(), 2 * inter_, inter_, inter_);
        }
        for (int64_t t = own.begin; t < own.end; ++t)
          silu_mul(gate_up_.data() + t * 2 * inter_, gate_up_.data() + t * 2 * inter_ + inter_, inter_,
                   act_.data() + t * inter_);
        quant_.rows(act_.data(), inter_, own.begin, own.end);
#pragma omp barrier
        q4_share(quant_.view(tokens, inter_), w[5], proj_.data(), tid, n_threads);
#pragma omp barrier
        if (lora) add_lora(l, 6, act_.data(), inter_, own, proj_.data(), hidden_, 0, hidden_);
        add_rows(h_.data(), proj_.data(), own);  // the next layer's norm reads only these tokens
      }
#pragma omp barrier
      const Share out(out_rows, tid, n_threads);
      for (int64_t r = out.begin; r < out.end; ++r)
        std::copy(h_.data() + last_[r] * hidden_, h_.data() + (last_[r] + 1) * hidden_, proj_.data() + r * hidden_);
      norm_rows(proj_.data(), tensors_[layers_ * 6].data_ptr<float>(), out, x_.data());
      quant_.rows(x_.data(), hidden_, out.begin, out.end);
#pragma omp barrier
      const at::Tensor& head = tensors_[layers_ * 6 + 3];
      const Share tiles(head.size(0), tid, n_threads);
      q8_gemm_tiles(quant_.view(out_rows, hidden_), head.data_ptr<uint8_t>(),
                    tensors_[layers_ * 6 + 4].data_ptr<float>(), tiles.begin, tiles.end, logits.data_ptr<float>(),
                    vocab_);
    }
    return logits;
  }

 private:
  struct Adapter {
    std::vector<at::Tensor> a, b;
  };
  struct RowKV {
    c10::Half* data;
    int64_t capacity;
  };

  void norm_rows(const float* h, const float* w, const Share& own, float* out) const {
    for (int64_t t = own.begin; t < own.end; ++t) {
      const float* x = h + t * hidden_;
      const float scale = 1.f / std::sqrt(sum_squares(x, hidden_) / static_cast<float>(hidden_) + eps_);
      for (int64_t i = 0; i < hidden_; ++i) out[t * hidden_ + i] = x[i] * scale * w[i];
    }
  }

  void add_rows(float* h, const float* x, const Share& own) const {
    for (int64_t i = own.begin * hidden_; i < own.end * hidden_; ++i) h[i] += x[i];
  }

  // this thread's share of a product's output tiles
  static void q4_share(const QuantRows& x, const at::Tensor& w, float* y, int tid, int n_threads) {
    const Share tiles(w.size(0), tid, n_threads);
    q4_gemm_tiles(x, w.data_ptr<uint8_t>(), tiles.begin, tiles.end, y, w.size(0) * kTile);
  }

  // where row r's keys (part 0) or values (part 1) of kv head g in layer l start
  c10::Half* kv_at(int64_t r, int64_t l, int part, int64_t g) const {
    return kv_[r].data + (((l * 2 + part) * kv_heads_ + g) * kv_[r].capacity) * head_dim_;
  }

  void rotate_and_store(const Share& own, int64_t l) {
    const int64_t q_w = heads_ * head_dim_, kv_w = kv_heads_ * head_dim_, qkv_w = q_w + 2 * kv_w;
    const int64_t half = head_dim_ / 2;
    float tmp[512];
    for (int64_t t = own.begin; t < own.end; ++t) {
      float* row = qkv_.data() + t * qkv_w;
      const float* cos = rope_.data() + t * head_dim_ * 2;
      const float* sin = cos + head_dim_;
      for (int64_t hd = 0; hd < heads_ + kv_heads_; ++hd) {
        float* x = row + hd * head_dim_;
        for (int64_t i = 0; i < half; ++i) tmp[i] = x[i] * cos[i] + x[i + half] * sin[i];
        for (int64_t i = half; i < head_dim_; ++i) tmp[i] = x[i] * cos[i] + x[i - half] * sin[i];
        std::copy(tmp, tmp + head_dim_, x);
      }
      const int64_t r = row_[t], col = pos_[t];
      for (int64_t g = 0; g < kv_heads_; ++g) {
        store_key(row + q_w + g * head_dim_, head_dim_, col, kv_at(r, l, 0, g));
        to_half(row + q_w + kv_w + g * head_dim_, head_dim_, kv_at(r, l, 1, g) + col * head_dim_);
      }
    }
  }

  // this thread's share of the (token, kv head) tasks, cut where the work (columns read) splits evenly
  void attend(int64_t l, int tid, int n_threads) {
    const int64_t q_w = heads_ * head_dim_, kv_w = kv_heads_ * head_dim_, qkv_w = q_w + 2 * kv_w;
    const int64_t per_kv = heads_ / kv_heads_, tasks = static_cast<int64_t>(work_.size()) - 1;
    const float scale = 1.f / std::sqrt(static_cast<float>(head_dim_));
    const int64_t total = work_.back();
    auto first_at = [&](int64_t share) {  // the first task that starts at or after this share of the work
      return std::lower_bound(work_.begin(), work_.end() - 1, total * share / n_threads) - work_.begin();
    };
    const int64_t t0 = first_at(tid), t1 = tid + 1 == n_threads ? tasks : first_at(tid + 1);
    thread_local std::vector<float> scratch;
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t t = task / kv_heads_, g = task % kv_heads_, r = row_[t];
      attend_group(qkv_.data() + t * qkv_w + g * per_kv * head_dim_, per_kv, kv_at(r, l, 0, g), kv_at(r, l, 1, g),
                   pos_[t] + 1, head_dim_, scale, scratch, attn_.data() + t * q_w + g * per_kv * head_dim_);
    }
  }

  // out[:, start:start+width] += each token's x @ A @ B of its row's adapter's `module` (shapes checked
  // when the adapter was added)
  // out[:, start:start+width] += each token's x @ A @ B of its row's adapter's `module` (shapes checked when
  // the adapter was added); consecutive tokens of one adapter (rows of one adapter, a prompt chunk) together
  void add_lora(int64_t layer, int module, const float* x, int64_t in, const Share& own, float* out, int64_t ld,
                int64_t start, int64_t width) const {
    for (int64_t t = own.begin; t < own.end;) {
      const Adapter* adapter = lora_[t];
      int64_t end = t + 1;
      while (end < own.end && lora_[end] == adapter) ++end;
      if (adapter != nullptr && adapter->a[layer * 7 + module].numel() != 0) {
        const at::Tensor& a = adapter->a[layer * 7 + module];
        const at::Tensor& b = adapter->b[layer * 7 + module];
        lora_add(x + t * in, in, end - t, in, a.data_ptr<float>(), b.data_ptr<float>(), a.size(1), width,
                 out + t * ld + start, ld);
      }
      t = end;
    }
  }

  int64_t layers_, hidden_, heads_, kv_heads_, head_dim_, inter_, vocab_;
  float eps_;
  std::vector<at::Tensor> tensors_;
  std::unordered_map<int64_t, Adapter> adapters_;
  std::mutex mu_;
  // this pass: per token its row, position and adapter (nullptr: the base model); per row its buffer
  std::vector<int64_t> row_, pos_, work_, last_;
  std::vector<const Adapter*> lora_;
  std::vector<RowKV> kv_;
  // scratch, reused across passes
  std::vector<float> h_, x_, qkv_, attn_, proj_, gate_up_, act_, rope_;
  Quantized quant_;
};

void register_decoder(torch::Library& m) {
  m.class_<Decoder>("Decoder")
      .def(torch::init<std::vector<at::Tensor>, std::vector<int64_t>, double>())
      .def("add_adapter", &Decoder::add_adapter)
      .def("remove_adapter", &Decoder::remove_adapter)
      .def("forward", &Decoder::forward);
}

}  // namespace carafe
