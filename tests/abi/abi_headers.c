/* Every public header together in one strict C11 unit (-Wpedantic -Werror), and the C
 * layout of each struct compared with the C++ one from abi_headers.cpp. */
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

#include <stdalign.h>
#include <stdio.h>

int main(void)
{
    size_t cxx[2 * LOOM_ABI_N_STRUCTS];
    const char *names[] = {
#define NAME(T) #T,
        LOOM_ABI_STRUCTS(NAME)
#undef NAME
    };
    const size_t c[] = {
#define LAYOUT(T) sizeof(T), alignof(T),
        LOOM_ABI_STRUCTS(LAYOUT)
#undef LAYOUT
    };
    int failures = 0;
    if (loom_abi_cxx_layout(cxx) != LOOM_ABI_N_STRUCTS) {
        fprintf(stderr, "C++ unit lists a different number of structs\n");
        return 1;
    }
    for (int i = 0; i < LOOM_ABI_N_STRUCTS; i++) {
        if (c[2 * i] != cxx[2 * i] || c[2 * i + 1] != cxx[2 * i + 1]) {
            fprintf(stderr, "%s: C size %zu align %zu, C++ size %zu align %zu\n", names[i], c[2 * i],
                    c[2 * i + 1], cxx[2 * i], cxx[2 * i + 1]);
            failures++;
        }
    }
    printf("test_abi_headers: %d structs compared, %d differ\n", LOOM_ABI_N_STRUCTS, failures);
    return failures ? 1 : 0;
}
