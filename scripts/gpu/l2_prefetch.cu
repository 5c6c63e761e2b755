// L2 prefetch microbenchmark: does fetching a linear's weights into L2 while
// a latency-bound kernel runs (attention, norms: DRAM mostly idle) make the
// linear after it faster? A TinyLlama-like batch-16 decode step: per layer
// qkv, o, gate/up and down products (cuBLAS, 16 rows) with spin kernels of
// the measured durations of the kernels between them. Variants: no prefetch;
// a prefetch kernel before each spin (cp.async.bulk.prefetch.L2 of the next
// product's weights, up to a byte budget per spin).
//
//   nvcc -O3 -arch=sm_90 -std=c++17 -o /tmp/l2p scripts/gpu/l2_prefetch.cu -lcublas && /tmp/l2p
#include <algorithm>
#include <cstdio>
#include <vector>
#include <cuda_fp16.h>
#include <cublas_v2.h>
#include "bench_common.cuh"
// Spins for `ns` on every block (a stand-in for a latency-bound kernel).
__global__ void spin(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); } while (t - t0 < ns);
}
// Each thread asks L2 to fetch one `chunk`-byte piece of [p, p + bytes).
__global__ void prefetch_bulk(const char* p, unsigned long long bytes, unsigned chunk) {
  asm volatile("griddepcontrol.launch_dependents;");
  unsigned long long o = ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) * chunk;
  if (o >= bytes) return;
  unsigned n = (unsigned)min((unsigned long long)chunk, bytes - o);
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + o), "r"(n) : "memory");
}
__global__ void prefetch_lines(const char* p, unsigned long long bytes) {
  asm volatile("griddepcontrol.launch_dependents;");
  unsigned long long o = ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) * 256;
  if (o < bytes) asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(p + o));
}
int main() {
  cublasHandle_t blas; cublasCreate(&blas);
  void* ws; CK(cudaMalloc(&ws, 32 << 20)); cublasSetWorkspace(blas, ws, 32 << 20);
  const int layers = 22, M = 16;
  // (n, k) of each product and the spin before it (us): add_norm before
  // qkv, rotary + attention before o, add_norm before gate/up, SwiGLU before down.
  struct P { int n, k; double spin_us; } ps[] = {{2560, 2048, 2.6}, {2048, 2048, 19.0}, {11264, 2048, 2.6}, {2048, 5632, 3.5}};
  std::vector<h16*> W;
  for (int l = 0; l < layers; ++l)
    for (auto& p : ps) { h16* w; CK(cudaMalloc(&w, (size_t)p.n * p.k * 2)); CK(cudaMemset(w, 0x21, (size_t)p.n * p.k * 2)); W.push_back(w); }
  h16 *X, *Y; CK(cudaMalloc(&X, 16 * 5632 * 2)); CK(cudaMalloc(&Y, 16 * 11264 * 2));
  CK(cudaMemset(X, 0, 16 * 5632 * 2));
  float one = 1.0f, zero = 0.0f;
  // mode 0: no prefetch; 1: bulk prefetch; 2: per-line prefetch; 3: spins only; 4: products only.
  auto run = [&](int mode, double budget_mb, unsigned chunk) {
    return graph_us([&](cudaStream_t s) {
      cublasSetStream(blas, s);
      for (int l = 0; l < layers; ++l)
        for (int i = 0; i < 4; ++i) {
          const P& p = ps[i];
          const char* w = (const char*)W[l * 4 + i];
          unsigned long long bytes = std::min((unsigned long long)p.n * p.k * 2, (unsigned long long)(budget_mb * 1048576.0));
          if (mode == 1) L(s, prefetch_bulk, (int)((bytes / chunk + 255) / 256), 256, 0, w, bytes, chunk);
          if (mode == 2) L(s, prefetch_lines, (int)((bytes / 256 + 255) / 256), 256, 0, w, bytes);
          if (mode != 4) L(s, spin, 132, 128, 0, (unsigned long long)(p.spin_us * 1000));
          if (mode != 3)
            cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, p.n, M, p.k, &one, W[l * 4 + i], CUDA_R_16F, p.k, X, CUDA_R_16F, p.k,
                         &zero, Y, CUDA_R_16F, p.n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        }
    });
  };
  double spins = run(3, 0, 0), prods = run(4, 0, 0), none = run(0, 0, 0);
  printf("step: spins only %.1f us, products only %.1f us, both %.1f us\n", spins, prods, none);
  for (double mb : {4.0, 8.0, 16.0, 32.0}) {
    for (unsigned chunk : {4096u, 65536u}) printf("bulk prefetch up to %4.0f MB, %6u-byte pieces: %.1f us\n", mb, chunk, run(1, mb, chunk));
    printf("line prefetch up to %4.0f MB: %.1f us\n", mb, run(2, mb, 0));
  }
  return 0;
}
