// Kernel source, part 3 of 6 (see kernels.rs): fused attention (many query
// rows, one row per block, and the warp-split decode kernel).
// ---- fused attention ----
// q [b, h, sq, d], k [b, kvh, sk, d], v [b, kvh, sk, dv] with element strides;
// mask broadcast to [b, h, sq, sk] by strides (0 on broadcast axes);
// y [b, h, sq, dv] contiguous. One block per (b, h, query row); scores in
// dynamic shared memory (sk floats) followed by the query row (d floats).
// Most key groups of the vector-load path (its partial sums in shared
// memory: ATTN_GROUPS x dv floats; lower_ops.rs sizes them).
#define ATTN_GROUPS 32
// Decode (one query row, dense rows): each thread loads its first key row
// (at most ATTN_KPRE x 16 bytes) and its first ATTN_VPRE value slices
// before the query row is ready, so the keys, values and query arrive in
// one memory round trip instead of three.
#define ATTN_KPRE 8
#define ATTN_VPRE 4
struct Attn {
  int b, h, kvh, sq, sk, d, dv, causal, mask_kind;  // mask_kind: 0 none, 1 additive, 2 bool
  float scale;
  i64 qs[4], ks[4], vs[4], ms[4];
};
// Mask entry of key j for query i of (batch bb, head hh): the additive
// value (mask_kind 1), 1 or 0 (kind 2), else 0.
template <typename T>
__device__ __forceinline__ float attn_mask(const Attn& p, const void* mask, int bb, int hh, int i, int j) {
  i64 mo = bb * p.ms[0] + hh * p.ms[1] + i * p.ms[2] + j * p.ms[3];
  if (p.mask_kind == 1) return N<T>::ld(((const T*)mask)[mo]);
  if (p.mask_kind == 2) return ((const u8*)mask)[mo] != 0 ? 1.0f : 0.0f;
  return 0.0f;
}
// Scaled score of key j for query i with its mask entry m.
__device__ __forceinline__ float attn_scored(const Attn& p, float dot, float m, int i, int j) {
  float s = dot * p.scale;
  bool allowed = true;
  if (p.mask_kind == 1) s += m;
  if (p.mask_kind == 2) allowed = m != 0.0f;
  if (p.causal && j > i + (p.sk - p.sq)) allowed = false;
  if (!allowed) s += -65504.0f;
  return s;
}
template <typename T>
__device__ __forceinline__ float attn_score(const Attn& p, const void* mask, float dot, int bb, int hh, int i, int j) {
  return attn_scored(p, dot, attn_mask<T>(p, mask, bb, hh, i, j), i, j);
}
// Whether key and value rows are dense and 16-byte aligned (read with
// 16-byte loads of Wide<T>::n elements).
template <typename T>
__device__ __forceinline__ bool attn_dense(const Attn& p, const T* k, const T* v) {
  const int V = Wide<T>::n;
  return p.ks[3] == 1 && p.vs[3] == 1 && p.d % V == 0 && p.dv % V == 0 &&
         p.ks[0] % V == 0 && p.ks[1] % V == 0 && p.ks[2] % V == 0 &&
         p.vs[0] % V == 0 && p.vs[1] % V == 0 && p.vs[2] % V == 0 &&
         ((unsigned long long)k & 15) == 0 && ((unsigned long long)v & 15) == 0;
}
// One block per (batch, head, query) row. Shared memory: scores [sk], the
// query row [d] and per-group partial outputs [at most ATTN_GROUPS x dv].
template <typename T>
__device__ void attention_t(Attn p, const T* q, const T* k, const T* v, const void* mask, T* y) {
  extern __shared__ float sh[];
  float* scores = sh;
  float* qrow = sh + p.sk;
  float* part = qrow + p.d;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  // Dense, 16-byte aligned key and value rows: a thread per key and
  // vector loads (for every query row: later rows find the keys in L2).
  const int V = Wide<T>::n;
  const bool vec = attn_dense<T>(p, k, v);
  for (i64 blk = blockIdx.x; blk < (i64)p.b * p.h * p.sq; blk += gridDim.x) {
    int i = (int)(blk % p.sq);
    int hh = (int)((blk / p.sq) % p.h);
    int bb = (int)(blk / ((i64)p.sq * p.h));
    int kh = hh / (p.h / p.kvh);
    const T* qp = q + bb * p.qs[0] + hh * p.qs[1] + i * p.qs[2];
    const T* kb = k + bb * p.ks[0] + kh * p.ks[1];
    const T* vb = v + bb * p.vs[0] + kh * p.vs[1];
    // The value phase's thread layout (vector path): groups of dv / V
    // threads split the keys, a thread takes V value dims.
    const int per = p.dv / V;
    const int groups = vec && per > 0 ? min((int)blockDim.x / per, ATTN_GROUPS) : 0;
    const int g = vec ? (int)threadIdx.x / per : 0, tv = vec ? ((int)threadIdx.x % per) * V : 0;
    const bool pre = vec && p.sq == 1 && p.d * (int)sizeof(T) <= 16 * ATTN_KPRE;
    W16 kraw[ATTN_KPRE], vraw[ATTN_VPRE];
    float mpre = 0.0f;
    if (pre) {
      int j = threadIdx.x;
      if (j < p.sk) {
        mpre = attn_mask<T>(p, mask, bb, hh, i, j);
#pragma unroll
        for (int u = 0; u < ATTN_KPRE; ++u)
          if (u * V < p.d) kraw[u] = *(const W16*)(kb + j * p.ks[2] + u * V);
      }
#pragma unroll
      for (int u = 0; u < ATTN_VPRE; ++u) {
        int jv = g + u * groups;
        if (g < groups && jv < p.sk)
          vraw[u] = *(const W16*)(vb + jv * p.vs[2] + tv);
      }
    }
    for (int t = threadIdx.x; t < p.d; t += blockDim.x) qrow[t] = N<T>::ld(qp[t * p.qs[3]]);
    __syncthreads();
    if (vec) {
      // Dense rows: a thread per key, 16-byte loads.
      for (int j = threadIdx.x; j < p.sk; j += blockDim.x) {
        const T* kp = kb + j * p.ks[2];
        float dot = 0.0f;
        if (pre && j == (int)threadIdx.x) {
#pragma unroll
          for (int u = 0; u < ATTN_KPRE; ++u) {
            if (u * V < p.d) {
              float w[8];
              Wide<T>::cvt(kraw[u], w);
#pragma unroll
              for (int e = 0; e < V; ++e) dot += qrow[u * V + e] * w[e];
            }
          }
        } else {
#pragma unroll 4
          for (int t = 0; t < p.d; t += V) {
            float w[8];
            Wide<T>::ld(kp + t, w);
#pragma unroll
            for (int e = 0; e < V; ++e) dot += qrow[t + e] * w[e];
          }
        }
        scores[j] = pre && j == (int)threadIdx.x ? attn_scored(p, dot, mpre, i, j)
                                                 : attn_score<T>(p, mask, dot, bb, hh, i, j);
      }
    } else if (p.sq == 1) {
      // Decode: a thread per key, so all keys' loads are in flight at once.
      for (int j = threadIdx.x; j < p.sk; j += blockDim.x) {
        const T* kp = kb + j * p.ks[2];
        float dot = 0.0f;
#pragma unroll 8
        for (int t = 0; t < p.d; ++t) dot += qrow[t] * N<T>::ld(kp[t * p.ks[3]]);
        scores[j] = attn_score<T>(p, mask, dot, bb, hh, i, j);
      }
    } else {
      // A warp per key, lanes over the head dim (coalesced rows).
      for (int j = warp; j < p.sk; j += nw) {
        const T* kp = kb + j * p.ks[2];
        float dot = 0.0f;
        for (int t = lane; t < p.d; t += 32) dot += qrow[t] * N<T>::ld(kp[t * p.ks[3]]);
        dot = warp_sum(dot);
        if (lane == 0) scores[j] = attn_score<T>(p, mask, dot, bb, hh, i, j);
      }
    }
    __syncthreads();
    float m = -3.402823466e38f;
    for (int j = threadIdx.x; j < p.sk; j += blockDim.x) m = fmaxf(m, scores[j]);
    m = block_reduce(m, 1);
    float s = 0.0f;
    for (int j = threadIdx.x; j < p.sk; j += blockDim.x) {
      float e = expf(scores[j] - m);
      scores[j] = e;
      s += e;
    }
    s = block_reduce(s, 0);
    T* yp = y + ((((i64)bb * p.h + hh) * p.sq) + i) * p.dv;
    if (vec) {
      // Weighted values: groups of dv / V threads split the keys (at most
      // ATTN_GROUPS groups), a thread V value dims by one 16-byte load.
      const int t = tv;
      if (g < groups) {
        float acc[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] = 0.0f;
        int from = g;
        if (pre) {
          // The prefetched keys first, in the same order.
#pragma unroll
          for (int u = 0; u < ATTN_VPRE; ++u) {
            int j = g + u * groups;
            if (j < p.sk) {
              float w[8];
              Wide<T>::cvt(vraw[u], w);
              float sc = scores[j];
#pragma unroll
              for (int e = 0; e < V; ++e) acc[e] += sc * w[e];
            }
          }
          from = g + ATTN_VPRE * groups;
        }
#pragma unroll 4
        for (int j = from; j < p.sk; j += groups) {
          float w[8];
          Wide<T>::ld(vb + j * p.vs[2] + t, w);
          float sc = scores[j];
#pragma unroll
          for (int e = 0; e < V; ++e) acc[e] += sc * w[e];
        }
#pragma unroll
        for (int e = 0; e < V; ++e) part[g * p.dv + t + e] = acc[e];
      }
      __syncthreads();
      for (int t2 = threadIdx.x; t2 < p.dv; t2 += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < groups; ++w) a += part[w * p.dv + t2];
        yp[t2] = N<T>::st(a / s);
      }
      __syncthreads();
      continue;
    }
    // Weighted values: groups of threads split the keys, a group's threads
    // the value dims (coalesced), then the groups' partial sums are added.
    int width = (p.dv + 31) & ~31;
    int ngroups = blockDim.x / width;
    if (ngroups < 1) ngroups = 1;
    int gi = threadIdx.x / width, t = threadIdx.x % width;
    if (gi < ngroups && t < p.dv) {
      float acc = 0.0f;
#pragma unroll 4
      for (int j = gi; j < p.sk; j += ngroups) acc += scores[j] * N<T>::ld(vb[j * p.vs[2] + t * p.vs[3]]);
      part[gi * p.dv + t] = acc;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < p.dv; t += blockDim.x) {
      float a = 0.0f;
      for (int w = 0; w < ngroups; ++w) a += part[w * p.dv + t];
      yp[t] = N<T>::st(a / s);
    }
    __syncthreads();
  }
}

// Many query rows (prefill, extend, encoders): a block takes ATTN_ROWS
// query rows of one (batch, head), ATTN_RPW per warp, and walks the keys in
// chunks of ATTN_CHUNK staged in shared memory once for all its rows (the
// row-per-block kernel above reloads every key for every row). A lane
// scores one key of the chunk for each of its warp's rows; softmax is
// online: per chunk a row's running maximum, sum and weighted values are
// rescaled. Scores follow attn_score (masked keys get -65504 added, as
// above); keys past the last one take no part. Shared memory (floats):
// keys transposed [d][ATTN_CHUNK + 1] (padded: conflict-free both ways),
// values [ATTN_CHUNK][dv], query rows [ATTN_ROWS][d] and probabilities
// [ATTN_ROWS][ATTN_CHUNK]. Dense 16-byte aligned key/value rows are
// staged with 16-byte loads.
#define ATTN_RPW 2
#define ATTN_ROWS (8 * ATTN_RPW)
#define ATTN_CHUNK 32
#define ATTN_DV_LANE 8
template <typename T>
__device__ void attention_rows_t(Attn p, const T* q, const T* k, const T* v, const void* mask, T* y) {
  extern __shared__ float sh[];
  const int KP = ATTN_CHUNK + 1;
  float* kt = sh;
  float* vs = kt + p.d * KP;
  float* qs = vs + ATTN_CHUNK * p.dv;
  float* ps = qs + ATTN_ROWS * p.d;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int tiles = (p.sq + ATTN_ROWS - 1) / ATTN_ROWS;
  const int per = (p.dv + 31) / 32;
  const int V = Wide<T>::n;
  const bool vec = attn_dense<T>(p, k, v);
  for (i64 blk = blockIdx.x; blk < (i64)p.b * p.h * tiles; blk += gridDim.x) {
    const int tile = (int)(blk % tiles);
    const int hh = (int)((blk / tiles) % p.h);
    const int bb = (int)(blk / ((i64)tiles * p.h));
    const int kh = hh / (p.h / p.kvh);
    const T* kb = k + bb * p.ks[0] + kh * p.ks[1];
    const T* vb = v + bb * p.vs[0] + kh * p.vs[1];
    int ri[ATTN_RPW];
    bool live[ATTN_RPW];
#pragma unroll
    for (int w = 0; w < ATTN_RPW; ++w) {
      ri[w] = tile * ATTN_ROWS + warp * ATTN_RPW + w;
      live[w] = ri[w] < p.sq;
      if (live[w]) {
        const T* qp = q + bb * p.qs[0] + hh * p.qs[1] + ri[w] * p.qs[2];
        for (int t = lane; t < p.d; t += 32)
          qs[(warp * ATTN_RPW + w) * p.d + t] = N<T>::ld(qp[t * p.qs[3]]);
      }
    }
    float m[ATTN_RPW], l[ATTN_RPW], acc[ATTN_RPW][ATTN_DV_LANE];
#pragma unroll
    for (int w = 0; w < ATTN_RPW; ++w) {
      m[w] = -3.402823466e38f;
      l[w] = 0.0f;
#pragma unroll
      for (int r = 0; r < ATTN_DV_LANE; ++r) acc[w][r] = 0.0f;
    }
    for (int c0 = 0; c0 < p.sk; c0 += ATTN_CHUNK) {
      const int n = min(ATTN_CHUNK, p.sk - c0);
      __syncthreads();  // the previous chunk is consumed
      if (vec) {
        const int kg = p.d / V, vg = p.dv / V;
        for (int e = threadIdx.x; e < n * kg; e += blockDim.x) {
          int j = e / kg, t = (e - j * kg) * V;
          float w8[8];
          Wide<T>::ld(kb + (i64)(c0 + j) * p.ks[2] + t, w8);
#pragma unroll
          for (int u = 0; u < V; ++u) kt[(t + u) * KP + j] = w8[u];
        }
        for (int e = threadIdx.x; e < n * vg; e += blockDim.x) {
          int j = e / vg, t = (e - j * vg) * V;
          float w8[8];
          Wide<T>::ld(vb + (i64)(c0 + j) * p.vs[2] + t, w8);
#pragma unroll
          for (int u = 0; u < V; ++u) vs[j * p.dv + t + u] = w8[u];
        }
      } else {
        for (int e = threadIdx.x; e < n * p.d; e += blockDim.x) {
          int j = e / p.d, t = e - j * p.d;
          kt[t * KP + j] = N<T>::ld(kb[(i64)(c0 + j) * p.ks[2] + t * p.ks[3]]);
        }
        for (int e = threadIdx.x; e < n * p.dv; e += blockDim.x) {
          int j = e / p.dv, t = e - j * p.dv;
          vs[j * p.dv + t] = N<T>::ld(vb[(i64)(c0 + j) * p.vs[2] + t * p.vs[3]]);
        }
      }
      __syncthreads();
      if (!live[0]) continue;
      // Lane j scores key c0 + j for each of the warp's rows.
      float dot[ATTN_RPW];
#pragma unroll
      for (int w = 0; w < ATTN_RPW; ++w) dot[w] = 0.0f;
      if (lane < n) {
        const float* qr = qs + warp * ATTN_RPW * p.d;
        for (int t = 0; t < p.d; ++t) {
          float kv = kt[t * KP + lane];
#pragma unroll
          for (int w = 0; w < ATTN_RPW; ++w) dot[w] += qr[w * p.d + t] * kv;
        }
      }
      float alpha[ATTN_RPW];
#pragma unroll
      for (int w = 0; w < ATTN_RPW; ++w) {
        float sc = -3.402823466e38f;
        if (lane < n && live[w]) sc = attn_score<T>(p, mask, dot[w], bb, hh, ri[w], c0 + lane);
        float mn = fmaxf(m[w], warp_max(sc));
        float pj = lane < n ? expf(sc - mn) : 0.0f;
        alpha[w] = expf(m[w] - mn);
        l[w] = l[w] * alpha[w] + warp_sum(pj);
        m[w] = mn;
        ps[(warp * ATTN_RPW + w) * ATTN_CHUNK + lane] = pj;
      }
      __syncwarp();
      const float* pr = ps + warp * ATTN_RPW * ATTN_CHUNK;
#pragma unroll
      for (int r = 0; r < ATTN_DV_LANE; ++r) {
        if (r < per) {
          int t = lane + 32 * r;
          float a[ATTN_RPW];
#pragma unroll
          for (int w = 0; w < ATTN_RPW; ++w) a[w] = acc[w][r] * alpha[w];
          if (t < p.dv) {
            for (int j = 0; j < n; ++j) {
              float vv = vs[j * p.dv + t];
#pragma unroll
              for (int w = 0; w < ATTN_RPW; ++w) a[w] += pr[w * ATTN_CHUNK + j] * vv;
            }
          }
#pragma unroll
          for (int w = 0; w < ATTN_RPW; ++w) acc[w][r] = a[w];
        }
      }
      __syncwarp();
    }
#pragma unroll
    for (int w = 0; w < ATTN_RPW; ++w) {
      if (!live[w]) continue;
      T* yp = y + ((((i64)bb * p.h + hh) * p.sq) + ri[w]) * p.dv;
#pragma unroll
      for (int r = 0; r < ATTN_DV_LANE; ++r) {
        int t = lane + 32 * r;
        if (r < per && t < p.dv) yp[t] = N<T>::st(acc[w][r] / l[w]);
      }
    }
  }
}

// ---- decode attention ----
// One query row per (batch, head) over dense, 16-byte aligned key and value
// rows (a decode step): each warp of the block takes chunks of 32 keys
// (warp w: chunks w, w + 8, ...) with a lane per key, keeps a running max,
// sum and weighted value sum (lane l holds value dims l x VL .. + VL), and
// the warps combine once at the end (shared memory: D + 2 x warps + warps
// x D floats, within attention_t's).
// A 16-bit float type from its bits (unused for float).
template <typename T> __device__ __forceinline__ T bits16(unsigned u) { T t; t.x = (unsigned short)u; return t; }
template <> __device__ __forceinline__ float bits16<float>(unsigned u) { return 0.0f; }
// VL (1 or 2) contiguous elements of T as floats: two 16-bit values in
// one 4-byte load (aligned), else element by element.
template <typename T, int VL>
__device__ __forceinline__ void ld_vl(const T* p, float* o) {
  if (VL == 2 && sizeof(T) == 2) {
    unsigned w = *(const unsigned*)p;
    o[0] = N<T>::ld(bits16<T>(w & 0xffffu));
    o[VL - 1] = N<T>::ld(bits16<T>(w >> 16));
  } else {
#pragma unroll
    for (int e = 0; e < VL; ++e) o[e] = N<T>::ld(p[e]);
  }
}
// The mask entry at element offset `o` (see attn_mask).
template <typename T>
__device__ __forceinline__ float attn_mask_at(const Attn& p, const void* mask, i64 o) {
  if (p.mask_kind == 1) return N<T>::ld(((const T*)mask)[o]);
  if (p.mask_kind == 2) return ((const u8*)mask)[o] != 0 ? 1.0f : 0.0f;
  return 0.0f;
}
template <typename T, int D>
__device__ void attention_dec_d(const Attn& p, const T* q, const T* k, const T* v, const void* mask, T* y) {
  extern __shared__ __align__(16) float sh[];
  const int V = Wide<T>::n, KW = D / Wide<T>::n, VL = D / 32;
  const int nw = blockDim.x >> 5, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* qrow = sh;                 // [D]
  float* wm = qrow + D;             // [nw] running max per warp
  float* wl = wm + nw;              // [nw] running sum per warp
  float* wacc = wl + nw;            // [nw][D]
  const i64 ks2 = p.ks[2], vs2 = p.vs[2], ms3 = p.ms[3];
  for (i64 blk = blockIdx.x; blk < (i64)p.b * p.h; blk += gridDim.x) {
    int hh = (int)(blk % p.h), bb = (int)(blk / p.h);
    int kh = hh / (p.h / p.kvh);
    const T* qp = q + bb * p.qs[0] + hh * p.qs[1];
    const T* kb = k + bb * p.ks[0] + kh * p.ks[1];
    const T* vb = v + bb * p.vs[0] + kh * p.vs[1] + lane * VL;
    const i64 mb = bb * p.ms[0] + hh * p.ms[1];
    // The first chunk's key row and mask entry are in flight before the
    // query row is read.
    W16 kraw[KW];
    int j0 = warp * 32 + lane;
    float mv = 0.0f;
    if (j0 < p.sk) {
      const T* kr = kb + j0 * ks2;
#pragma unroll
      for (int u = 0; u < KW; ++u) kraw[u] = *(const W16*)(kr + u * V);
      mv = attn_mask_at<T>(p, mask, mb + j0 * ms3);
    }
    for (int t = threadIdx.x; t < D; t += blockDim.x) qrow[t] = N<T>::ld(qp[t * p.qs[3]]);
    __syncthreads();
    float m = -3.402823466e38f, l = 0.0f, acc[VL];
#pragma unroll
    for (int e = 0; e < VL; ++e) acc[e] = 0.0f;
    for (int c0 = warp * 32; c0 < p.sk; c0 += nw * 32) {
      int j = c0 + lane;
      bool live = j < p.sk;
      if (live && c0 != warp * 32) {
        const T* kr = kb + j * ks2;
#pragma unroll
        for (int u = 0; u < KW; ++u) kraw[u] = *(const W16*)(kr + u * V);
        mv = attn_mask_at<T>(p, mask, mb + j * ms3);
      }
      int n = min(32, p.sk - c0);
      const T* vp = vb + c0 * vs2;
      // The first half's value slices are in flight while the dot products run.
      float vv[16][VL];
#pragma unroll
      for (int jj = 0; jj < 16; ++jj) {
        if (jj < n) ld_vl<T, VL>(vp, vv[jj]);
        vp += vs2;
      }
      float dot = 0.0f;
#pragma unroll
      for (int u = 0; u < KW; ++u) {
        float w[8];
        Wide<T>::cvt(kraw[u], w);
#pragma unroll
        for (int e = 0; e < V; e += 4) {
          float4 qv = *(const float4*)(qrow + u * V + e);
          dot += qv.x * w[e] + qv.y * w[e + 1] + qv.z * w[e + 2] + qv.w * w[e + 3];
        }
      }
      float sc = live ? attn_scored(p, dot, mv, 0, j) : -3.402823466e38f;
      float mn = fmaxf(m, warp_max(sc));
      float pj = live ? expf(sc - mn) : 0.0f;
      float alpha = expf(m - mn);
      l = l * alpha + warp_sum(pj);
      m = mn;
#pragma unroll
      for (int e = 0; e < VL; ++e) acc[e] *= alpha;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        if (half == 1) {
#pragma unroll
          for (int jj = 0; jj < 16; ++jj) {
            if (16 + jj < n) ld_vl<T, VL>(vp, vv[jj]);
            vp += vs2;
          }
        }
#pragma unroll
        for (int jj = 0; jj < 16; ++jj) {
          float pv = __shfl_sync(0xffffffffu, pj, half * 16 + jj);
          if (half * 16 + jj < n) {
#pragma unroll
            for (int e = 0; e < VL; ++e) acc[e] += pv * vv[jj][e];
          }
        }
      }
    }
#pragma unroll
    for (int e = 0; e < VL; ++e) wacc[warp * D + lane * VL + e] = acc[e];
    if (lane == 0) {
      wm[warp] = m;
      wl[warp] = l;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < D; t += blockDim.x) {
      float mx = -3.402823466e38f;
      for (int w = 0; w < nw; ++w)
        if (wl[w] > 0.0f) mx = fmaxf(mx, wm[w]);
      float num = 0.0f, den = 0.0f;
      for (int w = 0; w < nw; ++w) {
        if (wl[w] > 0.0f) {
          float f = expf(wm[w] - mx);
          num += wacc[w * D + t] * f;
          den += wl[w] * f;
        }
      }
      y[((i64)bb * p.h + hh) * D + t] = N<T>::st(num / den);
    }
    __syncthreads();
  }
}
template <typename T>
__device__ __noinline__ void attention_any(Attn p, const T* q, const T* k, const T* v, const void* mask, T* y) {
  attention_t<T>(p, q, k, v, mask, y);
}
// Decode attention for head dim D (keys and values); the planner takes it
// for dense rows only, any other input falls back to attention_t.
template <typename T, int D>
__device__ void attention_dec_t(Attn p, const T* q, const T* k, const T* v, const void* mask, T* y) {
  if (p.sq == 1 && p.d == D && p.dv == D && attn_dense<T>(p, k, v) && (blockDim.x & 31) == 0)
    attention_dec_d<T, D>(p, q, k, v, mask, y);
  else
    attention_any<T>(p, q, k, v, mask, y);
}
