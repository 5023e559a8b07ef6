"""ZeRO-Offload on the GPU (never run yet: docs/gpu.md#offload): GPT-2 124M (random weights,
random tokens: no corpus needed), zero2 with and without cpu_offload on one GPU, bf16, a few
steps. Checks the losses are the same bits (offload's copies move bits) and the start-up
budget's device states equal 2 psi + 2 psi / N; prints each run's device memory (the
backend's own count before step 1) and tokens/s.
Usage: offload_check.py BUILD_DIR [STEPS]"""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cli"))
from loomtest import write_tokens  # noqa: E402

build = sys.argv[1]
steps = sys.argv[2] if len(sys.argv) > 2 else "10"
loom = os.path.join(build, "bin", "loom")
tmp = tempfile.mkdtemp(prefix="loomoffload-")
tokens = os.path.join(tmp, "train.bin")
write_tokens(tokens, 200000, 50257, 7)


def train(name, *extra):
    cmd = [loom, "train", "--output_dir", os.path.join(tmp, name), "--overwrite_output_dir", "--disable_tqdm",
           "--train_file", tokens, "--model", "gpt2", "--block_size", "512", "--per_device_train_batch_size", "4",
           "--max_steps", steps, "--logging_steps", "1", "--learning_rate", "1e-4", "--seed", "3", "--bf16",
           "--save_strategy", "no", "--include_tokens_per_second", "--plugin", "cuda", "--plugin", "zero2", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LOOM_VERBOSE": "1"})
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout + p.stderr


results = {}
for name, extra in (("zero2", ()), ("zero2+cpu_offload", ("--zero2.cpu_offload", "true"))):
    out = train(name.replace("+", "-"), *extra)
    line = next(l for l in out.splitlines() if "memory budget, rank 0" in l)
    budget = {k.strip(): int(v) for k, v in re.findall(r"([a-z ]+) (\d+) B", line)}
    psi = int(re.search(r"\((\d+) parameters", line).group(1))
    device = re.search(r"on the device +\S+ \S+ +in (\d+) allocations \((\d+) B\)", out)
    speed = re.search(r"'train_tokens_per_second': ([0-9.e+-]+)", out)
    results[name] = [float(x) for x in re.findall(r"'loss': ([0-9.e+-]+)", out)]
    print(f"{name}: device {int(device.group(2)) / 2**20:.1f} MiB before step 1, device model states "
          f"{budget['device model states'] / 2**20:.1f} MiB (formula 2 psi + 2 psi / N: "
          f"{(2 * psi + 2 * (-(-psi // 16384) * 16384)) / 2**20:.1f} MiB), host model states "
          f"{budget['host model states'] / 2**20:.1f} MiB, {speed.group(1) if speed else '?'} tokens/s")
same = results["zero2"] == results["zero2+cpu_offload"] and len(results["zero2"]) == int(steps)
print(f"losses {'identical' if same else 'DIFFER'}: {results['zero2']} / {results['zero2+cpu_offload']}")
sys.exit(0 if same else 1)
