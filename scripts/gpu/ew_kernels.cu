// Strided element-wise kernels of a TinyLlama batch-16 step (prefill: 16 x
// 145 tokens; decode: 16 rows): SwiGLU over gate/up slices
// (unary_binary_s, an element or a 16-byte word per thread, and with the
// grid capped for a grid-stride loop), the value-cache copy into slot-major
// order (copy_2) and the q/k rotary (rotary2, grid caps).
// Results: results/ab_cuda_decode_h100.md (stop 15).
//
//   nvcc -O3 -arch=sm_90 -std=c++17 -o /tmp/ew scripts/gpu/ew_kernels.cu && /tmp/ew
#include <algorithm>
#include <cstdio>
#include <vector>
#include <cuda_fp16.h>
#include "bench_common.cuh"
Idx idx(std::vector<long long> shape, std::vector<long long> s0, std::vector<long long> s1, std::vector<long long> s2) {
  Idx p = {}; p.rank = (int)shape.size(); p.n = 1;
  for (size_t d = 0; d < shape.size(); ++d) { p.shape[d] = shape[d]; p.s0[d] = s0[d]; p.s1[d] = s1[d]; p.s2[d] = s2[d]; p.n *= shape[d]; }
  return p;
}
int main() {
  h16 *A, *Y; CK(cudaMalloc(&A, 2320LL * 11264 * 2)); CK(cudaMalloc(&Y, 2320LL * 11264 * 2));
  CK(cudaMemset(A, 0x21, 2320LL * 11264 * 2));
  const int B = 256;
  for (long long rows : {16LL, 2320LL}) {
    Idx p = idx({rows, 5632}, {11264, 1}, {11264, 1}, {0, 0});
    int grid = (int)std::min((p.n + B - 1) / B, 65536LL);
    for (int vec : {0, 1}) {
      int gv = vec ? (int)std::min((p.n / 8 + B - 1) / B, 65536LL) : grid;
      double tn = graph_us([&](cudaStream_t s) { L(s, unary_binary_s_f16, gv, B, 0, 12, 2, p, vec, (const h16*)A, (const h16*)(A + 5632), Y); }, 20, 20);
      printf("swiglu %lld x 5632: host kernel vec %d grid %d: %.2f us\n", rows, vec, gv, tn);
    }
    for (int cap : {132 * 8, 132 * 32}) {
      int g = std::min(grid, cap);
      double t0 = graph_us([&](cudaStream_t s) { L(s, unary_binary_s_f16, g, B, 0, 12, 2, p, 0, (const h16*)A, (const h16*)(A + 5632), Y); }, 20, 20);
      printf("swiglu %lld x 5632, element per thread, grid capped at %d: %.2f us\n", rows, g, t0);
    }
  }
  // Prefill rotary of q [16, 145, 32, 64] and k [16, 145, 4, 64], slices of
  // the [2320, 2560] projection, cos/sin [16, 145, 64]; grid caps.
  {
    h16* CS; CK(cudaMalloc(&CS, 2320 * 64 * 2)); CK(cudaMemset(CS, 0x11, 2320 * 64 * 2));
    Idx pq = idx({16, 145, 32, 64}, {145 * 2560, 2560, 64, 1}, {145 * 64, 64, 0, 1}, {145 * 64, 64, 0, 1});
    Idx pk = idx({16, 145, 4, 64}, {145 * 2560, 2560, 64, 1}, {145 * 64, 64, 0, 1}, {145 * 64, 64, 0, 1});
    long long n = pq.n + pk.n;
    for (int cap : {1 << 30, 132 * 8, 132 * 32}) {
      int g = (int)std::min((n + B - 1) / B, (long long)cap);
      double t = graph_us([&](cudaStream_t s) {
        L(s, rotary2_f16, g, B, 0, pq, (const h16*)A, Y, 1LL, pk, (const h16*)(A + 2048), Y + pq.n, 1LL, (const h16*)CS, (const h16*)CS, 64, 64, 0);
      }, 20, 20);
      printf("rotary2 prefill (%lld elements), grid %d: %.2f us\n", n, g, t);
    }
  }
  // Value cache write: [16, 4, 145, 64] (b, kvh, s, d) from the projection
  // ([16, 145, 2560] rows, v at column 2304) into slot-major [s, b, kvh, d].
  {
    Idx p = idx({16, 4, 145, 64}, {145 * 2560, 64, 2560, 1}, {4 * 64, 64, 16 * 4 * 64, 1}, {0, 0, 0, 0});
    int grid = (int)((p.n + B - 1) / B);
    double tn = graph_us([&](cudaStream_t s) { L(s, copy_2, grid, B, 0, p, (const unsigned short*)(A + 2304), (unsigned short*)Y); }, 20, 20);
    printf("value cache copy 16x4x145x64: %.2f us\n", tn);
  }
  return 0;
}
