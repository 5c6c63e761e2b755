// Decode-step kernel microbenchmark: the attention and residual-add + norm
// launches of a batch-16 decode step (TinyLlama-like and OPT-125m-like
// shapes), as the host runs them: PDL launches captured in a CUDA graph, one
// launch per layer with each layer's own buffers (the KV caches do not fit
// in L2 together). Compares attention_f16 (a block per query row, a thread
// per key) with attention_dec64_f16 (warps over 32-key chunks, one combine;
// blocks of 256 and 128 threads), add_norm_f16 on 16-byte-aligned rows
// (16-byte path) with the same rows one element off (scalar path), and the
// step's linears (16 rows) through cuBLAS (cublasGemmEx, as the host runs
// them) with gemv_mma_f16. Checks each new kernel against the old one.
// Results: results/ab_cuda_decode_h100.md.
//
// On the GPU machine, from the repository root:
//   nvcc -O3 -arch=sm_90 -std=c++17 -o /tmp/decode_kernels scripts/gpu/decode_kernels.cu -lcublas && /tmp/decode_kernels
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cublas_v2.h>
#include "bench_common.cuh"
static unsigned g_seed = 1;
// Random halves in [-1, 1) (deterministic).
h16* rnd(size_t n) {
  std::vector<unsigned short> h(n);
  for (auto& x : h) {
    g_seed = g_seed * 1664525u + 1013904223u;
    float f = ((g_seed >> 9) & 0xffff) / 32768.0f - 1.0f;
    __half_raw r = __float2half_rn(f); x = r.x;
  }
  h16* p; CK(cudaMalloc(&p, n * 2 + 64)); CK(cudaMemcpy(p, h.data(), n * 2, cudaMemcpyHostToDevice));
  return p;
}
float hf(unsigned short u) { __half_raw r; r.x = u; return __half2float(__half(r)); }
int main(int argc, char** argv) {
  const bool only_linears = argc > 1 && strcmp(argv[1], "linears") == 0;
  cudaFuncSetAttribute(attention_f16, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10);
  cudaFuncSetAttribute(attention_dec64_f16, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10);
  struct Cfg { const char* name; int layers, b, h, kvh, slots, H; bool rms; int nblock; } cfgs[] = {
    {"tinyllama bs16", 22, 16, 32, 4, 256, 2048, true, 256},
    {"opt-125m bs16", 12, 16, 12, 12, 256, 768, false, 128},
    {"tinyllama bs1", 22, 1, 32, 4, 256, 2048, true, 256},
    {"tinyllama bs16 1024 slots", 22, 16, 32, 4, 1024, 2048, true, 256}};
  for (auto& c : cfgs) {
    if (only_linears) break;
    const int d = 64, sk = c.slots + 1, b = c.b, h = c.h, kvh = c.kvh;
    // Slot-major caches [sk, b, kvh, d] read as [b, kvh, sk, d].
    std::vector<h16*> K, V, Q, Y, Y2;
    std::vector<u8*> M;
    for (int l = 0; l < c.layers; ++l) {
      K.push_back(rnd((size_t)sk * b * kvh * d)); V.push_back(rnd((size_t)sk * b * kvh * d));
      Q.push_back(rnd((size_t)b * h * d)); Y.push_back(rnd((size_t)b * h * d)); Y2.push_back(rnd((size_t)b * h * d));
      std::vector<u8> mh((size_t)b * sk);
      for (int i = 0; i < b; ++i) for (int j = 0; j < sk; ++j) mh[(size_t)i * sk + j] = j < 40 + 7 * i ? 1 : 0;
      u8* mp; CK(cudaMalloc(&mp, mh.size())); CK(cudaMemcpy(mp, mh.data(), mh.size(), cudaMemcpyHostToDevice));
      M.push_back(mp);
    }
    Attn p = {};
    p.b = b; p.h = h; p.kvh = kvh; p.sq = 1; p.sk = sk; p.d = d; p.dv = d; p.causal = 0; p.mask_kind = 2;
    p.scale = 0.125f;
    i64 qs[4] = {(i64)h * d, d, d, 1}, ks[4] = {(i64)kvh * d, d, (i64)b * kvh * d, 1}, ms[4] = {sk, 0, 0, 1};
    memcpy(p.qs, qs, sizeof qs); memcpy(p.ks, ks, sizeof ks); memcpy(p.vs, ks, sizeof ks); memcpy(p.ms, ms, sizeof ms);
    size_t smem = (size_t)(sk + d + ATTN_GROUPS * d) * 4;
    double t_old = graph_us([&](cudaStream_t s) {
      for (int l = 0; l < c.layers; ++l) L(s, attention_f16, b * h, 256, smem, p, Q[l], K[l], V[l], (const void*)M[l], Y[l]);
    }, 1, c.layers);
    double t_new = graph_us([&](cudaStream_t s) {
      for (int l = 0; l < c.layers; ++l) L(s, attention_dec64_f16, b * h, 256, smem, p, Q[l], K[l], V[l], (const void*)M[l], Y2[l]);
    }, 1, c.layers);
    double t_128 = graph_us([&](cudaStream_t s) {
      for (int l = 0; l < c.layers; ++l) L(s, attention_dec64_f16, b * h, 128, smem, p, Q[l], K[l], V[l], (const void*)M[l], Y2[l]);
    }, 1, c.layers);
    CK(cudaDeviceSynchronize());
    std::vector<unsigned short> y1((size_t)b * h * d), y2(y1.size());
    CK(cudaMemcpy(y1.data(), Y[0], y1.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(y2.data(), Y2[0], y2.size() * 2, cudaMemcpyDeviceToHost));
    double diff = 0.0;
    for (size_t i = 0; i < y1.size(); ++i) diff = std::max(diff, (double)fabsf(hf(y1[i]) - hf(y2[i])));
    printf("%-26s attention: old %.2f us, dec (256 threads) %.2f us, dec (128 threads) %.2f us per layer (max |diff| %.2e)\n", c.name, t_old, t_new, t_128, diff);
    // Residual add + norm: 2 per layer.
    const int rows = b, H = c.H, n = 2 * c.layers;
    std::vector<h16*> A, B, S, O;
    for (int l = 0; l < n; ++l) { A.push_back(rnd((size_t)rows * H + 8)); B.push_back(rnd((size_t)rows * H + 8)); S.push_back(rnd((size_t)rows * H + 8)); O.push_back(rnd((size_t)rows * H + 8)); }
    h16 *sc = rnd(H + 8), *bi = rnd(H + 8);
    for (int off = 0; off < 2; ++off) {
      double t = graph_us([&](cudaStream_t s) {
        for (int l = 0; l < n; ++l)
          L(s, add_norm_f16, rows, c.nblock, 0, c.rms ? 1 : 0, (i64)rows, H, (const h16*)A[l] + off, (const h16*)B[l] + off,
            S[l] + off, (const h16*)sc + off, c.rms ? (const h16*)0 : (const h16*)bi + off, 1e-5f, O[l] + off, (const h16*)0);
      }, 1, n);
      printf("%-26s add_norm (%s): %.2f us per launch\n", c.name, off ? "scalar path" : "16-byte path", t);
    }
    // Norm outputs of both paths agree.
    L(0, add_norm_f16, rows, c.nblock, 0, c.rms ? 1 : 0, (i64)rows, H, (const h16*)A[0], (const h16*)B[0], S[0], (const h16*)sc, c.rms ? (const h16*)0 : (const h16*)bi, 1e-5f, O[0], (const h16*)0);
    CK(cudaMemcpy(A[1] + 1, A[0], (size_t)rows * H * 2, cudaMemcpyDeviceToDevice));
    CK(cudaMemcpy(B[1] + 1, B[0], (size_t)rows * H * 2, cudaMemcpyDeviceToDevice));
    h16 *sc1 = rnd(H + 8), *bi1 = rnd(H + 8);
    CK(cudaMemcpy(sc1 + 1, sc, H * 2, cudaMemcpyDeviceToDevice)); CK(cudaMemcpy(bi1 + 1, bi, H * 2, cudaMemcpyDeviceToDevice));
    L(0, add_norm_f16, rows, c.nblock, 0, c.rms ? 1 : 0, (i64)rows, H, (const h16*)A[1] + 1, (const h16*)B[1] + 1, S[1] + 1, (const h16*)sc1 + 1, c.rms ? (const h16*)0 : (const h16*)bi1 + 1, 1e-5f, O[1] + 1, (const h16*)0);
    CK(cudaDeviceSynchronize());
    std::vector<unsigned short> o1((size_t)rows * H), o2(o1.size());
    CK(cudaMemcpy(o1.data(), O[0], o1.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(o2.data(), O[1] + 1, o2.size() * 2, cudaMemcpyDeviceToHost));
    double nd = 0.0;
    for (size_t i = 0; i < o1.size(); ++i) nd = std::max(nd, (double)fabsf(hf(o1[i]) - hf(o2[i])));
    printf("%-26s add_norm paths max |diff| %.2e\n", c.name, nd);
    for (auto x : K) cudaFree(x);
    for (auto x : V) cudaFree(x);
  }
  // The linears of a 16-row decode step: cuBLAS against gemv_mma, weights
  // of every layer distinct (not in L2).
  cublasHandle_t blas; cublasCreate(&blas);
  void* ws; CK(cudaMalloc(&ws, 32 << 20)); cublasSetWorkspace(blas, ws, 32 << 20);
  struct Lin { const char* name; int layers, M; std::vector<std::pair<int, int>> nk; } lins[] = {
    {"tinyllama bs16", 22, 16, {{2560, 2048}, {2048, 2048}, {11264, 2048}, {2048, 5632}}},
    {"opt-125m bs16", 12, 16, {{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}}},
    {"tinyllama bs8", 22, 8, {{2560, 2048}, {2048, 2048}, {11264, 2048}, {2048, 5632}}}};
  for (auto& c : lins) {
    const int M = c.M;
    std::vector<std::vector<h16*>> W(c.nk.size());
    std::vector<h16*> X, Y1, Y2;
    double wbytes = 0;
    for (size_t i = 0; i < c.nk.size(); ++i) {
      int n = c.nk[i].first, k = c.nk[i].second;
      for (int l = 0; l < c.layers; ++l) W[i].push_back(rnd((size_t)n * k));
      X.push_back(rnd((size_t)M * k)); Y1.push_back(rnd((size_t)M * n)); Y2.push_back(rnd((size_t)M * n));
      wbytes += 2.0 * n * k * c.layers;
    }
    float one = 1.0f, zero = 0.0f;
    double t_blas = graph_us([&](cudaStream_t s) {
      cublasSetStream(blas, s);
      for (int l = 0; l < c.layers; ++l)
        for (size_t i = 0; i < c.nk.size(); ++i) {
          int n = c.nk[i].first, k = c.nk[i].second;
          cublasStatus_t st = cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, M, k, &one, W[i][l], CUDA_R_16F, k, X[i], CUDA_R_16F, k,
                                           &zero, Y1[i], CUDA_R_16F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
          if (st != CUBLAS_STATUS_SUCCESS) { printf("cublas %d\n", (int)st); exit(1); }
        }
    }, 1, 1);
    double t_mma = graph_us([&](cudaStream_t s) {
      for (int l = 0; l < c.layers; ++l)
        for (size_t i = 0; i < c.nk.size(); ++i) {
          int n = c.nk[i].first, k = c.nk[i].second;
          const h16* Z = 0;
          L(s, gemv_mma_f16, (n + 7) / 8, 256, 0, M, n, k, (const h16*)X[i], (const h16*)W[i][l], Z, Y2[i], -1,
            0, Z, Z, Z, (h16*)0, Z, Z, 0.0f);
        }
    }, 1, 1);
    CK(cudaDeviceSynchronize());
    double md = 0.0, mref = 0.0;
    for (size_t i = 0; i < c.nk.size(); ++i) {
      size_t cnt = (size_t)M * c.nk[i].first;
      std::vector<unsigned short> a(cnt), b2(cnt);
      CK(cudaMemcpy(a.data(), Y1[i], cnt * 2, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(b2.data(), Y2[i], cnt * 2, cudaMemcpyDeviceToHost));
      for (size_t e = 0; e < cnt; ++e) { md = std::max(md, (double)fabsf(hf(a[e]) - hf(b2[e]))); mref = std::max(mref, (double)fabsf(hf(a[e]))); }
    }
    printf("MMA_UNROLL %d: ", MMA_UNROLL);
    printf("%-26s linears per step: cuBLAS %.1f us (%.2f TB/s), gemv_mma %.1f us (%.2f TB/s); max |diff| %.2e of max |y| %.2e\n", c.name,
           t_blas, wbytes / t_blas / 1e6, t_mma, wbytes / t_mma / 1e6, md, mref);
    for (auto& v : W) for (auto x : v) cudaFree(x);
  }
  return 0;
}
