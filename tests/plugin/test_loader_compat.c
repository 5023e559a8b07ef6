/* Plugins that must load and run: a current one, one built against the frozen ABI 1.0
 * headers, one from a future minor with appended members, and a file with two plugins.
 * Each loaded vtable is called, so "loads" means "works", not just "dlopen succeeded". */
#include "error.h"
#include "loader_test_util.h"
#include "plugin_loader.h"
#include "test_util.h"

#include <loom/optimizer.h>
#include <loom/scheduler.h>

static const loom_plugin *load(const char *spec, uint32_t kind)
{
    const loom_plugin *p = NULL;
    loom_status s = loom_plugin_load(spec, kind, &p);
    if (s) fprintf(stderr, "  load %s: %s\n", spec, loom_error_message());
    CHECK(s == LOOM_OK && p != NULL);
    return p;
}

/* One SGD step through the plugin on a 3-element span: p -= lr * (scale * g + wd * p). */
static void check_sgd_step(const loom_plugin *p, double weight_decay)
{
    if (!p) return;
    const loom_optimizer_vtable *vt = p->desc->vtable;
    CHECK(LOOM_HAS(vt, loom_optimizer_vtable, create) && LOOM_HAS(vt, loom_optimizer_vtable, step));
    loom_optimizer *opt = NULL;
    CHECK(vt->create(NULL, NULL, NULL, &opt) == LOOM_OK && opt != NULL);
    if (!opt) return;
    float param[3] = {1.0f, 2.0f, 3.0f};
    const float grad[3] = {0.5f, -1.0f, 2.0f};
    loom_span span = {LOOM_HEADER_INIT(loom_span),
                      .name = "w",
                      .tensor_numel = 3,
                      .numel = 3,
                      .ndim = 1,
                      .shape = {3},
                      .param = param,
                      .grad = grad,
                      .weight_decay = weight_decay};
    loom_optimizer_step step = {LOOM_HEADER_INIT(loom_optimizer_step), .step = 1, .lr = 0.1, .grad_scale = 2.0};
    CHECK(vt->step(opt, &span, 1, &step) == LOOM_OK);
    const float before[3] = {1.0f, 2.0f, 3.0f};
    for (int i = 0; i < 3; i++)
        CHECK_CLOSE(param[i], before[i] - 0.1 * (2.0 * grad[i] + weight_decay * before[i]), 1e-6, 1e-6);
    vt->destroy(opt);
}

static void test_current(void)
{
    const loom_plugin *p = load("good_optimizer", LOOM_KIND_OPTIMIZER);
    if (!p) return;
    CHECK(p->desc->abi_major == LOOM_ABI_MAJOR && p->desc->abi_minor == LOOM_ABI_MINOR);
    CHECK(strcmp(p->desc->version, "1.0.0") == 0 && p->desc->summary != NULL);
    check_sgd_step(p, 0.0);
    check_sgd_step(p, 0.5);
    const loom_optimizer_vtable *vt = p->desc->vtable;
    double v = 0;
    CHECK(LOOM_HAS(vt, loom_optimizer_vtable, get_hparam));
    CHECK(vt->get_hparam(NULL, "beta1", &v) == LOOM_E_NOT_FOUND);
}

/* Built against tests/abi/v1.0: must keep loading as abi/ grows. */
static void test_old_abi(void)
{
    const loom_plugin *p = load("old_abi_plugin", LOOM_KIND_OPTIMIZER);
    if (!p) return;
    CHECK(strcmp(p->desc->name, "fixture_old") == 0);
    CHECK(p->desc->abi_major == 1 && p->desc->abi_minor == 0);
    CHECK(p->desc->struct_size == offsetof(loom_plugin_desc, params) + sizeof(void *));
    const loom_optimizer_vtable *vt = p->desc->vtable;
    CHECK(vt->abi_major == 1 && vt->abi_minor == 0);
    CHECK(vt->struct_size == offsetof(loom_optimizer_vtable, partial_stats) + sizeof(void *));
    CHECK(!LOOM_HAS(vt, loom_optimizer_vtable, get_hparam)); /* optional, left NULL */
    check_sgd_step(p, 0.0);
}

/* From a newer minor: bigger structs, members this host ignores. */
static void test_newer_minor(void)
{
    const loom_plugin *p = load("newer_minor", LOOM_KIND_OPTIMIZER);
    if (!p) return;
    CHECK(strcmp(p->desc->name, "fixture_newer") == 0);
    CHECK(p->desc->abi_minor == LOOM_ABI_MINOR + 1);
    CHECK(p->desc->struct_size > sizeof(loom_plugin_desc));
    const loom_optimizer_vtable *vt = p->desc->vtable;
    CHECK(vt->abi_minor == LOOM_ABI_MINOR + 1 && vt->struct_size > sizeof(loom_optimizer_vtable));
    check_sgd_step(p, 0.0);
}

/* One file, two plugins: each reachable, sharing the handle and the path. */
static void test_two_plugins(void)
{
    const loom_plugin *any = load("two_plugins", 0);
    const loom_plugin *opt = load("two_plugins", LOOM_KIND_OPTIMIZER);
    const loom_plugin *sched = load("two_plugins.so", LOOM_KIND_SCHEDULER);
    if (!any || !opt || !sched) return;
    /* The name match beats descriptor 0 when any kind will do. */
    CHECK(any == opt && strcmp(opt->desc->name, "two_plugins") == 0);
    CHECK(strcmp(sched->desc->name, "fixture_two_sched") == 0 && sched->desc->kind == LOOM_KIND_SCHEDULER);
    CHECK(sched != opt && sched->handle == opt->handle && strcmp(sched->path, opt->path) == 0);
    check_sgd_step(opt, 0.0);

    const loom_scheduler_vtable *vt = sched->desc->vtable;
    loom_schedule_setup setup = {LOOM_HEADER_INIT(loom_schedule_setup), .base_lr = 1.0, .total_steps = 10};
    loom_scheduler *s = NULL;
    CHECK(vt->create(NULL, NULL, NULL, &setup, &s) == LOOM_OK && s != NULL);
    if (!s) return;
    loom_schedule_value v = {LOOM_HEADER_INIT(loom_schedule_value)};
    CHECK(vt->value(s, 4, &v) == LOOM_OK);
    CHECK_CLOSE(v.lr, 0.6, 1e-12, 0);
    CHECK(isnan(v.momentum));
    vt->destroy(s);
}

int main(void)
{
    unsetenv("LOOM_PLUGIN_PATH");
    const char *dirs[] = {LOOM_FIXTURE_DIR};
    CHECK(loom_loader_init(dirs, 1) == LOOM_OK);
    test_current();
    test_old_abi();
    test_newer_minor();
    test_two_plugins();
    loom_loader_shutdown();
    return test_finish("test_loader_compat");
}
