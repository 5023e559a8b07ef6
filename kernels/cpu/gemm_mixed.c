/*
 * gemm_mixed.c - lk_gemm_mixed: C[M,N] (f32) = alpha op(A) op(B) + beta C with A and B
 * stored as f32, f16 or bf16.
 *
 * bf16 x bf16 runs on oneDNN's matmul (AVX512_BF16 dot products or AMX tiles, f32
 * accumulation) when the build has oneDNN (LOOM_HAVE_ONEDNN) and the CPU has the
 * instructions: without them oneDNN emulates bf16, slower than widening. Every other case
 * widens the 16-bit operands into a scratch buffer and calls lk_sgemm. The products are
 * exact in f32 either way (8- or 11-bit significands), so the two paths differ only in
 * summation order.
 *
 * LOOM_BF16_GEMM=fp32 in the environment (read on the first call) forces the widening path,
 * to compare the two or to time them.
 */
#include "lk_cpu.h"
#include "cpu_features.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef LOOM_HAVE_ONEDNN
#include <dnnl.h>
#endif

/* Guards the scratch buffer, the primitive cache and oneDNN's stream, none of which may be
 * shared by two calls at once. The header only promises one caller at a time; the lock
 * makes a second one wait instead of corrupting a product. */
static pthread_mutex_t lk_gemm_lock = PTHREAD_MUTEX_INITIALIZER;
static char lk_gemm_path[80] = "none";

static size_t elem_size(uint32_t dtype) { return loom_dtype_is_param(dtype) ? loom_dtype_size(dtype) : 0; }

static void set_path(const char *what, const char *detail)
{
    snprintf(lk_gemm_path, sizeof lk_gemm_path, "%s%s%s", what, detail ? ":" : "",
             detail ? detail : "");
}

const char *lk_gemm_mixed_last_path(void) { return lk_gemm_path; }

/* ---- the widening path ---- */

/* Grow-only: a training step calls this with the same few shapes thousands of times, and a
 * malloc/free of tens of MiB per call would hand pages back to the kernel each time. Never
 * freed: it lives as long as the process (still reachable, so leak checkers stay quiet). */
static float *lk_gemm_scratch;
static size_t lk_gemm_scratch_cap; /* floats */

static float *scratch_reserve(size_t n)
{
    if (n > lk_gemm_scratch_cap) {
        const size_t cap = n > lk_gemm_scratch_cap + lk_gemm_scratch_cap / 2
                               ? n : lk_gemm_scratch_cap + lk_gemm_scratch_cap / 2;
        free(lk_gemm_scratch);
        lk_gemm_scratch = lk_workspace("lk_gemm_mixed", cap * sizeof *lk_gemm_scratch);
        lk_gemm_scratch_cap = cap;
    }
    return lk_gemm_scratch;
}

/* X as stored: rows x cols with row stride ld, packed into buf as f32 rows of cols. */
static void widen(float *buf, const void *X, uint32_t dtype, int64_t rows, int64_t cols, int64_t ld)
{
    const size_t es = elem_size(dtype);
    if (ld == cols) {
        lk_convert(buf, LOOM_DTYPE_F32, X, dtype, rows * cols);
        return;
    }
#pragma omp parallel for if (rows * cols >= LK_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++)
        lk_convert(buf + r * cols, LOOM_DTYPE_F32, (const char *)X + (size_t)(r * ld) * es, dtype, cols);
}

/* Floats from one operand's start to the next's: a multiple of 16 keeps both 64-byte
 * aligned for OpenBLAS. */
static size_t padded(int64_t n) { return ((size_t)n + 15u) & ~(size_t)15u; }

/* Caller holds lk_gemm_lock. */
static void gemm_fp32_locked(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K,
                             float alpha, const void *A, uint32_t a_dtype, int64_t lda,
                             const void *B, uint32_t b_dtype, int64_t ldb, float beta, float *C,
                             int64_t ldc)
{
    /* The operands as stored: op(A) is M x K, so A is K x M when transposed; likewise B. */
    const int64_t a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
    const int64_t b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
    const int wide_a = a_dtype != LOOM_DTYPE_F32, wide_b = b_dtype != LOOM_DTYPE_F32;
    const size_t a_n = wide_a ? padded(a_rows * a_cols) : 0;
    const size_t b_n = wide_b ? padded(b_rows * b_cols) : 0;
    float *buf = a_n + b_n ? scratch_reserve(a_n + b_n) : NULL;
    const float *a = A, *b = B;
    if (wide_a) {
        widen(buf, A, a_dtype, a_rows, a_cols, lda);
        a = buf;
        lda = a_cols;
    }
    if (wide_b) {
        widen(buf + a_n, B, b_dtype, b_rows, b_cols, ldb);
        b = buf + a_n;
        ldb = b_cols;
    }
    set_path(wide_a || wide_b ? "fp32" : "sgemm", NULL);
    lk_sgemm(trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, C, ldc);
}

void lk_gemm_mixed_fp32(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K,
                        float alpha, const void *A, uint32_t a_dtype, int64_t lda, const void *B,
                        uint32_t b_dtype, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0 || !elem_size(a_dtype) || !elem_size(b_dtype)) return;
    pthread_mutex_lock(&lk_gemm_lock);
    gemm_fp32_locked(trans_a, trans_b, M, N, K, alpha, A, a_dtype, lda, B, b_dtype, ldb, beta, C,
                     ldc);
    pthread_mutex_unlock(&lk_gemm_lock);
}

/* ---- oneDNN ---- */

#ifdef LOOM_HAVE_ONEDNN

/* Creating a matmul primitive takes tens of microseconds to milliseconds (oneDNN picks and
 * JIT-compiles a kernel for the exact shape), a training step uses a dozen shapes: keep
 * them. beta enters only as zero or not (other values pre-scale C), so the keys stay few. */
#define LK_DNNL_CACHE 64

typedef struct {
    int64_t M, N, K, lda, ldb, ldc;
    int32_t trans_a, trans_b, accumulate;
    uint32_t alpha_bits;
} dnnl_key;

typedef struct {
    dnnl_key key;
    int used;
    dnnl_primitive_t prim; /* NULL: oneDNN has no fast kernel for this shape; widen instead */
    dnnl_memory_t a, b, c; /* descriptors fixed, data pointers set per call */
    char impl[48];
} dnnl_entry;

static dnnl_entry lk_dnnl_cache[LK_DNNL_CACHE];
static int lk_dnnl_next; /* round-robin eviction: shapes come in a fixed cycle per step */
static dnnl_engine_t lk_dnnl_engine;
static dnnl_stream_t lk_dnnl_stream;
static int lk_dnnl_state; /* 0: not tried yet, 1: ready, -1: not used in this process */

static void dnnl_warn(const char *what, dnnl_status_t st)
{
    static int warned;
    if (!warned) {
        fprintf(stderr, "loom: lk_gemm_mixed: oneDNN %s failed (status %d); bf16 products "
                        "widen to f32 instead\n", what, (int)st);
        warned = 1;
    }
}

static int dnnl_ready(void)
{
    if (lk_dnnl_state) return lk_dnnl_state > 0;
    lk_dnnl_state = -1;
    const char *force = getenv("LOOM_BF16_GEMM");
    if (force && strcmp(force, "fp32") == 0) return 0;
    /* Every CPU with AMX also has AVX512_BF16; the second test is for completeness. */
    if (!lk_cpu_has_avx512_bf16() && !lk_cpu_has_amx_bf16()) return 0;
    dnnl_status_t st = dnnl_engine_create(&lk_dnnl_engine, dnnl_cpu, 0);
    if (st != dnnl_success) {
        dnnl_warn("engine creation", st);
        return 0;
    }
    st = dnnl_stream_create(&lk_dnnl_stream, lk_dnnl_engine, dnnl_stream_default_flags);
    if (st != dnnl_success) {
        dnnl_warn("stream creation", st);
        dnnl_engine_destroy(lk_dnnl_engine);
        return 0;
    }
    lk_dnnl_state = 1;
    return 1;
}

static void entry_clear(dnnl_entry *e)
{
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->a) dnnl_memory_destroy(e->a);
    if (e->b) dnnl_memory_destroy(e->b);
    if (e->c) dnnl_memory_destroy(e->c);
    memset(e, 0, sizeof *e);
}

static int key_equal(const dnnl_key *x, const dnnl_key *y)
{
    return x->M == y->M && x->N == y->N && x->K == y->K && x->lda == y->lda && x->ldb == y->ldb &&
           x->ldc == y->ldc && x->trans_a == y->trans_a && x->trans_b == y->trans_b &&
           x->accumulate == y->accumulate && x->alpha_bits == y->alpha_bits;
}

/* Fills e for key k. Returns a oneDNN status; on success e->prim may still be NULL (no
 * implementation, or only the reference one: correct, but orders of magnitude slower than
 * widening). */
static dnnl_status_t entry_create(dnnl_entry *e, const dnnl_key *k)
{
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_matmul_desc_t op;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL;
    float alpha;
    memcpy(&alpha, &k->alpha_bits, sizeof alpha);
    /* op(A)[m,k] sits at A[m*lda + k], or A[k*lda + m] transposed: a strided M x K view of
     * the caller's memory, no copy. Likewise op(B) as K x N, and C as M x N. */
    const dnnl_dims_t a_dims = {k->M, k->K}, b_dims = {k->K, k->N}, c_dims = {k->M, k->N};
    const dnnl_dims_t a_str = {k->trans_a ? 1 : k->lda, k->trans_a ? k->lda : 1};
    const dnnl_dims_t b_str = {k->trans_b ? 1 : k->ldb, k->trans_b ? k->ldb : 1};
    const dnnl_dims_t c_str = {k->ldc, 1};
    memset(e, 0, sizeof *e);
    e->key = *k;
    e->used = 1;
    dnnl_status_t st;
    if ((st = dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, dnnl_bf16, a_str)) ||
        (st = dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, dnnl_bf16, b_str)) ||
        (st = dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_str)) ||
        (st = dnnl_matmul_desc_init(&op, &a_md, &b_md, NULL, &c_md)) ||
        (st = dnnl_primitive_attr_create(&attr)))
        goto out;
    if (alpha != 1.0f && (st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha))) goto out;
    if (k->accumulate) {
        /* dst = output_scale * (A B) + 1 * dst: the output scale applies before post-ops. */
        if ((st = dnnl_post_ops_create(&post)) || (st = dnnl_post_ops_append_sum(post, 1.0f)) ||
            (st = dnnl_primitive_attr_set_post_ops(attr, post)))
            goto out;
    }
    st = dnnl_primitive_desc_create(&pd, &op, attr, lk_dnnl_engine, NULL);
    if (st == dnnl_unimplemented) {
        st = dnnl_success;
        goto out;
    }
    if (st) goto out;
    const char *impl = NULL;
    if ((st = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl))) goto out;
    snprintf(e->impl, sizeof e->impl, "%s", impl ? impl : "?");
    if (strncmp(e->impl, "ref", 3) == 0) goto out;
    if ((st = dnnl_primitive_create(&e->prim, pd)) ||
        (st = dnnl_memory_create(&e->a, &a_md, lk_dnnl_engine, DNNL_MEMORY_NONE)) ||
        (st = dnnl_memory_create(&e->b, &b_md, lk_dnnl_engine, DNNL_MEMORY_NONE)) ||
        (st = dnnl_memory_create(&e->c, &c_md, lk_dnnl_engine, DNNL_MEMORY_NONE)))
        goto out;
out:
    if (st) entry_clear(e);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return st;
}

static dnnl_entry *entry_find(const dnnl_key *k)
{
    for (int i = 0; i < LK_DNNL_CACHE; i++)
        if (lk_dnnl_cache[i].used && key_equal(&lk_dnnl_cache[i].key, k)) return &lk_dnnl_cache[i];
    dnnl_entry *e = &lk_dnnl_cache[lk_dnnl_next];
    lk_dnnl_next = (lk_dnnl_next + 1) % LK_DNNL_CACHE;
    entry_clear(e);
    const dnnl_status_t st = entry_create(e, k);
    if (st) {
        dnnl_warn("primitive creation", st);
        lk_dnnl_state = -1; /* something is wrong beyond this shape: stop trying */
        return NULL;
    }
    return e;
}

/* Runs the product on oneDNN and returns 1, or returns 0 (C untouched) for the caller to
 * widen instead. Caller holds lk_gemm_lock; K > 0. */
static int gemm_onednn_locked(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K,
                              float alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
                              float beta, float *C, int64_t ldc)
{
    if (!dnnl_ready()) return 0;
    dnnl_key k = {M, N, K, lda, ldb, ldc, trans_a != 0, trans_b != 0, beta != 0.0f, 0};
    memcpy(&k.alpha_bits, &alpha, sizeof alpha);
    dnnl_entry *e = entry_find(&k);
    if (!e || !e->prim) return 0;
    dnnl_status_t st;
    /* oneDNN takes non-const handles; it never writes its inputs. */
    if ((st = dnnl_memory_set_data_handle(e->a, (void *)A)) ||
        (st = dnnl_memory_set_data_handle(e->b, (void *)B)) ||
        (st = dnnl_memory_set_data_handle(e->c, C))) {
        dnnl_warn("set_data_handle", st);
        lk_dnnl_state = -1;
        return 0;
    }
    if (beta != 0.0f && beta != 1.0f) {
#pragma omp parallel for if (M * N >= LK_OMP_MIN_WORK)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] *= beta;
    }
    const dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
    if ((st = dnnl_primitive_execute(e->prim, lk_dnnl_stream, 3, args)) ||
        (st = dnnl_stream_wait(lk_dnnl_stream))) {
        /* oneDNN validates before it computes, so C still holds its old values (times beta
         * if scaled above): finish on the widening path from there. */
        dnnl_warn("execution", st);
        lk_dnnl_state = -1;
        gemm_fp32_locked(trans_a, trans_b, M, N, K, alpha, A, LOOM_DTYPE_BF16, lda, B,
                         LOOM_DTYPE_BF16, ldb, beta == 0.0f ? 0.0f : 1.0f, C, ldc);
        return 1;
    }
    set_path("onednn", e->impl);
    return 1;
}

#endif /* LOOM_HAVE_ONEDNN */

void lk_gemm_mixed(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const void *A, uint32_t a_dtype, int64_t lda, const void *B, uint32_t b_dtype,
                   int64_t ldb, float beta, float *C, int64_t ldc)
{
    /* Unknown dtypes: nothing (a void kernel cannot report; callers validate dtypes). */
    if (M <= 0 || N <= 0 || !elem_size(a_dtype) || !elem_size(b_dtype)) return;
    pthread_mutex_lock(&lk_gemm_lock);
#ifdef LOOM_HAVE_ONEDNN
    if (a_dtype == LOOM_DTYPE_BF16 && b_dtype == LOOM_DTYPE_BF16 && K > 0 &&
        gemm_onednn_locked(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) {
        pthread_mutex_unlock(&lk_gemm_lock);
        return;
    }
#endif
    gemm_fp32_locked(trans_a, trans_b, M, N, K, alpha, A, a_dtype, lda, B, b_dtype, ldb, beta, C,
                     ldc);
    pthread_mutex_unlock(&lk_gemm_lock);
}
