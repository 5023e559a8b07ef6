/*
 * trainer_same_checkpoint.c - every rank resumes from the same checkpoint, not only from the same
 * step (docs/checkpoints.md#files-on-one-node).
 *
 * Each rank reads its optimizer, scheduler, scaler and RNG files from its own disk. On disks of
 * their own, node 1's checkpoint-N may be another checkpoint than node 0's: an earlier run's
 * checkpoint-N left by --save_on_each_node, or a folder restored from an old backup. The
 * parameters would still come from rank 0's broadcast, so nothing would fail: the ranks would
 * train on with different optimizer states. So before the first step the ranks compare what
 * every node's folder must hold alike, from its manifest, whose checksums each rank has just
 * verified against the files (trainer_resume.c). Rank 0's list is broadcast; the first rank
 * whose list differs stops every rank with one line naming its folder and the file.
 *
 * Not compared: optimizer.rank-R-of-W.safetensors (with --save_on_each_node each node's folder
 * holds its own ranks' shards) and training_args.json (it holds output_dir and the other
 * arguments a rank may hold its own; the agreement compares the arguments,
 * docs/semantics/trainer.md#ranks-agree). trainer_state.json is compared without
 * is_world_process_zero, which each node's writer sets for itself (docs/checkpoints.md#save-on-each-node).
 */
#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_dir.h"
#include "checkpoint_shards.h"
#include "error.h"
#include "fileutil.h"
#include "trainer_internal.h"

#define STATE_FILE "trainer_state.json"

static int per_node_file(const char *name)
{
    int rank = 0, world = 0;
    return loom_shard_file_rank(name, &rank, &world) || !strcmp(name, "training_args.json");
}

/* dir/name parsed (NULL when it is no JSON; path: its path, for a message). */
static loom_status read_json(const char *dir, const char *name, char path[4096], cJSON **json)
{
    char *text = NULL;
    size_t len = 0;
    loom_status st = loom_path_join(path, 4096, dir, name);
    if (st == LOOM_OK) st = loom_read_file(path, &text, &len);
    if (st != LOOM_OK) return st;
    *json = cJSON_ParseWithLength(text, len);
    free(text);
    return LOOM_OK;
}

/* SHA-256 of dir/trainer_state.json without is_world_process_zero, as 64 hex digits. */
static loom_status state_digest(const char *dir, char hex[65])
{
    char path[4096];
    cJSON *json = NULL;
    loom_status st = read_json(dir, STATE_FILE, path, &json);
    if (st != LOOM_OK) return st;
    cJSON_DeleteItemFromObjectCaseSensitive(json, "is_world_process_zero");
    char *normal = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!normal) return loom_error(LOOM_E_FORMAT, "%s: cannot read it", path);
    unsigned char digest[32];
    unsigned int n = 0;
    int ok = EVP_Digest(normal, strlen(normal), digest, &n, EVP_sha256(), NULL) == 1 && n == 32;
    free(normal);
    if (!ok) return loom_error(LOOM_E_INTERNAL, "%s: checksum failed", path);
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    return LOOM_OK;
}

/* "\nname\tsha256" for every compared file of dir's manifest, in its order, then "\n" (malloc'd). */
static loom_status describe(const char *dir, char **out)
{
    char path[4096];
    cJSON *json = NULL;
    loom_status st = read_json(dir, LOOM_CHECKPOINT_MANIFEST, path, &json);
    if (st != LOOM_OK) return st;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(json, "files"), *entry;
    size_t size = 2, at = 0;
    char *list = malloc(size);
    if (!list) st = loom_error(LOOM_E_NOMEM, "out of memory");
    cJSON_ArrayForEach(entry, files)
    {
        if (st != LOOM_OK) break;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(entry, "name");
        const cJSON *sha = cJSON_GetObjectItemCaseSensitive(entry, "sha256");
        if (!cJSON_IsString(name) || !cJSON_IsString(sha) || per_node_file(name->valuestring)) continue;
        char hex[65];
        snprintf(hex, sizeof hex, "%s", sha->valuestring);
        if (!strcmp(name->valuestring, STATE_FILE) && (st = state_digest(dir, hex)) != LOOM_OK) break;
        size_t need = at + strlen(name->valuestring) + strlen(hex) + 4;
        char *bigger = need > size ? realloc(list, size = 2 * need) : list;
        if (!bigger) {
            st = loom_error(LOOM_E_NOMEM, "out of memory");
            break;
        }
        list = bigger;
        at += (size_t)sprintf(list + at, "\n%s\t%s", name->valuestring, hex);
    }
    cJSON_Delete(json);
    if (st != LOOM_OK) {
        free(list);
        return st;
    }
    strcpy(list + at, "\n");
    *out = list;
    return LOOM_OK;
}

/* The digest `list` gives `name` (a pointer to it, up to the next newline), or NULL. */
static const char *digest_of(const char *list, const char *name, size_t name_len)
{
    for (const char *p = list; (p = strchr(p, '\n')) != NULL && p[1]; p++)
        if (!strncmp(p + 1, name, name_len) && p[1 + name_len] == '\t') return p + 2 + name_len;
    return NULL;
}

/* 1 when every entry of `a` is in `b` with the same digest; else 0 and *name, *len: the first not. */
static int covered(const char *a, const char *b, const char **name, size_t *len)
{
    for (const char *p = a; (p = strchr(p, '\n')) != NULL && p[1]; p++) {
        const char *tab = strchr(p + 1, '\t'), *end = strchr(p + 1, '\n');
        if (!tab || !end) break;
        const char *theirs = digest_of(b, p + 1, (size_t)(tab - p - 1));
        if (!theirs || strncmp(theirs, tab + 1, (size_t)(end - tab)) != 0) {
            *name = p + 1, *len = (size_t)(tab - p - 1);
            return 0;
        }
    }
    return 1;
}

/* This rank's line when its list differs from rank 0's (LOOM_E_INVALID), else LOOM_OK. */
static loom_status compare(const loom_trainer *t, const char *mine, const char *rank0)
{
    const char *name = NULL, *dir = t->resume_dir;
    size_t len = 0;
    const char *why = "a checkpoint of another run at the same step, or an older copy: copy rank 0's checkpoint "
                      "folder to this node, or resume every node from the same one";
    if (!covered(rank0, mine, &name, &len)) {
        const char *how = digest_of(mine, name, len) ? "differs from rank 0's" : "is missing (rank 0's has one)";
        return loom_error(LOOM_E_INVALID, "%s is not the checkpoint rank 0 resumes from: its %.*s %s (%s)", dir,
                          (int)len, name, how, why);
    }
    if (!covered(mine, rank0, &name, &len))
        return loom_error(LOOM_E_INVALID,
                          "%s is not the checkpoint rank 0 resumes from: it holds %.*s, rank 0's does not (%s)", dir,
                          (int)len, name, why);
    return LOOM_OK;
}

/* Rank 0's list on every rank (malloc'd into *rank0). Collective. */
static loom_status share_rank0(loom_trainer *t, const char *mine, char **rank0)
{
    const loom_comm_vtable *cv = t->comm.vtable;
    double size = t->rank == 0 ? (double)strlen(mine) + 1 : 0;
    loom_status st = loom_trainer_reduce_f64(t, &size, 1, LOOM_REDUCE_MAX);
    if (st != LOOM_OK) return st;
    char *buffer = calloc((size_t)size, 1);
    if (!buffer) return loom_error(LOOM_E_NOMEM, "out of memory");
    if (t->rank == 0) memcpy(buffer, mine, (size_t)size);
    st = cv->broadcast(t->comm.instance, buffer, (size_t)size, LOOM_DTYPE_U8, 0, NULL);
    if (st != LOOM_OK) {
        free(buffer);
        return st;
    }
    buffer[(size_t)size - 1] = '\0';
    *rank0 = buffer;
    return LOOM_OK;
}

loom_status loom_trainer_same_checkpoint(loom_trainer *t)
{
    /* After the resume has been agreed on, every rank has a resume_dir or none. */
    if (t->world_size < 2 || !t->resume_dir) return LOOM_OK;
    char *mine = NULL, *rank0 = NULL;
    loom_status st = describe(t->resume_dir, &mine);
    if (st != LOOM_OK) {
        /* Every rank goes through the broadcast: an empty list stands for a rank that failed. */
        loom_status own = st;
        char saved[2048];
        snprintf(saved, sizeof saved, "%s", loom_error_message());
        st = share_rank0(t, "", &rank0);
        free(rank0);
        return loom_trainer_fail_together(t, st == LOOM_OK ? loom_error(own, "%s", saved) : st);
    }
    st = share_rank0(t, mine, &rank0);
    if (st == LOOM_OK) st = compare(t, mine, rank0);
    free(mine);
    free(rank0);
    return loom_trainer_fail_together(t, st);
}
