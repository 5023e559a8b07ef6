/* args_words.c - HF's option lists given as one string of space-separated words (--fsdp,
 * --sharded_ddp, --debug): whether one holds a word, and a check that every word is known. */
#include <stdio.h>
#include <string.h>

#include "args_internal.h"
#include "error.h"

/* Does the space-separated option list `list` hold `word`? */
int loom__words_has(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; p && *p;) {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, " ");
        if (len == n && strncmp(p, word, n) == 0) return 1;
        p += len;
    }
    return 0;
}

/* `flag`'s words, each one of `known` (its first n_strategies name strategies): how many there
 * are, and how many strategies. */
loom_status loom__words_check(const char *flag, const char *text, const char *const *known, size_t n_known,
                              size_t n_strategies, const char *where, int *words, int *strategies)
{
    *words = *strategies = 0;
    for (const char *p = text; *p;) {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, " ");
        if (!len) break;
        int found = 0;
        for (size_t k = 0; k < n_known; k++)
            if (strlen(known[k]) == len && !strncmp(p, known[k], len)) found = 1, *strategies += k < n_strategies;
        if (!found) {
            char list[256] = "";
            for (size_t k = 0; k < n_known; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "", known[k]);
            return loom_error(LOOM_E_INVALID, "%s%s: '%.*s' is not one of: %s", flag, where, (int)len, p, list);
        }
        ++*words;
        p += len;
    }
    return LOOM_OK;
}
