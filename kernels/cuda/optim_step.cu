/*
 * optim_step.cu - the optimizer step's element-wise kernels (ABI 1.5, abi/loom/kernels.h) on
 * the GPU: the Adam family's update, unscale with the non-finite check, and the sums of
 * squares of the global gradient norm. docs/architecture.md#device-step.
 *
 * Bit-equality with the CPU (kernels/step_loops/lk_step_loops.h, compiled without
 * contraction): nvcc contracts a * b + c into an FMA by default, so the update is written with
 * the round-to-nearest intrinsics (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn), which are
 * never fused: each operation of the CPU line is one rounding here too, in the same order, so
 * adam_update and scale_check equal the CPU bit for bit. sum_squares is a fixed-order two-pass
 * tree (per-thread strided sums, then a shared-memory tree), so it equals itself run to run and
 * the CPU's `omp simd` order to double round-off.
 */
#include "common.cuh"

#include <loom/optimizer.h>

/* One span: the host rounded its decay factor to f32 exactly as the CPU loop does. */
template <uint32_t Rule>
static __global__ void lk_adam_kernel(float *p, float *m, float *v, const float *g, int64_t n, loom_adam_args c,
                                      float decay)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float pi = p[i];
        float gi = __fmul_rn(g[i], c.grad_scale);
        if (Rule == LOOM_ADAM_RULE_ADAM) gi = __fadd_rn(gi, __fmul_rn(decay, pi));
        const float mi = __fadd_rn(__fmul_rn(c.beta1, m[i]), __fmul_rn(c.one_minus_beta1, gi));
        const float vi = __fadd_rn(__fmul_rn(c.beta2, v[i]), __fmul_rn(__fmul_rn(c.one_minus_beta2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        if (Rule == LOOM_ADAM_RULE_HF) {
            const float q = __fsub_rn(pi, __fmul_rn(c.step_size, __fdiv_rn(mi, __fadd_rn(__fsqrt_rn(vi), c.eps))));
            p[i] = __fadd_rn(q, __fmul_rn(decay, q));
        } else {
            const float update =
                __fmul_rn(c.step_size, __fdiv_rn(mi, __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), c.bias2_sqrt), c.eps)));
            p[i] = Rule == LOOM_ADAM_RULE_ADAMW ? __fsub_rn(__fmul_rn(pi, decay), update) : __fsub_rn(pi, update);
        }
    }
}

/* One launch per span (a model has a few hundred tensors: launch cost, not bandwidth, is what
 * that adds; a multi-tensor launch is the next step if it shows). */
extern "C" void lk_adam_update_cuda(const struct loom_span *spans, size_t n_spans, const struct loom_adam_args *args)
{
    const loom_adam_args c = *args;
    if (c.rule > LOOM_ADAM_RULE_HF) return;
    for (size_t k = 0; k < n_spans; k++) {
        const loom_span *s = (const loom_span *)((const char *)spans + k * (size_t)spans->struct_size);
        const int64_t n = s->numel;
        if (n <= 0) continue;
        /* The per-span factor, rounded as the CPU loop rounds it. */
        float decay = c.rule == LOOM_ADAM_RULE_ADAMW ? (float)(1.0 - c.lr * s->weight_decay)
                      : c.rule == LOOM_ADAM_RULE_HF  ? (float)(-c.lr * s->weight_decay)
                                                     : (float)s->weight_decay;
        const unsigned int grid = lk_cuda_grid(n, LK_CUDA_BLOCK);
        if (c.rule == LOOM_ADAM_RULE_ADAMW)
            lk_adam_kernel<LOOM_ADAM_RULE_ADAMW>
                <<<grid, LK_CUDA_BLOCK>>>(s->param, s->state[0], s->state[1], s->grad, n, c, decay);
        else if (c.rule == LOOM_ADAM_RULE_ADAM)
            lk_adam_kernel<LOOM_ADAM_RULE_ADAM>
                <<<grid, LK_CUDA_BLOCK>>>(s->param, s->state[0], s->state[1], s->grad, n, c, decay);
        else
            lk_adam_kernel<LOOM_ADAM_RULE_HF>
                <<<grid, LK_CUDA_BLOCK>>>(s->param, s->state[0], s->state[1], s->grad, n, c, decay);
        if (!lk_cuda_launched("lk_adam_update_cuda")) return;
    }
}

/* x *= scale; *found = 1 when a result's exponent bits are all ones (inf or NaN). */
static __global__ void lk_scale_check_kernel(float *x, int64_t n, float scale, int32_t *found)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int bad = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float r = __fmul_rn(x[i], scale);
        x[i] = r;
        bad |= (__float_as_uint(r) & 0x7f800000u) == 0x7f800000u;
    }
    if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(found, 1);
}

/* Waits: the flag comes back to host memory. */
extern "C" void lk_scale_check_cuda(float *x, int64_t n, float scale, int32_t *found_inf)
{
    static const char fn[] = "lk_scale_check_cuda";
    if (n <= 0) return;
    int32_t *flag = (int32_t *)lk_cuda_workspace(sizeof(int32_t), fn);
    if (!flag || !lk_cuda_ok(cudaMemsetAsync(flag, 0, sizeof(int32_t), 0), fn)) return;
    lk_scale_check_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(x, n, scale, flag);
    if (!lk_cuda_launched(fn)) return;
    int32_t found = 0;
    if (!lk_cuda_ok(cudaMemcpy(&found, flag, sizeof found, cudaMemcpyDeviceToHost), fn)) return;
    if (found && found_inf) *found_inf = 1;
}

/* Segment w (blocks stride over segments): each thread sums its elements i = tid, tid + 256,
 * ... in double, in that order; then a shared-memory tree halves the 256 partials in a fixed
 * pattern. Nothing depends on scheduling. */
static __global__ void lk_sum_squares_kernel(double *sums, const float *x, const int64_t *bounds, int64_t n_segments)
{
    __shared__ double partial[LK_CUDA_BLOCK];
    for (int64_t w = blockIdx.x; w < n_segments; w += gridDim.x) {
        const int64_t b = bounds[2 * w], e = bounds[2 * w + 1];
        double acc = 0.0;
        for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) {
            const double xi = (double)x[i];
            acc = __dadd_rn(acc, __dmul_rn(xi, xi));
        }
        partial[threadIdx.x] = acc;
        __syncthreads();
        for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {
            if (threadIdx.x < half) partial[threadIdx.x] = __dadd_rn(partial[threadIdx.x], partial[threadIdx.x + half]);
            __syncthreads();
        }
        if (threadIdx.x == 0) sums[w] = partial[0];
        __syncthreads();
    }
}

/* bounds and sums are host memory: copied in and out through this thread's workspace; waits. */
extern "C" void lk_sum_squares_cuda(double *sums, const float *x, const int64_t *bounds, int64_t n_segments)
{
    static const char fn[] = "lk_sum_squares_cuda";
    if (n_segments <= 0) return;
    const size_t bound_bytes = 2 * (size_t)n_segments * sizeof(int64_t);
    const size_t sum_bytes = (size_t)n_segments * sizeof(double);
    char *work = (char *)lk_cuda_workspace(bound_bytes + sum_bytes, fn);
    if (!work) return;
    int64_t *dbounds = (int64_t *)work;
    double *dsums = (double *)(work + bound_bytes);
    if (!lk_cuda_ok(cudaMemcpy(dbounds, bounds, bound_bytes, cudaMemcpyHostToDevice), fn)) return;
    const unsigned int grid = (unsigned int)(n_segments < LK_CUDA_MAX_GRID ? n_segments : LK_CUDA_MAX_GRID);
    lk_sum_squares_kernel<<<grid, LK_CUDA_BLOCK>>>(dsums, x, dbounds, n_segments);
    if (!lk_cuda_launched(fn)) return;
    lk_cuda_ok(cudaMemcpy(sums, dsums, sum_bytes, cudaMemcpyDeviceToHost), fn);
}
