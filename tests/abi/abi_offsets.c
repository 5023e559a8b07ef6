/* abi_offsets.c - prints "struct member offset size" for every member of every struct of the
 * ABI headers on the include path (today's abi/ or the frozen tests/abi/v1.0), one line each;
 * the member list (LOOM_MEMBERS_INC) is generated from the same headers by abi_members.py.
 * Built as C and as C++ (abi_offsets.cpp) against both copies; abi_members.py --compare then
 * requires every 1.0 member at its 1.0 offset and size today, and C and C++ to agree, so
 * swapping or resizing a member fails even when sizeof stays the same. */
#if __has_include(<loom/backend.h>) /* since 1.3: absent from the frozen 1.0 copy */
#include <loom/backend.h>
#endif
#include <loom/callback.h>
#include <loom/comm.h>
#include <loom/kernels.h>
#include <loom/loom.h>
#include <loom/model.h>
#include <loom/optimizer.h>
#include <loom/precision.h>
#include <loom/scheduler.h>
#include <loom/sharding.h>

#include <stddef.h>
#include <stdio.h>

#define LOOM_MEMBER(T, m) printf("%s %s %zu %zu\n", #T, #m, (size_t)offsetof(T, m), sizeof(((T *)0)->m));

int main(void)
{
#include LOOM_MEMBERS_INC
    return 0;
}
