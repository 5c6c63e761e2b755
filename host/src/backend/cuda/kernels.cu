// Kernels of the CUDA backend, compiled at run time by NVRTC (see kernels.rs).
// No CUDA headers are included, so NVRTC needs no include path: half and
// bfloat16 values are stored as 16-bit words and converted with PTX `cvt`
// (f16) or bit arithmetic with round-to-nearest-even (bf16).
// Float math accumulates in f32 whatever the storage type; integer math in i64.
// Op codes are the order of the Rust enums UnaryOp, BinaryOp, CompareOp,
// ReduceOp (see kernels.rs, which checks the names it loads exist).

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned char u8;
struct h16 { unsigned short x; };
struct b16 { unsigned short x; };

__device__ __forceinline__ float h2f(unsigned short h) {
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short f2h(float f) {
  unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ float b2f(unsigned short b) {
  return __uint_as_float(((unsigned)b) << 16);
}
__device__ __forceinline__ unsigned short f2b(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

// Load/store between storage types and the accumulation type A.
template <typename T> struct N;
template <> struct N<float> {
  typedef float A;
  static __device__ __forceinline__ float ld(float v) { return v; }
  static __device__ __forceinline__ float st(float a) { return a; }
};
template <> struct N<h16> {
  typedef float A;
  static __device__ __forceinline__ float ld(h16 v) { return h2f(v.x); }
  static __device__ __forceinline__ h16 st(float a) { h16 r; r.x = f2h(a); return r; }
};
template <> struct N<b16> {
  typedef float A;
  static __device__ __forceinline__ float ld(b16 v) { return b2f(v.x); }
  static __device__ __forceinline__ b16 st(float a) { b16 r; r.x = f2b(a); return r; }
};
template <> struct N<i64> {
  typedef i64 A;
  static __device__ __forceinline__ i64 ld(i64 v) { return v; }
  static __device__ __forceinline__ i64 st(i64 a) { return a; }
};
template <> struct N<int> {
  typedef i64 A;
  static __device__ __forceinline__ i64 ld(int v) { return v; }
  static __device__ __forceinline__ int st(i64 a) { return (int)a; }
};
template <> struct N<u8> {
  typedef i64 A;
  static __device__ __forceinline__ i64 ld(u8 v) { return v; }
  static __device__ __forceinline__ u8 st(i64 a) { return (u8)a; }
};

// Programmatic dependent launch (sm_90 and later): a kernel launched with
// programmatic stream serialization may be scheduled before the previous
// kernel has finished. Every kernel first waits for the previous one's
// results (a no-op when launched normally) and then lets the next one be
// scheduled, so launch latency overlaps the previous kernel's tail.
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#define MAXR 8
// Shape of an iteration space and up to three operands' element strides.
struct Idx {
  int rank;
  i64 n;
  i64 shape[MAXR];
  i64 s0[MAXR];
  i64 s1[MAXR];
  i64 s2[MAXR];
};

__device__ __forceinline__ void offsets(const Idx& p, i64 i, i64& o0, i64& o1, i64& o2) {
  o0 = 0; o1 = 0; o2 = 0;
  for (int d = p.rank - 1; d >= 0; --d) {
    i64 c = i % p.shape[d];
    i /= p.shape[d];
    o0 += c * p.s0[d]; o1 += c * p.s1[d]; o2 += c * p.s2[d];
  }
}

#define GRID_LOOP(i, n) \
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// ---- unary ----
__device__ __forceinline__ float un_f(int op, float x) {
  switch (op) {
    case 0: return -x;
    case 1: return fabsf(x);
    case 2: return expf(x);
    case 3: return logf(x);
    case 4: return sqrtf(x);
    case 5: return 1.0f / sqrtf(x);
    case 6: return 1.0f / x;
    case 7: return tanhf(x);
    case 8: return 1.0f / (1.0f + expf(-x));
    case 9: return x > 0.0f ? x : 0.0f;
    case 10: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case 11: {
      float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + tanhf(inner));
    }
    case 12: return x / (1.0f + expf(-x));
    case 13: return erff(x);
    case 15: return sinf(x);
    case 16: return cosf(x);
    default: return x;
  }
}
__device__ __forceinline__ i64 un_i(int op, i64 x) {
  switch (op) {
    case 0: return -x;
    case 1: return x < 0 ? -x : x;
    case 9: return x > 0 ? x : 0;
    default: return x;
  }
}
__device__ __forceinline__ float un(int op, float x) { return un_f(op, x); }
__device__ __forceinline__ i64 un(int op, i64 x) { return un_i(op, x); }

template <typename T>
__device__ void unary_t(int op, i64 n, const T* x, T* y) {
  GRID_LOOP(i, n) { y[i] = N<T>::st(un(op, N<T>::ld(x[i]))); }
}

// ---- binary / compare / and / select over broadcast strides ----
__device__ __forceinline__ float bin(int op, float a, float b) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return powf(a, b);
    case 5: return fmaxf(a, b);
    case 6: return fminf(a, b);
    default: return a;
  }
}
__device__ __forceinline__ i64 bin(int op, i64 a, i64 b) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return b == 0 ? 0 : a / b;
    case 4: return (i64)pow((double)a, (double)b);
    case 5: return a > b ? a : b;
    case 6: return a < b ? a : b;
    default: return a;
  }
}
template <typename A>
__device__ __forceinline__ bool cmp(int op, A a, A b) {
  switch (op) {
    case 0: return a == b;
    case 1: return a < b;
    case 2: return a <= b;
    case 3: return a > b;
    case 4: return a >= b;
    default: return false;
  }
}

template <typename T>
__device__ void binary_t(int op, Idx p, const T* a, const T* b, T* y) {
  GRID_LOOP(i, p.n) {
    i64 oa, ob, oy; offsets(p, i, oa, ob, oy);
    y[oy] = N<T>::st(bin(op, N<T>::ld(a[oa]), N<T>::ld(b[ob])));
  }
}
// bop(uop(a), b) over dense same-shape operands; uop's result is rounded to
// T as the unfused kernel would store it.
template <typename T>
__device__ void unary_binary_t(int uop, int bop, i64 n, const T* a, const T* b, T* y) {
  GRID_LOOP(i, n) {
    float u = N<T>::ld(N<T>::st(un(uop, N<T>::ld(a[i]))));
    y[i] = N<T>::st(bin(bop, u, N<T>::ld(b[i])));
  }
}
// The same over strided operands (s0 = a, s1 = b); y dense.
template <typename T>
__device__ void unary_binary_s_t(int uop, int bop, Idx p, const T* a, const T* b, T* y) {
  GRID_LOOP(i, p.n) {
    i64 oa, ob, unused; offsets(p, i, oa, ob, unused);
    float u = N<T>::ld(N<T>::st(un(uop, N<T>::ld(a[oa]))));
    y[i] = N<T>::st(bin(bop, u, N<T>::ld(b[ob])));
  }
}
// A unary op over a strided operand (s0 = x); y dense.
template <typename T>
__device__ void unary_s_t(int op, Idx p, const T* x, T* y) {
  GRID_LOOP(i, p.n) {
    i64 ox, u1, u2; offsets(p, i, ox, u1, u2);
    y[i] = N<T>::st(un(op, N<T>::ld(x[ox])));
  }
}
template <typename T>
__device__ void compare_t(int op, Idx p, const T* a, const T* b, u8* y) {
  GRID_LOOP(i, p.n) {
    i64 oa, ob, oy; offsets(p, i, oa, ob, oy);
    y[oy] = cmp(op, N<T>::ld(a[oa]), N<T>::ld(b[ob])) ? 1 : 0;
  }
}
extern "C" __global__ void and_bool(Idx p, const u8* a, const u8* b, u8* y) {
  pdl_enter();
  GRID_LOOP(i, p.n) {
    i64 oa, ob, oy; offsets(p, i, oa, ob, oy);
    y[oy] = (a[oa] && b[ob]) ? 1 : 0;
  }
}
extern "C" __global__ void not_bool(i64 n, const u8* x, u8* y) {
  pdl_enter();
  GRID_LOOP(i, n) { y[i] = x[i] ? 0 : 1; }
}
// s0 = cond, s1 = a, s2 = b; y contiguous.
template <typename E>
__device__ void select_t(Idx p, const u8* c, const E* a, const E* b, E* y) {
  GRID_LOOP(i, p.n) {
    i64 oc, oa, ob; offsets(p, i, oc, oa, ob);
    y[i] = c[oc] ? a[oa] : b[ob];
  }
}
// s0 = source strides, s1 = destination strides.
template <typename E>
__device__ void copy_t(Idx p, const E* x, E* y) {
  GRID_LOOP(i, p.n) {
    i64 ox, oy, unused; offsets(p, i, ox, oy, unused);
    y[oy] = x[ox];
  }
}

// Element i of a copy: s0 = source strides, s1 = destination strides.
template <typename E>
__device__ __forceinline__ void copy_at(const Idx& p, i64 i, const E* x, E* y) {
  i64 ox, oy, unused; offsets(p, i, ox, oy, unused);
  y[oy] = x[ox];
}
// Two independent copies in one launch (a step's new keys and values into
// their caches).
template <typename E>
__device__ void copy_pair_t(Idx p, const E* x, E* y, Idx p2, const E* x2, E* y2) {
  GRID_LOOP(i, p.n + p2.n) {
    if (i < p.n) copy_at(p, i, x, y);
    else copy_at(p2, i - p.n, x2, y2);
  }
}

// Rotary embedding; y contiguous [..., d]. s0 = x, s1 = cos, s2 = sin
// strides over x's shape (cos/sin only read for the first r elements of a
// row); `xl` is x's last-axis stride (to reach the partner element).
template <typename T>
__device__ __forceinline__ void rotary_at(const Idx& p, i64 i, const T* x, const T* c, const T* s, T* y,
                                          int d, int r, i64 xl, int inter) {
  i64 ox, oc, os; offsets(p, i, ox, oc, os);
  int j = (int)(i % d);
  float v = N<T>::ld(x[ox]);
  if (j < r) {
    float other;
    if (inter) other = (j & 1) ? N<T>::ld(x[ox - xl]) : -N<T>::ld(x[ox + xl]);
    else other = j < r / 2 ? -N<T>::ld(x[ox + (r / 2) * xl]) : N<T>::ld(x[ox - (r / 2) * xl]);
    v = v * N<T>::ld(c[oc]) + other * N<T>::ld(s[os]);
  }
  y[i] = N<T>::st(v);
}
template <typename T>
__device__ void rotary_t(Idx p, const T* x, const T* c, const T* s, T* y, int d, int r, i64 xl, int inter) {
  GRID_LOOP(i, p.n) rotary_at(p, i, x, c, s, y, d, r, xl, inter);
}
// Two rotary embeddings with the same tables in one launch (queries and keys).
template <typename T>
__device__ void rotary2_t(Idx p, const T* x, T* y, i64 xl, Idx p2, const T* x2, T* y2, i64 xl2,
                          const T* c, const T* s, int d, int r, int inter) {
  GRID_LOOP(i, p.n + p2.n) {
    if (i < p.n) rotary_at(p, i, x, c, s, y, d, r, xl, inter);
    else rotary_at(p2, i - p.n, x2, c, s, y2, d, r, xl2, inter);
  }
}
// rotary2 and an independent copy (the step's new values into their cache).
template <typename T>
__device__ void rotary2_copy_t(Idx p, const T* x, T* y, i64 xl, Idx p2, const T* x2, T* y2, i64 xl2,
                               const T* c, const T* s, int d, int r, int inter, Idx p3, const T* x3, T* y3) {
  GRID_LOOP(i, p.n + p2.n + p3.n) {
    if (i < p.n) rotary_at(p, i, x, c, s, y, d, r, xl, inter);
    else if (i < p.n + p2.n) rotary_at(p2, i - p.n, x2, c, s, y2, d, r, xl2, inter);
    else copy_at(p3, i - p.n - p2.n, x3, y3);
  }
}

// ---- casts ----
template <typename T> __device__ __forceinline__ double to_d(T v) { return (double)N<T>::ld(v); }
template <typename T> __device__ __forceinline__ T from_d(double v);
template <> __device__ __forceinline__ float from_d<float>(double v) { return (float)v; }
template <> __device__ __forceinline__ h16 from_d<h16>(double v) { return N<h16>::st((float)v); }
template <> __device__ __forceinline__ b16 from_d<b16>(double v) { return N<b16>::st((float)v); }
template <> __device__ __forceinline__ i64 from_d<i64>(double v) { return (i64)v; }
template <> __device__ __forceinline__ int from_d<int>(double v) { return (int)v; }
template <> __device__ __forceinline__ u8 from_d<u8>(double v) { return (u8)(int)v; }
template <typename S, typename D>
__device__ void cast_t(i64 n, const S* x, D* y) {
  GRID_LOOP(i, n) { y[i] = from_d<D>(to_d<S>(x[i])); }
}
template <typename S>
__device__ void cast_bool_t(i64 n, const S* x, u8* y) {
  GRID_LOOP(i, n) { y[i] = to_d<S>(x[i]) != 0.0 ? 1 : 0; }
}
// Integer to integer keeps all 64 bits.
template <typename S, typename D>
__device__ void cast_int_t(i64 n, const S* x, D* y) {
  GRID_LOOP(i, n) { y[i] = (D)(i64)x[i]; }
}

// ---- block reductions ----
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum (kind 0) or max (kind 1) over the block; every thread gets the result.
__device__ float block_reduce(float v, int kind) {
  __shared__ float part[32];
  __shared__ float result;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = kind ? warp_max(v) : warp_sum(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int nw = (blockDim.x + 31) >> 5;
    float w = lane < nw ? part[lane] : (kind ? -3.402823466e38f : 0.0f);
    w = kind ? warp_max(w) : warp_sum(w);
    if (lane == 0) result = w;
  }
  __syncthreads();
  return result;
}

// ---- 16-byte loads (attention, matrix-vector products) ----
struct __align__(16) W16 { unsigned a, b, c, d; };
// 16 bytes of read-only data streamed past L1 (weights read once per step).
__device__ __forceinline__ W16 ld_stream(const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  W16 w;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(w.a), "=r"(w.b), "=r"(w.c), "=r"(w.d) : "l"(p));
  return w;
#else
  return *(const W16*)p;
#endif
}
// 16 bytes of T widened to floats.
template <typename T> struct Wide;
template <> struct Wide<float> {
  enum { n = 4 };
  static __device__ __forceinline__ void cvt(W16 w, float* o) {
    o[0] = __uint_as_float(w.a); o[1] = __uint_as_float(w.b);
    o[2] = __uint_as_float(w.c); o[3] = __uint_as_float(w.d);
  }
  static __device__ __forceinline__ void ld(const float* p, float* o) { cvt(*(const W16*)p, o); }
};
template <> struct Wide<h16> {
  enum { n = 8 };
  static __device__ __forceinline__ void cvt(W16 w, float* o) {
    unsigned u[4] = {w.a, w.b, w.c, w.d};
    for (int i = 0; i < 4; ++i) { o[2 * i] = h2f(u[i] & 0xffffu); o[2 * i + 1] = h2f(u[i] >> 16); }
  }
  static __device__ __forceinline__ void ld(const h16* p, float* o) { cvt(*(const W16*)p, o); }
};
template <> struct Wide<b16> {
  enum { n = 8 };
  static __device__ __forceinline__ void cvt(W16 w, float* o) {
    unsigned u[4] = {w.a, w.b, w.c, w.d};
    for (int i = 0; i < 4; ++i) { o[2 * i] = b2f(u[i] & 0xffffu); o[2 * i + 1] = b2f(u[i] >> 16); }
  }
  static __device__ __forceinline__ void ld(const b16* p, float* o) { cvt(*(const W16*)p, o); }
};
// 16 bytes of T from floats, each rounded to T.
template <typename T> __device__ __forceinline__ W16 pack16(const float* f);
template <> __device__ __forceinline__ W16 pack16<float>(const float* f) {
  return W16{__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3])};
}
template <> __device__ __forceinline__ W16 pack16<h16>(const float* f) {
  unsigned u[4];
  for (int i = 0; i < 4; ++i) u[i] = (unsigned)f2h(f[2 * i]) | ((unsigned)f2h(f[2 * i + 1]) << 16);
  return W16{u[0], u[1], u[2], u[3]};
}
template <> __device__ __forceinline__ W16 pack16<b16>(const float* f) {
  unsigned u[4];
  for (int i = 0; i < 4; ++i) u[i] = (unsigned)f2b(f[2 * i]) | ((unsigned)f2b(f[2 * i + 1]) << 16);
  return W16{u[0], u[1], u[2], u[3]};
}

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
    float acc = op == 2 ? -3.402823466e38f : (op == 3 ? 3.402823466e38f : 0.0f);
    for (i64 c = threadIdx.x; c < len; c += blockDim.x) {
      float v = N<T>::ld(xr[c]);
      acc = op == 2 ? fmaxf(acc, v) : (op == 3 ? fminf(acc, v) : acc + v);
    }
    float out;
    if (op == 3) out = -block_reduce(-acc, 1);
    else if (op == 2) out = block_reduce(acc, 1);
    else out = block_reduce(acc, 0);
    if (op == 1) out /= (float)len;
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
      acc = op == 2 ? (v > acc ? v : acc) : (op == 3 ? (v < acc ? v : acc) : acc + v);
    }
    if (op == 1) acc /= len;
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
// VL contiguous elements of T as floats (VL x sizeof(T) bytes aligned).
template <typename T, int VL>
__device__ __forceinline__ void ld_vl(const T* p, float* o) {
  if (VL * sizeof(T) == 16) {
    float w[8];
    Wide<T>::ld(p, w);
#pragma unroll
    for (int e = 0; e < VL; ++e) o[e] = w[e];
  } else if (VL * sizeof(T) == 8 && sizeof(T) == 2) {
    uint2 w = *(const uint2*)p;
    unsigned u[2] = {w.x, w.y};
#pragma unroll
    for (int e = 0; e < VL; ++e) o[e] = N<T>::ld(bits16<T>((u[e >> 1] >> (16 * (e & 1))) & 0xffffu));
  } else if (VL * sizeof(T) == 4 && sizeof(T) == 2) {
    unsigned w = *(const unsigned*)p;
#pragma unroll
    for (int e = 0; e < VL; ++e) o[e] = N<T>::ld(bits16<T>((w >> (16 * (e & 1))) & 0xffffu));
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
__device__ __forceinline__ void mma16816(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1);
template <>
__device__ __forceinline__ void mma16816<h16>(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                              unsigned b0, unsigned b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}
template <>
__device__ __forceinline__ void mma16816<b16>(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                              unsigned b0, unsigned b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}
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

// ---- instantiations: extern "C" names `<kernel>_<dtype>` ----
#define FLOATS(X) X(f32, float) X(f16, h16) X(bf16, b16)
#define INTS(X) X(i64, i64) X(i32, int) X(u8, u8)
#define NUMS(X) FLOATS(X) INTS(X)

#define UNARY(n, T) extern "C" __global__ void unary_##n(int op, i64 c, const T* x, T* y) { pdl_enter(); unary_t<T>(op, c, x, y); }
NUMS(UNARY)
#define BINARY(n, T) \
  extern "C" __global__ void binary_##n(int op, Idx p, const T* a, const T* b, T* y) { pdl_enter(); binary_t<T>(op, p, a, b, y); } \
  extern "C" __global__ void compare_##n(int op, Idx p, const T* a, const T* b, u8* y) { pdl_enter(); compare_t<T>(op, p, a, b, y); }
NUMS(BINARY)
extern "C" __global__ void compare_bool(int op, Idx p, const u8* a, const u8* b, u8* y) { pdl_enter(); compare_t<u8>(op, p, a, b, y); }

#define BYSIZE(X) X(1, u8) X(2, unsigned short) X(4, unsigned) X(8, u64)
#define SIZED(s, E) \
  extern "C" __global__ void select_##s(Idx p, const u8* c, const E* a, const E* b, E* y) { pdl_enter(); select_t<E>(p, c, a, b, y); } \
  extern "C" __global__ void copy_##s(Idx p, const E* x, E* y) { pdl_enter(); copy_t<E>(p, x, y); } \
  extern "C" __global__ void copy_pair_##s(Idx p, const E* x, E* y, Idx p2, const E* x2, E* y2) { pdl_enter(); copy_pair_t<E>(p, x, y, p2, x2, y2); } \
  extern "C" __global__ void gather_##s##_i64(i64 o, i64 ni, i64 al, i64 in, const E* x, const i64* idx, E* y, int* err) { pdl_enter(); gather_t<E, i64>(o, ni, al, in, x, idx, y, err); } \
  extern "C" __global__ void gather_##s##_i32(i64 o, i64 ni, i64 al, i64 in, const E* x, const int* idx, E* y, int* err) { pdl_enter(); gather_t<E, int>(o, ni, al, in, x, idx, y, err); }
BYSIZE(SIZED)

// gemv_2b: the plain gemv capped at 128 registers (two blocks of 256
// threads per multiprocessor, a few bytes spilled); the launcher takes it
// for grids of more than one block per multiprocessor (kernels.rs).
#define FLOAT_KERNELS(n, T) \
  extern "C" __global__ void layer_norm_##n(i64 r, int w, const T* x, const T* s, const T* b, float e, T* y) { pdl_enter(); layer_norm_t<T>(r, w, x, s, b, e, y); } \
  extern "C" __global__ void rms_norm_##n(i64 r, int w, const T* x, const T* s, float e, T* y) { pdl_enter(); rms_norm_t<T>(r, w, x, s, e, y); } \
  extern "C" __global__ void unary_binary_##n(int u, int o, i64 c, const T* a, const T* b, T* y) { pdl_enter(); unary_binary_t<T>(u, o, c, a, b, y); } \
  extern "C" __global__ void unary_binary_s_##n(int u, int o, Idx p, const T* a, const T* b, T* y) { pdl_enter(); unary_binary_s_t<T>(u, o, p, a, b, y); } \
  extern "C" __global__ void unary_s_##n(int u, Idx p, const T* x, T* y) { pdl_enter(); unary_s_t<T>(u, p, x, y); } \
  extern "C" __global__ void add_norm_##n(int k, i64 r, int w, const T* a, const T* b, T* s, const T* sc, const T* bi, float e, T* y, const T* pre) { pdl_enter(); add_norm_t<T>(k, r, w, a, b, s, sc, bi, e, y, pre); } \
  extern "C" __global__ void gemv_##n(int m, int nn, int k, const T* x, const T* w, const T* b, T* y, int a, GEMV_NORM_PARAMS(T)) { pdl_enter(); gemv_t<T, false>(m, nn, k, x, w, b, y, a, GEMV_NORM_ARGS); } \
  extern "C" __global__ void __launch_bounds__(256, 2) gemv_2b_##n(int m, int nn, int k, const T* x, const T* w, const T* b, T* y, int a, GEMV_NORM_PARAMS(T)) { pdl_enter(); gemv_t<T, false>(m, nn, k, x, w, b, y, a, GEMV_NORM_ARGS); } \
  extern "C" __global__ void gemv_glu_##n(int m, int h, int k, const T* x, const T* w, const T* b, T* y, int a, int o, GEMV_NORM_PARAMS(T)) { pdl_enter(); gemv_glu_t<T, false>(m, h, k, x, w, b, y, a, o, GEMV_NORM_ARGS); } \
  extern "C" __global__ void __launch_bounds__(256, 3) gemv_norm_##n(int m, int nn, int k, const T* x, const T* w, const T* b, T* y, int a, GEMV_NORM_PARAMS(T)) { pdl_enter(); gemv_t<T, true>(m, nn, k, x, w, b, y, a, GEMV_NORM_ARGS); } \
  extern "C" __global__ void __launch_bounds__(256, 3) gemv_glu_norm_##n(int m, int h, int k, const T* x, const T* w, const T* b, T* y, int a, int o, GEMV_NORM_PARAMS(T)) { pdl_enter(); gemv_glu_t<T, true>(m, h, k, x, w, b, y, a, o, GEMV_NORM_ARGS); } \
  extern "C" __global__ void rotary_##n(Idx p, const T* x, const T* c, const T* s, T* y, int d, int r, i64 xl, int inter) { pdl_enter(); rotary_t<T>(p, x, c, s, y, d, r, xl, inter); } \
  extern "C" __global__ void rotary2_##n(Idx p, const T* x, T* y, i64 xl, Idx p2, const T* x2, T* y2, i64 xl2, const T* c, const T* s, int d, int r, int inter) { pdl_enter(); rotary2_t<T>(p, x, y, xl, p2, x2, y2, xl2, c, s, d, r, inter); } \
  extern "C" __global__ void rotary2_copy_##n(Idx p, const T* x, T* y, i64 xl, Idx p2, const T* x2, T* y2, i64 xl2, const T* c, const T* s, int d, int r, int inter, Idx p3, const T* x3, T* y3) { pdl_enter(); rotary2_copy_t<T>(p, x, y, xl, p2, x2, y2, xl2, c, s, d, r, inter, p3, x3, y3); } \
  extern "C" __global__ void softmax_##n(i64 o, int l, i64 in, const T* x, T* y) { pdl_enter(); softmax_t<T>(o, l, in, x, y); } \
  extern "C" __global__ void l2_norm_##n(i64 o, int l, i64 in, float e, const T* x, T* y) { pdl_enter(); l2_norm_t<T>(o, l, in, e, x, y); } \
  extern "C" __global__ void reduce_##n(int op, i64 r, i64 l, const T* x, T* y) { pdl_enter(); reduce_float_t<T>(op, r, l, x, y); } \
  extern "C" __global__ void bias_add_##n(i64 r, i64 c, T* y, const T* b, int a) { pdl_enter(); bias_add_t<T>(r, c, y, b, a); } \
  extern "C" __global__ void attention_##n(Attn p, const T* q, const T* k, const T* v, const void* m, T* y) { pdl_enter(); attention_t<T>(p, q, k, v, m, y); } \
  extern "C" __global__ void __launch_bounds__(256, 2) attention_dec32_##n(Attn p, const T* q, const T* k, const T* v, const void* m, T* y) { pdl_enter(); attention_dec_t<T, 32>(p, q, k, v, m, y); } \
  extern "C" __global__ void __launch_bounds__(256, 2) attention_dec64_##n(Attn p, const T* q, const T* k, const T* v, const void* m, T* y) { pdl_enter(); attention_dec_t<T, 64>(p, q, k, v, m, y); } \
  extern "C" __global__ void attention_rows_##n(Attn p, const T* q, const T* k, const T* v, const void* m, T* y) { pdl_enter(); attention_rows_t<T>(p, q, k, v, m, y); }
FLOATS(FLOAT_KERNELS)
#define INT_KERNELS(n, T) \
  extern "C" __global__ void reduce_##n(int op, i64 r, i64 l, const T* x, T* y) { pdl_enter(); reduce_int_t<T>(op, r, l, x, y); }
INTS(INT_KERNELS)
#define ARG_KERNELS(n, T) \
  extern "C" __global__ void argmax_##n(i64 o, i64 l, i64 in, const T* x, i64* y) { pdl_enter(); argmax_t<T>(o, l, in, x, y); } \
  extern "C" __global__ void top_k_partial_##n(i64 r, i64 l, int k, int c, const T* x, float* cv, i64* ci) { pdl_enter(); top_k_partial_t<T>(r, l, k, c, x, cv, ci); } \
  extern "C" __global__ void top_k_merge_##n(i64 r, i64 m, int k, const float* cv, const i64* ci, const T* x, i64 l, T* v, i64* i) { pdl_enter(); top_k_merge_t<T>(r, m, k, cv, ci, x, l, v, i); }
NUMS(ARG_KERNELS)

// Casts: every numeric pair, to bool from every numeric type; bool reads as u8.
#define CAST_TO(sn, S) \
  extern "C" __global__ void cast_##sn##_f32(i64 n, const S* x, float* y) { pdl_enter(); cast_t<S, float>(n, x, y); } \
  extern "C" __global__ void cast_##sn##_f16(i64 n, const S* x, h16* y) { pdl_enter(); cast_t<S, h16>(n, x, y); } \
  extern "C" __global__ void cast_##sn##_bf16(i64 n, const S* x, b16* y) { pdl_enter(); cast_t<S, b16>(n, x, y); } \
  extern "C" __global__ void cast_##sn##_bool(i64 n, const S* x, u8* y) { pdl_enter(); cast_bool_t<S>(n, x, y); }
NUMS(CAST_TO)
#define CAST_FLOAT_TO_INT(sn, S) \
  extern "C" __global__ void cast_##sn##_i64(i64 n, const S* x, i64* y) { pdl_enter(); cast_t<S, i64>(n, x, y); } \
  extern "C" __global__ void cast_##sn##_i32(i64 n, const S* x, int* y) { pdl_enter(); cast_t<S, int>(n, x, y); } \
  extern "C" __global__ void cast_##sn##_u8(i64 n, const S* x, u8* y) { pdl_enter(); cast_t<S, u8>(n, x, y); }
FLOATS(CAST_FLOAT_TO_INT)
#define CAST_INT_TO_INT(sn, S) \
  extern "C" __global__ void cast_##sn##_i64(i64 n, const S* x, i64* y) { pdl_enter(); cast_int_t<S, i64>(n, x, y); } \
  extern "C" __global__ void cast_##sn##_i32(i64 n, const S* x, int* y) { pdl_enter(); cast_int_t<S, int>(n, x, y); } \
  extern "C" __global__ void cast_##sn##_u8(i64 n, const S* x, u8* y) { pdl_enter(); cast_int_t<S, u8>(n, x, y); }
INTS(CAST_INT_TO_INT)

// ---------------------------------------------------------------------------
// Batched copies: one launch moves every input into the arena (and every
// output out of it) instead of one driver call per tensor. Entry y of the
// table is copied by the blocks of grid row y.
struct CopyEntry { u64 src; u64 dst; u64 bytes; };

extern "C" __global__ void copy_many(const CopyEntry* table, int n) {
  pdl_enter();
  int e = blockIdx.y;
  if (e >= n) return;
  CopyEntry c = table[e];
  u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  u64 stride = (u64)gridDim.x * blockDim.x;
  if (((c.src | c.dst | c.bytes) & 15) == 0) {
    const W16* s = (const W16*)c.src;
    W16* d = (W16*)c.dst;
    for (u64 i = t; i < c.bytes / 16; i += stride) d[i] = s[i];
  } else {
    const u8* s = (const u8*)c.src;
    u8* d = (u8*)c.dst;
    for (u64 i = t; i < c.bytes; i += stride) d[i] = s[i];
  }
}
