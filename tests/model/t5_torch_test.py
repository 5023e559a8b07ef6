#!/usr/bin/env python3
"""t5_torch_test.py - the t5 plugin in training against PyTorch: a T5 written here with torch
from HF's equations (T5ForConditionalGeneration: RMS norm, relative position buckets shared by
a side's layers, no attention scaling, shift-right, -100 ignored), in float64, from the same
HF-layout weights (config.json + model.safetensors written here), trained with
torch.optim.AdamW for 5 steps on one padded batch of pairs of different lengths; `loom train`
from that folder must log the same 5 losses (to 1e-6 relative). T5 v1.0 (ReLU, tied embeddings
with the d_model^-0.5 rescale) and v1.1 (gated-GELU, untied lm_head). Needs python3-torch
(exit 77, skipped, without it); usage: t5_torch_test.py LOOM_BINARY
"""
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch_or_skip import torch_or_skip  # noqa: E402

torch = torch_or_skip("t5_torch_test.py")

V, D, KV, H, F, L, NB, MD = 40, 32, 8, 4, 64, 2, 32, 128
DT = torch.float64


def init_weights(gated, hf_init=False, seed=0):
    """hf_init: HF's T5 initialisation (norms at 1, the position bias at d_model^-0.5), in f32 for
    training (examples/g2p/torch_curve.py); otherwise the test's, with norms and the bias away
    from their usual values so that their gradients show."""
    torch.manual_seed(seed)
    w = {}

    def p(name, *shape, std):
        w[name] = torch.randn(*shape, dtype=DT) * std

    def norm(name):
        w[name] = torch.ones(D, dtype=DT) if hf_init else 1 + 0.1 * torch.randn(D, dtype=DT)

    p("shared.weight", V, D, std=1.0)
    if gated:
        p("lm_head.weight", V, D, std=1.0)
    for side in ("encoder", "decoder"):
        for i in range(L):
            pre = f"{side}.block.{i}.layer"
            for layer, name in [(0, "SelfAttention")] + ([(1, "EncDecAttention")] if side == "decoder" else []):
                p(f"{pre}.{layer}.{name}.q.weight", H * KV, D, std=(D * KV) ** -0.5)
                p(f"{pre}.{layer}.{name}.k.weight", H * KV, D, std=D ** -0.5)
                p(f"{pre}.{layer}.{name}.v.weight", H * KV, D, std=D ** -0.5)
                p(f"{pre}.{layer}.{name}.o.weight", D, H * KV, std=(H * KV) ** -0.5)
                norm(f"{pre}.{layer}.layer_norm.weight")
            ff = 2 if side == "decoder" else 1
            if gated:
                p(f"{pre}.{ff}.DenseReluDense.wi_0.weight", F, D, std=D ** -0.5)
                p(f"{pre}.{ff}.DenseReluDense.wi_1.weight", F, D, std=D ** -0.5)
            else:
                p(f"{pre}.{ff}.DenseReluDense.wi.weight", F, D, std=D ** -0.5)
            p(f"{pre}.{ff}.DenseReluDense.wo.weight", D, F, std=F ** -0.5)
            norm(f"{pre}.{ff}.layer_norm.weight")
        p(f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", NB, H,
          std=D ** -0.5 if hf_init else 1.0)
        norm(f"{side}.final_layer_norm.weight")
    if hf_init:
        return {k: v.float().requires_grad_() for k, v in w.items()}
    # loom reads f32: round once, so both sides start from the same values
    return {k: v.float().double().requires_grad_() for k, v in w.items()}


def bucket(rel, bidirectional):
    nb, ret = NB, torch.zeros_like(rel)
    if bidirectional:
        nb //= 2
        ret += (rel > 0).long() * nb
        rel = rel.abs()
    else:
        rel = -torch.min(rel, torch.zeros_like(rel))
    exact = nb // 2
    large = exact + (torch.log(rel.float() / exact) / math.log(MD / exact) * (nb - exact)).long()
    return ret + torch.where(rel < exact, rel, torch.min(large, torch.full_like(large, nb - 1)))


def bias(table, q, k, bidirectional):
    rel = torch.arange(k)[None, :] - torch.arange(q)[:, None]
    return table[bucket(rel, bidirectional)].permute(2, 0, 1)[None]


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def attention(W, x, kv, pre, b, mask):
    B, T, S = x.shape[0], x.shape[1], kv.shape[1]
    q = (x @ W[pre + ".q.weight"].T).view(B, T, H, KV).transpose(1, 2)
    k = (kv @ W[pre + ".k.weight"].T).view(B, S, H, KV).transpose(1, 2)
    v = (kv @ W[pre + ".v.weight"].T).view(B, S, H, KV).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) + b + mask  # T5: no 1/sqrt(d_kv)
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * KV) @ W[pre + ".o.weight"].T


def ffn(W, h, pre, gated):
    if gated:
        a = h @ W[pre + ".wi_0.weight"].T
        gelu = 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a.pow(3))))
        return (gelu * (h @ W[pre + ".wi_1.weight"].T)) @ W[pre + ".wo.weight"].T
    return torch.relu(h @ W[pre + ".wi.weight"].T) @ W[pre + ".wo.weight"].T


def loss_of(W, src, smask, labels, gated, pos=None):
    """pos: an optional [>=max(S, T), D] absolute position table added to both sides' inputs, not T5
    (examples/g2p/torch_curve.py uses it to show what T5's relative-only positions cost)."""
    B, S, T = src.shape[0], src.shape[1], labels.shape[1]
    neg = torch.finfo(DT).min
    emask = (1 - smask[:, None, None, :].to(DT)) * neg
    x = W["shared.weight"][src] + (pos[:S] if pos is not None else 0)
    eb = bias(W["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], S, S, True)
    for i in range(L):
        pre = f"encoder.block.{i}.layer"
        h = rms(x, W[pre + ".0.layer_norm.weight"])
        x = x + attention(W, h, h, pre + ".0.SelfAttention", eb, emask)
        x = x + ffn(W, rms(x, W[pre + ".1.layer_norm.weight"]), pre + ".1.DenseReluDense", gated)
    enc = rms(x, W["encoder.final_layer_norm.weight"])
    y = W["shared.weight"][torch.cat([torch.zeros(B, 1, dtype=torch.long), labels[:, :-1].clamp(min=0)], 1)]
    y = y + (pos[:T] if pos is not None else 0)
    causal = torch.triu(torch.full((T, T), neg, dtype=DT), 1)[None, None]
    db = bias(W["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], T, T, False)
    for i in range(L):
        pre = f"decoder.block.{i}.layer"
        h = rms(y, W[pre + ".0.layer_norm.weight"])
        y = y + attention(W, h, h, pre + ".0.SelfAttention", db, causal)
        y = y + attention(W, rms(y, W[pre + ".1.layer_norm.weight"]), enc, pre + ".1.EncDecAttention", 0, emask)
        y = y + ffn(W, rms(y, W[pre + ".2.layer_norm.weight"]), pre + ".2.DenseReluDense", gated)
    y = rms(y, W["decoder.final_layer_norm.weight"])
    logits = y @ W["lm_head.weight"].T if gated else (y * D ** -0.5) @ W["shared.weight"].T
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)


def save_folder(W, folder, gated):
    os.makedirs(folder)
    header, blobs, off = {}, [], 0
    for k, w in W.items():
        b = struct.pack(f"<{w.numel()}f", *w.detach().reshape(-1).tolist())
        header[k] = {"dtype": "F32", "shape": list(w.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    config = {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "vocab_size": V, "d_model": D,
              "d_kv": KV, "d_ff": F, "num_layers": L, "num_decoder_layers": L, "num_heads": H,
              "relative_attention_num_buckets": NB, "relative_attention_max_distance": MD, "dropout_rate": 0.0,
              "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu" if gated else "relu",
              "tie_word_embeddings": not gated, "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)


def write_pairs(pairs, path):
    """Write (source, target) id lists as loom's pre-tokenised JSON lines and return them as one
    batch the way loom pads it: sources with 0 and a mask, labels with -100."""
    with open(path, "w") as f:
        for s, t in pairs:
            f.write(json.dumps({"input_ids": s, "labels": t}) + "\n")
    S, T = max(len(s) for s, _ in pairs), max(len(t) for _, t in pairs)
    src = torch.tensor([s + [0] * (S - len(s)) for s, _ in pairs])
    smask = torch.tensor([[1] * len(s) + [0] * (S - len(s)) for s, _ in pairs])
    labels = torch.tensor([t + [-100] * (T - len(t)) for _, t in pairs])
    return src, smask, labels


def main():
    loom = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="loomt5torch-")
    failed = 0
    try:
        random.seed(1)
        pairs = [([random.randrange(3, V) for _ in range(random.randint(3, 9))] + [1],
                  [random.randrange(3, V) for _ in range(random.randint(2, 7))] + [1]) for _ in range(8)]
        data = os.path.join(tmp, "train.jsonl")
        src, smask, labels = write_pairs(pairs, data)
        for gated, name in ((False, "v1.0"), (True, "v1.1")):
            W = init_weights(gated)
            folder = os.path.join(tmp, name)
            save_folder(W, folder, gated)
            opt = torch.optim.AdamW(list(W.values()), lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
            ref = []
            for _ in range(5):
                loss = loss_of(W, src, smask, labels, gated)
                ref.append(loss.item())
                opt.zero_grad()
                loss.backward()
                opt.step()
            p = subprocess.run([loom, "train", "--model_name_or_path", folder, "--train_file", data, "--output_dir",
                                os.path.join(tmp, name + "-run"), "--per_device_train_batch_size", "8", "--max_steps",
                                "5", "--logging_steps", "1", "--learning_rate", "1e-2", "--weight_decay", "0",
                                "--lr_scheduler_type", "constant", "--max_grad_norm", "0", "--optim", "adamw_torch",
                                "--save_strategy", "no", "--disable_tqdm"], capture_output=True, text=True)
            got = [float(x) for x in re.findall(r"'loss': ([0-9.e+-]+)", p.stdout)]
            ok = p.returncode == 0 and len(got) == 5 and all(abs(a - b) <= 1e-6 * abs(b) for a, b in zip(got, ref))
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'} T5 {name}, 5 AdamW steps: torch {ref}\n{'':14}loom  {got}")
            if p.returncode != 0:
                print(p.stdout[-2000:], p.stderr[-2000:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
