/*
 * plugin_loader.h - finding and opening plugins with libltdl.
 *
 * A plugin spec is a name ("zero2"), a file name ("zero2.so") or a path (anything with a '/').
 * A name or file name is searched, in order, in: the build tree's plugin folder
 * (LOOM_BUILD_PLUGIN_DIR, compiled in), the install prefix's plugin folder
 * (LOOM_INSTALL_PLUGIN_DIR), each folder of $LOOM_PLUGIN_PATH (':'-separated), then each
 * --plugin_dir. A path is loaded as is. Plugins are opened with lt_dladvise_local so they
 * cannot interpose each other's symbols, and are never unloaded before exit (docs/architecture.md#never-unload).
 *
 * Every failure is one line naming what was looked for and where, with the real reason:
 * libltdl says "file not found" for an undefined symbol or a missing dependency, so the
 * loader asks dlopen()/dlerror() for the actual cause before reporting.
 */
#ifndef LOOM_CORE_PLUGIN_LOADER_H
#define LOOM_CORE_PLUGIN_LOADER_H

#include "error.h" /* LOOM_API */

#include <loom/loom.h>
#include <stddef.h>

typedef struct loom_plugin {
    const loom_plugin_desc *desc; /* static data of the plugin                               */
    char *path;                   /* absolute or as-given path of the shared object (owned)  */
    void *handle;                 /* lt_dlhandle                                             */
} loom_plugin;

/* Set the search folders (--plugin_dir values; may be 0). Call once, on the main thread,
 * before any load. Calls lt_dlinit. */
LOOM_API loom_status loom_loader_init(const char *const *plugin_dirs, size_t n_plugin_dirs);

/* The folders searched, in order (built-in ones that exist, LOOM_PLUGIN_PATH, plugin_dirs),
 * joined with ", " into buf, for error messages. */
LOOM_API void loom_loader_search_path(char *buf, size_t size);

/* Load a plugin by spec and pick the descriptor of kind `kind` (LOOM_KIND_*; 0 = the first
 * descriptor whatever its kind) whose name equals the spec's base name if there is one, else
 * the first of that kind. Errors (each with loom_error() set to one line, status returned):
 *   LOOM_E_NOT_FOUND  the file is in none of the folders ("plugin 'x': no x.so in A, B, C")
 *   LOOM_E_IO         dlopen failed: undefined symbol, missing dependency, not an ELF file...
 *   LOOM_E_NOT_FOUND  the file lacks loom_plugin_query ("... is not a loom plugin")
 *   LOOM_E_ABI        the descriptor's abi_major differs, or its struct_size is too small
 *   LOOM_E_INVALID    it is not of the wanted kind ("x.so is a scheduler plugin, not an optimizer")
 * The returned loom_plugin is owned by the loader (valid until loom_loader_shutdown). The same
 * file loaded twice returns the same handle. */
LOOM_API loom_status loom_plugin_load(const char *spec, uint32_t kind, const loom_plugin **out);

/* Call fn for every plugin descriptor found in the search folders (every *.so, in search
 * order, then by file name; a name found again later is reported with shadowed = 1). Files
 * that fail to load are reported through fn with desc == NULL and error set. desc is valid
 * during the call only: a file that no plugin was loaded from is closed after its visit. */
typedef void (*loom_plugin_visit_fn)(void *context, const char *path, const loom_plugin_desc *desc,
                                     int shadowed, const char *error);
LOOM_API void loom_plugin_foreach(loom_plugin_visit_fn fn, void *context);

/* "optimizer", "scheduler", ... ; "unknown" otherwise. */
LOOM_API const char *loom_kind_name(uint32_t kind);

/* Forget everything; unloads nothing while plugin code may run (call at exit). */
LOOM_API void loom_loader_shutdown(void);

#endif
