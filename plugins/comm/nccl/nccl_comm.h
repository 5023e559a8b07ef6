/*
 * nccl_comm.h - the nccl communicator's vtable (nccl_comm.c), shared by the plugin
 * (nccl_plugin.c) and the test that runs it on a fake NCCL (tests/comm/test_comm_nccl.c).
 */
#ifndef LOOM_NCCL_COMM_H
#define LOOM_NCCL_COMM_H

#include <loom/comm.h>

extern const loom_comm_vtable nccl_comm_vtable;

/* The store key that carries instance `instance`'s unique id (for the test, which reads it). */
#define NCCL_ID_KEY_FORMAT "loom.nccl/%lu/unique_id"

#endif
