#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/seed-*): one small,
valid input per format, so that each fuzzer starts past the magic numbers and headers.
Run from anywhere: python3 tests/fuzz/make_corpus.py. Regression inputs (crash-*) that the
fuzzers found are kept next to the seeds and are not written by this script."""
import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"\n====\n"


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)] in data order."""
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


put("safetensors", "model", safetensors(
    [("wte.weight", "F32", [2, 2], f32(1, 2, 3, 4)), ("ln.bias", "BF16", [2], b"\x80\x3f\x00\x40"),
     ("step", "I64", [], struct.pack("<q", 7)), ("mask", "U8", [3], b"\x01\x00\x01")],
    {"format": "pt"}))
put("safetensors", "empty", safetensors([], {"format": "pt"}))

put("model_config", "gpt2", json.dumps({"model_type": "gpt2", "_name_or_path": "gpt2", "n_embd": 64, "n_layer": 2,
                                        "n_inner": None, "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
                                        "architectures": ["GPT2LMHeadModel"], "activation_function": "gelu_new"}))

put("args_json", "train", json.dumps({"output_dir": "out", "learning_rate": 3e-4, "num_train_epochs": 2,
                                      "per_device_train_batch_size": 8, "evaluation_strategy": "steps",
                                      "eval_steps": 10, "report_to": ["none"], "fp16": False, "seed": 42,
                                      "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "max_steps": -1,
                                      "resume_from_checkpoint": None, "some_plugin_flag": "x"}))

put("ds_config", "zero2", json.dumps({
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": 5e8,
                          "offload_optimizer": {"device": "cpu", "pin_memory": True}},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                       "warmup_num_steps": "auto", "total_num_steps": "auto"}},
    "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16}, "steps_per_print": 10}))
put("ds_config", "stage1", json.dumps({"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 1},
                                       "bf16": {"enabled": True}}))

toks = [50256, 15496, 11, 995, 0, 1, 2, 3, 4, 5, 6, 7]
hdr = struct.pack("<3i", 20240520, 1, len(toks)) + b"\0" * (1024 - 12)
put("tokens", "shard", bytes([3]) + hdr + struct.pack("<%dH" % len(toks), *toks))

n, nf, nc = 3, 2, 2
put("classification", "small", b"LOOMCLS1" + struct.pack("<IIIIQ", 1, nf, nc, 0, n)
    + f32(0.5, -1, 2, 3, 0, 0.25) + struct.pack("<3i", 0, 1, 1))


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, k = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + k)
            k += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


b2u = bytes_to_unicode()
vocab = {b2u[b]: b for b in range(256)}
merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("o", ",")]
for a, b in merges:
    vocab[a + b] = len(vocab)
vocab["<|endoftext|>"] = len(vocab)
put("bpe", "tiny", json.dumps(vocab, ensure_ascii=False).encode() + SEP
    + ("#version: 0.2\n" + "".join("%s %s\n" % m for m in merges)).encode())

files = {"model.safetensors": safetensors([("w", "F32", [1], f32(1))], {"format": "pt"}),
         "trainer_state.json": b'{"global_step": 7}'}
manifest = {"format": "loom-checkpoint/1", "files": [
    {"name": k, "bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()} for k, v in sorted(files.items())]}
parts = []
for k, v in list(files.items()) + [("loom_manifest.json", json.dumps(manifest, indent=2).encode())]:
    parts += [k.encode(), v]
put("checkpoint", "complete", SEP.join(parts))

put("resume_state", "all", SEP.join(json.dumps(x).encode() for x in [
    {"global_step": 20, "epoch": 1.5, "total_flos": 1.2e9, "num_input_tokens_seen": 4096,
     "log_history": [{"loss": 2.5, "step": 10}], "best_metric": 0.5, "best_model_checkpoint": "out/checkpoint-10",
     "stateful_callbacks": {"EarlyStoppingCallback": {"args": {}, "attributes": {"early_stopping_patience_counter": 1}}}},
    {"step": 20, "scheduler": "linear", "last_lr": 1e-4},
    {"precision": "fp32", "loss_scale": 1, "iteration": 20, "last_overflow": -1, "growth_tracker": 0,
     "hysteresis_left": 2, "skipped_steps": 0},
    {"since_log": 12.5, "steps_since_log": 5, "total": 50.0, "steps": 20},
    {"seed": 42}]))

meta = {"format": "pt", "optimizer": "adamw"}
put("optimizer_shards", "whole", bytes([0]) + safetensors(
    [("wte.weight.exp_avg", "F32", [4], f32(1, 2, 3, 4)), ("wte.weight.exp_avg_sq", "F32", [4], f32(1, 1, 1, 1))], meta))
put("optimizer_shards", "two-ranks", bytes([2]) + safetensors(
    [("wte.weight.exp_avg@0", "F32", [2], f32(1, 2)), ("ln.bias.fp32_master@0", "F32", [1], f32(5))], meta)
    + SEP + safetensors([("wte.weight.exp_avg@2", "F32", [2], f32(3, 4))], meta))


def frame(body):
    return struct.pack("<I", len(body)) + body


def string(s):
    return struct.pack("<I", len(s)) + s


def blob(s):
    return struct.pack("<Q", len(s)) + s


SET = lambda k, v: frame(b"\x01" + string(k) + blob(v))
GET = lambda k, t: frame(b"\x02" + string(k) + struct.pack("<Q", t))
ADD = lambda k, d: frame(b"\x03" + string(k) + struct.pack("<q", d))
WAIT = lambda t, ks: frame(b"\x04" + struct.pack("<QI", t, len(ks)) + b"".join(string(k) for k in ks))
put("store", "ranks", b"\x03" + SET(b"a", b"1") + GET(b"a", 0) + ADD(b"loom/joined", 1) + WAIT(0, [b"a", b"b"])
    + SEP + GET(b"b", 20) + ADD(b"a", 5))
put("store", "stranger", b"\x00" + frame(b"\x10" + b"\0" * 64))
