// Every public header together in one C++ unit (-Wpedantic -Werror): third-party plugins
// include them from C++. Reports the layouts C++ gives the structs to abi_headers.c.
#include <loom/callback.h>
#include <loom/comm.h>
#include <loom/kernels.h>
#include <loom/loom.h>
#include <loom/model.h>
#include <loom/optimizer.h>
#include <loom/precision.h>
#include <loom/scheduler.h>
#include <loom/sharding.h>
#include <loom/backend.h>

#include "abi_layout.h"

extern "C" int loom_abi_cxx_layout(size_t *out)
{
    int i = 0;
#define LAYOUT(T)                 \
    out[i++] = sizeof(T);         \
    out[i++] = alignof(T);
    LOOM_ABI_STRUCTS(LAYOUT)
#undef LAYOUT
    return i / 2;
}
