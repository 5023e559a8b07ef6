/*
 * checkpoint_dir.c - a checkpoint folder as one unit (see checkpoint_dir.h).
 *
 * Why a manifest: a save is written into checkpoint-N.tmp and renamed, so a killed save never
 * leaves a folder that looks whole; but a folder can still be damaged afterwards (a copy that
 * stopped, a full disk during an rsync, a file edited by hand). Resume reads model, master
 * weights and optimizer states byte for byte, so it checks every byte first and names the file
 * that differs rather than training on from silently wrong state.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_dir.h"
#include "error.h"
#include "file_hash.h"
#include "fileutil.h"
#include "host.h"

#define MANIFEST_FORMAT "loom-checkpoint/1"

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The regular files of dir, sorted, the manifest excepted (caller frees each and the array). */
static loom_status list_files(const char *dir, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return loom_error(LOOM_E_IO, "%s: cannot list: %s", dir, strerror(errno));
    size_t cap = 0;
    loom_status st = LOOM_OK;
    struct dirent *e;
    while (st == LOOM_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, LOOM_CHECKPOINT_MANIFEST) == 0) continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(*names, cap * sizeof *grown);
            if (!grown) {
                st = loom_error(LOOM_E_NOMEM, "out of memory");
                break;
            }
            *names = grown;
        }
        if (!((*names)[*n] = strdup(e->d_name))) st = loom_error(LOOM_E_NOMEM, "out of memory");
        else (*n)++;
    }
    closedir(d);
    if (*n) qsort(*names, *n, sizeof **names, compare_names);
    return st;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

loom_status loom_checkpoint_write_manifest(const char *dir)
{
    char **names = NULL;
    size_t n = 0;
    loom_status st = list_files(dir, &names, &n);
    cJSON *json = cJSON_CreateObject(), *files = cJSON_CreateArray();
    cJSON_AddStringToObject(json, "format", MANIFEST_FORMAT);
    cJSON_AddItemToObject(json, "files", files);
    for (size_t i = 0; i < n && st == LOOM_OK; i++) {
        char path[4096], hex[65];
        uint64_t size = 0;
        if ((st = loom_path_join(path, sizeof path, dir, names[i])) != LOOM_OK) break;
        if ((st = loom_file_sha256(path, 0, hex, &size)) != LOOM_OK) break;
        cJSON *entry = cJSON_CreateObject();
        cJSON_AddStringToObject(entry, "name", names[i]);
        cJSON_AddNumberToObject(entry, "bytes", (double)size);
        cJSON_AddStringToObject(entry, "sha256", hex);
        cJSON_AddItemToArray(files, entry);
    }
    free_names(names, n);
    char *text = st == LOOM_OK ? cJSON_Print(json) : NULL;
    cJSON_Delete(json);
    if (st != LOOM_OK) return st;
    if (!text) return loom_error(LOOM_E_NOMEM, "out of memory");
    char path[4096];
    st = loom_path_join(path, sizeof path, dir, LOOM_CHECKPOINT_MANIFEST);
    if (st == LOOM_OK) st = loom_write_file_atomic(path, text, strlen(text));
    cJSON_free(text);
    return st;
}

/* missing_ok: a file the manifest lists may be gone (a model folder whose optimizer states were
 * deleted to ship it); what is there must still match. */
static loom_status verify(const char *dir, int missing_ok)
{
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, LOOM_CHECKPOINT_MANIFEST);
    if (st != LOOM_OK) return st;
    struct stat sb;
    if (stat(dir, &sb) != 0) return loom_error(LOOM_E_NOT_FOUND, "%s: no such checkpoint folder", dir);
    if (!S_ISDIR(sb.st_mode)) return loom_error(LOOM_E_NOT_FOUND, "%s: a file, not a checkpoint folder", dir);
    char *text = NULL;
    size_t len = 0;
    if (lstat(path, &sb) == 0 && (st = loom_read_file(path, &text, &len)) != LOOM_OK)
        return st; /* there but unreadable (a folder, no permission): that, not "incomplete" */
    if (!text) {
        /* A run's output folder given for one of its checkpoints: the usual slip, named as such. */
        char newest[4096];
        if (loom_checkpoint_latest_sealed(dir, newest, sizeof newest) == LOOM_OK)
            return loom_error(LOOM_E_NOT_FOUND,
                              "%s: a run's output folder, not a checkpoint: give one of its "
                              "checkpoint-N folders (the newest is %s)",
                              dir, newest);
        loom_error_clear();
        return loom_error(LOOM_E_NOT_FOUND, "%s: incomplete checkpoint (no %s: the save did not finish)", dir,
                          LOOM_CHECKPOINT_MANIFEST);
    }
    cJSON *json = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(json, "format");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(json, "files");
    if (!cJSON_IsString(format) || strcmp(format->valuestring, MANIFEST_FORMAT) != 0 || !cJSON_IsArray(files)) {
        cJSON_Delete(json);
        return loom_error(LOOM_E_FORMAT, "%s: not a loom checkpoint manifest (%s)", path, MANIFEST_FORMAT);
    }
    const char *hint = missing_ok ? " (to use the folder as it is now, delete its " LOOM_CHECKPOINT_MANIFEST ")" : "";
    const cJSON *entry;
    cJSON_ArrayForEach(entry, files)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(entry, "name");
        const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(entry, "bytes");
        const cJSON *sha = cJSON_GetObjectItemCaseSensitive(entry, "sha256");
        if (!cJSON_IsString(name) || !cJSON_IsNumber(bytes) || !cJSON_IsString(sha) || strchr(name->valuestring, '/') ||
            name->valuestring[0] == '.') {
            st = loom_error(LOOM_E_FORMAT, "%s: malformed file entry", path);
            break;
        }
        char file[4096], hex[65];
        uint64_t size = 0;
        if ((st = loom_path_join(file, sizeof file, dir, name->valuestring)) != LOOM_OK) break;
        if (stat(file, &sb) != 0) {
            if (missing_ok && errno == ENOENT) continue;
            st = loom_error(LOOM_E_FORMAT, "%s: missing from the checkpoint (listed in %s)", file,
                            LOOM_CHECKPOINT_MANIFEST);
            break;
        }
        if ((double)sb.st_size != bytes->valuedouble) {
            st = loom_error(LOOM_E_FORMAT, "%s: %lld bytes, the manifest says %.0f: truncated or altered%s", file,
                            (long long)sb.st_size, bytes->valuedouble, hint);
            break;
        }
        if ((st = loom_file_sha256(file, 1, hex, &size)) != LOOM_OK) break;
        if (strcmp(hex, sha->valuestring) != 0) {
            st = loom_error(LOOM_E_FORMAT, "%s: checksum differs from the manifest's: the file was altered%s", file,
                            hint);
            break;
        }
    }
    cJSON_Delete(json);
    return st;
}

loom_status loom_checkpoint_verify(const char *dir)
{
    return verify(dir, 0);
}

loom_status loom_checkpoint_verify_model(const char *dir)
{
    if (!loom_checkpoint_is_sealed(dir)) return LOOM_OK;
    return verify(dir, 1);
}

loom_status loom_checkpoint_install(const char *tmp_dir, const char *final_dir)
{
    struct stat sb;
    if (lstat(final_dir, &sb) != 0) return loom_rename_dir_atomic(tmp_dir, final_dir);
    /* A save of a step that already has a folder (a resumed run passing the same step again):
     * swap the two names in one step, then delete the old folder under the temporary name. */
    if (renameat2(AT_FDCWD, tmp_dir, AT_FDCWD, final_dir, RENAME_EXCHANGE) != 0) {
        int err = errno;
        if (err != EINVAL && err != ENOSYS && err != ENOTSUP)
            return loom_error(LOOM_E_IO, "%s: cannot exchange it with '%s': %s", final_dir, tmp_dir, strerror(err));
        /* No RENAME_EXCHANGE here: keep the old folder until the new one has the name. */
        char old[4200];
        snprintf(old, sizeof old, "%s.old", final_dir);
        loom_remove_tree(old);
        if (rename(final_dir, old) != 0)
            return loom_error(LOOM_E_IO, "%s: cannot move it aside: %s", final_dir, strerror(errno));
        loom_status st = loom_rename_dir_atomic(tmp_dir, final_dir);
        if (st != LOOM_OK) {
            rename(old, final_dir);
            return st;
        }
        return loom_remove_tree(old);
    }
    return loom_remove_tree(tmp_dir);
}

loom_status loom_checkpoint_remove(const char *dir)
{
    char doomed[4200];
    snprintf(doomed, sizeof doomed, "%s.tmp", dir);
    /* A .tmp of that step is an older interrupted save's leftover: nothing of value. */
    loom_status st = loom_remove_tree(doomed);
    if (st != LOOM_OK) return st;
    if (rename(dir, doomed) != 0)
        return errno == ENOENT
                   ? LOOM_OK
                   : loom_error(LOOM_E_IO, "%s: cannot move it aside to delete it: %s", dir, strerror(errno));
    return loom_remove_tree(doomed);
}

/* "checkpoint-<digits>.tmp" or "checkpoint-<digits>.old". */
static int is_leftover(const char *name)
{
    if (strncmp(name, "checkpoint-", 11) != 0) return 0;
    const char *p = name + 11;
    if (*p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') p++;
    return strcmp(p, ".tmp") == 0 || strcmp(p, ".old") == 0;
}

loom_status loom_checkpoint_remove_leftovers(const char *output_dir, int *removed)
{
    if (removed) *removed = 0;
    DIR *d = opendir(output_dir);
    if (!d)
        return errno == ENOENT ? LOOM_OK : loom_error(LOOM_E_IO, "%s: cannot list: %s", output_dir, strerror(errno));
    loom_status st = LOOM_OK;
    struct dirent *e;
    while (st == LOOM_OK && (e = readdir(d)) != NULL) {
        if (!is_leftover(e->d_name)) continue;
        char path[4096];
        if ((st = loom_path_join(path, sizeof path, output_dir, e->d_name)) != LOOM_OK) break;
        /* A ".old" whose checkpoint lost its name (killed between the two renames of a system
         * without RENAME_EXCHANGE) is the only copy: give the name back instead. */
        size_t len = strlen(path);
        if (len > 4 && strcmp(path + len - 4, ".old") == 0) {
            char final_dir[4096];
            snprintf(final_dir, sizeof final_dir, "%.*s", (int)(len - 4), path);
            struct stat sb;
            if (lstat(final_dir, &sb) != 0 && rename(path, final_dir) == 0) continue;
        }
        st = loom_remove_tree(path);
        if (st == LOOM_OK && removed) (*removed)++;
    }
    closedir(d);
    return st;
}

int loom_checkpoint_is_sealed(const char *dir)
{
    char path[4096];
    struct stat sb;
    return loom_path_join(path, sizeof path, dir, LOOM_CHECKPOINT_MANIFEST) == LOOM_OK && stat(path, &sb) == 0;
}

/* A manifest present: sealed, though not yet checked byte for byte. */
static loom_status sealed(const char *dir)
{
    if (loom_checkpoint_is_sealed(dir)) return LOOM_OK;
    loom_error_clear();
    return loom_error(LOOM_E_NOT_FOUND, "%s: incomplete checkpoint (no %s: the save did not finish)", dir,
                      LOOM_CHECKPOINT_MANIFEST);
}

static loom_status latest(const char *output_dir, char *out, size_t size, loom_status (*check)(const char *), int warn)
{
    int64_t *steps = NULL;
    size_t n = 0;
    loom_status st = loom_list_checkpoints(output_dir, &steps, &n);
    if (st != LOOM_OK) return st;
    int found = 0;
    for (size_t i = n; i-- > 0 && st == LOOM_OK && !found;) {
        char name[64];
        snprintf(name, sizeof name, "checkpoint-%lld", (long long)steps[i]);
        if ((st = loom_path_join(out, size, output_dir, name)) != LOOM_OK) break;
        if (check(out) == LOOM_OK) {
            found = 1;
            break;
        }
        if (warn) loom_log(LOOM_LOG_WARNING, "skipping %s: %s", name, loom_error_message());
        loom_error_clear();
    }
    free(steps);
    if (st != LOOM_OK) return st;
    if (!found) return loom_error(LOOM_E_NOT_FOUND, "no valid checkpoint found in output directory (%s)", output_dir);
    return LOOM_OK;
}

loom_status loom_checkpoint_latest(const char *output_dir, char *out, size_t size)
{
    return latest(output_dir, out, size, loom_checkpoint_verify, 1);
}

loom_status loom_checkpoint_latest_sealed(const char *output_dir, char *out, size_t size)
{
    return latest(output_dir, out, size, sealed, 0);
}
