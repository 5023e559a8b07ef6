/*
 * fake_gpu.c - a backend plugin (abi/loom/backend.h) that pretends to be a GPU on host memory,
 * so the CPU test suite exercises device selection and placement: the trainer's memory goes
 * through alloc(), batches through copy(), and every kernel of the lent table checks that each
 * pointer it is given came from alloc() (a host pointer handed to a GPU kernel is the bug this
 * catches; synchronize() then fails naming the kernel).
 *
 * Environment: LOOM_FAKE_GPU_COUNT (devices probe() reports; default 1, 0 = "no GPU visible"),
 * LOOM_FAKE_GPU_REPORT (a file destroy() writes "key value" lines to: allocations, bytes,
 * peak, h2d, d2h, d2d copies, stream_copies (copies issued on a stream other than the compute
 * stream), stream_waits (stream_wait_event calls), pinned_allocations, pinned_peak (bytes of
 * alloc_pinned memory held at once), host_pointers, last_bad, adam_updates, scale_checks,
 * sum_squares (calls of the ABI 1.5 step kernels: the step ran on the "device"); a "%d" in it
 * becomes the device index, so the ranks of a launched run write a report each),
 * LOOM_FAKE_GPU_MEMORY_MIB (the memory device_info() reports; default 8 GiB; it limits nothing,
 * it is what the trainer checks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <loom/backend.h>
#include <loom/optimizer.h>
#include <loom/plugin.h>

#define MAX_BLOCKS 4096

struct loom_backend {
    loom_host *host;
    const loom_host_api *api;
    int32_t index;
};

static struct {
    const loom_kernels_api *cpu;
    struct {
        char *ptr;
        size_t bytes;
    } blocks[MAX_BLOCKS];
    size_t n_blocks;
    long long allocations, bytes, peak, copies[4], host_pointers;
    long long pinned_allocations, pinned_bytes, pinned_peak, stream_copies, stream_waits;
    long long adam_updates, scale_checks, sum_squares;
    char last_bad[128];
} fake;

static loom_status fake_probe(loom_host *host, const loom_host_api *api, int32_t *count)
{
    const char *env = getenv("LOOM_FAKE_GPU_COUNT");
    *count = env ? atoi(env) : 1;
    if (*count < 1) return api->fail(host, LOOM_E_UNSUPPORTED, "no GPU visible (LOOM_FAKE_GPU_COUNT=%s)", env);
    return LOOM_OK;
}

static const loom_kernels_api *checked_table(void);

static loom_status fake_create(loom_host *host, const loom_host_api *api, const loom_config *config, int32_t index,
                               loom_backend **out)
{
    (void)config;
    fake.cpu = api->service(host, LOOM_KERNELS_CPU_SERVICE, 1);
    if (!fake.cpu) return api->fail(host, LOOM_E_UNSUPPORTED, "the host lends no CPU kernel table");
    loom_backend *self = calloc(1, sizeof *self);
    if (!self) return LOOM_E_NOMEM;
    self->host = host;
    self->api = api;
    self->index = index;
    *out = self;
    return LOOM_OK;
}

static void fake_destroy(loom_backend *self)
{
    const char *env = getenv("LOOM_FAKE_GPU_REPORT");
    char path[4096] = "";
    const char *slot = env ? strstr(env, "%d") : NULL;
    if (slot)
        snprintf(path, sizeof path, "%.*s%d%s", (int)(slot - env), env, self->index, slot + 2);
    else if (env)
        snprintf(path, sizeof path, "%s", env);
    FILE *f = path[0] ? fopen(path, "w") : NULL;
    if (f) {
        fprintf(f, "device %d\nallocations %lld\nbytes %lld\npeak %lld\nh2d %lld\nd2h %lld\nd2d %lld\n", self->index,
                fake.allocations, fake.bytes, fake.peak, fake.copies[LOOM_COPY_HOST_TO_DEVICE],
                fake.copies[LOOM_COPY_DEVICE_TO_HOST], fake.copies[LOOM_COPY_DEVICE_TO_DEVICE]);
        fprintf(f, "stream_copies %lld\nstream_waits %lld\n", fake.stream_copies, fake.stream_waits);
        fprintf(f, "pinned_allocations %lld\npinned_peak %lld\n", fake.pinned_allocations, fake.pinned_peak);
        fprintf(f, "host_pointers %lld\nlast_bad %s\n", fake.host_pointers, fake.last_bad[0] ? fake.last_bad : "-");
        fprintf(f, "adam_updates %lld\nscale_checks %lld\nsum_squares %lld\n", fake.adam_updates, fake.scale_checks,
                fake.sum_squares);
        fclose(f);
    }
    free(self);
}

static loom_status fake_device_info(loom_backend *self, loom_device_info *info)
{
    snprintf(info->name, sizeof info->name, "Fake GPU %d", self->index);
    const char *mib = getenv("LOOM_FAKE_GPU_MEMORY_MIB");
    info->total_bytes = mib && atoll(mib) > 0 ? (uint64_t)atoll(mib) << 20 : 8ull << 30;
    info->free_bytes = info->total_bytes > (uint64_t)fake.bytes ? info->total_bytes - (uint64_t)fake.bytes : 0;
    info->capability_major = 9;
    info->capability_minor = 0;
    info->driver_version = 13000;
    info->runtime_version = 13000;
    info->multiprocessors = 1;
    info->device_index = self->index;
    return LOOM_OK;
}

static void *fake_alloc(loom_backend *self, size_t bytes)
{
    if (fake.n_blocks == MAX_BLOCKS) {
        self->api->fail(self->host, LOOM_E_NOMEM, "more than %d device blocks", MAX_BLOCKS);
        return NULL;
    }
    char *ptr = aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!ptr) return NULL;
    /* Device memory starts with garbage: a reader of unwritten memory should see it. */
    memset(ptr, 0xA5, bytes);
    fake.blocks[fake.n_blocks].ptr = ptr;
    fake.blocks[fake.n_blocks++].bytes = bytes;
    fake.allocations++;
    fake.bytes += (long long)bytes;
    if (fake.bytes > fake.peak) fake.peak = fake.bytes;
    return ptr;
}

static void fake_free(loom_backend *self, void *ptr)
{
    (void)self;
    for (size_t i = 0; i < fake.n_blocks; i++)
        if (fake.blocks[i].ptr == ptr) {
            fake.bytes -= (long long)fake.blocks[i].bytes;
            fake.blocks[i] = fake.blocks[--fake.n_blocks];
            free(ptr);
            return;
        }
}

/* Pinned blocks carry their size in front, for the report's peak. */
static void *fake_alloc_pinned(loom_backend *self, size_t bytes)
{
    (void)self;
    long long *block = malloc(bytes + 16);
    if (!block) return NULL;
    block[0] = (long long)bytes;
    fake.pinned_allocations++;
    fake.pinned_bytes += (long long)bytes;
    if (fake.pinned_bytes > fake.pinned_peak) fake.pinned_peak = fake.pinned_bytes;
    return block + 2;
}

static void fake_free_pinned(loom_backend *self, void *ptr)
{
    (void)self;
    if (!ptr) return;
    long long *block = (long long *)ptr - 2;
    fake.pinned_bytes -= block[0];
    free(block);
}

static int on_device(const void *p)
{
    if (!p) return 1;
    const char *c = p;
    for (size_t i = 0; i < fake.n_blocks; i++)
        if (c >= fake.blocks[i].ptr && c < fake.blocks[i].ptr + (fake.blocks[i].bytes ? fake.blocks[i].bytes : 1))
            return 1;
    return 0;
}

static void check(const char *kernel, const void *p)
{
    if (on_device(p)) return;
    fake.host_pointers++;
    snprintf(fake.last_bad, sizeof fake.last_bad, "%s", kernel);
}

static loom_status fake_copy(loom_backend *self, void *dst, const void *src, size_t bytes, uint32_t direction,
                             loom_stream *stream)
{
    if (direction < 1 || direction > 3)
        return self->api->fail(self->host, LOOM_E_INVALID, "bad direction %u", direction);
    int dst_dev = direction != LOOM_COPY_DEVICE_TO_HOST, src_dev = direction != LOOM_COPY_HOST_TO_DEVICE;
    if (on_device(dst) != dst_dev || on_device(src) != src_dev)
        return self->api->fail(self->host, LOOM_E_INVALID, "copy %u: a pointer is on the wrong side", direction);
    memmove(dst, src, bytes);
    fake.copies[direction]++;
    if (stream) fake.stream_copies++;
    return LOOM_OK;
}

static loom_status fake_memset(loom_backend *self, void *dst, size_t bytes, loom_stream *stream)
{
    (void)stream;
    if (!on_device(dst)) return self->api->fail(self->host, LOOM_E_INVALID, "memset_zero of host memory");
    memset(dst, 0, bytes);
    return LOOM_OK;
}

static loom_status fake_stream_create(loom_backend *self, loom_stream **out)
{
    (void)self;
    *out = (loom_stream *)malloc(1);
    return *out ? LOOM_OK : LOOM_E_NOMEM;
}
static void fake_stream_destroy(loom_backend *self, loom_stream *s)
{
    (void)self;
    free(s);
}
static loom_status fake_stream_sync(loom_backend *self, loom_stream *s)
{
    (void)self;
    (void)s;
    return LOOM_OK;
}
static loom_status fake_event_create(loom_backend *self, loom_event **out)
{
    (void)self;
    *out = (loom_event *)malloc(1);
    return *out ? LOOM_OK : LOOM_E_NOMEM;
}
static void fake_event_destroy(loom_backend *self, loom_event *e)
{
    (void)self;
    free(e);
}
static loom_status fake_event_record(loom_backend *self, loom_event *e, loom_stream *s)
{
    (void)self;
    (void)e;
    (void)s;
    return LOOM_OK;
}
static loom_status fake_stream_wait(loom_backend *self, loom_stream *s, loom_event *e)
{
    (void)self;
    (void)s;
    (void)e;
    fake.stream_waits++;
    return LOOM_OK;
}
static loom_status fake_event_sync(loom_backend *self, loom_event *e)
{
    (void)self;
    (void)e;
    return LOOM_OK;
}

static loom_status fake_synchronize(loom_backend *self)
{
    if (fake.host_pointers)
        return self->api->fail(self->host, LOOM_E_DEVICE, "%lld host pointer%s given to device kernels (last: %s)",
                               fake.host_pointers, fake.host_pointers == 1 ? "" : "s", fake.last_bad);
    return LOOM_OK;
}

/* ---- the checked kernel table: each member checks its pointers, then runs the CPU's ---- */

#define C1(a) check(__func__, a)
#define C2(a, b) (C1(a), C1(b))
#define C3(a, b, c) (C2(a, b), C1(c))

static void k_sgemm(int32_t ta, int32_t tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    C3(A, B, C);
    fake.cpu->sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
static void k_linear_forward(float *out, const float *inp, const float *w, const float *b, int64_t B, int64_t IC,
                             int64_t OC)
{
    C3(out, inp, w), C1(b);
    fake.cpu->linear_forward(out, inp, w, b, B, IC, OC);
}
static void k_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                              int64_t B, int64_t IC, int64_t OC)
{
    C3(dinp, dw, db), C3(dout, inp, w);
    fake.cpu->linear_backward(dinp, dw, db, dout, inp, w, B, IC, OC);
}
static void k_relu_forward(float *out, const float *inp, int64_t n)
{
    C2(out, inp);
    fake.cpu->relu_forward(out, inp, n);
}
static void k_relu_backward(float *dinp, const float *inp, const float *dout, int64_t n)
{
    C3(dinp, inp, dout);
    fake.cpu->relu_backward(dinp, inp, dout, n);
}
static void k_gelu_forward(float *out, const float *inp, int64_t n)
{
    C2(out, inp);
    fake.cpu->gelu_forward(out, inp, n);
}
static void k_gelu_backward(float *dinp, const float *inp, const float *dout, int64_t n)
{
    C3(dinp, inp, dout);
    fake.cpu->gelu_backward(dinp, inp, dout, n);
}
static void k_ce_forward(float *probs, float *losses, const float *logits, const int32_t *labels, int64_t B, int64_t C)
{
    C3(probs, losses, logits), C1(labels);
    fake.cpu->softmax_cross_entropy_forward(probs, losses, logits, labels, B, C);
}
static void k_ce_backward(float *dlogits, const float *probs, const int32_t *labels, float scale, int64_t B, int64_t C)
{
    C3(dlogits, probs, labels);
    fake.cpu->softmax_cross_entropy_backward(dlogits, probs, labels, scale, B, C);
}
static void k_encoder_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B,
                              int64_t T, int64_t C)
{
    C3(out, tokens, wte), C1(wpe);
    fake.cpu->encoder_forward(out, tokens, wte, wpe, B, T, C);
}
static void k_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int64_t B, int64_t T,
                               int64_t C)
{
    C3(dwte, dwpe, dout), C1(tokens);
    fake.cpu->encoder_backward(dwte, dwpe, dout, tokens, B, T, C);
}
static void k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                                int64_t N, int64_t C, float eps)
{
    C3(out, mean, rstd), C3(inp, w, b);
    fake.cpu->layernorm_forward(out, mean, rstd, inp, w, b, N, C, eps);
}
static void k_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                                 const float *mean, const float *rstd, int64_t N, int64_t C)
{
    C3(dinp, dw, db), C3(dout, inp, w), C2(mean, rstd);
    fake.cpu->layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
}
static void k_conv1d_forward(float *out, const float *inp, const float *w, const float *b, int64_t N, int64_t IC,
                             int64_t OC)
{
    C3(out, inp, w), C1(b);
    fake.cpu->conv1d_forward(out, inp, w, b, N, IC, OC);
}
static void k_conv1d_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                              int64_t N, int64_t IC, int64_t OC)
{
    C3(dinp, dw, db), C3(dout, inp, w);
    fake.cpu->conv1d_backward(dinp, dw, db, dout, inp, w, N, IC, OC);
}
static void k_attention_forward(float *out, float *att, const float *qkv, int64_t B, int64_t T, int64_t C, int64_t NH)
{
    C3(out, att, qkv);
    fake.cpu->attention_forward(out, att, qkv, B, T, C, NH);
}
static void k_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int64_t B,
                                 int64_t T, int64_t C, int64_t NH)
{
    C3(dqkv, dout, qkv), C1(att);
    fake.cpu->attention_backward(dqkv, dout, qkv, att, B, T, C, NH);
}
static void k_add(float *out, const float *a, const float *b, int64_t n)
{
    C3(out, a, b);
    fake.cpu->add(out, a, b, n);
}
static void k_accumulate(float *dst, const float *src, int64_t n)
{
    C2(dst, src);
    fake.cpu->accumulate(dst, src, n);
}
static void k_convert(void *dst, uint32_t dd, const void *src, uint32_t sd, int64_t n)
{
    C2(dst, src);
    fake.cpu->convert(dst, dd, src, sd, n);
}
static void k_accumulate_f32(void *dst, uint32_t dd, const float *src, int64_t n)
{
    C2(dst, src);
    fake.cpu->accumulate_f32(dst, dd, src, n);
}
static void k_gemm_mixed(int32_t ta, int32_t tb, int64_t M, int64_t N, int64_t K, float alpha, const void *A,
                         uint32_t ad, int64_t lda, const void *B, uint32_t bd, int64_t ldb, float beta, float *C,
                         int64_t ldc)
{
    C3(A, B, C);
    fake.cpu->gemm_mixed(ta, tb, M, N, K, alpha, A, ad, lda, B, bd, ldb, beta, C, ldc);
}
static void k_ce_backward_cast(void *dlogits, uint32_t dtype, const float *probs, const int32_t *labels, float scale,
                               int64_t B, int64_t C)
{
    C3(dlogits, probs, labels);
    fake.cpu->softmax_cross_entropy_backward_cast(dlogits, dtype, probs, labels, scale, B, C);
}

/* T5's members (ABI 1.3, 1.4's smoothed loss), so a t5 run is placement-checked too. */
static void k_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int64_t N, int64_t C,
                              float eps)
{
    C3(out, rstd, inp), C1(w);
    fake.cpu->rmsnorm_forward(out, rstd, inp, w, N, C, eps);
}
static void k_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                               const float *rstd, int64_t N, int64_t C)
{
    C3(dinp, dw, dout), C3(inp, w, rstd);
    fake.cpu->rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C);
}
static void k_mha_forward(float *out, float *att, const float *q, const float *k, const float *v, const float *bias,
                          const int32_t *mask, int64_t B, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS,
                          int64_t kv_rows, float scale, int32_t causal, float p, uint64_t seed)
{
    C3(out, att, q), C3(k, v, bias), C1(mask);
    fake.cpu->mha_forward(out, att, q, k, v, bias, mask, B, NH, Tq, Tk, HS, kv_rows, scale, causal, p, seed);
}
static void k_mha_backward(float *dq, float *dk, float *dv, float *dbias, const float *dout, const float *q,
                           const float *k, const float *v, const float *att, int64_t B, int64_t NH, int64_t Tq,
                           int64_t Tk, int64_t HS, int64_t kv_rows, float scale, float p, uint64_t seed)
{
    C3(dq, dk, dv), C3(dbias, dout, q), C3(k, v, att);
    fake.cpu->mha_backward(dq, dk, dv, dbias, dout, q, k, v, att, B, NH, Tq, Tk, HS, kv_rows, scale, p, seed);
}
static void k_ce_smoothed_forward(float *probs, float *losses, const float *logits, const int32_t *labels,
                                  float smoothing, int64_t B, int64_t C)
{
    C3(probs, losses, logits), C1(labels);
    fake.cpu->softmax_cross_entropy_smoothed_forward(probs, losses, logits, labels, smoothing, B, C);
}
/* The fused classifiers (ABI 1.3, 1.4 and the 1.8 one by columns): every array and the
 * scratch on the device (the gradient outputs may be NULL). */
static void k_classifier(float *losses, float *dinp, float *dweight, void *scratch, const void *inp, const void *weight,
                         uint32_t dtype, const int32_t *labels, float scale, int64_t N, int64_t C, int64_t V,
                         int64_t chunk)
{
    C3(losses, dinp, dweight), C3(scratch, inp, weight), C1(labels);
    fake.cpu->classifier(losses, dinp, dweight, scratch, inp, weight, dtype, labels, scale, N, C, V, chunk);
}
static void k_classifier_smoothed(float *losses, float *dinp, float *dweight, void *scratch, const void *inp,
                                  const void *weight, uint32_t dtype, const int32_t *labels, float scale,
                                  float smoothing, int64_t N, int64_t C, int64_t V, int64_t chunk)
{
    C3(losses, dinp, dweight), C3(scratch, inp, weight), C1(labels);
    fake.cpu->classifier_smoothed(losses, dinp, dweight, scratch, inp, weight, dtype, labels, scale, smoothing, N, C, V,
                                  chunk);
}
static void k_classifier_columns(float *losses, float *lse, float *dinp, void *dweight, uint32_t dweight_dtype,
                                 void *scratch, size_t scratch_bytes, const void *inp, const void *weight,
                                 uint32_t dtype, const int32_t *labels, float scale, float smoothing, int64_t N,
                                 int64_t C, int64_t V)
{
    C3(losses, lse, dinp), C3(dweight, scratch, inp), C2(weight, labels);
    fake.cpu->classifier_columns(losses, lse, dinp, dweight, dweight_dtype, scratch, scratch_bytes, inp, weight, dtype,
                                 labels, scale, smoothing, N, C, V);
}
/* ABI 1.5, the step: every span's param, grad and moments must be device memory. The span
 * array, args, bounds, sums and the flag are host memory by contract. */
static void k_adam_update(const struct loom_span *spans, size_t n, const struct loom_adam_args *args)
{
    for (size_t i = 0; i < n; i++) {
        const loom_span *s = (const loom_span *)((const char *)spans + i * spans->struct_size);
        if (s->numel > 0) C3(s->param, s->grad, s->state[0]), C1(s->state[1]);
    }
    fake.adam_updates++;
    fake.cpu->adam_update(spans, n, args);
}
static void k_scale_check(float *x, int64_t n, float scale, int32_t *found_inf)
{
    if (n > 0) C1(x);
    fake.scale_checks++;
    fake.cpu->scale_check(x, n, scale, found_inf);
}
static void k_sum_squares(double *sums, const float *x, const int64_t *bounds, int64_t n)
{
    if (n > 0) C1(x);
    fake.sum_squares++;
    fake.cpu->sum_squares(sums, x, bounds, n);
}

static const loom_kernels_api checked = {
    LOOM_HEADER_INIT(loom_kernels_api),
    .device = LOOM_DEVICE_CUDA,
    .sgemm = k_sgemm,
    .linear_forward = k_linear_forward,
    .linear_backward = k_linear_backward,
    .relu_forward = k_relu_forward,
    .relu_backward = k_relu_backward,
    .gelu_forward = k_gelu_forward,
    .gelu_backward = k_gelu_backward,
    .softmax_cross_entropy_forward = k_ce_forward,
    .softmax_cross_entropy_backward = k_ce_backward,
    .encoder_forward = k_encoder_forward,
    .encoder_backward = k_encoder_backward,
    .layernorm_forward = k_layernorm_forward,
    .layernorm_backward = k_layernorm_backward,
    .conv1d_forward = k_conv1d_forward,
    .conv1d_backward = k_conv1d_backward,
    .attention_forward = k_attention_forward,
    .attention_backward = k_attention_backward,
    .add = k_add,
    .accumulate = k_accumulate,
    .convert = k_convert,
    .accumulate_f32 = k_accumulate_f32,
    .gemm_mixed = k_gemm_mixed,
    .softmax_cross_entropy_backward_cast = k_ce_backward_cast,
    .rmsnorm_forward = k_rmsnorm_forward,
    .rmsnorm_backward = k_rmsnorm_backward,
    .mha_forward = k_mha_forward,
    .mha_backward = k_mha_backward,
    .classifier = k_classifier,
    .softmax_cross_entropy_smoothed_forward = k_ce_smoothed_forward,
    .classifier_smoothed = k_classifier_smoothed,
    .adam_update = k_adam_update,
    .scale_check = k_scale_check,
    .sum_squares = k_sum_squares,
    .classifier_columns = k_classifier_columns,
};

static const loom_kernels_api *checked_table(void) { return &checked; }

static const loom_kernels_api *fake_kernels(loom_backend *self)
{
    (void)self;
    return checked_table();
}

static const loom_backend_vtable fake_vtable = {
    LOOM_HEADER_INIT(loom_backend_vtable),
    .device = LOOM_DEVICE_CUDA,
    .flags = LOOM_BACKEND_HOST_ACCESSIBLE,
    .probe = fake_probe,
    .create = fake_create,
    .destroy = fake_destroy,
    .device_info = fake_device_info,
    .alloc = fake_alloc,
    .free_memory = fake_free,
    .alloc_pinned = fake_alloc_pinned,
    .free_pinned = fake_free_pinned,
    .copy = fake_copy,
    .memset_zero = fake_memset,
    .stream_create = fake_stream_create,
    .stream_destroy = fake_stream_destroy,
    .stream_synchronize = fake_stream_sync,
    .event_create = fake_event_create,
    .event_destroy = fake_event_destroy,
    .event_record = fake_event_record,
    .stream_wait_event = fake_stream_wait,
    .event_synchronize = fake_event_sync,
    .synchronize = fake_synchronize,
    .kernels = fake_kernels,
};

static const loom_plugin_desc fake_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_BACKEND,
    .name = "fake_gpu",
    .version = "1.0.0",
    .summary = "a GPU double on host memory that checks every kernel pointer (tests only)",
    .vtable = &fake_vtable,
    .params = NULL,
};

LOOM_PLUGIN_EXPORT(&fake_desc)
