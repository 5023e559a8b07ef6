/*
 * tokenizer_spm.cpp - the C boundary over libsentencepiece (see tokenizer_spm.h). Every entry
 * point catches every exception: nothing C++ crosses into the C core.
 */
#include "tokenizer_spm.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

extern "C" {
#include "error.h"
}

#ifdef LOOM_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>
#include <sys/stat.h>

struct loom_spm {
    sentencepiece::SentencePieceProcessor processor;
};

extern "C" loom_status loom_spm_load(const char *path, loom_spm **out)
{
    *out = nullptr;
    struct stat st;
    if (stat(path, &st) != 0) return loom_error(LOOM_E_NOT_FOUND, "%s: no such SentencePiece model", path);
    try {
        loom_spm *spm = new loom_spm();
        const auto status = spm->processor.Load(path);
        if (!status.ok()) {
            delete spm;
            return loom_error(LOOM_E_FORMAT, "%s: not a SentencePiece model (%s)", path, status.ToString().c_str());
        }
        *out = spm;
        return LOOM_OK;
    } catch (const std::bad_alloc &) {
        return loom_error(LOOM_E_NOMEM, "%s: out of memory loading the SentencePiece model", path);
    } catch (const std::exception &e) {
        return loom_error(LOOM_E_FORMAT, "%s: not a SentencePiece model (%s)", path, e.what());
    } catch (...) {
        return loom_error(LOOM_E_INTERNAL, "%s: SentencePiece failed loading the model", path);
    }
}

extern "C" loom_status loom_spm_encode(const loom_spm *spm, const char *text, size_t len, int32_t **ids, size_t *n)
{
    *ids = nullptr;
    *n = 0;
    try {
        std::vector<int> pieces;
        const auto status = spm->processor.Encode(std::string(text, len), &pieces);
        if (!status.ok()) return loom_error(LOOM_E_INVALID, "SentencePiece: %s", status.ToString().c_str());
        *ids = static_cast<int32_t *>(std::malloc((pieces.size() + 1) * sizeof **ids));
        if (!*ids) return loom_error(LOOM_E_NOMEM, "out of memory for %zu tokens", pieces.size());
        for (size_t i = 0; i < pieces.size(); i++)
            (*ids)[i] = pieces[i];
        *n = pieces.size();
        return LOOM_OK;
    } catch (const std::bad_alloc &) {
        return loom_error(LOOM_E_NOMEM, "SentencePiece: out of memory encoding %zu bytes", len);
    } catch (const std::exception &e) {
        return loom_error(LOOM_E_INTERNAL, "SentencePiece: %s", e.what());
    } catch (...) {
        return loom_error(LOOM_E_INTERNAL, "SentencePiece failed encoding");
    }
}

extern "C" loom_status loom_spm_decode(const loom_spm *spm, const int32_t *ids, size_t n, char **text, size_t *len)
{
    *text = nullptr;
    *len = 0;
    try {
        const int size = spm->processor.GetPieceSize();
        std::vector<int> pieces(ids, ids + n);
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= size)
                return loom_error(LOOM_E_INVALID, "token id %d is outside the SentencePiece model [0, %d)", ids[i],
                                  size);
        std::string out;
        const auto status = spm->processor.Decode(pieces, &out);
        if (!status.ok()) return loom_error(LOOM_E_INVALID, "SentencePiece: %s", status.ToString().c_str());
        *text = static_cast<char *>(std::malloc(out.size() + 1));
        if (!*text) return loom_error(LOOM_E_NOMEM, "out of memory for %zu bytes", out.size());
        std::memcpy(*text, out.data(), out.size());
        (*text)[out.size()] = '\0';
        *len = out.size();
        return LOOM_OK;
    } catch (const std::bad_alloc &) {
        return loom_error(LOOM_E_NOMEM, "SentencePiece: out of memory decoding %zu ids", n);
    } catch (const std::exception &e) {
        return loom_error(LOOM_E_INTERNAL, "SentencePiece: %s", e.what());
    } catch (...) {
        return loom_error(LOOM_E_INTERNAL, "SentencePiece failed decoding");
    }
}

/* The library's accessors do not throw, but a boundary that promises no exception makes sure. */
template <typename F> static int32_t guarded(F f)
{
    try {
        return f();
    } catch (...) {
        return -1;
    }
}

extern "C" int32_t loom_spm_vocab_size(const loom_spm *spm)
{
    return guarded([&] { return spm->processor.GetPieceSize(); });
}
extern "C" int32_t loom_spm_eos(const loom_spm *spm)
{
    return guarded([&] { return spm->processor.eos_id(); });
}
extern "C" int32_t loom_spm_pad(const loom_spm *spm)
{
    return guarded([&] { return spm->processor.pad_id(); });
}
extern "C" int32_t loom_spm_unk(const loom_spm *spm)
{
    return guarded([&] { return spm->processor.unk_id(); });
}

extern "C" void loom_spm_free(loom_spm *spm)
{
    try {
        delete spm;
    } catch (...) {
    }
}

#else /* built without libsentencepiece */

extern "C" loom_status loom_spm_load(const char *path, loom_spm **out)
{
    *out = nullptr;
    return loom_error(LOOM_E_UNSUPPORTED,
                      "%s: this loom was built without libsentencepiece (install Debian's libsentencepiece-dev and "
                      "rebuild)",
                      path);
}
extern "C" loom_status loom_spm_encode(const loom_spm *, const char *, size_t, int32_t **ids, size_t *n)
{
    *ids = nullptr;
    *n = 0;
    return loom_error(LOOM_E_UNSUPPORTED, "built without libsentencepiece");
}
extern "C" loom_status loom_spm_decode(const loom_spm *, const int32_t *, size_t, char **text, size_t *len)
{
    *text = nullptr;
    *len = 0;
    return loom_error(LOOM_E_UNSUPPORTED, "built without libsentencepiece");
}
extern "C" int32_t loom_spm_vocab_size(const loom_spm *)
{
    return 0;
}
extern "C" int32_t loom_spm_eos(const loom_spm *)
{
    return -1;
}
extern "C" int32_t loom_spm_pad(const loom_spm *)
{
    return -1;
}
extern "C" int32_t loom_spm_unk(const loom_spm *)
{
    return -1;
}
extern "C" void loom_spm_free(loom_spm *) {}

#endif
