// Kernel source, part 2 of 6 (see kernels.rs): normalisation, reductions,
// gather, argmax, top-k and bias add.
// ---- normalisation ----
// Elements of a row one thread keeps in registers on the fast path: rows of
// up to blockDim x NORM_PER elements are read once, with all loads in flight.
#define NORM_PER 16
// One row: y = norm(a (+ b)) * scale (+ bias); the sum a + b is rounded to T
// (as an unfused add stores it) and written to `sr` when given. Layer norm
// (rms = 0) subtracts the mean; rms norm does not. Registers hold the row,
// so loads are issued before any store.
template <typename T>
__device__ __forceinline__ void norm_row_cached(int rms, int width, const T* ar, const T* br, T* sr,
                                                const T* scale, const T* bias, float eps, T* yr,
                                                const T* pre) {
  float v[NORM_PER], sc[NORM_PER], bi[NORM_PER];
  float tot = 0.0f, sq = 0.0f;
  // Every load (row, scale, bias) is issued before the first reduction.
#pragma unroll
  for (int u = 0; u < NORM_PER; ++u) {
    int c = threadIdx.x + u * blockDim.x;
    float f = 0.0f;
    if (c < width) {
      f = N<T>::ld(ar[c]);
      // `pre` (a linear's bias) is added to `a` first, rounded as stored.
      if (pre) f = N<T>::ld(N<T>::st(f + N<T>::ld(pre[c])));
      if (br) f = N<T>::ld(N<T>::st(f + N<T>::ld(br[c])));
    }
    v[u] = f;
    sc[u] = c < width ? N<T>::ld(scale[c]) : 0.0f;
    bi[u] = (bias && c < width) ? N<T>::ld(bias[c]) : 0.0f;
  }
#pragma unroll
  for (int u = 0; u < NORM_PER; ++u) { tot += v[u]; sq += v[u] * v[u]; }
  float mean = 0.0f, den;
  if (rms) {
    den = sqrtf(block_reduce(sq, 0) / width + eps);
  } else {
    mean = block_reduce(tot, 0) / width;
    float var = 0.0f;
#pragma unroll
    for (int u = 0; u < NORM_PER; ++u) {
      int c = threadIdx.x + u * blockDim.x;
      float d = v[u] - mean;
      if (c < width) var += d * d;
    }
    den = sqrtf(block_reduce(var, 0) / width + eps);
  }
#pragma unroll
  for (int u = 0; u < NORM_PER; ++u) {
    int c = threadIdx.x + u * blockDim.x;
    if (c < width) {
      if (sr) sr[c] = N<T>::st(v[u]);
      float o = (v[u] - mean) / den * sc[u];
      if (bias) o += bi[u];
      yr[c] = N<T>::st(o);
    }
  }
}
// Sum over the block with one barrier: each warp's sum goes to `part`
// (ATTN-free scratch of 32 floats; a second reduction uses another), then
// every thread adds them up.
__device__ __forceinline__ float block_sum1(float v, float* part) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float t = 0.0f;
  for (int w = 0; w < nw; ++w) t += part[w];
  return t;
}
// Rows of at most NORM_VW 16-byte words per thread, 16-byte aligned: the
// same result as norm_row_cached with 16-byte loads and stores and one
// barrier per reduction (a decode step's few rows are latency-bound).
#define NORM_VW 2
template <typename T>
__device__ __forceinline__ bool norm_vec_ok(int width, const void* const* ptrs, int n) {
  const int V = Wide<T>::n;
  if (width % V != 0 || width > (int)blockDim.x * V * NORM_VW) return false;
  for (int i = 0; i < n; ++i)
    if (((unsigned long long)ptrs[i] & 15) != 0) return false;
  return true;
}
template <typename T>
__device__ __forceinline__ void norm_row_vec(int rms, int width, const T* ar, const T* br, T* sr,
                                             const T* scale, const T* bias, float eps, T* yr,
                                             const T* pre) {
  __shared__ float part[2][32];
  const int V = Wide<T>::n;
  float v[NORM_VW][8];
  float tot = 0.0f, sq = 0.0f;
#pragma unroll
  for (int u = 0; u < NORM_VW; ++u) {
    int c = (threadIdx.x + u * blockDim.x) * V;
#pragma unroll
    for (int e = 0; e < 8; ++e) v[u][e] = 0.0f;
    if (c < width) {
      Wide<T>::ld(ar + c, v[u]);
      float t[8];
      if (pre) {
        Wide<T>::ld(pre + c, t);
#pragma unroll
        for (int e = 0; e < V; ++e) v[u][e] = N<T>::ld(N<T>::st(v[u][e] + t[e]));
      }
      if (br) {
        Wide<T>::ld(br + c, t);
#pragma unroll
        for (int e = 0; e < V; ++e) v[u][e] = N<T>::ld(N<T>::st(v[u][e] + t[e]));
      }
#pragma unroll
      for (int e = 0; e < V; ++e) { tot += v[u][e]; sq += v[u][e] * v[u][e]; }
    }
  }
  float mean = 0.0f, den;
  if (rms) {
    den = sqrtf(block_sum1(sq, part[0]) / width + eps);
  } else {
    mean = block_sum1(tot, part[0]) / width;
    float var = 0.0f;
#pragma unroll
    for (int u = 0; u < NORM_VW; ++u) {
      int c = (threadIdx.x + u * blockDim.x) * V;
      if (c < width) {
#pragma unroll
        for (int e = 0; e < V; ++e) var += (v[u][e] - mean) * (v[u][e] - mean);
      }
    }
    den = sqrtf(block_sum1(var, part[1]) / width + eps);
  }
#pragma unroll
  for (int u = 0; u < NORM_VW; ++u) {
    int c = (threadIdx.x + u * blockDim.x) * V;
    if (c < width) {
      if (sr) *(W16*)(sr + c) = pack16<T>(v[u]);
      float sc[8], bi[8], o[8];
      Wide<T>::ld(scale + c, sc);
      if (bias) Wide<T>::ld(bias + c, bi);
#pragma unroll
      for (int e = 0; e < V; ++e) o[e] = (v[u][e] - mean) / den * sc[e] + (bias ? bi[e] : 0.0f);
      *(W16*)(yr + c) = pack16<T>(o);
    }
  }
  // `part` is reused by the block's next row.
  __syncthreads();
}
// One row of at most blockDim x NORM_PER elements: 16-byte words when
// every row pointer allows (the same for all threads of the block).
template <typename T>
__device__ __forceinline__ void norm_row(int rms, int width, const T* ar, const T* br, T* sr,
                                         const T* scale, const T* bias, float eps, T* yr, const T* pre) {
  const void* ptrs[7] = {ar, br ? br : ar, sr ? sr : yr, scale, bias ? bias : scale, yr, pre ? pre : scale};
  if (norm_vec_ok<T>(width, ptrs, 7))
    norm_row_vec<T>(rms, width, ar, br, sr, scale, bias, eps, yr, pre);
  else
    norm_row_cached<T>(rms, width, ar, br, sr, scale, bias, eps, yr, pre);
}
template <typename T>
__device__ void layer_norm_t(i64 rows, int width, const T* x, const T* scale, const T* bias, float eps, T* y) {
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * width;
    T* yr = y + r * width;
    if (width <= (int)blockDim.x * NORM_PER) {
      norm_row<T>(0, width, xr, (const T*)0, (T*)0, scale, bias, eps, yr, (const T*)0);
      continue;
    }
    float s = 0.0f;
    for (int c = threadIdx.x; c < width; c += blockDim.x) s += N<T>::ld(xr[c]);
    float mean = block_reduce(s, 0) / width;
    float v = 0.0f;
    for (int c = threadIdx.x; c < width; c += blockDim.x) {
      float d = N<T>::ld(xr[c]) - mean;
      v += d * d;
    }
    float rstd = 1.0f / sqrtf(block_reduce(v, 0) / width + eps);
    for (int c = threadIdx.x; c < width; c += blockDim.x) {
      float o = (N<T>::ld(xr[c]) - mean) * rstd * N<T>::ld(scale[c]);
      if (bias) o += N<T>::ld(bias[c]);
      yr[c] = N<T>::st(o);
    }
  }
}
template <typename T>
__device__ void rms_norm_t(i64 rows, int width, const T* x, const T* scale, float eps, T* y) {
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * width;
    T* yr = y + r * width;
    if (width <= (int)blockDim.x * NORM_PER) {
      norm_row<T>(1, width, xr, (const T*)0, (T*)0, scale, (const T*)0, eps, yr, (const T*)0);
      continue;
    }
    float s = 0.0f;
    for (int c = threadIdx.x; c < width; c += blockDim.x) {
      float v = N<T>::ld(xr[c]);
      s += v * v;
    }
    float den = sqrtf(block_reduce(s, 0) / width + eps);
    for (int c = threadIdx.x; c < width; c += blockDim.x)
      yr[c] = N<T>::st(N<T>::ld(xr[c]) / den * N<T>::ld(scale[c]));
  }
}
// A residual add fused with the norm after it: sum = a + b (stored in T, as
// the unfused add would), then layer-norm (rms = 0) or rms-norm of the sum.
// `pre` (or null): a per-column bias added to `a` first (the linear that
// produced `a`), rounded to T as the unfused bias add stores it.
template <typename T>
__device__ void add_norm_t(int rms, i64 rows, int width, const T* a, const T* b, T* sum,
                           const T* scale, const T* bias, float eps, T* y, const T* pre) {
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* ar = a + r * width;
    const T* br = b + r * width;
    T* sr = sum + r * width;
    T* yr = y + r * width;
    if (width <= (int)blockDim.x * NORM_PER) {
      norm_row<T>(rms, width, ar, br, sr, scale, bias, eps, yr, pre);
      continue;
    }
    float tot = 0.0f, sq = 0.0f;
    for (int c = threadIdx.x; c < width; c += blockDim.x) {
      float av = N<T>::ld(ar[c]);
      if (pre) av = N<T>::ld(N<T>::st(av + N<T>::ld(pre[c])));
      T v = N<T>::st(av + N<T>::ld(br[c]));
      sr[c] = v;
      float f = N<T>::ld(v);
      tot += f;
      sq += f * f;
    }
    float mean = rms ? 0.0f : block_reduce(tot, 0) / width;
    float den;
    if (rms) {
      den = sqrtf(block_reduce(sq, 0) / width + eps);
    } else {
      float var = 0.0f;
      for (int c = threadIdx.x; c < width; c += blockDim.x) {
        float d = N<T>::ld(sr[c]) - mean;
        var += d * d;
      }
      den = sqrtf(block_reduce(var, 0) / width + eps);
    }
    for (int c = threadIdx.x; c < width; c += blockDim.x) {
      float o = (N<T>::ld(sr[c]) - mean) / den * N<T>::ld(scale[c]);
      if (bias) o += N<T>::ld(bias[c]);
      yr[c] = N<T>::st(o);
    }
  }
}
// Rows are (outer, inner) pairs; a row's elements are `len` apart by `inner`.
template <typename T>
__device__ void softmax_t(i64 outer, int len, i64 inner, const T* x, T* y) {
  for (i64 r = blockIdx.x; r < outer * inner; r += gridDim.x) {
    i64 base = (r / inner) * len * inner + (r % inner);
    float m = -3.402823466e38f;
    for (int c = threadIdx.x; c < len; c += blockDim.x) m = fmaxf(m, N<T>::ld(x[base + c * inner]));
    m = block_reduce(m, 1);
    float s = 0.0f;
    for (int c = threadIdx.x; c < len; c += blockDim.x) s += expf(N<T>::ld(x[base + c * inner]) - m);
    s = block_reduce(s, 0);
    for (int c = threadIdx.x; c < len; c += blockDim.x)
      y[base + c * inner] = N<T>::st(expf(N<T>::ld(x[base + c * inner]) - m) / s);
  }
}
template <typename T>
__device__ void l2_norm_t(i64 outer, int len, i64 inner, float eps, const T* x, T* y) {
  for (i64 r = blockIdx.x; r < outer * inner; r += gridDim.x) {
    i64 base = (r / inner) * len * inner + (r % inner);
    float s = 0.0f;
    for (int c = threadIdx.x; c < len; c += blockDim.x) {
      float v = N<T>::ld(x[base + c * inner]);
      s += v * v;
    }
    float den = fmaxf(sqrtf(block_reduce(s, 0)), eps);
    for (int c = threadIdx.x; c < len; c += blockDim.x)
      y[base + c * inner] = N<T>::st(N<T>::ld(x[base + c * inner]) / den);
  }
}

// ---- reductions over the last (contiguous) axis: 0 sum, 1 mean, 2 max, 3 min ----
template <typename T>
__device__ void reduce_float_t(int op, i64 rows, i64 len, const T* x, T* y) {
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * len;
    float acc = op == RED_MAX ? -3.402823466e38f : (op == RED_MIN ? 3.402823466e38f : 0.0f);
    for (i64 c = threadIdx.x; c < len; c += blockDim.x) {
      float v = N<T>::ld(xr[c]);
      acc = op == RED_MAX ? fmaxf(acc, v) : (op == RED_MIN ? fminf(acc, v) : acc + v);
    }
    float out;
    if (op == RED_MIN) out = -block_reduce(-acc, 1);
    else if (op == RED_MAX) out = block_reduce(acc, 1);
    else out = block_reduce(acc, 0);
    if (op == RED_MEAN) out /= (float)len;
    if (threadIdx.x == 0) y[r] = N<T>::st(out);
  }
}
// Integer reductions are small (masks, lengths): one thread per row.
template <typename T>
__device__ void reduce_int_t(int op, i64 rows, i64 len, const T* x, T* y) {
  GRID_LOOP(r, rows) {
    i64 acc = N<T>::ld(x[r * len]);
    for (i64 c = 1; c < len; ++c) {
      i64 v = N<T>::ld(x[r * len + c]);
      acc = op == RED_MAX ? (v > acc ? v : acc) : (op == RED_MIN ? (v < acc ? v : acc) : acc + v);
    }
    if (op == RED_MEAN) acc /= len;
    y[r] = N<T>::st(acc);
  }
}

// ---- gather along an axis: x [outer, axis_len, inner], idx [nidx] ----
template <typename E, typename I>
__device__ void gather_t(i64 outer, i64 nidx, i64 axis_len, i64 inner, const E* x, const I* idx, E* y, int* err) {
  i64 n = outer * nidx * inner;
  GRID_LOOP(i, n) {
    i64 t = i % inner, j = (i / inner) % nidx, o = i / (inner * nidx);
    i64 id = (i64)idx[j];
    if (id < 0) id += axis_len;
    if (id < 0 || id >= axis_len) {
      atomicExch(err, 1);
      y[i] = E();
    } else {
      y[i] = x[(o * axis_len + id) * inner + t];
    }
  }
}

// ---- convolution (1-D as a height of 1): one thread per output ----
template <typename T>
__device__ void conv_t(i64 n, i64 cin, i64 cout, i64 groups, i64 h, i64 w, i64 oh, i64 ow, i64 kh, i64 kw,
                       i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw, const T* x, const T* wt, const T* b, T* y) {
  i64 total = n * cout * oh * ow;
  i64 cg = cin / groups, og = cout / groups;
  GRID_LOOP(i, total) {
    i64 ox = i % ow, oy = (i / ow) % oh, co = (i / (ow * oh)) % cout, nb = i / (ow * oh * cout);
    i64 g = co / og;
    float acc = b ? N<T>::ld(b[co]) : 0.f;
    for (i64 ci = 0; ci < cg; ci++) {
      const T* xc = x + ((nb * cin + g * cg + ci) * h) * w;
      const T* wc = wt + ((co * cg + ci) * kh) * kw;
      for (i64 ky = 0; ky < kh; ky++) {
        i64 iy = oy * sh - ph + ky * dh;
        if (iy < 0 || iy >= h) continue;
        for (i64 kx = 0; kx < kw; kx++) {
          i64 ix = ox * sw - pw + kx * dw;
          if (ix < 0 || ix >= w) continue;
          acc += N<T>::ld(xc[iy * w + ix]) * N<T>::ld(wc[ky * kw + kx]);
        }
      }
    }
    y[i] = N<T>::st(acc);
  }
}

// ---- argmax over (outer, len, inner); first index of the maximum ----
// (value, index) pairs: `none` (= len) loses to anything; ties go to the
// lower index.
__device__ __forceinline__ void arg_better(float v, i64 i, float& bv, i64& bi, i64 none) {
  if (i < none && (bi == none || v > bv || (v == bv && i < bi))) { bv = v; bi = i; }
}
// One block per row (any multiple of 32 threads up to 1024); each thread
// scans its strided elements eight loads at a time, then warp shuffles and
// one warp merge the threads' bests.
template <typename T>
__device__ void argmax_t(i64 outer, i64 len, i64 inner, const T* x, i64* y) {
  __shared__ float wv[32];
  __shared__ i64 wi[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  const i64 stride = blockDim.x;
  for (i64 r = blockIdx.x; r < outer * inner; r += gridDim.x) {
    const T* xr = x + (r / inner) * len * inner + (r % inner);
    float best = -3.402823466e38f; i64 bidx = len;
    i64 c = threadIdx.x;
    for (; c + 7 * stride < len; c += 8 * stride) {
      float v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) v[u] = (float)N<T>::ld(xr[(c + u * stride) * inner]);
#pragma unroll
      for (int u = 0; u < 8; ++u)
        if (v[u] > best || bidx == len) { best = v[u]; bidx = c + u * stride; }
    }
    for (; c < len; c += stride) {
      float v = (float)N<T>::ld(xr[c * inner]);
      if (v > best || bidx == len) { best = v; bidx = c; }
    }
    for (int o = 16; o > 0; o >>= 1)
      arg_better(__shfl_down_sync(0xffffffffu, best, o), __shfl_down_sync(0xffffffffu, bidx, o), best, bidx, len);
    if (lane == 0) { wv[warp] = best; wi[warp] = bidx; }
    __syncthreads();
    if (warp == 0) {
      best = lane < nw ? wv[lane] : 0.0f;
      bidx = lane < nw ? wi[lane] : len;
      for (int o = 16; o > 0; o >>= 1)
        arg_better(__shfl_down_sync(0xffffffffu, best, o), __shfl_down_sync(0xffffffffu, bidx, o), best, bidx, len);
      if (lane == 0) y[r] = bidx;
    }
    __syncthreads();
  }
}

// ---- top-k along the last axis, sorted descending, ties to the lower index ----
// Selection by k passes: each pass takes the best element strictly after the
// previous one in the order (value desc, index asc). Two stages so that long
// rows (a vocabulary) spread over many blocks: each of `chunks` blocks per
// row selects the top k of its slice into f32/i64 candidates; one block per
// row then selects the top k of the candidates.
__device__ __forceinline__ bool better(float v, i64 i, float bv, i64 bi, i64 none) {
  return bi == none || v > bv || (v == bv && i < bi);
}
template <typename V>
__device__ void select_k(i64 n, int k, const V* vals, const i64* ids, float* out_v, i64* out_i) {
  __shared__ float bv[256];
  __shared__ i64 bi[256];
  const i64 none = -1;
  float pv = 0.0f; i64 pi = none;
  for (int q = 0; q < k; ++q) {
    float best = 0.0f; i64 bidx = none;
    for (i64 c = threadIdx.x; c < n; c += blockDim.x) {
      float v = (float)vals[c];
      i64 id = ids ? ids[c] : c;
      if (id < 0) continue;
      bool after = pi == none || v < pv || (v == pv && id > pi);
      if (after && better(v, id, best, bidx, none)) { best = v; bidx = id; }
    }
    bv[threadIdx.x] = best; bi[threadIdx.x] = bidx;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s && bi[threadIdx.x + s] != none &&
          better(bv[threadIdx.x + s], bi[threadIdx.x + s], bv[threadIdx.x], bi[threadIdx.x], none)) {
        bv[threadIdx.x] = bv[threadIdx.x + s]; bi[threadIdx.x] = bi[threadIdx.x + s];
      }
      __syncthreads();
    }
    pv = bv[0]; pi = bi[0];
    if (threadIdx.x == 0) { out_v[q] = pv; out_i[q] = pi; }
    __syncthreads();
  }
}
// Stage 1: grid (rows * chunks); candidates [rows, chunks, k] (index -1 = none).
template <typename T>
__device__ void top_k_partial_t(i64 rows, i64 len, int k, int chunks, const T* x, float* cv, i64* ci) {
  __shared__ float fv[1024];
  for (i64 blk = blockIdx.x; blk < rows * chunks; blk += gridDim.x) {
    i64 r = blk / chunks, c = blk % chunks;
    i64 span = (len + chunks - 1) / chunks;
    i64 lo = c * span, hi = lo + span < len ? lo + span : len;
    float* ov = cv + blk * k;
    i64* oi = ci + blk * k;
    for (int q = threadIdx.x; q < k; q += blockDim.x) { ov[q] = 0.0f; oi[q] = -1; }
    __syncthreads();
    i64 n = hi > lo ? hi - lo : 0;
    // Slices are at most 1024 long: stage them as f32 with their ids.
    for (i64 t = threadIdx.x; t < n; t += blockDim.x) fv[t] = (float)N<T>::ld(x[r * len + lo + t]);
    __syncthreads();
    int kk = n < k ? (int)n : k;
    if (kk > 0) {
      // ids are lo + t: select on the staged values, then offset.
      select_k<float>(n, kk, fv, (const i64*)0, ov, oi);
      for (int q = threadIdx.x; q < kk; q += blockDim.x) oi[q] += lo;
    }
    __syncthreads();
  }
}
// Stage 2: one block per row over chunks * k candidates.
template <typename T>
__device__ void top_k_merge_t(i64 rows, i64 n, int k, const float* cv, const i64* ci, const T* x, i64 len, T* vals, i64* idx) {
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    __shared__ float ov[128];
    __shared__ i64 oi[128];
    select_k<float>(n, k, cv + r * n, ci + r * n, ov, oi);
    for (int q = threadIdx.x; q < k; q += blockDim.x) {
      i64 id = oi[q];
      vals[r * k + q] = x[r * len + id];
      idx[r * k + q] = id;
    }
    __syncthreads();
  }
}

// ---- bias add: y [rows, n] = act(y + bias [n]) (act -1: none) ----
template <typename T>
__device__ void bias_add_t(i64 rows, i64 n, T* y, const T* bias, int act) {
  GRID_LOOP(i, rows * n) {
    T out = N<T>::st(N<T>::ld(y[i]) + N<T>::ld(bias[i % n]));
    // A fused activation reads the sum as stored, as unfused.
    if (act >= 0) out = N<T>::st(un_f(act, N<T>::ld(out)));
    y[i] = out;
  }
}
