/*
 * vtable_rules.h - what the loader requires of each kind's vtable before any member is called.
 *
 * The host calls a vtable's required members without checking them (docs/architecture.md#abi-versioning),
 * so the loader must refuse, once and in one line, both a vtable too short to hold them and one
 * that holds NULL in their place: otherwise the first call is a jump to address 0, in the middle
 * of a run, with no word of which plugin did it.
 */
#ifndef LOOM_CORE_VTABLE_RULES_H
#define LOOM_CORE_VTABLE_RULES_H

#include <loom/loom.h>
#include <stddef.h>

/* The ABI 1.0 size of the vtable of `kind` (LOOM_KIND_*): no 1.x plugin's may be shorter. A
 * kind this host does not know needs only the struct header
 * (docs/architecture.md#unknown-is-not-an-error). */
size_t loom_vtable_min_size(uint32_t kind);

/* The name of the first required member of `vtable` (a vtable of `kind` at least
 * loom_vtable_min_size long) that is NULL, or NULL when all are set. */
const char *loom_vtable_missing_member(uint32_t kind, const void *vtable);

#endif
