// Shared by the GPU microbenchmarks (decode_chain.cu, decode_kernels.cu):
// the host's kernel source (its six parts, in kernels.rs's order), an
// error check, and a launcher with programmatic dependent launch as the
// host launches (g_pdl = false launches plainly).
#pragma once
#include <cstdio>
#include <cstdlib>
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
