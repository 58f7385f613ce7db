// The paper's LIF (eq. 2-3) over all T steps in one pass, forward and backward, for CPU tensors.
// x, spikes, membranes: [T, M] dense buffers, T outermost (contiguous or channels-last steps). Bitwise the same
// forward as the PyTorch reference: the same float operations in the same order (built with -ffp-contract=off
// so no FMA changes the rounding).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

namespace {
constexpr int64_t BLOCK = 256;  // elements per inner loop: u of a block stays in L1 across T

template <typename scalar_t, bool SAVE_MEMBRANES, bool SAVE_MASKS>
void forward_range(const scalar_t* __restrict__ x, scalar_t* __restrict__ spikes, scalar_t* __restrict__ membranes,
                   bool* __restrict__ windows, bool* __restrict__ fired,
                    int64_t T, int64_t M, scalar_t tau, scalar_t v_th, scalar_t half, int64_t begin, int64_t end) {
    scalar_t u[BLOCK], keep[BLOCK];  // keep = 1 - o[t-1]
    for (int64_t b = begin; b < end; b += BLOCK) {
      const int64_t n = std::min(BLOCK, end - b);
      for (int64_t j = 0; j < n; ++j) u[j] = scalar_t(0), keep[j] = scalar_t(0);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t off = t * M + b;
        for (int64_t j = 0; j < n; ++j) {
          // (tau * u) * (1 - o) + x: the reference's operations, in its order; at t = 0, keep = 0
          const scalar_t v = tau * u[j] * keep[j] + x[off + j];
          const scalar_t o = v > v_th ? scalar_t(1) : scalar_t(0);
          u[j] = v;
          keep[j] = scalar_t(1) - o;
          spikes[off + j] = o;
          if (SAVE_MEMBRANES) membranes[off + j] = v;
          if (SAVE_MASKS) {
            windows[off + j] = std::abs(v - v_th) < half;
            fired[off + j] = v > v_th;
          }
        }
      }
    }
}

// Full gradient through the reset: needs the membrane sequence only. next = tau * dL/du[t+1] (0 after T).
template <typename scalar_t>
void backward_full_range(const scalar_t* __restrict__ g, const scalar_t* __restrict__ membranes,
                         scalar_t* __restrict__ grad_x, int64_t T, int64_t M,
                          scalar_t tau, scalar_t v_th, scalar_t half, scalar_t inv_width, int64_t begin, int64_t end) {
    scalar_t next[BLOCK];
    for (int64_t b = begin; b < end; b += BLOCK) {
      const int64_t n = std::min(BLOCK, end - b);
      for (int64_t j = 0; j < n; ++j) next[j] = scalar_t(0);
      for (int64_t t = T - 1; t >= 0; --t) {
        const scalar_t* gt = g + t * M + b;
        const scalar_t* ut = membranes + t * M + b;
        scalar_t* dt = grad_x + t * M + b;
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t u = ut[j];
          // selects the compiler turns into vector blends (no branches: spike patterns are unpredictable)
          const scalar_t surrogate = std::abs(u - v_th) < half ? inv_width : scalar_t(0);
          const scalar_t keep = u > v_th ? scalar_t(0) : scalar_t(1);
          // dL/do[t] = g[t] - tau * u[t] * dL/du[t+1] (the reset term); dL/du[t] adds the leak path
          const scalar_t d = (gt[j] - u * next[j]) * surrogate + next[j] * keep;
          dt[j] = d;
          next[j] = d * tau;
        }
      }
    }
}

// Detached reset: needs two masks only.
template <typename scalar_t>
void backward_detached_range(const scalar_t* __restrict__ g, const uint8_t* __restrict__ windows,
                             const uint8_t* __restrict__ fired, scalar_t* __restrict__ grad_x,
                              int64_t T, int64_t M, scalar_t tau, scalar_t inv_width, int64_t begin, int64_t end) {
    scalar_t next[BLOCK];
    for (int64_t b = begin; b < end; b += BLOCK) {
      const int64_t n = std::min(BLOCK, end - b);
      for (int64_t j = 0; j < n; ++j) next[j] = scalar_t(0);
      for (int64_t t = T - 1; t >= 0; --t) {
        const scalar_t* gt = g + t * M + b;
        const uint8_t* wt = windows + t * M + b;  // bool masks read as 0/1 bytes: arithmetic vectorises
        const uint8_t* ft = fired + t * M + b;
        scalar_t* dt = grad_x + t * M + b;
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t surrogate = static_cast<scalar_t>(wt[j]) * inv_width;
          const scalar_t keep = scalar_t(1) - static_cast<scalar_t>(ft[j]);
          const scalar_t d = gt[j] * surrogate + next[j] * keep;
          dt[j] = d;
          next[j] = d * tau;
        }
      }
    }
}
// Backward from the input currents instead of saved membranes (the memory-lean path keeps neither): per block
// of neurons the forward recurrence is rerun into a [T, BLOCK] scratch that stays in cache, then the backward
// above reads it. x2 (optional, HAS_X2) is a second current added first, x + x2, as the caller's forward did.
// Same operations in the same order as forward_range then backward_full_range / backward_detached_range, so
// the same bits, without writing spikes or membranes to memory and reading them back.
template <typename scalar_t, bool DETACHED, bool HAS_X2>
void recompute_backward_range(const scalar_t* __restrict__ x, const scalar_t* __restrict__ x2,
                              const scalar_t* __restrict__ g, scalar_t* __restrict__ grad_x, int64_t T, int64_t M,
                              scalar_t tau, scalar_t v_th, scalar_t half, scalar_t inv_width, int64_t begin,
                              int64_t end) {
    std::vector<scalar_t> scratch(static_cast<size_t>(T) * BLOCK);
    scalar_t* __restrict__ mem = scratch.data();
    scalar_t u[BLOCK], keep[BLOCK], next[BLOCK];
    for (int64_t b = begin; b < end; b += BLOCK) {
      const int64_t n = std::min(BLOCK, end - b);
      for (int64_t j = 0; j < n; ++j) u[j] = scalar_t(0), keep[j] = scalar_t(0), next[j] = scalar_t(0);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t off = t * M + b;
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t in = HAS_X2 ? x[off + j] + x2[off + j] : x[off + j];
          const scalar_t v = tau * u[j] * keep[j] + in;
          u[j] = v;
          keep[j] = scalar_t(1) - (v > v_th ? scalar_t(1) : scalar_t(0));
          mem[t * BLOCK + j] = v;
        }
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        const scalar_t* gt = g + t * M + b;
        const scalar_t* ut = mem + t * BLOCK;
        scalar_t* dt = grad_x + t * M + b;
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t v = ut[j];
          const scalar_t k = v > v_th ? scalar_t(0) : scalar_t(1);
          // window * inv_width is inv_width or 0 exactly, as the detached backward's mask product
          const scalar_t surrogate = std::abs(v - v_th) < half ? inv_width : scalar_t(0);
          // detached: no reset term, g[t] * surrogate as in backward_detached_range
          const scalar_t d = (DETACHED ? gt[j] : gt[j] - v * next[j]) * surrogate + next[j] * k;
          dt[j] = d;
          next[j] = d * tau;
        }
      }
    }
}

// Each worker runs a range of the M independent neurons; the kernels are plain functions (not lambdas run
// by parallel_for), which lets the compiler vectorise their inner loops.
template <typename F, typename... Args>
void parallel_over_neurons(int64_t M, F kernel, Args... args) {
  at::parallel_for(0, M, 16384, [=](int64_t begin, int64_t end) { kernel(args..., begin, end); });
}
}  // namespace

std::vector<torch::Tensor> lif_forward(torch::Tensor x, double tau, double v_th, double width, bool save_membranes,
                                       bool save_masks) {
  const int64_t T = x.size(0), M = T ? x.numel() / T : 0;
  // any dense layout with time outermost (e.g. channels-last steps): outputs take the same strides, so the
  // kernel can walk all of them as one [T, M] buffer
  TORCH_CHECK(x.device().is_cpu() && x.dim() >= 1 && x.is_non_overlapping_and_dense() && (T < 2 || x.stride(0) == M),
              "lif_forward: a dense CPU tensor [T, ...] with T outermost");
  auto spikes = torch::empty_like(x);
  auto membranes = save_membranes ? torch::empty_like(x) : torch::Tensor();
  auto windows = save_masks ? torch::empty_like(x, x.options().dtype(torch::kBool)) : torch::Tensor();
  auto fired = save_masks ? torch::empty_like(x, x.options().dtype(torch::kBool)) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_forward", [&] {
    auto* mem = save_membranes ? membranes.data_ptr<scalar_t>() : nullptr;
    auto* win = save_masks ? windows.data_ptr<bool>() : nullptr;
    auto* fir = save_masks ? fired.data_ptr<bool>() : nullptr;
    auto kernel = save_membranes ? forward_range<scalar_t, true, false>
                  : save_masks   ? forward_range<scalar_t, false, true>
                                 : forward_range<scalar_t, false, false>;
    parallel_over_neurons(M, kernel, x.data_ptr<scalar_t>(), spikes.data_ptr<scalar_t>(), mem, win, fir, T, M,
                          scalar_t(tau), scalar_t(v_th), scalar_t(width / 2));
  });
  return {spikes, membranes, windows, fired};
}

torch::Tensor lif_backward_full(torch::Tensor g, torch::Tensor membranes, double tau, double v_th, double width) {
  TORCH_CHECK(g.strides() == membranes.strides(), "lif_backward_full: gradient and membranes differ in layout");
  auto grad_x = torch::empty_like(membranes);
  const int64_t T = g.size(0), M = T ? g.numel() / T : 0;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lif_backward_full", [&] {
    parallel_over_neurons(M, backward_full_range<scalar_t>, g.data_ptr<scalar_t>(),
                          membranes.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(), T, M, scalar_t(tau),
                          scalar_t(v_th), scalar_t(width / 2), scalar_t(1.0 / width));
  });
  return grad_x;
}

torch::Tensor lif_backward_detached(torch::Tensor g, torch::Tensor windows, torch::Tensor fired, double tau,
                                    double width) {
  TORCH_CHECK(g.strides() == windows.strides(), "lif_backward_detached: gradient and masks differ in layout");
  auto grad_x = torch::empty_like(g);
  const int64_t T = g.size(0), M = T ? g.numel() / T : 0;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lif_backward_detached", [&] {
    parallel_over_neurons(M, backward_detached_range<scalar_t>, g.data_ptr<scalar_t>(),
                          reinterpret_cast<const uint8_t*>(windows.data_ptr<bool>()),
                          reinterpret_cast<const uint8_t*>(fired.data_ptr<bool>()), grad_x.data_ptr<scalar_t>(), T, M,
                          scalar_t(tau), scalar_t(1.0 / width));
  });
  return grad_x;
}

torch::Tensor lif_backward_recompute(torch::Tensor x, c10::optional<torch::Tensor> x2, torch::Tensor g, double tau,
                                     double v_th, double width, bool detach_reset) {
  const int64_t T = x.size(0), M = T ? x.numel() / T : 0;
  TORCH_CHECK(x.device().is_cpu() && x.dim() >= 1 && x.is_non_overlapping_and_dense() && (T < 2 || x.stride(0) == M),
              "lif_backward_recompute: a dense CPU tensor [T, ...] with T outermost");
  TORCH_CHECK(g.strides() == x.strides() && g.scalar_type() == x.scalar_type(),
              "lif_backward_recompute: gradient and input differ in layout or dtype");
  const bool has_x2 = x2.has_value() && x2->defined();
  TORCH_CHECK(!has_x2 || (x2->strides() == x.strides() && x2->scalar_type() == x.scalar_type()),
              "lif_backward_recompute: the two currents differ in layout or dtype");
  auto grad_x = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_backward_recompute", [&] {
    const scalar_t* second = has_x2 ? x2->data_ptr<scalar_t>() : nullptr;
    auto kernel = detach_reset ? (has_x2 ? recompute_backward_range<scalar_t, true, true>
                                         : recompute_backward_range<scalar_t, true, false>)
                               : (has_x2 ? recompute_backward_range<scalar_t, false, true>
                                         : recompute_backward_range<scalar_t, false, false>);
    parallel_over_neurons(M, kernel, x.data_ptr<scalar_t>(), second, g.data_ptr<scalar_t>(),
                          grad_x.data_ptr<scalar_t>(), T, M, scalar_t(tau), scalar_t(v_th), scalar_t(width / 2),
                          scalar_t(1.0 / width));
  });
  return grad_x;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lif_forward", &lif_forward, "LIF forward over T (CPU)");
  m.def("lif_backward_full", &lif_backward_full, "LIF backward, gradient through the reset (CPU)");
  m.def("lif_backward_detached", &lif_backward_detached, "LIF backward, detached reset (CPU)");
  m.def("lif_backward_recompute", &lif_backward_recompute, "LIF backward from the input currents (CPU)");
}
