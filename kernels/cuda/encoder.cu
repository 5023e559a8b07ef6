/*
 * encoder.cu - GPT-2's input embedding: out[b,t,:] = wte[tokens[b,t], :] + wpe[t, :], and its
 * backward, with the CPU's contract (kernels/cpu/encoder.c).
 *
 * The backward is deterministic, without atomics, and adds in the CPU's order. dwpe: one
 * thread per (t, c) walks b in order. dwte: token ids repeat within a batch, so rows cannot be
 * split across threads freely; instead thread (c, g) owns column c of every vocabulary row
 * whose id is congruent to g modulo LK_ENC_GROUPS, and walks all (b, t) in order, adding the
 * rows it owns. Every dwte element thus has exactly one writer, which sums its contributions
 * in (b, t) order, and C x LK_ENC_GROUPS threads share the work (49k at C = 768) where a
 * column-per-thread split would leave the GPU nearly idle. The token ids are staged through
 * shared memory, one tile for the whole block.
 */
#include "common.cuh"

#define LK_ENC_COLS 32   /* columns per block: one warp, coalesced row reads         */
#define LK_ENC_WARPS 8   /* token groups per block (threadIdx.y)                       */
#define LK_ENC_GROUPS 64 /* token groups in all, a power of two: gridDim.y = 64 / 8   */
#define LK_ENC_TILE 2048 /* token ids staged in shared memory at a time (8 KiB)        */

static __global__ void lk_encoder_forward_kernel(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                                                 int64_t BT, int64_t T, int64_t C)
{
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int64_t bt = blockIdx.y; bt < BT; bt += gridDim.y) {
        const int64_t t = bt % T;
        out[bt * C + c] = wte[(int64_t)tokens[bt] * C + c] + wpe[t * C + c];
    }
}

static __global__ void lk_encoder_backward_wpe_kernel(float *dwpe, const float *dout, int64_t B, int64_t T, int64_t C)
{
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
        float v = dwpe[t * C + c];
        for (int64_t b = 0; b < B; b++)
            v += dout[(b * T + t) * C + c];
        dwpe[t * C + c] = v;
    }
}

static __global__ void lk_encoder_backward_wte_kernel(float *dwte, const float *dout, const int32_t *tokens, int64_t BT,
                                                      int64_t C)
{
    __shared__ int32_t tile[LK_ENC_TILE];
    const int64_t c = (int64_t)blockIdx.x * LK_ENC_COLS + threadIdx.x;
    const int32_t group = (int32_t)(blockIdx.y * LK_ENC_WARPS + threadIdx.y);
    const int tid = (int)(threadIdx.y * LK_ENC_COLS + threadIdx.x);
    for (int64_t bt0 = 0; bt0 < BT; bt0 += LK_ENC_TILE) {
        const int n = (int)(BT - bt0 < LK_ENC_TILE ? BT - bt0 : LK_ENC_TILE);
        __syncthreads(); /* the previous tile is fully consumed */
        for (int i = tid; i < n; i += LK_ENC_COLS * LK_ENC_WARPS)
            tile[i] = tokens[bt0 + i];
        __syncthreads();
        if (c >= C) continue;
        for (int j = 0; j < n; j++) {
            const int32_t tok = tile[j];
            /* A negative id is outside the contract; skipping it beats writing before dwte. */
            if (tok < 0 || (tok & (LK_ENC_GROUPS - 1)) != group) continue;
            dwte[(int64_t)tok * C + c] += dout[(bt0 + j) * C + c];
        }
    }
}

extern "C" void lk_encoder_forward_cuda(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                                        int64_t B, int64_t T, int64_t C)
{
    if (B <= 0 || T <= 0 || C <= 0) return;
    const dim3 grid(lk_cuda_grid(C, LK_CUDA_BLOCK), lk_cuda_grid_y(B * T));
    lk_encoder_forward_kernel<<<grid, LK_CUDA_BLOCK>>>(out, tokens, wte, wpe, B * T, T, C);
    lk_cuda_launched("lk_encoder_forward_cuda");
}

extern "C" void lk_encoder_backward_cuda(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int64_t B,
                                         int64_t T, int64_t C)
{
    static const char fn[] = "lk_encoder_backward_cuda";
    if (B <= 0 || T <= 0 || C <= 0) return;
    if (dwte) {
        const dim3 block(LK_ENC_COLS, LK_ENC_WARPS);
        const dim3 grid((unsigned int)((C + LK_ENC_COLS - 1) / LK_ENC_COLS), LK_ENC_GROUPS / LK_ENC_WARPS);
        lk_encoder_backward_wte_kernel<<<grid, block>>>(dwte, dout, tokens, B * T, C);
        if (!lk_cuda_launched(fn)) return;
    }
    if (dwpe) {
        const dim3 grid(lk_cuda_grid(C, LK_CUDA_BLOCK), lk_cuda_grid_y(T));
        lk_encoder_backward_wpe_kernel<<<grid, LK_CUDA_BLOCK>>>(dwpe, dout, B, T, C);
        lk_cuda_launched(fn);
    }
}
