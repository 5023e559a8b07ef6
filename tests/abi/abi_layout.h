/* abi_layout.h - every struct of abi/loom, for comparing the layout C and C++ compilers give
 * them: a struct that differs between the two would break a C++ plugin silently. Include after
 * the abi headers. A new struct belongs here too. */
#ifndef LOOM_TEST_ABI_LAYOUT_H
#define LOOM_TEST_ABI_LAYOUT_H

/* The list keeps its hand-made rows (clang-format would stair-step the macro). */
/* clang-format off */
#define LOOM_ABI_STRUCTS(X)                                                                  \
    X(loom_tensor_view) X(loom_param_spec) X(loom_host_api) X(loom_plugin_desc)              \
    X(loom_span) X(loom_optimizer_step) X(loom_optimizer_vtable)                             \
    X(loom_schedule_setup) X(loom_schedule_value) X(loom_scheduler_vtable)                   \
    X(loom_range) X(loom_sharding_setup) X(loom_sharding_memory) X(loom_sharding_vtable)     \
    X(loom_precision_info) X(loom_precision_binding) X(loom_precision_state)                 \
    X(loom_precision_vtable) X(loom_trainer_state) X(loom_trainer_control)                   \
    X(loom_event_payload) X(loom_metric) X(loom_callback_vtable) X(loom_comm_setup)          \
    X(loom_comm_vtable) X(loom_param_info) X(loom_batch) X(loom_model_binding)               \
    X(loom_grad_sink) X(loom_forward_result) X(loom_model_vtable) X(loom_kernels_api)      \
    X(loom_store_api) X(loom_trainer_data) X(loom_trainer_api) X(loom_device_info)         \
    X(loom_backend_vtable) X(loom_backend_service) X(loom_generation_ids)
/* clang-format on */

#define LOOM_ABI_COUNT_ONE(T) +1
enum { LOOM_ABI_N_STRUCTS = 0 LOOM_ABI_STRUCTS(LOOM_ABI_COUNT_ONE) };

#ifdef __cplusplus
extern "C" {
#endif
/* sizeof and alignof of each struct in list order, as the C++ compiler sees them:
 * out[2 * i] and out[2 * i + 1]. Returns LOOM_ABI_N_STRUCTS. */
int loom_abi_cxx_layout(size_t *out);
#ifdef __cplusplus
}
#endif

#endif
