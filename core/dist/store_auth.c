/*
 * store_auth.c - the proofs of the store's handshake: HMAC-SHA256 (OpenSSL's libcrypto) over
 * a label and the two nonces, keyed by the job's secret, so the secret itself never crosses
 * the wire and a recorded exchange does not answer a fresh nonce.
 */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "store_internal.h"

bool store_mac(const char *secret, const char *label, const unsigned char *first, const unsigned char *second,
               unsigned char mac[STORE_MAC_LEN])
{
    unsigned char msg[32 + 2 * STORE_NONCE_LEN];
    size_t label_len = strlen(label);
    if (label_len > 32) return false;
    memcpy(msg, label, label_len);
    memcpy(msg + label_len, first, STORE_NONCE_LEN);
    memcpy(msg + label_len + STORE_NONCE_LEN, second, STORE_NONCE_LEN);
    static const unsigned char empty[1] = {0};
    const void *key = secret && *secret ? (const void *)secret : (const void *)empty;
    int key_len = secret ? (int)strlen(secret) : 0;
    unsigned int mac_len = 0;
    return HMAC(EVP_sha256(), key, key_len, msg, label_len + 2 * STORE_NONCE_LEN, mac, &mac_len) != NULL &&
           mac_len == STORE_MAC_LEN;
}

bool store_mac_equal(const unsigned char *a, const unsigned char *b) { return CRYPTO_memcmp(a, b, STORE_MAC_LEN) == 0; }

void store_forget(char *secret)
{
    if (secret) OPENSSL_cleanse(secret, strlen(secret));
}

bool store_random(unsigned char *out, size_t n)
{
    while (n) {
        ssize_t r = getrandom(out, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        out += r;
        n -= (size_t)r;
    }
    return true;
}
