/*
 * gloo_comm_internal.h - what the benchmark sees of the gloo plugin when it compiles the
 * plugin's sources into itself (the plugin's .so exports loom_plugin_query only).
 */
#ifndef LOOM_GLOO_COMM_INTERNAL_H
#define LOOM_GLOO_COMM_INTERNAL_H

#include <memory>

#include <loom/comm.h>

namespace gloo
{
class Context;
}

namespace loom_gloo
{

/* The plugin's descriptor (the one loom_plugin_query returns). */
const loom_plugin_desc *descriptor();

/* The gloo context behind an instance. Only for a caller that knows no request of the
 * instance is pending: gloo operations on one context must not overlap. */
std::shared_ptr<gloo::Context> context_of(loom_comm *comm);

} // namespace loom_gloo

#endif
