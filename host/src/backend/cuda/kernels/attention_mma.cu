// Kernel source, part 4 of 6 (see kernels.rs): attention on tensor cores
// (f16, bf16): many query rows (prefill, extend, encoders) and grouped-query
// decode, with mma.sync m16n8k16 and f32 accumulation.

// ---- many-row attention on tensor cores (f16, bf16) ----
// Prefill and extend steps: a block of 8 warps takes 128 query rows of one
// (batch, head), a warp 16 of them (a warp past the last row only stages values), and walks the keys in chunks of 32.
// Scores are mma.sync m16n8k16 products of the query rows (registers) and
// key rows (16-byte loads; both fragments take the same permutation of the
// head dim), scaled and masked as attn_score does, with an online softmax
// per row (running maximum and sum; lane (g, t) holds keys 2t and 2t+1 of
// each 8-key tile for rows g and g+8). The probabilities, rounded to T,
// become the a operand of the value product directly (the score tile's
// layout is the operand's); the chunk's values are staged in shared memory
// (rows padded by 16 bytes: conflict-free) and read transposed with
// ldmatrix. Keys past the last take no part. Dense 16-byte aligned rows of
// head dim D only (the planner checks); any other input runs
// attention_rows_t in the same dynamic shared memory.
#define AMMA_ROWS 128
#define NEG_INF __int_as_float(0xff800000u)
#define AMMA_KC 32
// A chunk of AMMA_KC value rows from c0 (zeros past the last key) into
// `vsh` (rows of D + 8 halves), 16 bytes per step of `first`, `first` +
// `step`, ... (the block's threads or one warp's lanes).
template <typename T, int D>
__device__ __forceinline__ void amma_stage_values(const Attn& p, const T* vb, int c0, unsigned short* vsh, int first, int step) {
  const W16 z = {0u, 0u, 0u, 0u};
  for (int e = first; e < AMMA_KC * (D / 8); e += step) {
    const int j = e / (D / 8), d8 = (e - j * (D / 8)) * 8;
    *(W16*)(vsh + j * (D + 8) + d8) = c0 + j < p.sk ? *(const W16*)(vb + (i64)(c0 + j) * p.vs[2] + d8) : z;
  }
}
// One chunk of keys for a warp's 16 query rows (fragments qa, qb: rows g and
// g + 8 of lane (g, t)): scores against keys c0 + 8 nt + (0..7) (lane group
// g loads key 8 nt + g from kb, already offset by 8 t), scaled and masked as
// attn_score does (row g's mask entry at head ha, query ia, causal by query
// ra; row g + 8's at hb, ib, rb), keys past the last excluded; the running
// maxima m, sums l and value sums o are rescaled to the chunk's maxima and
// the probabilities returned as the value product's a operands (pa).
template <typename T, int D>
__device__ __forceinline__ void amma_scores(const Attn& p, const void* mask, int bb, const W16* qa, const W16* qb,
                                            const T* kb, int c0, int ha, int hb, int ia, int ib, int ra, int rb,
                                            float (*o)[4], float& ma, float& mb, float& la, float& lb, unsigned (*pa)[2]) {
  const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
  const W16 z = {0u, 0u, 0u, 0u};
  float s[4][4];
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    const int key = c0 + 8 * nt + g;
    W16 kw[D / 32];
#pragma unroll
    for (int c = 0; c < D / 32; ++c) kw[c] = key < p.sk ? *(const W16*)(kb + (i64)key * p.ks[2] + 32 * c) : z;
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int c = 0; c < D / 32; ++c) {
      mma16816<T>(s[nt], qa[c].a, qb[c].a, qa[c].b, qb[c].b, kw[c].a, kw[c].b);
      mma16816<T>(s[nt], qa[c].c, qb[c].c, qa[c].d, qb[c].d, kw[c].c, kw[c].d);
    }
  }
  float xa = NEG_INF, xb = NEG_INF;
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = c0 + 8 * nt + 2 * t + (e & 1);
      float sc = NEG_INF;
      if (j < p.sk) {
        const float mv = p.mask_kind ? attn_mask<T>(p, mask, bb, e < 2 ? ha : hb, e < 2 ? ia : ib, j) : 0.0f;
        sc = attn_scored(p, s[nt][e], mv, e < 2 ? ra : rb, j);
      }
      s[nt][e] = sc;
      if (e < 2) xa = fmaxf(xa, sc); else xb = fmaxf(xb, sc);
    }
  xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 1));
  xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 2));
  xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 1));
  xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 2));
  const float na = fmaxf(ma, xa), nb = fmaxf(mb, xb);
  const float aa = expf(ma - na), ab = expf(mb - nb);
  ma = na;
  mb = nb;
  la *= aa;
  lb *= ab;
#pragma unroll
  for (int d = 0; d < D / 8; ++d) {
    o[d][0] *= aa; o[d][1] *= aa; o[d][2] *= ab; o[d][3] *= ab;
  }
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    const float p0 = expf(s[nt][0] - na), p1 = expf(s[nt][1] - na);
    const float p2 = expf(s[nt][2] - nb), p3 = expf(s[nt][3] - nb);
    la += p0 + p1;
    lb += p2 + p3;
    pa[nt][0] = pack2<T>(p0, p1);
    pa[nt][1] = pack2<T>(p2, p3);
  }
}
// o += the chunk's probabilities (pa) x its staged values (vsh, read
// transposed with ldmatrix).
template <typename T, int D>
__device__ __forceinline__ void amma_values(const unsigned short* vsh, unsigned (*pa)[2], float (*o)[4]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    // Lane l addresses row l % 8 of matrix l / 8: keys 16 h2 + 8 ((l / 8) & 1), dims 8 (dt + l / 16).
    const unsigned short* row = vsh + (16 * h2 + 8 * ((lane >> 3) & 1) + (lane & 7)) * (D + 8) + 8 * (lane >> 4);
#pragma unroll
    for (int dt = 0; dt < D / 8; dt += 2) {
      unsigned b[4];
      ldmatrix_t4(row + 8 * dt, b);
      mma16816<T>(o[dt], pa[2 * h2][0], pa[2 * h2][1], pa[2 * h2 + 1][0], pa[2 * h2 + 1][1], b[0], b[1]);
      mma16816<T>(o[dt + 1], pa[2 * h2][0], pa[2 * h2][1], pa[2 * h2 + 1][0], pa[2 * h2 + 1][1], b[2], b[3]);
    }
  }
}
// A row's sum over the four lanes that hold its keys.
__device__ __forceinline__ float amma_row_sum(float l) {
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  return l + __shfl_xor_sync(0xffffffffu, l, 2);
}
template <typename T, int D>
__device__ void attention_mma_d(const Attn& p, const T* q, const T* k, const T* v, const void* mask, T* y) {
  extern __shared__ __align__(16) float sh[];
  unsigned short* vsh = (unsigned short*)sh;  // [AMMA_KC][D + 8]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int tiles = (p.sq + AMMA_ROWS - 1) / AMMA_ROWS;
  for (i64 blk = blockIdx.x; blk < (i64)p.b * p.h * tiles; blk += gridDim.x) {
    const int tile = (int)(blk % tiles);
    const int hh = (int)((blk / tiles) % p.h);
    const int bb = (int)(blk / ((i64)tiles * p.h));
    const int kh = hh / (p.h / p.kvh);
    const T* kb = k + bb * p.ks[0] + kh * p.ks[1] + 8 * t;
    const T* vb = v + bb * p.vs[0] + kh * p.vs[1];
    // This lane's two rows (clamped for loads; the real index for masks).
    const int ra = tile * AMMA_ROWS + warp * 16 + g, rb = ra + 8;
    const int ca = min(ra, p.sq - 1), cb = min(rb, p.sq - 1);
    const bool live = tile * AMMA_ROWS + warp * 16 < p.sq;  // warp-uniform
    W16 qa[D / 32], qb[D / 32];
    const T* qp = q + bb * p.qs[0] + hh * p.qs[1] + 8 * t;
#pragma unroll
    for (int c = 0; c < D / 32; ++c) {
      qa[c] = *(const W16*)(qp + ca * p.qs[2] + 32 * c);
      qb[c] = *(const W16*)(qp + cb * p.qs[2] + 32 * c);
    }
    float o[D / 8][4];
#pragma unroll
    for (int d = 0; d < D / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float ma = NEG_INF, mb = NEG_INF, la = 0.0f, lb = 0.0f;
    for (int c0 = 0; c0 < p.sk; c0 += AMMA_KC) {
      __syncthreads();  // the previous chunk's values are consumed
      amma_stage_values<T, D>(p, vb, c0, vsh, threadIdx.x, blockDim.x);
      if (!live) {
        __syncthreads();
        continue;
      }
      unsigned pa[4][2];
      amma_scores<T, D>(p, mask, bb, qa, qb, kb, c0, hh, hh, ca, cb, ra, rb, o, ma, mb, la, lb, pa);
      __syncthreads();  // the values are staged
      amma_values<T, D>(vsh, pa, o);
    }
    la = amma_row_sum(la);
    lb = amma_row_sum(lb);
    T* ya = y + (((i64)bb * p.h + hh) * p.sq + ra) * D + 2 * t;
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      if (ra < p.sq) *(unsigned*)(ya + 8 * d) = pack2<T>(o[d][0] / la, o[d][1] / la);
      if (rb < p.sq) *(unsigned*)(ya + 8 * p.dv + 8 * d) = pack2<T>(o[d][2] / lb, o[d][3] / lb);
    }
  }
}
// ---- grouped-query decode on tensor cores (f16, bf16) ----
// One query row per head (a decode step) with G = h / kvh heads per kv head
// (2..16): a block per (batch row, kv head) whose G heads are the rows of
// m16n8k16 tiles, so each key and value row is read once per group. Warp w
// takes key chunks w, w + nw, ... of AMMA_KC keys (scores and the online
// softmax as attention_mma_d; the chunk's values staged in the warp's own
// shared memory, read transposed with ldmatrix), then the warps' running
// maxima, sums and value sums are combined through shared memory (which
// then holds, per warp, 16 maxima, 16 sums and 16 x D value sums).
template <typename T, int D>
__device__ void attention_gdec_d(const Attn& p, const T* q, const T* k, const T* v, const void* mask, T* y) {
  extern __shared__ __align__(16) float sh[];
  const int VP = D + 8, RW = 32 + 16 * D;
  const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int G = p.h / p.kvh;
  unsigned short* vsh = (unsigned short*)sh + warp * AMMA_KC * VP;
  const W16 z = {0u, 0u, 0u, 0u};
  for (i64 blk = blockIdx.x; blk < (i64)p.b * p.kvh; blk += gridDim.x) {
    const int kh = (int)(blk % p.kvh), bb = (int)(blk / p.kvh);
    // Rows g and g + 8 are heads kh G + g and kh G + g + 8 (zero queries
    // past the group; their outputs are not stored).
    const int ha = kh * G + min(g, G - 1), hb = kh * G + min(g + 8, G - 1);
    const bool qa_live = g < G, qb_live = g + 8 < G;
    const T* qp = q + bb * p.qs[0] + 8 * t;
    W16 qa[D / 32], qb[D / 32];
#pragma unroll
    for (int c = 0; c < D / 32; ++c) {
      qa[c] = qa_live ? *(const W16*)(qp + ha * p.qs[1] + 32 * c) : z;
      qb[c] = qb_live ? *(const W16*)(qp + hb * p.qs[1] + 32 * c) : z;
    }
    const T* kb = k + bb * p.ks[0] + kh * p.ks[1] + 8 * t;
    const T* vb = v + bb * p.vs[0] + kh * p.vs[1];
    float o[D / 8][4];
#pragma unroll
    for (int d = 0; d < D / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float ma = NEG_INF, mb = NEG_INF, la = 0.0f, lb = 0.0f;
    for (int c0 = warp * AMMA_KC; c0 < p.sk; c0 += nw * AMMA_KC) {
      amma_stage_values<T, D>(p, vb, c0, vsh, lane, 32);
      unsigned pa[4][2];
      amma_scores<T, D>(p, mask, bb, qa, qb, kb, c0, ha, hb, 0, 0, 0, 0, o, ma, mb, la, lb, pa);
      __syncwarp();  // the warp's values are staged
      amma_values<T, D>(vsh, pa, o);
      __syncwarp();  // consumed before the next chunk is staged
    }
    la = amma_row_sum(la);
    lb = amma_row_sum(lb);
    __syncthreads();  // every warp's values consumed: the space holds partials
    float* r = sh + warp * RW;  // [16] maxima, [16] sums, [16][D] value sums
    if (t == 0) {
      r[g] = ma; r[g + 8] = mb;
      r[16 + g] = la; r[24 + g] = lb;
    }
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      r[32 + g * D + 8 * d + 2 * t] = o[d][0];
      r[32 + g * D + 8 * d + 2 * t + 1] = o[d][1];
      r[32 + (g + 8) * D + 8 * d + 2 * t] = o[d][2];
      r[32 + (g + 8) * D + 8 * d + 2 * t + 1] = o[d][3];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < G * D; e += blockDim.x) {
      const int row = e / D, dd = e - row * D;
      float mx = NEG_INF;
      for (int w = 0; w < nw; ++w)
        if (sh[w * RW + 16 + row] > 0.0f) mx = fmaxf(mx, sh[w * RW + row]);
      float num = 0.0f, den = 0.0f;
      for (int w = 0; w < nw; ++w) {
        const float lw = sh[w * RW + 16 + row];
        if (lw > 0.0f) {
          const float f = expf(sh[w * RW + row] - mx);
          num += sh[w * RW + 32 + row * D + dd] * f;
          den += lw * f;
        }
      }
      y[((i64)bb * p.h + kh * G + row) * D + dd] = N<T>::st(num / den);
    }
    __syncthreads();  // partials read before the next block's values
  }
}
template <typename T, int D>
__device__ void attention_gdec_t(Attn p, const T* q, const T* k, const T* v, const void* mask, T* y) {
  const int G = p.kvh > 0 ? p.h / p.kvh : 0;
  const bool qd = p.qs[3] == 1 && p.qs[0] % 8 == 0 && p.qs[1] % 8 == 0 && ((unsigned long long)q & 15) == 0;
  if (p.sq == 1 && p.d == D && p.dv == D && G >= 1 && G <= 16 && G * p.kvh == p.h && qd && attn_dense<T>(p, k, v))
    attention_gdec_d<T, D>(p, q, k, v, mask, y);
  else
    attention_any<T>(p, q, k, v, mask, y);
}
template <typename T>
__device__ __noinline__ void attention_rows_any(Attn p, const T* q, const T* k, const T* v, const void* mask, T* y) {
  attention_rows_t<T>(p, q, k, v, mask, y);
}
template <typename T, int D>
__device__ void attention_mma_t(Attn p, const T* q, const T* k, const T* v, const void* mask, T* y) {
  const bool qd = p.qs[3] == 1 && p.qs[0] % 8 == 0 && p.qs[1] % 8 == 0 && p.qs[2] % 8 == 0 &&
                  ((unsigned long long)q & 15) == 0 && ((unsigned long long)y & 3) == 0;
  if (p.d == D && p.dv == D && qd && attn_dense<T>(p, k, v) && blockDim.x == 256)
    attention_mma_d<T, D>(p, q, k, v, mask, y);
  else
    attention_rows_any<T>(p, q, k, v, mask, y);
}
#define AMMA_KERNELS(n, T) \
  extern "C" __global__ void __launch_bounds__(256, 2) attention_mma64_##n(Attn p, const T* q, const T* k, const T* v, const void* m, T* y) { pdl_enter(); attention_mma_t<T, 64>(p, q, k, v, m, y); } \
  extern "C" __global__ void __launch_bounds__(256, 1) attention_mma128_##n(Attn p, const T* q, const T* k, const T* v, const void* m, T* y) { pdl_enter(); attention_mma_t<T, 128>(p, q, k, v, m, y); } \
  extern "C" __global__ void __launch_bounds__(256, 1) attention_gdec64_##n(Attn p, const T* q, const T* k, const T* v, const void* m, T* y) { pdl_enter(); attention_gdec_t<T, 64>(p, q, k, v, m, y); } \
  extern "C" __global__ void __launch_bounds__(256, 1) attention_gdec128_##n(Attn p, const T* q, const T* k, const T* v, const void* m, T* y) { pdl_enter(); attention_gdec_t<T, 128>(p, q, k, v, m, y); }
AMMA_KERNELS(f16, h16)
AMMA_KERNELS(bf16, b16)
