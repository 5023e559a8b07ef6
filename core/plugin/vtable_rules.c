/*
 * vtable_rules.c - loom_vtable_min_size and loom_vtable_missing_member (vtable_rules.h).
 *
 * The members listed are those each header marks "Required" within the ABI 1.0 size of its
 * kind; a member added by a later minor is optional by the append-only rule, and the host reads
 * it through LOOM_HAS.
 */
#include "vtable_rules.h"

#include <loom/backend.h>
#include <loom/callback.h>
#include <loom/comm.h>
#include <loom/model.h>
#include <loom/optimizer.h>
#include <loom/precision.h>
#include <loom/scheduler.h>
#include <loom/sharding.h>

#include <string.h>

#define END_OF(T, m) (offsetof(T, m) + sizeof(((T *)0)->m))

typedef struct struct_header {
    LOOM_STRUCT_HEADER;
} struct_header;

size_t loom_vtable_min_size(uint32_t kind)
{
    switch (kind) {
    case LOOM_KIND_OPTIMIZER:
        return END_OF(loom_optimizer_vtable, get_hparam);
    case LOOM_KIND_SCHEDULER:
        return END_OF(loom_scheduler_vtable, value);
    case LOOM_KIND_SHARDING:
        return END_OF(loom_sharding_vtable, publish_params);
    case LOOM_KIND_PRECISION:
        return END_OF(loom_precision_vtable, set_state);
    case LOOM_KIND_CALLBACK:
        return END_OF(loom_callback_vtable, on_event);
    case LOOM_KIND_COMM:
        return END_OF(loom_comm_vtable, wait);
    case LOOM_KIND_MODEL:
        return END_OF(loom_model_vtable, output_shape);
    case LOOM_KIND_BACKEND:
        return END_OF(loom_backend_vtable, kernels);
    default:
        return sizeof(struct_header);
    }
}

typedef struct member {
    size_t offset;
    const char *name;
} member;

/* One entry: {M(T, member)}. */
#define M(T, m) offsetof(T, m), #m

static const member OPTIMIZER[] = {{M(loom_optimizer_vtable, create)},
                                   {M(loom_optimizer_vtable, destroy)},
                                   {M(loom_optimizer_vtable, step)},
                                   {0, NULL}};
static const member SCHEDULER[] = {{M(loom_scheduler_vtable, create)},
                                   {M(loom_scheduler_vtable, destroy)},
                                   {M(loom_scheduler_vtable, value)},
                                   {0, NULL}};
static const member SHARDING[] = {{M(loom_sharding_vtable, create)},
                                  {M(loom_sharding_vtable, destroy)},
                                  {M(loom_sharding_vtable, owned_ranges)},
                                  {M(loom_sharding_vtable, memory)},
                                  {M(loom_sharding_vtable, begin_micro_batch)},
                                  {M(loom_sharding_vtable, grad_acquire)},
                                  {M(loom_sharding_vtable, grad_release)},
                                  {M(loom_sharding_vtable, finish_grads)},
                                  {M(loom_sharding_vtable, owned_grads)},
                                  {M(loom_sharding_vtable, zero_grads)},
                                  {M(loom_sharding_vtable, publish_params)},
                                  {0, NULL}};
static const member PRECISION[] = {{M(loom_precision_vtable, create)},
                                   {M(loom_precision_vtable, destroy)},
                                   {M(loom_precision_vtable, describe)},
                                   {M(loom_precision_vtable, bind)},
                                   {M(loom_precision_vtable, master_bytes)},
                                   {M(loom_precision_vtable, master)},
                                   {M(loom_precision_vtable, loss_scale)},
                                   {M(loom_precision_vtable, unscale)},
                                   {M(loom_precision_vtable, update_scale)},
                                   {M(loom_precision_vtable, cast_to_model)},
                                   {M(loom_precision_vtable, get_state)},
                                   {M(loom_precision_vtable, set_state)},
                                   {0, NULL}};
static const member CALLBACK[] = {{M(loom_callback_vtable, create)},
                                  {M(loom_callback_vtable, destroy)},
                                  {M(loom_callback_vtable, on_event)},
                                  {0, NULL}};
static const member COMM[] = {{M(loom_comm_vtable, create)},
                              {M(loom_comm_vtable, destroy)},
                              {M(loom_comm_vtable, all_reduce)},
                              {M(loom_comm_vtable, reduce_scatter)},
                              {M(loom_comm_vtable, all_gather)},
                              {M(loom_comm_vtable, broadcast)},
                              {M(loom_comm_vtable, reduce)},
                              {M(loom_comm_vtable, all_to_all)},
                              {M(loom_comm_vtable, barrier)},
                              {M(loom_comm_vtable, wait)},
                              {0, NULL}};
static const member MODEL[] = {{M(loom_model_vtable, create)},       {M(loom_model_vtable, destroy)},
                               {M(loom_model_vtable, param_count)},  {M(loom_model_vtable, param_info)},
                               {M(loom_model_vtable, init_params)},  {M(loom_model_vtable, bind)},
                               {M(loom_model_vtable, forward)},      {M(loom_model_vtable, backward)},
                               {M(loom_model_vtable, output_shape)}, {0, NULL}};
static const member BACKEND[] = {{M(loom_backend_vtable, probe)},
                                 {M(loom_backend_vtable, create)},
                                 {M(loom_backend_vtable, destroy)},
                                 {M(loom_backend_vtable, device_info)},
                                 {M(loom_backend_vtable, alloc)},
                                 {M(loom_backend_vtable, free_memory)},
                                 {M(loom_backend_vtable, alloc_pinned)},
                                 {M(loom_backend_vtable, free_pinned)},
                                 {M(loom_backend_vtable, copy)},
                                 {M(loom_backend_vtable, memset_zero)},
                                 {M(loom_backend_vtable, stream_create)},
                                 {M(loom_backend_vtable, stream_destroy)},
                                 {M(loom_backend_vtable, stream_synchronize)},
                                 {M(loom_backend_vtable, event_create)},
                                 {M(loom_backend_vtable, event_destroy)},
                                 {M(loom_backend_vtable, event_record)},
                                 {M(loom_backend_vtable, stream_wait_event)},
                                 {M(loom_backend_vtable, event_synchronize)},
                                 {M(loom_backend_vtable, synchronize)},
                                 {M(loom_backend_vtable, kernels)},
                                 {0, NULL}};

static const member *required(uint32_t kind)
{
    switch (kind) {
    case LOOM_KIND_OPTIMIZER:
        return OPTIMIZER;
    case LOOM_KIND_SCHEDULER:
        return SCHEDULER;
    case LOOM_KIND_SHARDING:
        return SHARDING;
    case LOOM_KIND_PRECISION:
        return PRECISION;
    case LOOM_KIND_CALLBACK:
        return CALLBACK;
    case LOOM_KIND_COMM:
        return COMM;
    case LOOM_KIND_MODEL:
        return MODEL;
    case LOOM_KIND_BACKEND:
        return BACKEND;
    default:
        return NULL;
    }
}

const char *loom_vtable_missing_member(uint32_t kind, const void *vtable)
{
    const member *m = required(kind);
    for (; m && m->name; m++) {
        /* Every member is a function pointer; memcpy reads one without assuming the vtable's
         * static type. */
        void (*fn)(void);
        memcpy(&fn, (const char *)vtable + m->offset, sizeof fn);
        if (!fn) return m->name;
    }
    return NULL;
}
