// Kernel source, part 6 of 6 (see kernels.rs): the extern "C" kernels.
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

#define BYSIZE(X) X(1, u8) X(2, unsigned short) X(4, unsigned) X(8, u64) X(16, uint4)
#define SIZED(s, E) \
  extern "C" __global__ void select_##s(Idx p, const u8* c, const E* a, const E* b, E* y) { pdl_enter(); select_t<E>(p, c, a, b, y); } \
  extern "C" __global__ void copy_##s(Idx p, const E* x, E* y) { pdl_enter(); copy_t<E>(p, x, y); } \
  extern "C" __global__ void copy_pair_##s(Idx p, const E* x, E* y, Idx p2, const E* x2, E* y2) { pdl_enter(); copy_pair_t<E>(p, x, y, p2, x2, y2); } \
  extern "C" __global__ void write_rows_##s(Idx p, const E* x, E* y, Idx p2, const E* x2, E* y2, const i64* st, i64 l, i64 r) { pdl_enter(); write_rows_t<E>(p, x, y, p2, x2, y2, st, l, r); } \
  extern "C" __global__ void gather_##s##_i64(i64 o, i64 ni, i64 al, i64 in, const E* x, const i64* idx, E* y, int* err) { pdl_enter(); gather_t<E, i64>(o, ni, al, in, x, idx, y, err); } \
  extern "C" __global__ void gather_##s##_i32(i64 o, i64 ni, i64 al, i64 in, const E* x, const int* idx, E* y, int* err) { pdl_enter(); gather_t<E, int>(o, ni, al, in, x, idx, y, err); }
BYSIZE(SIZED)

// gemv_2b: the plain gemv capped at 128 registers (two blocks of 256
// threads per multiprocessor, a few bytes spilled); the launcher takes it
// for grids of more than one block per multiprocessor (kernels.rs).
#define FLOAT_KERNELS(n, T) \
  extern "C" __global__ void conv_##n(i64 nb, i64 ci, i64 co, i64 g, i64 h, i64 w, i64 oh, i64 ow, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw, const T* x, const T* wt, const T* b, T* y) { pdl_enter(); conv_t<T>(nb, ci, co, g, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, x, wt, b, y); } \
  extern "C" __global__ void layer_norm_##n(i64 r, int w, const T* x, const T* s, const T* b, float e, T* y) { pdl_enter(); layer_norm_t<T>(r, w, x, s, b, e, y); } \
  extern "C" __global__ void rms_norm_##n(i64 r, int w, const T* x, const T* s, float e, T* y) { pdl_enter(); rms_norm_t<T>(r, w, x, s, e, y); } \
  extern "C" __global__ void unary_binary_##n(int u, int o, i64 c, const T* a, const T* b, T* y) { pdl_enter(); unary_binary_t<T>(u, o, c, a, b, y); } \
  extern "C" __global__ void unary_binary_s_##n(int u, int o, Idx p, int vec, const T* a, const T* b, T* y) { pdl_enter(); unary_binary_s_t<T>(u, o, p, vec, a, b, y); } \
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
  extern "C" __global__ void rotary2_write_##n(Idx p, const T* x, T* y, i64 xl, Idx p2, const T* x2, T* y2, i64 xl2, const T* c, const T* s, int d, int r, int inter, Idx p3, const T* x3, T* y3, const i64* st, i64 l, i64 rw) { pdl_enter(); rotary2_write_t<T>(p, x, y, xl, p2, x2, y2, xl2, c, s, d, r, inter, p3, x3, y3, st, l, rw); } \
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
