/*
 * command_convert.c - `loom convert --from llmc --input gpt2_124M.bin --output_dir DIR`: an
 * llm.c GPT-2 checkpoint to the model folder HF's GPT2LMHeadModel (and loom's gpt2 plugin,
 * through --model_name_or_path) loads: DIR/model.safetensors and DIR/config.json.
 *
 * llm.c's file: a header of 256 int32 - [0] magic 20240326, [1] version (3: fp32, 5: bf16;
 * 1: fp32 before the padded vocabulary), [2] maxT, [3] V, [4] L, [5] NH, [6] C, [7] Vp (the
 * vocabulary padded for speed; 0 in old files: V) - then the parameters, all blocks of one
 * kind together: wte [Vp, C], wpe [maxT, C], ln1w [L, C], ln1b [L, C], qkvw [L, 3C, C],
 * qkvb [L, 3C], attprojw [L, C, C], attprojb [L, C], ln2w, ln2b, fcw [L, 4C, C], fcb [L, 4C],
 * fcprojw [L, C, 4C], fcprojb [L, C], lnfw [C], lnfb [C]. Its matrices are [out, in]
 * (nn.Linear); HF's Conv1D keeps [in, out], so every block matrix is transposed, and wte
 * loses its padding rows.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "error.h"
#include "fileutil.h"
#include "safetensors.h"

#define LLMC_MAGIC 20240326
#define LLMC_HEADER_INTS 256
#define LLMC_HEADER_BYTES (LLMC_HEADER_INTS * 4)
#define TRANSPOSE_BLOCK 32

typedef struct llmc_model {
    int64_t maxT, V, L, NH, C, Vp;
    int bf16;                 /* parameters stored as bfloat16 (else float32)             */
    const unsigned char *data; /* the parameters, in the file's mapping                    */
} llmc_model;

/* Element i of the parameter array, as float. */
static inline float llmc_value(const llmc_model *m, int64_t i)
{
    if (!m->bf16) {
        float f;
        memcpy(&f, m->data + i * 4, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, m->data + i * 2, 2);
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* dst[n] = the n elements at src_index. */
static void copy_values(const llmc_model *m, float *dst, int64_t src_index, int64_t n)
{
    if (!m->bf16) {
        memcpy(dst, m->data + src_index * 4, (size_t)n * sizeof *dst);
        return;
    }
    for (int64_t i = 0; i < n; i++) dst[i] = llmc_value(m, src_index + i);
}

/* dst[cols, rows] = transpose of the [rows, cols] matrix at src_index, in cache blocks. */
static void copy_transposed(const llmc_model *m, float *dst, int64_t src_index, int64_t rows, int64_t cols)
{
    for (int64_t r0 = 0; r0 < rows; r0 += TRANSPOSE_BLOCK) {
        const int64_t r1 = r0 + TRANSPOSE_BLOCK < rows ? r0 + TRANSPOSE_BLOCK : rows;
        for (int64_t c0 = 0; c0 < cols; c0 += TRANSPOSE_BLOCK) {
            const int64_t c1 = c0 + TRANSPOSE_BLOCK < cols ? c0 + TRANSPOSE_BLOCK : cols;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) dst[c * rows + r] = llmc_value(m, src_index + r * cols + c);
        }
    }
}

/* Parse and check the header against the file's size. */
static loom_status read_header(const char *path, const int32_t *h, int64_t file_size, llmc_model *m)
{
    if (h[0] != LLMC_MAGIC)
        return loom_error(LOOM_E_FORMAT, "%s: not an llm.c model checkpoint (magic %d, expected %d)", path, h[0],
                          LLMC_MAGIC);
    if (h[1] == 1 || h[1] == 3) m->bf16 = 0;
    else if (h[1] == 5) m->bf16 = 1;
    else
        return loom_error(LOOM_E_UNSUPPORTED, "%s: llm.c checkpoint version %d is not supported (3: fp32, 5: bf16)",
                          path, h[1]);
    m->maxT = h[2], m->V = h[3], m->L = h[4], m->NH = h[5], m->C = h[6];
    m->Vp = h[1] == 1 || h[7] == 0 ? m->V : h[7];
    if (m->maxT <= 0 || m->V <= 0 || m->L <= 0 || m->NH <= 0 || m->C <= 0 || m->Vp < m->V || m->C % m->NH != 0)
        return loom_error(LOOM_E_FORMAT,
                          "%s: bad llm.c header (maxT %lld, vocab %lld, padded vocab %lld, layers %lld, heads %lld, "
                          "channels %lld)",
                          path, (long long)m->maxT, (long long)m->V, (long long)m->Vp, (long long)m->L,
                          (long long)m->NH, (long long)m->C);
    const int64_t C = m->C, L = m->L;
    const int64_t count = (m->Vp + m->maxT) * C + L * (12 * C * C + 13 * C) + 2 * C;
    const int64_t expected = LLMC_HEADER_BYTES + count * (m->bf16 ? 2 : 4);
    if (file_size < expected)
        return loom_error(LOOM_E_FORMAT,
                          "truncated: %s has %lld bytes; its header (%lld layers, %lld channels, vocab %lld padded to "
                          "%lld, %s) needs %lld",
                          path, (long long)file_size, (long long)L, (long long)C, (long long)m->V, (long long)m->Vp,
                          m->bf16 ? "bf16" : "fp32", (long long)expected);
    if (file_size > expected)
        return loom_error(LOOM_E_FORMAT,
                          "%s has %lld bytes, %lld more than its header's parameters: not an llm.c model checkpoint",
                          path, (long long)file_size, (long long)(file_size - expected));
    return LOOM_OK;
}

/* config.json: a GPT2Config HF loads, whose keys loom's gpt2 plugin reads. */
static loom_status write_config(const char *dir, const llmc_model *m)
{
    cJSON *json = cJSON_CreateObject();
    if (!json) return loom_error(LOOM_E_NOMEM, "out of memory");
    cJSON *arch = cJSON_AddArrayToObject(json, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
    cJSON_AddStringToObject(json, "model_type", "gpt2");
    cJSON_AddNumberToObject(json, "vocab_size", (double)m->V);
    cJSON_AddNumberToObject(json, "n_positions", (double)m->maxT);
    cJSON_AddNumberToObject(json, "n_ctx", (double)m->maxT);
    cJSON_AddNumberToObject(json, "n_embd", (double)m->C);
    cJSON_AddNumberToObject(json, "n_layer", (double)m->L);
    cJSON_AddNumberToObject(json, "n_head", (double)m->NH);
    cJSON_AddNumberToObject(json, "layer_norm_epsilon", 1e-5);
    cJSON_AddNumberToObject(json, "initializer_range", 0.02);
    cJSON_AddStringToObject(json, "activation_function", "gelu_new");
    /* Written as HF writes them (0.0, a float), which cJSON's numbers cannot. */
    cJSON_AddRawToObject(json, "resid_pdrop", "0.0");
    cJSON_AddRawToObject(json, "embd_pdrop", "0.0");
    cJSON_AddRawToObject(json, "attn_pdrop", "0.0");
    cJSON_AddBoolToObject(json, "tie_word_embeddings", 1);
    if (m->V == 50257) { /* GPT-2's tokenizer: <|endoftext|> */
        cJSON_AddNumberToObject(json, "bos_token_id", 50256);
        cJSON_AddNumberToObject(json, "eos_token_id", 50256);
    }
    cJSON_AddStringToObject(json, "torch_dtype", "float32");
    char *text = cJSON_Print(json);
    cJSON_Delete(json);
    if (!text) return loom_error(LOOM_E_NOMEM, "out of memory");
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, "config.json");
    if (st == LOOM_OK) {
        const loom_file_part parts[2] = {{text, strlen(text)}, {"\n", 1}};
        st = loom_write_file_atomicv(path, parts, 2);
    }
    cJSON_free(text);
    return st;
}

/* The output being assembled: tensors laid out one after the other in `out`. */
typedef struct hf_writer {
    const llmc_model *m;
    loom_st_tensor *tensors;
    char (*names)[64];
    size_t n;
    float *next;
} hf_writer;

/* Add tensor `name` of shape [d0] (d1 == 0) or [d0, d1] from the llm.c values at src;
 * `transpose`: the llm.c matrix is [d1, d0] ([out, in]) and HF's Conv1D wants [d0, d1]. */
static void add_tensor(hf_writer *w, const char *name, int64_t d0, int64_t d1, int64_t src, int transpose)
{
    const int64_t n = d1 ? d0 * d1 : d0;
    if (transpose) copy_transposed(w->m, w->next, src, d1, d0);
    else copy_values(w->m, w->next, src, n);
    loom_st_tensor *t = &w->tensors[w->n];
    snprintf(w->names[w->n], sizeof w->names[w->n], "%s", name);
    *t = (loom_st_tensor){.name = w->names[w->n], .dtype = LOOM_DTYPE_F32, .ndim = d1 ? 2u : 1u, .data = w->next,
                          .nbytes = (uint64_t)n * sizeof(float)};
    t->shape[0] = d0;
    if (d1) t->shape[1] = d1;
    w->next += n;
    w->n++;
}

/* The HF tensors, in GPT2LMHeadModel's order, out of the mapped llm.c parameters. */
static loom_status write_model(const char *dir, const llmc_model *m)
{
    const int64_t V = m->V, P = m->maxT, C = m->C, L = m->L;
    const size_t n_tensors = 2 + (size_t)L * 12 + 2;
    const int64_t total = (V + P) * C + L * (12 * C * C + 13 * C) + 2 * C;
    hf_writer w = {.m = m};
    w.tensors = calloc(n_tensors, sizeof *w.tensors);
    w.names = calloc(n_tensors, sizeof *w.names);
    float *out = malloc((size_t)total * sizeof *out);
    w.next = out;
    loom_status st = LOOM_OK;
    if (!w.tensors || !w.names || !out) {
        st = loom_error(LOOM_E_NOMEM, "out of memory for %lld parameters", (long long)total);
        goto done;
    }
    /* Where each kind starts in the llm.c array (element index). */
    int64_t at = 0;
    const int64_t wte = at; at += m->Vp * C;
    const int64_t wpe = at; at += P * C;
    const int64_t ln1w = at; at += L * C;
    const int64_t ln1b = at; at += L * C;
    const int64_t qkvw = at; at += L * 3 * C * C;
    const int64_t qkvb = at; at += L * 3 * C;
    const int64_t attprojw = at; at += L * C * C;
    const int64_t attprojb = at; at += L * C;
    const int64_t ln2w = at; at += L * C;
    const int64_t ln2b = at; at += L * C;
    const int64_t fcw = at; at += L * 4 * C * C;
    const int64_t fcb = at; at += L * 4 * C;
    const int64_t fcprojw = at; at += L * C * 4 * C;
    const int64_t fcprojb = at; at += L * C;
    const int64_t lnfw = at; at += C;
    const int64_t lnfb = at;

    add_tensor(&w, "transformer.wte.weight", V, C, wte, 0); /* the first V of Vp rows */
    add_tensor(&w, "transformer.wpe.weight", P, C, wpe, 0);
    for (int64_t l = 0; l < L; l++) {
        static const char *const suffix[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                                               "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                                               "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
                                               "mlp.c_proj.bias"};
        /* HF shape [d0, d1], llm.c source, transposed? */
        const struct {
            int64_t d0, d1, src;
            int transpose;
        } part[12] = {
            {C, 0, ln1w + l * C, 0},           {C, 0, ln1b + l * C, 0},
            {C, 3 * C, qkvw + l * 3 * C * C, 1}, {3 * C, 0, qkvb + l * 3 * C, 0},
            {C, C, attprojw + l * C * C, 1},     {C, 0, attprojb + l * C, 0},
            {C, 0, ln2w + l * C, 0},           {C, 0, ln2b + l * C, 0},
            {C, 4 * C, fcw + l * 4 * C * C, 1},  {4 * C, 0, fcb + l * 4 * C, 0},
            {4 * C, C, fcprojw + l * C * 4 * C, 1}, {C, 0, fcprojb + l * C, 0},
        };
        for (int j = 0; j < 12; j++) {
            char name[64];
            snprintf(name, sizeof name, "transformer.h.%lld.%s", (long long)l, suffix[j]);
            add_tensor(&w, name, part[j].d0, part[j].d1, part[j].src, part[j].transpose);
        }
    }
    add_tensor(&w, "transformer.ln_f.weight", C, 0, lnfw, 0);
    add_tensor(&w, "transformer.ln_f.bias", C, 0, lnfb, 0);
    char path[4096];
    const char *metadata[] = {"format", "pt"};
    st = loom_path_join(path, sizeof path, dir, "model.safetensors");
    if (st == LOOM_OK) st = loom_safetensors_write(path, w.tensors, w.n, metadata, 1);
done:
    free(out);
    free(w.names);
    free(w.tensors);
    return st;
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr,
            "loom: error: convert: %s%s%s\n"
            "usage: loom convert --from llmc --input MODEL.bin --output_dir DIR\n",
            what, arg ? " " : "", arg ? arg : "");
    return 2;
}

int loom_command_convert(int argc, char **argv)
{
    const char *from = NULL, *input = NULL, *output = NULL;
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            printf("usage: loom convert --from llmc --input MODEL.bin --output_dir DIR\n"
                   "  Convert an llm.c GPT-2 checkpoint (fp32 or bf16) into DIR/model.safetensors\n"
                   "  and DIR/config.json, as HF's GPT2LMHeadModel and\n"
                   "  `loom train --model_name_or_path DIR` load them.\n");
            return 0;
        }
        if (!value) return usage_error("missing value after", flag);
        if (!strcmp(flag, "--from")) from = value;
        else if (!strcmp(flag, "--input")) input = value;
        else if (!strcmp(flag, "--output_dir")) output = value;
        else return usage_error("unknown argument", flag);
        i++;
    }
    if (!from) return usage_error("--from is required (llmc)", NULL);
    if (strcmp(from, "llmc") != 0) return usage_error("unknown --from format (expected llmc):", from);
    if (!input) return usage_error("--input is required", NULL);
    if (!output) return usage_error("--output_dir is required", NULL);

    const int fd = open(input, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return loom_command_fail(loom_error(errno == ENOENT ? LOOM_E_NOT_FOUND : LOOM_E_IO, "%s: %s", input,
                                            strerror(errno)));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        const int err = errno;
        close(fd);
        return loom_command_fail(loom_error(LOOM_E_IO, "%s: %s", input, strerror(err)));
    }
    const int64_t size = (int64_t)sb.st_size;
    if (size < LLMC_HEADER_BYTES) {
        close(fd);
        return loom_command_fail(loom_error(LOOM_E_FORMAT,
                                            "truncated: %s has %lld bytes, less than llm.c's %d-byte header", input,
                                            (long long)size, LLMC_HEADER_BYTES));
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) return loom_command_fail(loom_error(LOOM_E_IO, "%s: %s", input, strerror(map_errno)));
    int32_t header[LLMC_HEADER_INTS];
    memcpy(header, map, sizeof header);
    llmc_model m = {0};
    loom_status st = read_header(input, header, size, &m);
    if (st == LOOM_OK) {
        m.data = (const unsigned char *)map + LLMC_HEADER_BYTES;
        st = loom_mkdir_p(output);
    }
    if (st == LOOM_OK) st = write_model(output, &m);
    if (st == LOOM_OK) st = write_config(output, &m);
    munmap(map, (size_t)size);
    if (st != LOOM_OK) return loom_command_fail(st);
    printf("wrote %s/model.safetensors and config.json: GPT-2 with %lld layers, %lld heads, %lld channels, vocab %lld, "
           "context %lld (from %s, %s)\n",
           output, (long long)m.L, (long long)m.NH, (long long)m.C, (long long)m.V, (long long)m.maxT, input,
           m.bf16 ? "bf16" : "fp32");
    return 0;
}
