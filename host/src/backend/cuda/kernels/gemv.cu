// Kernel source, part 5 of 6 (see kernels.rs): matrix-vector products for
// decode (gemv family) and the tensor-core products of 5-16 rows.
// ---- matrix-vector products (decode) ----
#define GEMV_MAX_M 4
#define GEMV_UNROLL 8
// y[m, n] = act(x[m, :] . w[n, :] (+ bias[n])) for M <= GEMV_MAX_M rows: a warp
// per output column reads its weight row once, 16 bytes per lane per load,
// up to GEMV_UNROLL loads in flight. Rows of x and w are 16-byte aligned and K is
// a multiple of 16 bytes of T. `act` is a unary op code, or -1 for none.
// Issues one pass of GEMV_UNROLL 16-byte loads of weight row `wr` from
// element `k` (the row's tail predicated).
template <typename T>
__device__ __forceinline__ void gemv_load(int K, const T* wr, int k, W16* raw) {
  const int step = 32 * Wide<T>::n;
#pragma unroll
  for (int u = 0; u < GEMV_UNROLL; ++u) {
    if (k + u * step < K) raw[u] = ld_stream(wr + k + u * step);
    else raw[u] = W16{0u, 0u, 0u, 0u};
  }
}
// One warp's dot products of weight row `wr` with the M rows of x (global
// or shared memory); every lane gets the sums. `raw` holds the row's first
// pass (gemv_load from element lane x V).
template <typename T, bool LEAN>
__device__ __forceinline__ void gemv_dot(int M, int K, const T* x, const T* wr, W16* raw, float* acc) {
  const int V = Wide<T>::n;
  const int step = 32 * V;
  int lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 0; m < GEMV_MAX_M; ++m) acc[m] = 0.0f;
  // Each pass has up to GEMV_UNROLL 16-byte weight loads per lane in
  // flight, so a row of K <= 32 x V x GEMV_UNROLL elements costs one memory
  // round trip.
  for (int k = lane * V; k < K; k += GEMV_UNROLL * step) {
    if (k != lane * V) gemv_load<T>(K, wr, k, raw);
    if (LEAN) {
      // One load's weights widened at a time: fewer live registers (more
      // blocks per SM), for the kernels with a norm prologue.
#pragma unroll
      for (int u = 0; u < GEMV_UNROLL; ++u) {
        if (k + u * step < K) {
          float wv[8];
          Wide<T>::cvt(raw[u], wv);
#pragma unroll
          for (int m = 0; m < GEMV_MAX_M; ++m) {
            if (m < M) {
              float xv[8];
              Wide<T>::ld(x + (i64)m * K + k + u * step, xv);
#pragma unroll
              for (int e = 0; e < V; ++e) acc[m] += wv[e] * xv[e];
            }
          }
        }
      }
    } else {
      // Every load's weights widened first (faster for the plain kernels).
      float wv[GEMV_UNROLL][8];
#pragma unroll
      for (int u = 0; u < GEMV_UNROLL; ++u) Wide<T>::cvt(raw[u], wv[u]);
#pragma unroll
      for (int m = 0; m < GEMV_MAX_M; ++m) {
        if (m < M) {
#pragma unroll
          for (int u = 0; u < GEMV_UNROLL; ++u) {
            if (k + u * step < K) {
              float xv[8];
              Wide<T>::ld(x + (i64)m * K + k + u * step, xv);
#pragma unroll
              for (int e = 0; e < V; ++e) acc[m] += wv[u][e] * xv[e];
            }
          }
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < GEMV_MAX_M; ++m)
    if (m < M) acc[m] = warp_sum(acc[m]);
}
// Widest row the norm prologue takes: blockDim x 16 bytes (one load per
// thread).
// The input rows of a gemv. Without a norm they are `x`. With one (NORM)
// they are norm(a (+ pre) (+ b)) * scale (+ nbias), layer norm or rms norm
// (`rms`), computed by every block into dynamic shared memory (M x K of T,
// rounded as the unfused norm stores it), 16 bytes per thread (K <=
// blockDim x 16 bytes); block 0 also writes the sum to `sum` when given,
// as the unfused residual add + norm would. The block's first weight loads
// are in flight meanwhile.
template <typename T, bool NORM>
__device__ __forceinline__ const T* gemv_input(int M, int K, const T* x, int rms, const T* a, const T* b,
                                               const T* pre, T* sum, const T* scale, const T* nbias,
                                               float eps) {
  if (!NORM) return x;
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  T* xs = (T*)gemv_smem;
  const int V = Wide<T>::n;
  const int c = threadIdx.x * V;
  for (int m = 0; m < M; ++m) {
    i64 o = (i64)m * K;
    float v[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float tot = 0.0f;
    if (c < K) {
      Wide<T>::ld(a + o + c, v);
      float t[8];
      if (pre) {
        Wide<T>::ld(pre + c, t);
        for (int e = 0; e < V; ++e) v[e] = N<T>::ld(N<T>::st(v[e] + t[e]));
      }
      if (b) {
        Wide<T>::ld(b + o + c, t);
        for (int e = 0; e < V; ++e) v[e] = N<T>::ld(N<T>::st(v[e] + t[e]));
      }
      for (int e = 0; e < V; ++e) tot += v[e];
    }
    float mean = rms ? 0.0f : block_reduce(tot, 0) / K;
    float sq = 0.0f;
    if (c < K)
      for (int e = 0; e < V; ++e) sq += (v[e] - mean) * (v[e] - mean);
    float den = sqrtf(block_reduce(sq, 0) / K + eps);
    if (c < K) {
      if (sum && blockIdx.x == 0) *(W16*)(sum + o + c) = pack16<T>(v);
      float sc[8], bi[8], y[8];
      Wide<T>::ld(scale + c, sc);
      if (nbias) Wide<T>::ld(nbias + c, bi);
      for (int e = 0; e < V; ++e) y[e] = (v[e] - mean) / den * sc[e] + (nbias ? bi[e] : 0.0f);
      *(W16*)(xs + o + c) = pack16<T>(y);
    }
  }
  __syncthreads();
  return xs;
}
#define GEMV_NORM_PARAMS(T) int rms, const T* na, const T* nb, const T* npre, T* nsum, const T* nscale, const T* nbias, float eps
#define GEMV_NORM_ARGS rms, na, nb, npre, nsum, nscale, nbias, eps
template <typename T, bool NORM>
__device__ void gemv_t(int M, int cols, int K, const T* x, const T* w, const T* bias, T* y, int act,
                       GEMV_NORM_PARAMS(T)) {
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int n = blockIdx.x * (blockDim.x >> 5) + warp;
  W16 raw[GEMV_UNROLL];
  if (n < cols) gemv_load<T>(K, w + (i64)n * K, lane * Wide<T>::n, raw);
  const T* xin = gemv_input<T, NORM>(M, K, x, GEMV_NORM_ARGS);
  if (n >= cols) return;
  float acc[GEMV_MAX_M];
  gemv_dot<T, NORM>(M, K, xin, w + (i64)n * K, raw, acc);
#pragma unroll
  for (int m = 0; m < GEMV_MAX_M; ++m) {
    if (m < M && lane == 0) {
      T out = N<T>::st(acc[m] + (bias ? N<T>::ld(bias[n]) : 0.0f));
      // A fused activation reads the product as stored, as unfused.
      if (act >= 0) out = N<T>::st(un_f(act, N<T>::ld(out)));
      y[(i64)m * cols + n] = out;
    }
  }
}
// Gated projection: g = x . w[j], u = x . w[half + j] (+ bias), then
// y[m, j] = op(act(g), u) with g, act(g) and u rounded to T as the unfused
// gemv and unary would store them (SwiGLU over a fused gate/up weight).
// Blocks of 8 warps: warps 0-3 take 4 gate columns, warps 4-7 the matching
// up columns. The input rows as in gemv_t.
template <typename T, bool NORM>
__device__ void gemv_glu_t(int M, int half, int K, const T* x, const T* w, const T* bias, T* y, int act, int op,
                           GEMV_NORM_PARAMS(T)) {
  __shared__ float res[8][GEMV_MAX_M];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int j = blockIdx.x * 4 + (warp & 3);
  int row = j + (warp >= 4 ? half : 0);
  W16 raw[GEMV_UNROLL];
  if (j < half) gemv_load<T>(K, w + (i64)row * K, lane * Wide<T>::n, raw);
  const T* xin = gemv_input<T, NORM>(M, K, x, GEMV_NORM_ARGS);
  if (j < half) {
    float acc[GEMV_MAX_M];
    gemv_dot<T, NORM>(M, K, xin, w + (i64)row * K, raw, acc);
    if (lane == 0) {
#pragma unroll
      for (int m = 0; m < GEMV_MAX_M; ++m)
        if (m < M) res[warp][m] = N<T>::ld(N<T>::st(acc[m] + (bias ? N<T>::ld(bias[row]) : 0.0f)));
    }
  }
  __syncthreads();
  int c = threadIdx.x & 3, m = threadIdx.x >> 2;
  int jj = blockIdx.x * 4 + c;
  if (m < M && jj < half) {
    float g = N<T>::ld(N<T>::st(un_f(act, res[c][m])));
    y[(i64)m * half + jj] = N<T>::st(bin(op, g, res[c + 4][m]));
  }
}

// ---- small-batch products on tensor cores (decode of 5-16 rows) ----
// y[m, n] = act(x[m, :] . w[n, :] (+ bias[n])) for M <= 16 rows of f16 or
// bf16 with mma.sync m16n8k16 (f32 accumulation). A block of 8 warps takes
// 8 output columns and its warps split K. Per 32-element chunk of K, lane l
// loads 16 bytes of weight row n0 + l/4 and of x rows l/4 and l/4 + 8, at
// k0 + 8 (l % 4); both fragments of an mma then hold the same k positions
// (a permutation of the chunk, which the dot product does not see).
// K is a multiple of 32 and rows are 16-byte aligned (the planner checks).
#ifndef MMA_UNROLL
#define MMA_UNROLL 4
#endif
template <typename T>
__device__ void gemv_mma_t(int M, int cols, int K, const T* x, const T* w, const T* bias, T* y, int act) {
  __shared__ float red[8][32][4];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * 8;
  const int chunks = K / 32, per = (chunks + nw - 1) / nw;
  const int c0 = warp * per, c1 = min(chunks, c0 + per);
  const bool wlive = n0 + g < cols, la = g < M, lb = g + 8 < M;
  const T* wr = w + (i64)(wlive ? n0 + g : 0) * K + 8 * t;
  const T* xa = x + (i64)(la ? g : 0) * K + 8 * t;
  const T* xb = x + (i64)(lb ? g + 8 : 0) * K + 8 * t;
  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int cc = c0; cc < c1; cc += MMA_UNROLL) {
    W16 wv[MMA_UNROLL], va[MMA_UNROLL], vb[MMA_UNROLL];
#pragma unroll
    for (int u = 0; u < MMA_UNROLL; ++u) {
      const W16 z = {0u, 0u, 0u, 0u};
      const bool in = cc + u < c1;
      const int o = (cc + u) * 32;
      wv[u] = in && wlive ? ld_stream(wr + o) : z;
      va[u] = in && la ? *(const W16*)(xa + o) : z;
      vb[u] = in && lb ? *(const W16*)(xb + o) : z;
    }
#pragma unroll
    for (int u = 0; u < MMA_UNROLL; ++u) {
      mma16816<T>(c, va[u].a, vb[u].a, va[u].b, vb[u].b, wv[u].a, wv[u].b);
      mma16816<T>(c, va[u].c, vb[u].c, va[u].d, vb[u].d, wv[u].c, wv[u].d);
    }
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) red[warp][lane][r] = c[r];
  __syncthreads();
  if (threadIdx.x < 128) {
    // Output (row, col) of the tile sits in lane (row % 8) x 4 + col / 2,
    // register (row / 8) x 2 + col % 2 of every warp.
    const int row = threadIdx.x >> 3, col = threadIdx.x & 7;
    const int l = (row & 7) * 4 + (col >> 1), r = (row >> 3) * 2 + (col & 1);
    float sum = 0.0f;
    for (int v = 0; v < nw; ++v) sum += red[v][l][r];
    const int n = n0 + col;
    if (row < M && n < cols) {
      T out = N<T>::st(sum + (bias ? N<T>::ld(bias[n]) : 0.0f));
      // A fused activation reads the product as stored, as unfused.
      if (act >= 0) out = N<T>::st(un_f(act, N<T>::ld(out)));
      y[(i64)row * cols + n] = out;
    }
  }
}
#define MMA_KERNELS(n, T) \
  extern "C" __global__ void gemv_mma_##n(int m, int nn, int k, const T* x, const T* w, const T* b, T* y, int a, GEMV_NORM_PARAMS(T)) { pdl_enter(); gemv_mma_t<T>(m, nn, k, x, w, b, y, a); }
MMA_KERNELS(f16, h16)
MMA_KERNELS(bf16, b16)

// Holds the stream for `ns` nanoseconds (the profiler enqueues behind it).
extern "C" __global__ void sleep_ns(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    __nanosleep(1000);
#endif
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}
