// Kernels of the CUDA backend, compiled at run time by NVRTC (see kernels.rs),
// part 1 of 6: types, conversions, element-wise ops, casts, block reductions
// and 16-byte loads.
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

// ---- op codes: launch/codes.rs gives the host the same numbers (a test
// checks both sides) ----
#define UN_NEG 0
#define UN_ABS 1
#define UN_EXP 2
#define UN_LOG 3
#define UN_SQRT 4
#define UN_RSQRT 5
#define UN_RECIPROCAL 6
#define UN_TANH 7
#define UN_SIGMOID 8
#define UN_RELU 9
#define UN_GELU 10
#define UN_GELU_TANH 11
#define UN_SILU 12
#define UN_ERF 13
#define UN_SIN 15
#define UN_COS 16
#define BIN_ADD 0
#define BIN_SUB 1
#define BIN_MUL 2
#define BIN_DIV 3
#define BIN_POW 4
#define BIN_MAX 5
#define BIN_MIN 6
#define CMP_EQ 0
#define CMP_LT 1
#define CMP_LE 2
#define CMP_GT 3
#define CMP_GE 4
#define RED_SUM 0
#define RED_MEAN 1
#define RED_MAX 2
#define RED_MIN 3
// The activation argument of bias_add and the gemv kernels: a UN_* code,
// or ACT_NONE (any negative value) for none.
#define ACT_NONE -1

// ---- unary ----
__device__ __forceinline__ float un_f(int op, float x) {
  switch (op) {
    case UN_NEG: return -x;
    case UN_ABS: return fabsf(x);
    case UN_EXP: return expf(x);
    case UN_LOG: return logf(x);
    case UN_SQRT: return sqrtf(x);
    case UN_RSQRT: return 1.0f / sqrtf(x);
    case UN_RECIPROCAL: return 1.0f / x;
    case UN_TANH: return tanhf(x);
    case UN_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case UN_RELU: return x > 0.0f ? x : 0.0f;
    case UN_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case UN_GELU_TANH: {
      float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + tanhf(inner));
    }
    case UN_SILU: return x / (1.0f + expf(-x));
    case UN_ERF: return erff(x);
    case UN_SIN: return sinf(x);
    case UN_COS: return cosf(x);
    default: return x;
  }
}
__device__ __forceinline__ i64 un_i(int op, i64 x) {
  switch (op) {
    case UN_NEG: return -x;
    case UN_ABS: return x < 0 ? -x : x;
    case UN_RELU: return x > 0 ? x : 0;
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
    case BIN_ADD: return a + b;
    case BIN_SUB: return a - b;
    case BIN_MUL: return a * b;
    case BIN_DIV: return a / b;
    case BIN_POW: return powf(a, b);
    case BIN_MAX: return fmaxf(a, b);
    case BIN_MIN: return fminf(a, b);
    default: return a;
  }
}
__device__ __forceinline__ i64 bin(int op, i64 a, i64 b) {
  switch (op) {
    case BIN_ADD: return a + b;
    case BIN_SUB: return a - b;
    case BIN_MUL: return a * b;
    case BIN_DIV: return b == 0 ? 0 : a / b;
    case BIN_POW: return (i64)pow((double)a, (double)b);
    case BIN_MAX: return a > b ? a : b;
    case BIN_MIN: return a < b ? a : b;
    default: return a;
  }
}
template <typename A>
__device__ __forceinline__ bool cmp(int op, A a, A b) {
  switch (op) {
    case CMP_EQ: return a == b;
    case CMP_LT: return a < b;
    case CMP_LE: return a <= b;
    case CMP_GT: return a > b;
    case CMP_GE: return a >= b;
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
__device__ void unary_binary_s_t(int uop, int bop, Idx p, int vec, const T* a, const T* b, T* y) {
  // `vec`: rows of 16-byte words (a prefill's SwiGLU over slices of a fused
  // gate/up projection), a word per thread (the grid sized for that):
  // 16-byte loads and stores, one division per word.
  const int V = Wide<T>::n;
  if (vec && p.rank == 2 && p.s0[1] == 1 && p.s1[1] == 1 && p.shape[1] % V == 0 && p.s0[0] % V == 0 &&
      p.s1[0] % V == 0 && p.n <= 0x7fffffffLL && (((unsigned long long)a | (unsigned long long)b | (unsigned long long)y) & 15) == 0) {
    const unsigned w = (unsigned)(p.shape[1] / V);
    GRID_LOOP(e, p.n / V) {
      const unsigned r = (unsigned)e / w, c = ((unsigned)e - r * w) * V;
      float fa[8], fb[8], o[8];
      Wide<T>::ld(a + r * p.s0[0] + c, fa);
      Wide<T>::ld(b + r * p.s1[0] + c, fb);
#pragma unroll
      for (int k = 0; k < V; ++k) o[k] = bin(bop, N<T>::ld(N<T>::st(un(uop, fa[k]))), fb[k]);
      *(W16*)(y + (i64)e * V) = pack16<T>(o);
    }
    return;
  }
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

// Rows of a write-rows op: `x` (strides s0) into `y` from row
// clamp(*start, 0, last) on, rows of `row` elements (s1: the update's dense
// strides). A second update (`p2`, `x2`, `y2`: a step's values next to its
// keys) may share the launch and the row index.
__device__ __forceinline__ i64 row_at(const i64* start, i64 last, i64 row) {
  i64 s = *start;
  return (s < 0 ? 0 : (s > last ? last : s)) * row;
}
template <typename E>
__device__ void write_rows_t(Idx p, const E* x, E* y, Idx p2, const E* x2, E* y2,
                             const i64* start, i64 last, i64 row) {
  i64 o = row_at(start, last, row);
  GRID_LOOP(i, p.n + p2.n) {
    if (i < p.n) copy_at(p, i, x, y + o);
    else copy_at(p2, i - p.n, x2, y2 + o);
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
// rotary2 whose second output (a decode step's keys) and a copy (its
// values) go to row clamp(*st, 0, last) of their caches (write-rows).
template <typename T>
__device__ void rotary2_write_t(Idx p, const T* x, T* y, i64 xl, Idx p2, const T* x2, T* y2, i64 xl2,
                                const T* c, const T* s, int d, int r, int inter, Idx p3, const T* x3, T* y3,
                                const i64* st, i64 last, i64 row) {
  i64 o = row_at(st, last, row);
  GRID_LOOP(i, p.n + p2.n + p3.n) {
    if (i < p.n) rotary_at(p, i, x, c, s, y, d, r, xl, inter);
    else if (i < p.n + p2.n) rotary_at(p2, i - p.n, x2, c, s, y2 + o, d, r, xl2, inter);
    else copy_at(p3, i - p.n - p2.n, x3, y3 + o);
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

// ---- tensor cores (sm_80+) ----
// c += a x b for one m16n8k16 tile (f32 accumulators, f16 or bf16 inputs):
// a0..a3 and b0, b1 in the PTX ISA's fragment layout for lane (g, t) =
// (lane / 4, lane % 4): a0 (row g, k 2t..2t+1), a1 (row g+8, same k),
// a2 (row g, k 2t+8..2t+9), a3 (row g+8, same k); b0 (k 2t..2t+1, col g),
// b1 (k 2t+8..2t+9, col g); c (row g, cols 2t, 2t+1), (row g+8, same).
// Any permutation of k applied to both a and b leaves the product alone,
// so callers load 16 bytes per lane and use words (a, b) then (c, d).
template <typename T>
__device__ __forceinline__ void mma16816(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define MMA16816_ASM(ty)                                                                                     \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." ty "." ty ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, " \
               "{%8, %9}, {%0, %1, %2, %3};"                                                                \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                             \
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1))
#else
#define MMA16816_ASM(ty)
#endif
#define MMA16816(T, ty)                                                                                   \
  template <>                                                                                            \
  __device__ __forceinline__ void mma16816<T>(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, \
                                              unsigned b0, unsigned b1) {                                 \
    MMA16816_ASM(ty);                                                                                    \
  }
MMA16816(h16, "f16")
MMA16816(b16, "bf16")
// Two floats rounded to T, packed low then high (an mma operand word).
template <typename T> __device__ __forceinline__ unsigned pack2(float lo, float hi);
template <> __device__ __forceinline__ unsigned pack2<h16>(float lo, float hi) {
  return (unsigned)f2h(lo) | ((unsigned)f2h(hi) << 16);
}
template <> __device__ __forceinline__ unsigned pack2<b16>(float lo, float hi) {
  return (unsigned)f2b(lo) | ((unsigned)f2b(hi) << 16);
}
// Four 8x8 matrices of 16-bit elements from shared memory, transposed:
// lanes 8i..8i+7 give the row addresses of matrix i; lane (g, t) receives
// rows 2t and 2t+1 of column g of each (an mma b operand from row-major rows).
__device__ __forceinline__ void ldmatrix_t4(const void* row, unsigned* r) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  unsigned a;
  asm volatile("{ .reg .u64 s; cvta.to.shared.u64 s, %1; cvt.u32.u64 %0, s; }" : "=r"(a) : "l"(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}
