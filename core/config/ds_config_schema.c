/* ds_config_schema.c - the typed walk every section of a ds_config.json goes through: unknown
 * and duplicate keys (with the closest valid one), JSON types, "auto", agreement with the
 * command line, and the plugin entries a section maps onto. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_config_internal.h"
#include "error.h"
#include "json_util.h"
#include "plugin_config.h"

/* ---- plugin entries ----------------------------------------------------------------------- */

char *loom__ds_dup_text(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int loom__ds_is_auto(const cJSON *v)
{
    return cJSON_IsString(v) && strcmp(v->valuestring, "auto") == 0;
}

/* Append an entry; value NULL marks it pending. The value text is copied. */
loom_status loom__ds_add_entry(loom_ds_plugin_choice *c, const char *key, const char *value)
{
    if (c->n_entries == LOOM_DS_MAX_ENTRIES) return loom_error(LOOM_E_INTERNAL, "too many DeepSpeed entries");
    char *v = NULL;
    if (value && !(v = loom__ds_dup_text(value))) return loom_error(LOOM_E_NOMEM, "out of memory");
    c->entries[c->n_entries].key = key;
    c->entries[c->n_entries].value = v;
    c->n_entries++;
    return LOOM_OK;
}

loom_status loom__ds_add_double(loom_ds_plugin_choice *c, const char *key, double v)
{
    char buf[64];
    loom__format_shortest(buf, sizeof buf, v);
    return loom__ds_add_entry(c, key, buf);
}

loom_status loom__ds_add_int(loom_ds_plugin_choice *c, const char *key, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    return loom__ds_add_entry(c, key, buf);
}

loom_status loom__ds_add_bool(loom_ds_plugin_choice *c, const char *key, int v)
{
    return loom__ds_add_entry(c, key, v ? "true" : "false");
}

/* ---- schema walk -------------------------------------------------------------------------- */

/* Duplicates and unknown keys of one object; prefix is "" or "section." */
loom_status loom__ds_check_keys(const ds_ctx *c, const cJSON *obj, const char *prefix, const char *const *allowed,
                                size_t n)
{
    for (const cJSON *a = obj->child; a; a = a->next) {
        for (const cJSON *b = a->next; b; b = b->next)
            if (strcmp(a->string, b->string) == 0)
                return loom_error(LOOM_E_INVALID, "%s: duplicate key '%s%s'", c->file, prefix, a->string);
        int known = 0;
        for (size_t i = 0; i < n && !known; i++)
            known = strcmp(a->string, allowed[i]) == 0;
        if (known) continue;
        const char *closest = loom_closest_name(a->string, allowed, n);
        if (closest)
            return loom_error(LOOM_E_INVALID, "%s: unknown key '%s%s'; did you mean '%s%s'?", c->file, prefix,
                              a->string, prefix, closest);
        char list[1024] = "";
        size_t len = 0;
        for (size_t i = 0; i < n && len + 1 < sizeof list; i++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", allowed[i]);
        return loom_error(LOOM_E_INVALID, "%s: unknown key '%s%s' (valid keys%s%.*s: %s)", c->file, prefix, a->string,
                          *prefix ? " of " : "", *prefix ? (int)strlen(prefix) - 1 : 0, prefix, list);
    }
    return LOOM_OK;
}

static const char *kind_name(ds_kind k)
{
    switch (k) {
    case K_INT:
        return "an integer";
    case K_NUM:
        return "a number";
    case K_BOOL:
        return "true or false";
    case K_STR:
        return "a string";
    default:
        return "an object";
    }
}

/* Read obj[key] as `k`; "auto" only when allow_auto. A missing key leaves v->present 0. */
loom_status loom__ds_get(const ds_ctx *c, const cJSON *obj, const char *prefix, const char *key, ds_kind k,
                         int allow_auto, ds_value *v)
{
    memset(v, 0, sizeof *v);
    const cJSON *j = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!j) return LOOM_OK;
    v->present = 1;
    v->json = j;
    if (loom__ds_is_auto(j) && k != K_STR) {
        if (!allow_auto)
            return loom_error(LOOM_E_INVALID,
                              "%s: %s%s: \"auto\" is not allowed here (no command-line counterpart); expected %s",
                              c->file, prefix, key, kind_name(k));
        v->is_auto = 1;
        return LOOM_OK;
    }
    int ok = 0;
    switch (k) {
    case K_INT:
        ok = cJSON_IsNumber(j) && isfinite(j->valuedouble) && floor(j->valuedouble) == j->valuedouble &&
             fabs(j->valuedouble) < 9.0e18;
        if (ok) v->i = (int64_t)j->valuedouble;
        break;
    case K_NUM:
        ok = cJSON_IsNumber(j) && isfinite(j->valuedouble);
        if (ok) v->d = j->valuedouble;
        break;
    case K_BOOL:
        ok = cJSON_IsBool(j);
        if (ok) v->b = cJSON_IsTrue(j);
        break;
    case K_STR:
        ok = cJSON_IsString(j);
        if (ok) v->s = j->valuestring;
        break;
    case K_OBJ:
        ok = cJSON_IsObject(j);
        break;
    }
    if (ok) return LOOM_OK;
    char shown[64] = "";
    if (cJSON_IsNumber(j))
        loom__format_shortest(shown, sizeof shown, j->valuedouble);
    else if (cJSON_IsString(j))
        snprintf(shown, sizeof shown, "\"%.40s\"", j->valuestring);
    return loom_error(LOOM_E_INVALID, "%s: %s%s: expected %s%s, got %s%s%s", c->file, prefix, key, kind_name(k),
                      allow_auto ? " or \"auto\"" : "", loom__json_type_name(j), *shown ? " " : "", shown);
}

loom_status loom__ds_need_min_int(const ds_ctx *c, const char *prefix, const char *key, const ds_value *v, int64_t min)
{
    if (v->present && !v->is_auto && v->i < min)
        return loom_error(LOOM_E_INVALID, "%s: %s%s: must be >= %lld, got %lld", c->file, prefix, key, (long long)min,
                          (long long)v->i);
    return LOOM_OK;
}

loom_status loom__ds_need_nonneg(const ds_ctx *c, const char *prefix, const char *key, const ds_value *v)
{
    if (v->present && !v->is_auto && v->d < 0)
        return loom_error(LOOM_E_INVALID, "%s: %s%s: must be >= 0, got %g", c->file, prefix, key, v->d);
    return LOOM_OK;
}

loom_status loom__ds_mismatch_int(const ds_ctx *c, const char *key, int64_t ds, const char *flag, int64_t hf)
{
    return loom_error(LOOM_E_INVALID, "%s=%lld in %s but --%s %lld (use \"auto\" or make them agree)", key,
                      (long long)ds, c->file, flag, (long long)hf);
}

loom_status loom__ds_mismatch_double(const ds_ctx *c, const char *key, double ds, const char *flag, double hf)
{
    char a[64], b[64];
    loom__format_shortest(a, sizeof a, ds);
    loom__format_shortest(b, sizeof b, hf);
    return loom_error(LOOM_E_INVALID, "%s=%s in %s but --%s %s (use \"auto\" or make them agree)", key, a, c->file,
                      flag, b);
}

/* A float value: "auto" -> hf; a number must equal hf; absent -> absent_value. */
loom_status loom__ds_merge_double(const ds_ctx *c, const cJSON *obj, const char *prefix, const char *key,
                                  const char *flag, double hf, double absent_value, double *out)
{
    ds_value v;
    loom_status st = loom__ds_get(c, obj, prefix, key, K_NUM, 1, &v);
    if (st != LOOM_OK) return st;
    if (!v.present) {
        *out = absent_value;
    } else if (v.is_auto) {
        *out = hf;
    } else {
        if (v.d != hf) {
            char full[128];
            snprintf(full, sizeof full, "%s%s", prefix, key);
            return loom__ds_mismatch_double(c, full, v.d, flag, hf);
        }
        *out = v.d;
    }
    return LOOM_OK;
}

loom_status loom__ds_check_types(const ds_ctx *c, const cJSON *obj, const char *prefix, const ds_key *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, keys[i].key);
        if (!j || (keys[i].flags & DS_ANY) || ((keys[i].flags & DS_NULL) && cJSON_IsNull(j))) continue;
        ds_value v;
        loom_status st = loom__ds_get(c, obj, prefix, keys[i].key, keys[i].k, (keys[i].flags & DS_AUTO) != 0, &v);
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

loom_status loom__ds_check_table(const ds_ctx *c, const cJSON *obj, const char *prefix, const ds_key *keys, size_t n)
{
    const char *names[64];
    if (n > COUNT(names)) return loom_error(LOOM_E_INTERNAL, "too many keys in a DeepSpeed section");
    for (size_t i = 0; i < n; i++)
        names[i] = keys[i].key;
    loom_status st = loom__ds_check_keys(c, obj, prefix, names, n);
    return st != LOOM_OK ? st : loom__ds_check_types(c, obj, prefix, keys, n);
}

int loom__ds_is_true(const cJSON *obj, const char *key)
{
    return cJSON_IsObject(obj) && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, key));
}

loom_status loom__ds_note(ds_ctx *c, const char *fmt, ...)
{
    loom_ds_config *cfg = c->cfg;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < cfg->n_notes; i++)
        if (!strcmp(cfg->notes[i], text)) return LOOM_OK;
    if (cfg->n_notes == LOOM_DS_MAX_NOTES) return LOOM_OK; /* a file that asks for that much hears the first ones */
    if (!(cfg->notes[cfg->n_notes] = loom__ds_dup_text(text))) return loom_error(LOOM_E_NOMEM, "out of memory");
    cfg->n_notes++;
    return LOOM_OK;
}

loom_status loom__ds_get_typed_section(const ds_ctx *c, const cJSON *section, const char *prefix, ds_value *type,
                                       ds_value *params)
{
    static const char *const section_keys[] = {"type", "params"};
    loom_status st;
    if ((st = loom__ds_check_keys(c, section, prefix, section_keys, COUNT(section_keys))) != LOOM_OK ||
        (st = loom__ds_get(c, section, prefix, "type", K_STR, 0, type)) != LOOM_OK ||
        (st = loom__ds_get(c, section, prefix, "params", K_OBJ, 0, params)) != LOOM_OK)
        return st;
    return LOOM_OK;
}
