#!/usr/bin/env python3
"""t5_reference_test.py - the t5 plugin's forward against an independent numpy implementation
of HF's T5ForConditionalGeneration (float64), for T5 v1.0 (ReLU, tied embeddings rescaled by
d_model^-0.5) and v1.1 (gated-GELU, untied lm_head), on a padded batch with an attention mask
and -100 labels; and a NEFTune training forward with the noise of both stacks' embeddings.
test_t5 --dump writes the tiny model's weights, batch, logits and loss sum (and the noise)."""
import json
import math
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:  # Debian's python3-numpy lives with /usr/bin/python3, not with another interpreter
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("numpy is missing (scripts/install-deps.sh installs python3-numpy): skipped")
    sys.exit(77)

NB, MD, H, KV, L = 8, 6, 2, 3, 2  # as test_t5.c's tiny config


def bucket(rel, bidirectional, num_buckets, max_distance):
    b = 0
    if bidirectional:
        num_buckets //= 2
        b += num_buckets if rel > 0 else 0
        rel = abs(rel)
    else:
        rel = -min(rel, 0)
    max_exact = num_buckets // 2
    if rel < max_exact:
        return b + rel
    large = max_exact + int(np.float32(math.log(rel / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)))
    return b + min(large, num_buckets - 1)


def position_bias(table, q_len, k_len, bidirectional):
    out = np.zeros((H, q_len, k_len))
    for i in range(q_len):
        for j in range(k_len):
            out[:, i, j] = table[bucket(j - i, bidirectional, NB, MD)]
    return out


def rms(x, w, eps=1e-6):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def attention(x, kv, W, prefix, bias, mask):
    """HF T5Attention: no 1/sqrt(d) scaling; mask [B, Tk] of 0/1 added as -inf."""
    Bn, Tq, _ = x.shape
    Tk = kv.shape[1]
    q = (x @ W[prefix + ".q.weight"].T).reshape(Bn, Tq, H, KV).transpose(0, 2, 1, 3)
    k = (kv @ W[prefix + ".k.weight"].T).reshape(Bn, Tk, H, KV).transpose(0, 2, 1, 3)
    v = (kv @ W[prefix + ".v.weight"].T).reshape(Bn, Tk, H, KV).transpose(0, 2, 1, 3)
    s = q @ k.transpose(0, 1, 3, 2)
    if bias is not None:
        s = s + bias[None]
    if mask is not None:
        s = np.where(mask[:, None, :, :] > 0, s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    ctx = (p @ v).transpose(0, 2, 1, 3).reshape(Bn, Tq, H * KV)
    return ctx @ W[prefix + ".o.weight"].T


def gelu_new(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def ff(x, W, prefix, gated):
    if gated:
        h = gelu_new(x @ W[prefix + ".wi_0.weight"].T) * (x @ W[prefix + ".wi_1.weight"].T)
    else:
        h = np.maximum(x @ W[prefix + ".wi.weight"].T, 0)
    return h @ W[prefix + ".wo.weight"].T


def reference(d, gated, encoder_noise=None, decoder_noise=None):
    """encoder_noise, decoder_noise: NEFTune's, added to the shared embedding's output of each
    stack (HF's hook on get_input_embeddings(), which both stacks call), before its dropout."""
    W = {k: np.array(v["data"], dtype=np.float64).reshape(v["shape"]) for k, v in d["tensors"].items()}
    B, S, T = d["B"], d["S"], d["T"]
    ids = np.array(d["inputs"]).reshape(B, S)
    mask = np.array(d["mask"]).reshape(B, S)
    labels = np.array(d["labels"]).reshape(B, T)
    dec_ids = np.concatenate([np.zeros((B, 1), dtype=int), labels[:, :-1]], 1)
    dec_ids[dec_ids == -100] = 0
    # encoder
    x = W["shared.weight"][ids]
    if encoder_noise is not None:
        x = x + encoder_noise
    bias = position_bias(W["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], S, S, True)
    enc_mask = np.broadcast_to(mask[:, None, :], (B, S, S))
    for l in range(L):
        p = "encoder.block.%d" % l
        x = x + attention_self(x, W, p, bias, enc_mask)
        x = x + ff(rms(x, W[p + ".layer.1.layer_norm.weight"]), W, p + ".layer.1.DenseReluDense", gated)
    enc = rms(x, W["encoder.final_layer_norm.weight"])
    # decoder
    y = W["shared.weight"][dec_ids]
    if decoder_noise is not None:
        y = y + decoder_noise
    bias = position_bias(W["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], T, T, False)
    causal = np.broadcast_to(np.tril(np.ones((T, T)))[None], (B, T, T))
    cross_mask = np.broadcast_to(mask[:, None, :], (B, T, S))
    for l in range(L):
        p = "decoder.block.%d" % l
        y = y + attention_self(y, W, p, bias, causal)
        n = rms(y, W[p + ".layer.1.layer_norm.weight"])
        y = y + attention_kv(n, enc, W, p + ".layer.1.EncDecAttention", cross_mask)
        y = y + ff(rms(y, W[p + ".layer.2.layer_norm.weight"]), W, p + ".layer.2.DenseReluDense", gated)
    out = rms(y, W["decoder.final_layer_norm.weight"])
    if "lm_head.weight" in W:
        logits = out @ W["lm_head.weight"].T
    else:
        logits = (out * W["shared.weight"].shape[1] ** -0.5) @ W["shared.weight"].T
    m = logits.max(-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    valid = labels != -100
    loss = -sum(logp[b, t, labels[b, t]] for b in range(B) for t in range(T) if valid[b, t])
    return logits, loss, int(valid.sum())


def attention_self(x, W, p, bias, mask):
    n = rms(x, W[p + ".layer.0.layer_norm.weight"])
    return attention(n, n, W, p + ".layer.0.SelfAttention", bias, mask)


def attention_kv(n, enc, W, prefix, mask):
    return attention(n, enc, W, prefix, None, mask)


def neftune(d):
    """A noisy training forward (neftune_noise_alpha 5) against numpy with the noise the dump
    says the model drew, added on both sides: the plugin must match it, and must not match
    numpy with either side's noise left out (each is visible). Each side's noise lies in
    [-a, a] for a = alpha / sqrt(that side's length x d_model), and reaches near both ends."""
    B, S, T = d["B"], d["S"], d["T"]
    D = len(d["encoder_noise"]) // (B * S)
    enc = np.array(d["encoder_noise"]).reshape(B, S, D)
    dec = np.array(d["decoder_noise"]).reshape(B, T, D)
    failures = 0
    for name, noise, length in (("encoder", enc, S), ("decoder", dec, T)):
        a = np.float32(d["alpha"] / math.sqrt(length * D))
        print("neftune: %s noise in [%.4f, %.4f], bound %.4f" % (name, noise.min(), noise.max(), a))
        if np.abs(noise).max() > a or noise.max() < 0.8 * a or noise.min() > -0.8 * a:
            print("FAIL: the %s noise is not uniform in [-a, a] for its own length" % name)
            failures += 1
    got = np.array(d["logits"])
    for label, e, y, want_match in (("both", enc, dec, True), ("no encoder noise", None, dec, False),
                                    ("no decoder noise", enc, None, False), ("none", None, None, False)):
        logits, loss, _ = reference(d, False, e, y)
        err = np.abs(got.reshape(logits.shape) - logits).max()
        bound = 1e-5 * max(1.0, np.abs(logits).max())
        print("neftune, numpy with %s: max |logit difference| %.2e, loss sum %.6f vs %.6f" % (label, err,
                                                                                            d["loss_sum"], loss))
        if (err <= bound) != want_match or (want_match and abs(d["loss_sum"] - loss) > 1e-5 * max(1.0, abs(loss))):
            print("FAIL: neftune's noisy forward %s numpy with %s" % ("differs from" if want_match else "matches",
                                                                     label))
            failures += 1
    return failures


def main():
    binary = sys.argv[1]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dump.json")
        subprocess.run([binary, "--dump", path, "relu", "neftune"], check=True)
        with open(path) as f:
            failures += neftune(json.load(f))
    for config in ("relu", "gated"):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dump.json")
            subprocess.run([binary, "--dump", path, config], check=True)
            with open(path) as f:
                d = json.load(f)
        logits, loss, n = reference(d, config == "gated")
        got = np.array(d["logits"]).reshape(logits.shape)
        err = np.abs(got - logits).max()
        lerr = abs(d["loss_sum"] - loss)
        print("%s: max |logit difference| %.2e (logits up to %.2f), loss sum %.6f vs numpy %.6f, targets %d vs %d"
              % (config, err, np.abs(logits).max(), d["loss_sum"], loss, d["n_targets"], n))
        if err > 1e-5 * max(1.0, np.abs(logits).max()) or lerr > 1e-5 * max(1.0, abs(loss)) or d["n_targets"] != n:
            print("FAIL: %s differs from the numpy T5" % config)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
