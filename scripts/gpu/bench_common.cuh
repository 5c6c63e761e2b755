// Shared by the GPU microbenchmarks (decode_chain.cu, decode_kernels.cu):
// the host's kernel source (its six parts, in kernels.rs's order), an
// error check, a launcher with programmatic dependent launch as the host
// launches (g_pdl = false launches plainly), and a CUDA-graph timer.
#pragma once
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>
#include "../../host/src/backend/cuda/kernels/base.cu"
#include "../../host/src/backend/cuda/kernels/norm.cu"
#include "../../host/src/backend/cuda/kernels/attention.cu"
#include "../../host/src/backend/cuda/kernels/attention_mma.cu"
#include "../../host/src/backend/cuda/kernels/gemv.cu"
#include "../../host/src/backend/cuda/kernels/instances.cu"
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)
static bool g_pdl = true;
template <typename... P, typename... A>
void L(cudaStream_t s, void (*k)(P...), int grid, int block, size_t smem, A... a) {
  cudaLaunchConfig_t c = {};
  c.gridDim = dim3(grid); c.blockDim = dim3(block); c.dynamicSmemBytes = smem; c.stream = s;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  c.attrs = at; c.numAttrs = g_pdl ? 1 : 0;
  CK(cudaLaunchKernelEx(&c, k, ((P)a)...));
}
// Median microseconds of one replay of a CUDA graph holding `copies`
// captures of `step` (5 replays to warm up, 30 timed), divided by `per`
// (e.g. the launches of one capture, for the time of one).
template <typename F> double graph_us(F step, int copies = 1, double per = 1.0) {
  cudaStream_t s; CK(cudaStreamCreate(&s));
  cudaGraph_t g; cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int r = 0; r < copies; ++r) step(s);
  CK(cudaStreamEndCapture(s, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  for (int i = 0; i < 5; ++i) CK(cudaGraphLaunch(ge, s));
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int r = 0; r < 30; ++r) {
    cudaEventRecord(a, s); CK(cudaGraphLaunch(ge, s)); cudaEventRecord(b, s); CK(cudaEventSynchronize(b));
    float t; cudaEventElapsedTime(&t, a, b); ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(a); cudaEventDestroy(b);
  cudaGraphExecDestroy(ge); cudaGraphDestroy(g); cudaStreamDestroy(s);
  return ms[ms.size() / 2] * 1000.0 / per;
}
