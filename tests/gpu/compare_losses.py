"""gpt2-nano on the GPU against the CPU: the same 20 steps, loss by loss (fp32 within 1e-4,
bf16 within 2e-2, fp32 with NEFTune's noise within 1e-4), or, with --memcheck, 3 GPU steps under compute-sanitizer (0 errors), or,
with --t5, a tiny T5 on padded pairs with dropout and label smoothing (rmsnorm, mha with its
masks, bias and dropout, the smoothed loss on CUDA), 20 steps within 1e-4: both devices draw
the same dropout masks, so only round-off may differ.
Usage: compare_losses.py BUILD_DIR [--memcheck | --t5]"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cli"))
from loomtest import write_tokens  # noqa: E402

build = sys.argv[1]
loom = os.path.join(build, "bin", "loom")
tmp = tempfile.mkdtemp(prefix="loomgpu-")
tokens = os.path.join(tmp, "train.bin")
write_tokens(tokens, 40000, 512, 7)
NANO = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "4", "--gpt2.n_embd", "128",
        "--gpt2.vocab_size", "512", "--gpt2.n_positions", "128", "--block_size", "64"]


def train(name, steps, *extra, prefix=()):
    cmd = [*prefix, loom, "train", "--output_dir", os.path.join(tmp, name), "--overwrite_output_dir",
           "--disable_tqdm", "--train_file", tokens, "--per_device_train_batch_size", "8", "--max_steps",
           str(steps), "--logging_steps", "1", "--learning_rate", "1e-3", "--seed", "3", "--save_strategy", "no",
           *NANO, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout + p.stderr


def losses(text):
    return [float(x) for x in re.findall(r"'loss': ([0-9.e+-]+)", text)]


if "--memcheck" in sys.argv:
    out = train("memcheck", 3, "--plugin", "cuda", prefix=(os.environ["LOOM_SANITIZER"], "--tool", "memcheck",
                                                              "--error-exitcode", "9"))
    m = re.search(r"ERROR SUMMARY: (\d+) error", out)
    print(m.group(0) if m else "no ERROR SUMMARY line")
    sys.exit(0 if m and m.group(1) == "0" else 1)

def compare(name, cpu_out, gpu_out, tol):
    """Prints the trajectories; True when both have 20 steps within tol."""
    device = re.search(r"loom: device +(.*)", gpu_out)
    print(f"{name}: {device.group(1) if device else '?'}")
    cpu, gpu = losses(cpu_out), losses(gpu_out)
    worst = max((abs(a - b) for a, b in zip(cpu, gpu)), default=float("inf"))
    ok = len(cpu) == len(gpu) == 20 and worst <= tol
    print(f"{name}: {len(gpu)} steps, largest |GPU - CPU| loss difference {worst:.3g} (bound {tol}): "
          f"{'ok' if ok else 'FAILED'}")
    for step, (a, b) in enumerate(zip(cpu, gpu), 1):
        print(f"  step {step:2d}  cpu {a:.6f}  gpu {b:.6f}")
    return ok


if "--t5" in sys.argv:
    pairs = os.path.join(tmp, "pairs.jsonl")
    r = random.Random(5)
    with open(pairs, "w") as f:  # reverse 1-12 tokens: padded batches, masks, different lengths
        for _ in range(400):
            src = [r.randint(3, 60) for _ in range(r.randint(1, 12))]
            f.write(json.dumps({"input_ids": src + [1], "labels": src[::-1] + [1]}) + "\n")
    T5 = ["--vocab_size", "64", "--d_model", "64", "--d_kv", "16", "--num_heads", "4", "--d_ff", "128",
          "--num_layers", "2", "--dropout_rate", "0.1", "--label_smoothing_factor", "0.1"]

    def t5(name, *extra):
        cmd = [loom, "train", "--do_train", "--output_dir", os.path.join(tmp, name), "--overwrite_output_dir",
               "--disable_tqdm", "--train_file", pairs, "--per_device_train_batch_size", "16", "--max_steps", "20",
               "--logging_steps", "1", "--learning_rate", "1e-3", "--seed", "3", "--save_strategy", "no", *T5, *extra]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p.stdout + p.stderr

    sys.exit(0 if compare("t5 fp32", t5("cpu_t5", "--no_cuda"), t5("gpu_t5", "--plugin", "cuda"), 1e-4) else 1)

failed = False
# NEFTune: the model adds its noise on the host over the device's activations, drawn from the
# step's seed, so the GPU run adds the CPU run's noise and only round-off may differ.
for name, extra, tol in (("fp32", (), 1e-4), ("bf16", ("--bf16",), 2e-2),
                         ("fp32-neftune", ("--neftune_noise_alpha", "5"), 1e-4)):
    gpu_out = train("gpu_" + name, 20, "--plugin", "cuda", *extra)
    failed |= not compare(name, train("cpu_" + name, 20, "--no_cuda", *extra), gpu_out, tol)
sys.exit(1 if failed else 0)
