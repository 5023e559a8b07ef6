/*
 * checkpoint_dir.h - a checkpoint folder as one unit: its manifest (every file with its size and
 * SHA-256), the check a resume makes before trusting it, the atomic replacement of an older
 * folder of the same step, and the leftovers of interrupted saves.
 */
#ifndef LOOM_CORE_CHECKPOINT_DIR_H
#define LOOM_CORE_CHECKPOINT_DIR_H

#include <stddef.h>

#include <loom/loom.h>

/* The manifest's file name inside a checkpoint folder. */
#define LOOM_CHECKPOINT_MANIFEST "loom_manifest.json"

/* List every regular file of `dir` (the manifest itself excepted) with its size and SHA-256 in
 * dir/loom_manifest.json, written last and atomically: a folder without it is incomplete. */
loom_status loom_checkpoint_write_manifest(const char *dir);

/* Check `dir` against its manifest: each file present, of the listed size and checksum.
 * LOOM_E_NOT_FOUND without a manifest, LOOM_E_FORMAT naming the first file that differs. */
loom_status loom_checkpoint_verify(const char *dir);

/* A model folder given as --model_name_or_path: when it holds a manifest (a loom checkpoint or
 * run), every file it lists that is still there must match, so a damaged model is refused
 * instead of evaluated; files deleted since are no error. LOOM_OK for a folder without one
 * (a Hugging Face model). The error names the manifest as the way to accept an edit. */
loom_status loom_checkpoint_verify_model(const char *dir);

/* Move tmp_dir to final_dir. An existing final_dir is exchanged with tmp_dir in one rename and
 * removed only afterwards, so at every instant one complete folder carries the name. */
loom_status loom_checkpoint_install(const char *tmp_dir, const char *final_dir);

/* Delete the checkpoint `dir` (--save_total_limit's rotation). Its name goes first, in one
 * rename to "<dir>.tmp", then its files: a process stopped in between leaves a .tmp folder,
 * which the next run removes, never a checkpoint-N folder holding part of its files. */
loom_status loom_checkpoint_remove(const char *dir);

/* Remove the "checkpoint-N.tmp" folders interrupted saves left in output_dir; *removed counts them
 * (may be NULL). A missing output_dir has none. */
loom_status loom_checkpoint_remove_leftovers(const char *output_dir, int *removed);

/* The newest checkpoint-N of output_dir that passes loom_checkpoint_verify, into out; newer ones
 * that fail are named in a warning and skipped. LOOM_E_NOT_FOUND when there is none. */
loom_status loom_checkpoint_latest(const char *output_dir, char *out, size_t size);
/* Whether dir holds a manifest (a folder loom saved completely), without reading the files. */
int loom_checkpoint_is_sealed(const char *dir);

/* The same without reading the files: the newest checkpoint-N that has its manifest. For a
 * quick look (is there a run to continue?); the resume itself checks with the one above. */
loom_status loom_checkpoint_latest_sealed(const char *output_dir, char *out, size_t size);

#endif
