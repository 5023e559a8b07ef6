/*
 * zero2.c - ZeRO stage 2 (DeepSpeed's P_os+g): zero1's partition of optimizer states and master
 * weights, plus the gradient partition of zero_grads.h: a rank keeps only its own partition of
 * the gradients, reduced to it range by range as backward releases them. After the update the
 * partitions are all-gathered back, as in zero1. An optimizer that needs whole tensors
 * (Adafactor) gets zero1's whole-tensor partitions (zero_whole.h); nothing below assumes even ones.
 * Under accumulation zero2 rounds 16-bit gradients once per micro-batch where ddp's model rounds
 * once per local accumulation (zero_grads.h says why).
 *
 * cpu_offload (ZeRO-Offload, zero_offload.h): the owned partition is stepped in host memory.
 * On the last micro-batch each finished piece of the gradient partition is copied to the host
 * as its reduction completes; the host binds master weights and optimizer states to host memory
 * (host_params) and the updated partition goes back to the device before the all-gather. The
 * copies move bits, so offload changes where the step runs, never its result.
 */
#include <string.h>

#include <loom/optimizer.h>
#include <loom/sharding.h>
#include <loom/plugin.h>

#include "sharding_common.h"

#include "zero_common.h"
#include "zero_grads.h"
#include "zero_offload.h"

typedef struct zero2_sharding {
    zero_base z;                  /* first: the layout, partition and all-gather              */
    zero_grads g;                 /* the gradient partition and its arena                     */
    int32_t offload;              /* cpu_offload: the step's partition lives on the host      */
    zero_offload host_copy;       /* cpu_offload's host copies and copies in flight           */
} zero2_sharding;

static const loom_param_spec zero2_params[] = {
    ZERO_SHARED_PARAMS,
    ZERO_GRADIENT_PARAMS,
    {"cpu_offload", LOOM_PARAM_BOOL, 0, "false",
     "ZeRO-Offload: master weights, optimizer states and the step on the host CPU; the gradient partition copied "
     "to the host during backward"},
    {NULL, 0, 0, NULL, NULL},
};

static void zero2_destroy(loom_sharding *self_)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    if (!self) return;
    zero_grads_free(&self->g, &self->z);
    zero_offload_release(&self->host_copy);
    zero_instance_free(&self->z);
}

static loom_status zero2_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                const loom_sharding_setup *setup, loom_sharding **out)
{
    *out = NULL;
    zero_options o;
    loom_status st = zero_read_options(host, api, config, setup, "zero2", &o);
    if (st != LOOM_OK) return st;
    zero2_sharding *self = zero_instance_new(host, api, setup, &o, sizeof *self, &st);
    if (!self) return st;
    if ((st = zero_grads_init(&self->g, &self->z, setup, &o, "zero2")) != LOOM_OK) {
        zero2_destroy((loom_sharding *)self);
        return st;
    }
    self->offload = o.cpu_offload;
    if (self->offload) {
        const loom_range *mine = &self->z.ranges[self->z.rank];
        if ((st = zero_offload_init(&self->host_copy, host, api, setup->params, mine->begin, mine->end - mine->begin,
                                    self->z.element_size)) != LOOM_OK) {
            zero2_destroy((loom_sharding *)self);
            return st;
        }
        self->g.offload = &self->host_copy;
        api->log(host, LOOM_LOG_DEBUG, "cpu_offload: %lld elements of this rank's partition stepped in %s host memory",
                 (long long)(mine->end - mine->begin), self->host_copy.backend ? "pinned" : "ordinary");
    }
    *out = (loom_sharding *)self;
    return LOOM_OK;
}

static loom_status zero2_memory(const loom_sharding *self_, loom_sharding_memory *out)
{
    const zero2_sharding *self = (const zero2_sharding *)self_;
    zero_grads_memory(&self->g, &self->z, out);
    if (LOOM_HAS_FIELD(out, loom_sharding_memory, host_bytes))
        out->host_bytes = self->offload ? zero_offload_bytes(&self->host_copy) : 0;
    return LOOM_OK;
}

static loom_status zero2_begin_micro_batch(loom_sharding *self_, int32_t micro, int32_t last)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    self->g.last_micro = last != 0;
    if (micro == 0 && self->offload) zero_offload_begin_step(&self->host_copy);
    return LOOM_OK;
}

static loom_status zero2_grad_acquire(loom_sharding *self_, int64_t begin, int64_t end, void **memory)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    return zero_grads_acquire(&self->g, &self->z, begin, end, memory);
}

static loom_status zero2_grad_release(loom_sharding *self_, int64_t begin, int64_t end)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    return zero_grads_release(&self->g, &self->z, begin, end);
}

static loom_status zero2_finish_grads(loom_sharding *self_)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    loom_status st = zero_grads_finish(&self->g, &self->z);
    if (st == LOOM_OK && self->offload) st = zero_offload_finish(&self->host_copy, self->g.owned);
    return st;
}

static loom_status zero2_owned_grads(loom_sharding *self_, size_t range_index, void **memory)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    loom_status st = zero_check_range_index(&self->z, range_index);
    if (st != LOOM_OK) return st;
    *memory = self->offload ? self->host_copy.grads : self->g.owned;
    return LOOM_OK;
}

static loom_status zero2_zero_grads(loom_sharding *self_)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    zero_grads_clear(&self->g, &self->z);
    return LOOM_OK;
}

static loom_status zero2_publish_params(loom_sharding *self_)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    if (self->offload) {
        loom_status st = zero_offload_publish(&self->host_copy, self->z.params);
        if (st != LOOM_OK) return st;
    }
    return zero_base_publish(&self->z);
}

static loom_status zero2_host_params(loom_sharding *self_, void **memory)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    *memory = self->offload ? self->host_copy.params : NULL;
    return LOOM_OK;
}

static const loom_sharding_vtable zero2_vtable = {
    LOOM_HEADER_INIT(loom_sharding_vtable),
    .create = zero2_create,
    .destroy = zero2_destroy,
    .owned_ranges = zero_owned_ranges,
    .memory = zero2_memory,
    .begin_micro_batch = zero2_begin_micro_batch,
    .grad_acquire = zero2_grad_acquire,
    .grad_release = zero2_grad_release,
    .finish_grads = zero2_finish_grads,
    .owned_grads = zero2_owned_grads,
    .zero_grads = zero2_zero_grads,
    .publish_params = zero2_publish_params,
    .host_params = zero2_host_params,
};

static const loom_plugin_desc zero2_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SHARDING,
    .name = "zero2",
    .version = "1.0.0",
    .summary =
        "ZeRO stage 2: zero1 plus gradients kept only for the owned partition, reduced to owners during backward",
    .vtable = &zero2_vtable,
    .params = zero2_params,
};

LOOM_PLUGIN_EXPORT(&zero2_desc)
