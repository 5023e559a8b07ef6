"""GPT-2 124M on one GPU, T = 1024, bf16: loom against PyTorch (eager and torch.compile) in the
same run, same model shape, batch and optimizer (AdamW, lr 6e-4, weight decay 0.1).

    python3 bench/gpt2_gpu.py BUILD_DIR [--B 8] [--steps 10] [--no-compile]

loom: `loom train --plugin cuda --bf16` twice, with WARM and WARM + STEPS optimizer steps; the
difference of the two train_runtime figures over STEPS is the time of a step without start-up
and warm-up. Its device memory is the start-up table's "on the device" line (everything loom
allocates there before step 1; nothing is allocated inside a step).
PyTorch: transformers' GPT2LMHeadModel (the same architecture), torch.autocast(bfloat16),
torch.optim.AdamW(fused=True), STEPS timed steps after WARM, torch.cuda.max_memory_allocated.
MFU: (6 N + 12 L T C) flops per token (llm.c's count: the matmuls forward and backward, plus
attention) against the card's dense bf16 peak (H100/H200 SXM: 989 TFLOPS, A100: 312).
Prints a table and one JSON line per side. Exits 77 when torch or transformers is missing.
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

args = sys.argv[1:]
build = args[0]
B = int(args[args.index("--B") + 1]) if "--B" in args else 8
STEPS = int(args[args.index("--steps") + 1]) if "--steps" in args else 10
WARM = 3
T, V, L, C, NH = 1024, 50257, 12, 768, 12
N_PARAMS = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C  # tied head
FLOPS_PER_TOKEN = 6 * N_PARAMS + 12 * L * T * C
loom = os.path.join(build, "bin", "loom")
tmp = tempfile.mkdtemp(prefix="loomgpu-bench-")


def peak_flops(name):
    for key, value in (("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L40", 181e12)):
        if key in name:
            return value
    return None


def write_tokens(path, n):
    state, tokens = 7, []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        tokens.append((state >> 33) % V)
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)) + struct.pack(f"<{n}H", *tokens))


def loom_side():
    tokens = os.path.join(tmp, "train.bin")
    write_tokens(tokens, (WARM + STEPS + 2) * B * T + 1)
    runtime, device_bytes = {}, None
    for steps in (WARM, WARM + STEPS):
        p = subprocess.run([loom, "train", "--plugin", "cuda", "--bf16", "--model", "gpt2", "--train_file", tokens,
                            "--block_size", str(T), "--per_device_train_batch_size", str(B), "--max_steps",
                            str(steps), "--learning_rate", "6e-4", "--weight_decay", "0.1", "--save_strategy", "no",
                            "--disable_tqdm", "--output_dir", os.path.join(tmp, f"loom{steps}"),
                            "--overwrite_output_dir"], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"loom exited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        runtime[steps] = float(re.search(r"'train_runtime': ([0-9.]+)", p.stdout).group(1))
        m = re.search(r"on the device .*\((\d+) B\)", p.stdout)
        device_bytes = int(m.group(1)) if m else None
    step = (runtime[WARM + STEPS] - runtime[WARM]) / STEPS
    return {"side": "loom", "s_per_step": step, "tokens_per_s": B * T / step, "device_bytes": device_bytes}


def torch_side(compiled):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_positions=T, n_embd=C, n_layer=L, n_head=NH, vocab_size=V)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=True)
    step_fn = torch.compile(model) if compiled else model
    x = torch.randint(0, V, (B, T + 1), device="cuda")
    torch.cuda.reset_peak_memory_stats()

    def one():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(input_ids=x[:, :-1], labels=x[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(WARM):
        one()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(STEPS):
        one()
    torch.cuda.synchronize()
    step = (time.perf_counter() - start) / STEPS
    return {"side": "torch.compile" if compiled else "torch eager", "s_per_step": step, "tokens_per_s": B * T / step,
            "device_bytes": torch.cuda.max_memory_allocated()}


try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as e:
    print(f"bench/gpt2_gpu.py: SKIPPED: {e}")
    sys.exit(77)

import torch  # noqa: E402

name = torch.cuda.get_device_name(0)
peak = peak_flops(name)
rows = [loom_side(), torch_side(False)]
if "--no-compile" not in args:
    try:
        rows.append(torch_side(True))
    except Exception as e:  # torch.compile needs a working Triton: report, do not fail the run
        print(f"torch.compile failed: {type(e).__name__}: {e}")
print(f"GPT-2 124M, B = {B}, T = {T}, bf16, {name}; {STEPS} steps after {WARM}")
print(f"{'side':14} {'ms/step':>9} {'tokens/s':>10} {'MFU':>6} {'device MiB':>11}")
for r in rows:
    r["mfu"] = FLOPS_PER_TOKEN * r["tokens_per_s"] / peak if peak else None
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "?"
    mem = f"{r['device_bytes'] / 2**20:.0f}" if r["device_bytes"] else "?"
    print(f"{r['side']:14} {1000 * r['s_per_step']:9.1f} {r['tokens_per_s']:10.0f} {mfu:>6} {mem:>11}")
for r in rows[1:]:
    print(f"loom / {r['side']}: tokens/s {rows[0]['tokens_per_s'] / r['tokens_per_s']:.2f}x")
for r in rows:
    print(json.dumps({**r, "device": name, "B": B, "T": T}))
