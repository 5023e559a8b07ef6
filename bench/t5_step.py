"""A T5-small-shaped training step on the CPU: loom against PyTorch in the same run.

    python3 bench/t5_step.py BUILD_DIR [--steps 3] [--threads 2] [--B 16] [--S 64] [--T 64]

T5 v1.0 shape (6 + 6 layers, d_model 512, 8 heads x 64, ReLU FFN 2048, vocab 32128, tied
embeddings), batch B of S source and T target tokens, AdamW, fp32, no dropout. loom: `loom train`
twice (WARM and WARM + STEPS steps); the difference of the two train_runtime figures over STEPS
is a step without start-up. PyTorch: the T5 of tests/model/t5_torch_test.py (HF's equations) in
float32 with torch.optim.AdamW(foreach=True), STEPS steps timed after WARM. Both on THREADS
threads. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE must be unset for both (bench/t5_step does it).
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


def opt(name, default):
    return int(args[args.index(name) + 1]) if name in args else default


STEPS, THREADS, B, S, T = opt("--steps", 3), opt("--threads", 2), opt("--B", 16), opt("--S", 64), opt("--T", 64)
WARM = 1
V, D, KV, H, F, L = 32128, 512, 64, 8, 2048, 6
tmp = tempfile.mkdtemp(prefix="loomt5bench-")
loom = os.path.join(build, "bin", "loom")


PEER_ONLY = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "OMP_WAIT_POLICY")


def loom_side():
    data = os.path.join(tmp, "pairs.jsonl")
    state = 1
    with open(data, "w") as f:
        for _ in range(B * (WARM + STEPS + 1)):
            ids = []
            for _ in range(S + T - 2):
                state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
                ids.append(3 + (state >> 33) % (V - 3))
            f.write(json.dumps({"input_ids": ids[:S - 1] + [1], "labels": ids[S - 1:] + [1]}) + "\n")
    # The allocator and OpenMP settings bench/t5_step exports are PyTorch's tuning (peers'
    # settings); loom runs as the other benches run it, without them.
    loom_env = {k: v for k, v in os.environ.items() if k not in PEER_ONLY}
    loom_env["OMP_NUM_THREADS"] = str(THREADS)
    runtime = {}
    for steps in (WARM, WARM + STEPS):
        p = subprocess.run([loom, "train", "--model", "t5", "--train_file", data, "--output_dir", os.path.join(tmp, "run"),
                            "--overwrite_output_dir", "--vocab_size", str(V), "--d_model", str(D), "--d_kv", str(KV),
                            "--num_heads", str(H), "--d_ff", str(F), "--num_layers", str(L), "--dropout_rate", "0",
                            "--per_device_train_batch_size", str(B), "--max_steps", str(steps), "--learning_rate",
                            "1e-4", "--save_strategy", "no", "--disable_tqdm"],
                           capture_output=True, text=True, env=loom_env)
        if p.returncode != 0:
            sys.exit(f"loom exited {p.returncode}\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}")
        runtime[steps] = float(re.search(r"'train_runtime': ([0-9.]+)", p.stdout).group(1))
    return (runtime[WARM + STEPS] - runtime[WARM]) / STEPS


def torch_side():
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "model"))
    import t5_torch_test as ref
    torch.set_num_threads(THREADS)
    ref.V, ref.D, ref.KV, ref.H, ref.F, ref.L, ref.DT = V, D, KV, H, F, L, torch.float32
    W = {k: v.detach().float().requires_grad_() for k, v in ref.init_weights(False).items()}
    optimizer = torch.optim.AdamW(list(W.values()), lr=1e-4, foreach=True)
    src = torch.randint(3, V, (B, S))
    labels = torch.randint(3, V, (B, T))
    mask = torch.ones(B, S, dtype=torch.long)

    def step():
        loss = ref.loss_of(W, src, mask, labels, False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(WARM):
        step()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    return (time.perf_counter() - start) / STEPS


tokens = B * (S + T)
rows = {"loom": loom_side()}
try:
    rows["torch"] = torch_side()
except ImportError as e:
    print(f"PyTorch not importable ({e}): loom only")
print(f"T5-small shape, B = {B}, S = T = {S}/{T}, fp32, {THREADS} threads, {STEPS} steps after {WARM}")
for side, s in rows.items():
    print(f"{side:6} {1000 * s:9.0f} ms/step {tokens / s:9.0f} tokens/s")
if len(rows) == 2:
    print(f"loom / torch: tokens/s {rows['torch'] / rows['loom']:.2f}x")
print(json.dumps({"B": B, "S": S, "T": T, "threads": THREADS, **{k + "_s_per_step": v for k, v in rows.items()}}))
