/*
 * loom.h - what every loom plugin kind shares: ABI versions, status codes, dtypes, devices,
 * tensor views, configuration getters, the host-services table, the plugin descriptor and the
 * single entry symbol.
 *
 * This header is the contract between the loom core ("the host") and a plugin. It is
 * self-contained C11 (compiles as C++ too), includes only <stddef.h> and <stdint.h>, and
 * has no bool or enum in any struct layout: every field has a fixed size.
 *
 * Versioning (see docs/architecture.md#abi-versioning):
 *   - Every struct that crosses the boundary starts with LOOM_STRUCT_HEADER: the ABI
 *     major/minor it was built against and its own sizeof. A host MUST reject a different
 *     major; a lower minor is accepted, and struct_size tells which members exist.
 *   - Members are only ever appended, under a comment naming the minor that added them.
 *     Nothing is reordered, resized or reused; status codes, dtypes and kinds are never
 *     renumbered. Read an optional member through LOOM_HAS().
 *   - _Static_assert()s at the end of each header freeze the layout of ABI 1.0: moving a
 *     member fails to compile.
 *
 * Ownership, in one sentence: whoever allocates frees, through the same allocator; whatever
 * is passed into a call is borrowed for that call only unless the member's comment says
 * otherwise; strings a plugin returns are static or live as long as the instance.
 *
 * Threading labels: "MT-safe" (any thread, concurrently), "one thread per instance" (calls on
 * one instance never overlap), "init thread only" (the thread that loaded the plugin, before
 * training threads start).
 *
 * How to read a member's comment. Each says what the member is for and, where it differs from
 * the rules below, whether it is required, what NULL means, who owns what, its threading label
 * and the version that added it. Where a comment is silent, these rules apply:
 *   - Version: a member is in ABI 1.0 unless it sits under a "ABI 1.x" comment (or says so);
 *     the frozen 1.0 copy in tests/abi/v1.0 is the reference, checked member by member.
 *   - Where to append: a struct that may grow ends with "ABI 1.N+: append below.", N the next
 *     minor; one that never grows (embedded in another struct, passed as an array, or without
 *     a header) says so in that place instead.
 *   - Vtable members (function pointers a plugin fills): Required; a 1.1+ member is Optional
 *     and read through LOOM_HAS (NULL or beyond struct_size: the host does without it, as the
 *     member's comment says). destroy() accepts NULL. Threading: create() on the init thread,
 *     every other member one thread per instance.
 *   - Host tables (loom_host_api, service tables): every member is set by the host and MT-safe.
 *   - Data members of a struct passed into a call: written by the caller, read-only to the
 *     callee, borrowed for that call; pointers in them are borrowed too, and NULL only where the
 *     comment says what NULL means. Of a struct a plugin writes (out parameters, info/state
 *     structs): written by the plugin, owned by the caller.
 */
#ifndef LOOM_LOOM_H
#define LOOM_LOOM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* Versions                                                                                 */

#define LOOM_ABI_MAJOR 1 /* incompatible change: a host rejects a plugin of another major  */
#define LOOM_ABI_MINOR 12 /* compatible change: members appended; older plugins keep loading */
/* 1.1: kernels.h convert / accumulate_f32 / gemm_mixed / softmax_cross_entropy_backward_cast;
 *      model.h step_scratch; precision.h loom_precision_binding.grad_workspace;
 *      optimizer.h loom_optimizer_step.comm..world_size and local_gradients (1-bit Adam);
 *      sharding.h set_reduction and loom_sharding_setup.params_capacity;
 *      loom.h loom_dtype_size / loom_dtype_name / loom_dtype_is_param (header-only).
 * 1.2: callback.h the "loom.trainer/1" service (loom_trainer_api, loom_trainer_data) and
 *      loom_callback_vtable state_name / save_state / load_state (stateful callbacks);
 *      model.h LOOM_PARAM_EMBEDDING (a flag value: HF's flops estimate leaves embeddings out).
 * 1.3: model.h loom_batch attention_mask / decoder_input_ids / dropout_seed / training
 *      (variable-length and encoder-decoder batches, dropout); kernels.h rmsnorm_forward /
 *      rmsnorm_backward / mha_forward / mha_backward (T5: RMS norm, attention with a
 *      position bias, key padding mask, optional causality and dropout) and the header-only
 *      loom_dropout_keep;
 *      backend.h LOOM_KIND_BACKEND (a device as a plugin: memory, streams, copies, its kernel
 *      table); the host serves "loom.kernels.cuda/1" when a CUDA backend is bound;
 *      kernels.h attention_flash_forward / attention_flash_backward / classifier (long
 *      sequences: no [T, T] probabilities, no [N, V] logits); model.h train_step (forward and
 *      backward in one call, the seed known up front).
 * 1.4: sharding.h host_params and loom_sharding_memory.host_bytes (ZeRO-Offload: the owned
 *      partition stepped in host memory); backend.h the "loom.backend/1" service
 *      (loom_backend_service: the bound backend for plugins that copy their own bytes);
 *      kernels.h softmax_cross_entropy_smoothed_forward / _backward / _backward_cast and
 *      classifier_smoothed (HF's label smoothing); attention_flash_forward_dropout /
 *      attention_flash_backward_dropout (GPT-2's attention dropout, masks drawn again);
 *      model.h generation_ids / encode / decode_rows / reorder_cache and loom_generation_ids
 *      (encoder-decoder generation: the encoder once, the decoder stepped over a key/value
 *      cache of B x num_beams rows, beam reordering); loom_grad_sink acquire_rows / release_rows (a gradient in two
 *      parts: the dense part reduced during backward, sparse late rows reduced by the host at
 *      the end).
 * 1.5: kernels.h adam_update / scale_check / sum_squares and loom_adam_args (the optimizer
 *      step's element-wise work on the device that holds it); optimizer.h
 *      loom_optimizer_step.kernels (the table of the device the spans live on).
 * 1.6: comm.h alloc_shared / free_shared (memory the peers reach in place, so an all_reduce
 *      on it needs no copy through the transport: ddp's gradients between the ranks of one
 *      machine).
 * 1.7: precision.h loom_precision_binding.piecewise, unscale_piece / cast_piece and
 *      optimizer.h LOOM_OPTIMIZER_ELEMENTWISE (the step a piece of the gradients at a time: no
 *      f32 copy of all of them).
 * 1.8: kernels.h classifier_columns and the header-only loom_classifier_columns_bytes (the
 *      fused classifier by slabs of vocabulary columns: a 16-bit head gradient without an f32
 *      [V, C] accumulator).
 * 1.9: kernels.h gelu_forward_cast / gelu_backward_cast (GELU reading and writing 16-bit
 *      activations in one pass, the backward written, not accumulated).
 * 1.10: model.h and precision.h bind() may be called again before the first step, a later
 *      binding replacing the earlier (--auto_find_batch_size binds each batch size it tries);
 *      the host does so only with plugins built for 1.10 or later. kernels.h the header-only
 *      loom_uniform (dropout's draw, NEFTune's noise). No member added.
 * 1.11: scheduler.h loom_scheduler_vtable observe / save_state / load_state (a schedule that
 *      follows the evaluation metric, HF's reduce_lr_on_plateau, and keeps state across a
 *      resume).
 * 1.12: ZeRO-3: sharding.h param_acquire / param_release and loom_sharding_memory.param_bytes;
 *      model.h loom_param_source, loom_model_binding.param_source, loom_model_vtable.flags
 *      and LOOM_MODEL_PARAM_SOURCE; callback.h the trainer's tensor() answers
 *      LOOM_E_UNSUPPORTED while the parameters are partitioned. */

/* The first members of every versioned struct. struct_size MUST be set to sizeof(the struct)
 * as the builder of the struct saw it; the reader never touches bytes past it. */
#define LOOM_STRUCT_HEADER \
    uint32_t abi_major;    \
    uint32_t abi_minor;    \
    uint32_t struct_size;  \
    uint32_t reserved0

/* Fill a header for struct type T (for designated initialisers: { LOOM_HEADER_INIT(T), ... }). */
#define LOOM_HEADER_INIT(T) \
    .abi_major = LOOM_ABI_MAJOR, .abi_minor = LOOM_ABI_MINOR, .struct_size = sizeof(T), .reserved0 = 0

/* True when member m lies inside the struct_size of *p (built against an older header, a
 * struct may be shorter than T) AND is non-zero. Use it for every optional member. */
#define LOOM_HAS(p, T, m) \
    ((p)->struct_size >= offsetof(T, m) + sizeof(((T *)0)->m) && (p)->m)

/* True when member m lies inside struct_size, whatever its value (for data members where
 * zero is meaningful). */
#define LOOM_HAS_FIELD(p, T, m) ((p)->struct_size >= offsetof(T, m) + sizeof(((T *)0)->m))

#if defined(_WIN32)
#define LOOM_EXPORT __declspec(dllexport)
#else
#define LOOM_EXPORT __attribute__((visibility("default")))
#endif

/* ---------------------------------------------------------------------------------------- */
/* Status codes: 0 is success; never renumbered, only appended.                             */

typedef int32_t loom_status;
#define LOOM_OK 0
#define LOOM_E_INVALID 1      /* bad argument or configuration value                       */
#define LOOM_E_NOMEM 2        /* allocation failed                                         */
#define LOOM_E_UNSUPPORTED 3  /* this plugin or device cannot do what was asked            */
#define LOOM_E_DEVICE 4       /* the device (CUDA, ...) reported an error                  */
#define LOOM_E_INTERNAL 5     /* a bug or an exception caught at the boundary              */
#define LOOM_E_IO 6           /* a file could not be read or written                       */
#define LOOM_E_FORMAT 7       /* a file or message is malformed or truncated               */
#define LOOM_E_NOT_FOUND 8    /* a key, file, symbol or plugin does not exist              */
#define LOOM_E_ABI 9          /* incompatible ABI version or struct                        */
#define LOOM_E_COMM 10        /* a collective failed: peer gone, connection refused        */
#define LOOM_E_TIMEOUT 11     /* a collective or rendezvous did not finish in time         */
#define LOOM_E_OVERFLOW 12    /* a non-finite value where a finite one was needed          */
#define LOOM_E_STOP 13        /* not an error: the plugin asks the trainer to stop cleanly */

/* ---------------------------------------------------------------------------------------- */
/* Data types and devices. Values are never renumbered.                                     */

#define LOOM_DTYPE_INVALID 0
#define LOOM_DTYPE_F32 1
#define LOOM_DTYPE_F16 2
#define LOOM_DTYPE_BF16 3
#define LOOM_DTYPE_I32 4
#define LOOM_DTYPE_I64 5
#define LOOM_DTYPE_U16 6
#define LOOM_DTYPE_U8 7
#define LOOM_DTYPE_F64 8

/* Header-only helpers (nothing to link; ABI 1.1): bytes per element of a LOOM_DTYPE_* (0 for
 * an unknown one), its short name ("f32", "bf16", ...; "unknown"), and whether it is a dtype
 * model parameters and gradients may have (f32, f16, bf16). */
static inline size_t loom_dtype_size(uint32_t dtype)
{
    switch (dtype) {
    case LOOM_DTYPE_F64:
    case LOOM_DTYPE_I64: return 8;
    case LOOM_DTYPE_F32:
    case LOOM_DTYPE_I32: return 4;
    case LOOM_DTYPE_F16:
    case LOOM_DTYPE_BF16:
    case LOOM_DTYPE_U16: return 2;
    case LOOM_DTYPE_U8: return 1;
    default: return 0;
    }
}

static inline const char *loom_dtype_name(uint32_t dtype)
{
    switch (dtype) {
    case LOOM_DTYPE_F32: return "f32";
    case LOOM_DTYPE_F16: return "f16";
    case LOOM_DTYPE_BF16: return "bf16";
    case LOOM_DTYPE_I32: return "i32";
    case LOOM_DTYPE_I64: return "i64";
    case LOOM_DTYPE_U16: return "u16";
    case LOOM_DTYPE_U8: return "u8";
    case LOOM_DTYPE_F64: return "f64";
    default: return "unknown";
    }
}

static inline int loom_dtype_is_param(uint32_t dtype)
{
    return dtype == LOOM_DTYPE_F32 || dtype == LOOM_DTYPE_F16 || dtype == LOOM_DTYPE_BF16;
}

#define LOOM_DEVICE_CPU 0
#define LOOM_DEVICE_CUDA 1

#define LOOM_MAX_DIMS 8

/* A view of memory the caller owns: no ownership moves with it. Row-major and contiguous
 * unless the user of the view documents otherwise. data is on `device`. */
typedef struct loom_tensor_view {
    LOOM_STRUCT_HEADER;
    void *data;              /* borrowed; NULL for an empty view                            */
    uint32_t dtype;          /* LOOM_DTYPE_*                                                */
    uint32_t device;         /* LOOM_DEVICE_*                                               */
    int32_t device_index;    /* which GPU for CUDA; 0 for CPU                               */
    uint32_t ndim;           /* number of valid entries in shape, 0..LOOM_MAX_DIMS          */
    int64_t shape[LOOM_MAX_DIMS];

    /* Never appended to: loom_batch embeds views, so this size is part of its layout. */
} loom_tensor_view;

/* ---------------------------------------------------------------------------------------- */
/* Plugin kinds. Never renumbered.                                                          */

#define LOOM_KIND_OPTIMIZER 1
#define LOOM_KIND_SCHEDULER 2
#define LOOM_KIND_SHARDING 3
#define LOOM_KIND_PRECISION 4
#define LOOM_KIND_CALLBACK 5
#define LOOM_KIND_COMM 6
#define LOOM_KIND_MODEL 7
#define LOOM_KIND_BACKEND 8 /* ABI 1.3, backend.h */

/* ---------------------------------------------------------------------------------------- */
/* Configuration: a plugin reads its own section through the getters of loom_host_api.     */

/* Opaque, read-only view of one plugin's configuration section. Borrowed: valid during
 * create() only; a plugin copies what it needs. */
typedef struct loom_config loom_config;

#define LOOM_PARAM_BOOL 1
#define LOOM_PARAM_INT 2    /* int64_t                                                      */
#define LOOM_PARAM_FLOAT 3  /* double                                                       */
#define LOOM_PARAM_STRING 4

/* One accepted configuration key. A plugin lists them in its descriptor (terminated by an
 * entry with key == NULL); the host rejects any other key with an error naming the key, the
 * plugin and the closest accepted key, and prints the table for `loom plugins --help NAME`. */
typedef struct loom_param_spec {
    const char *key;           /* lowercase, [a-z0-9_]                                       */
    uint32_t type;             /* LOOM_PARAM_*                                               */
    uint32_t reserved0;
    const char *default_value; /* as text ("0.9", "true", "linear"); NULL: no default        */
    const char *doc;           /* one line                                                   */

    /* Never appended to: descriptors point at arrays of it (the stride is fixed). */
} loom_param_spec;

/* ---------------------------------------------------------------------------------------- */
/* Host services: the only way a plugin reaches the core. Plugins never link against libloom. */

/* Opaque host context; one per plugin instance, passed back in every upcall. */
typedef struct loom_host loom_host;

#define LOOM_LOG_ERROR 0
#define LOOM_LOG_WARNING 1
#define LOOM_LOG_INFO 2
#define LOOM_LOG_DEBUG 3

/* Results of the config getters. */
#define LOOM_CFG_ABSENT 0  /* the key is not set and the spec has no default                */
#define LOOM_CFG_PRESENT 1 /* *out was written                                              */
#define LOOM_CFG_WRONG_TYPE (-1) /* the key is set to a value of another type; *out untouched */

/* Built by the host, lent to a plugin for the life of its instances (never freed by it).
 * Every member Required (never NULL), since 1.0, MT-safe unless its comment says otherwise. */
typedef struct loom_host_api {
    LOOM_STRUCT_HEADER;

    /* Allocate `bytes` bytes aligned to `align` (a power of two, >= sizeof(void*); 0 means
     * 64) on `device` (LOOM_DEVICE_*, with device_index). Returns NULL on failure. The memory
     * is counted in the run's memory report. Free it with free_memory. MT-safe. */
    void *(*alloc)(loom_host *host, size_t bytes, size_t align, uint32_t device, int32_t device_index);
    /* Free memory from alloc. NULL is a no-op. MT-safe. */
    void (*free_memory)(loom_host *host, void *ptr);

    /* Log one line (no trailing newline needed) at LOOM_LOG_*; the host prefixes the plugin's
     * name and, in distributed runs, the rank. MT-safe. */
    void (*log)(loom_host *host, uint32_t level, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 3, 4)))
#endif
        ;
    /* Record an error message for the current thread, tagged with the plugin's name, and
     * return `code` so a plugin writes `return api->fail(h, LOOM_E_INVALID, "...")`. MT-safe. */
    loom_status (*fail)(loom_host *host, loom_status code, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 3, 4)))
#endif
        ;

    /* Typed configuration getters on the plugin's own section. They return LOOM_CFG_PRESENT
     * and write *out, LOOM_CFG_ABSENT (no value and no default), or LOOM_CFG_WRONG_TYPE.
     * An int is accepted by cfg_f64; a string is valid while the config is. MT-safe. */
    int (*cfg_f64)(const loom_config *cfg, const char *key, double *out);
    int (*cfg_i64)(const loom_config *cfg, const char *key, int64_t *out);
    int (*cfg_bool)(const loom_config *cfg, const char *key, int32_t *out);
    int (*cfg_str)(const loom_config *cfg, const char *key, const char **out);
    /* The index-th key set in the section (sorted), or NULL past the end. MT-safe. */
    const char *(*cfg_key)(const loom_config *cfg, size_t index);

    /* A named host service table, or NULL if this host lacks it or its minor version is
     * below min_minor. The pointer is owned by the host and valid for the run.
     * Names: "loom.kernels.cpu/1" (LOOM_KERNELS_CPU_SERVICE) -> const loom_kernels_api *
     * (kernels.h); "loom.kernels.cuda/1" -> the bound CUDA backend's table (ABI 1.3; NULL
     * without one); "loom.store/1" (LOOM_STORE_SERVICE) -> const loom_store_api * (comm.h; NULL
     * in a one-process run); "loom.trainer/1" (LOOM_TRAINER_SERVICE) -> const loom_trainer_api *
     * (callback.h, ABI 1.2: callbacks only); "loom.backend/1" (LOOM_BACKEND_SERVICE) ->
     * const loom_backend_service * (backend.h, ABI 1.4; NULL on a CPU run). MT-safe. */
    const void *(*service)(loom_host *host, const char *name, uint32_t min_minor);

    /* Deterministic random numbers: the stream `stream` (a plugin picks any constant) of the
     * run's seed, advanced by `offset` draws. Fills n floats from N(mean, std). Same seed,
     * stream and offset give the same numbers on every host. MT-safe. */
    void (*random_normal)(loom_host *host, uint64_t stream, uint64_t offset, float *out, size_t n,
                          float mean, float std);

    /* Number of worker threads the run may use for compute (OpenMP / BLAS). MT-safe. */
    int32_t (*num_threads)(loom_host *host);

    /* ABI 1.13+: append below. */
} loom_host_api;

/* ---------------------------------------------------------------------------------------- */
/* The plugin descriptor and the entry symbol.                                              */

/* Written by the plugin as static data (LOOM_PLUGIN_EXPORT in plugin.h builds it), read by
 * the host on the thread that loads the plugin; never freed. Every member since 1.0; Required
 * and never NULL unless its comment says what NULL means. */
typedef struct loom_plugin_desc {
    LOOM_STRUCT_HEADER;
    uint32_t kind;                  /* LOOM_KIND_*                                           */
    uint32_t reserved1;             /* 0                                                     */
    const char *name;               /* unique per kind, lowercase: "adamw", "zero2"          */
    const char *version;            /* the plugin's own version, informational: "1.0.0"      */
    const char *summary;            /* one line for `loom plugins`                           */
    const void *vtable;             /* -> static const loom_<kind>_vtable of this kind       */
    const loom_param_spec *params;  /* accepted configuration keys, {NULL}-terminated; NULL = none */

    /* ABI 1.13+: append below. */
} loom_plugin_desc;

/* The one symbol a plugin exports. Returns descriptor number `index` (0, 1, ...) or NULL
 * past the end; one shared object may carry several plugins. It MUST have no side effects
 * and return static data; host_abi_major lets a plugin built for several majors pick one.
 * Re-entrant. */
typedef const loom_plugin_desc *(*loom_plugin_query_fn)(uint32_t host_abi_major, uint32_t index);
#define LOOM_PLUGIN_QUERY_SYMBOL "loom_plugin_query"

#ifndef LOOM_HOST_SIDE
LOOM_EXPORT const loom_plugin_desc *loom_plugin_query(uint32_t host_abi_major, uint32_t index);
#endif

/* ---------------------------------------------------------------------------------------- */
/* Layout freeze for ABI 1.0 (64-bit targets).                                              */

#if defined(__cplusplus)
#define LOOM_STATIC_ASSERT static_assert
#else
#define LOOM_STATIC_ASSERT _Static_assert
#endif

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(sizeof(loom_tensor_view) == 104, "loom_tensor_view layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_tensor_view, shape) == 40, "loom_tensor_view layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_param_spec) == 32, "loom_param_spec layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_host_api, alloc) == 16, "loom_host_api layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_host_api, num_threads) == 104, "loom_host_api layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_host_api) == 112, "loom_host_api layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_plugin_desc, vtable) == 48, "loom_plugin_desc layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_plugin_desc) == 64, "loom_plugin_desc layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_LOOM_H */
