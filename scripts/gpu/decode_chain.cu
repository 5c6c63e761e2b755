// Decode-chain microbenchmark: a TinyLlama-like / OPT-like decode step's
// chain of gemvs (norms fused into the gemv prologue, as the host plans a
// one-row step), PDL launches captured in a CUDA graph as the host runs them,
// weights never in L2. Compares the plain gemv kernel (as many registers as
// it needs) with gemv_2b (capped at 128: two blocks of 256 threads per SM)
// for the o-proj and down/fc2 products. Results: results/ab_cuda_decode_h100.md.
//
// On the GPU machine, from the repository root:
//   nvcc -O3 -arch=sm_90 -std=c++17 -o /tmp/decode_chain scripts/gpu/decode_chain.cu && /tmp/decode_chain
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>
#include "bench_common.cuh"
h16* dev(size_t n) { h16* p; CK(cudaMalloc(&p, n * 2)); CK(cudaMemset(p, 0x11, n * 2)); return p; }
typedef void (*GemvK)(int, int, int, const h16*, const h16*, const h16*, h16*, int, int, const h16*, const h16*, const h16*, h16*, const h16*, const h16*, float);
int main(int argc, char** argv) {
  struct Var { const char* name; GemvK k; } vars[] = {{"gemv", gemv_f16}, {"2b", gemv_2b_f16}};
  int distinct = argc > 1 ? atoi(argv[1]) : 1000;  // distinct weight layers (TLB/L2 test)
  int norms = argc > 2 ? atoi(argv[2]) : 1;
  int only = argc > 3 ? atoi(argv[3]) : -1;
  struct Cfg { const char* name; int layers, H, qkv, inter, M; bool llama; } cfgs[] = {
    {"tinyllama bs1", 22, 2048, 2560, 5632, 1, true}, {"opt-125m bs1", 12, 768, 2304, 3072, 1, false},
    {"tinyllama bs4", 22, 2048, 2560, 5632, 4, true}};
  for (auto k : {(const void*)gemv_f16, (const void*)gemv_2b_f16, (const void*)gemv_glu_f16, (const void*)gemv_norm_f16, (const void*)gemv_glu_norm_f16, (const void*)add_norm_f16}) {
    cudaFuncAttributes a; cudaFuncGetAttributes(&a, k); int nb; cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, k, 256, 4096);
    printf("regs %d local %zu blocks/SM %d\n", a.numRegs, a.localSizeBytes, nb);
  }
  for (auto& c : cfgs) {
    int H = c.H, M = c.M;
    std::vector<h16*> wq, wo, wu, wd;
    for (int l = 0; l < (c.layers < distinct ? c.layers : distinct); ++l) {
      wq.push_back(dev((size_t)c.qkv * H)); wo.push_back(dev((size_t)H * H));
      wu.push_back(dev((size_t)(c.llama ? 2 : 1) * c.inter * H)); wd.push_back(dev((size_t)H * c.inter));
    }
    h16 *h = dev(M * H), *h2 = dev(M * H), *d = dev(M * H), *sc = dev(H), *nb = dev(H), *xn = dev(M * H), *q = dev(M * c.qkv),
        *a = dev(M * H), *u = dev(M * c.inter), *bias = dev(c.inter * 2);
    const h16* nbias = c.llama ? (const h16*)0 : nb;
    int rms = c.llama ? 1 : 0;
    h16* Z = 0;
    if (only >= 0 && &c - cfgs != only) continue;
    for (int rep = 0; rep < 2; ++rep)
    for (auto& var : vars) {
      int fused = 1; g_pdl = true; GemvK G = var.k;
      cudaStream_t s; CK(cudaStreamCreate(&s));
      auto step = [&](cudaStream_t s) {
        for (int l0 = 0; l0 < c.layers; ++l0) {
          int l = l0 % wq.size();
          const h16* bq = c.llama ? Z : bias;
          if (!fused) {
            if (norms) L(s, add_norm_f16, M, 256, 0, rms, (i64)M, H, d, h, h2, sc, nbias, 1e-5f, xn, Z);
            L(s, gemv_f16, (c.qkv + 7) / 8, 256, 0, M, c.qkv, H, xn, wq[l], bq, q, -1, 0, Z, Z, Z, Z, Z, Z, 0.f);
          } else {
            L(s, gemv_norm_f16, (c.qkv + 7) / 8, 256, (size_t)M * H * 2, M, c.qkv, H, Z, wq[l], bq, q, -1, rms, d, h, Z, h2, sc, nbias, 1e-5f);
          }
          L(s, G, (H + 7) / 8, 256, 0, M, H, H, a, wo[l], bq, d, -1, 0, Z, Z, Z, Z, Z, Z, 0.f);
          if (!fused) {
            if (norms) L(s, add_norm_f16, M, 256, 0, rms, (i64)M, H, d, h2, h, sc, nbias, 1e-5f, xn, Z);
            if (c.llama) L(s, gemv_glu_f16, (c.inter + 3) / 4, 256, 0, M, c.inter, H, xn, wu[l], Z, u, 8, 2, 0, Z, Z, Z, Z, Z, Z, 0.f);
            else L(s, gemv_f16, (c.inter + 7) / 8, 256, 0, M, c.inter, H, xn, wu[l], bias, u, 9, 0, Z, Z, Z, Z, Z, Z, 0.f);
          } else {
            if (c.llama) L(s, gemv_glu_norm_f16, (c.inter + 3) / 4, 256, (size_t)M * H * 2, M, c.inter, H, Z, wu[l], Z, u, 8, 2, rms, d, h2, Z, h, sc, nbias, 1e-5f);
            else L(s, gemv_norm_f16, (c.inter + 7) / 8, 256, (size_t)M * H * 2, M, c.inter, H, Z, wu[l], bias, u, 9, rms, d, h2, Z, h, sc, nbias, 1e-5f);
          }
          L(s, G, (H + 7) / 8, 256, 0, M, H, c.inter, u, wd[l], bq, d, -1, 0, Z, Z, Z, Z, Z, Z, 0.f);
        }
      };
      step(s); CK(cudaStreamSynchronize(s));
      cudaGraph_t g; cudaGraphExec_t ge;
      CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal)); step(s); CK(cudaStreamEndCapture(s, &g));
      CK(cudaGraphInstantiate(&ge, g, 0));
      for (int i = 0; i < 5; ++i) CK(cudaGraphLaunch(ge, s));
      CK(cudaStreamSynchronize(s));
      cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
      const int R = 50;
      cudaEventRecord(e0, s);
      for (int i = 0; i < R; ++i) CK(cudaGraphLaunch(ge, s));
      cudaEventRecord(e1, s); CK(cudaStreamSynchronize(s));
      float ms; cudaEventElapsedTime(&ms, e0, e1);
      double bytes = (double)c.layers * H * ((double)c.qkv + H + (c.llama ? 2 : 1) * c.inter + c.inter) * 2;
      printf("%-14s %-5s: %8.1f us per step (%.0f GB/s of layer weights)\n", c.name, var.name,
             ms * 1000 / R, bytes / (ms * 1000 / R) / 1e3);
      cudaGraphExecDestroy(ge); cudaGraphDestroy(g); cudaStreamDestroy(s);
    }
    for (auto* v : {&wq, &wo, &wu, &wd}) for (auto p : *v) cudaFree(p);
  }
  return 0;
}
