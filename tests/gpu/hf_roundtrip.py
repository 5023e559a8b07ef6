"""loom against transformers itself, on the GPU: the first check of HF compatibility against HF's
own code rather than a reimplementation.

1. A folder loom trained and saved loads with GPT2LMHeadModel.from_pretrained, and HF's loss on
   the validation blocks equals `loom evaluate`'s eval_loss (the loss is the mean of
   -log softmax(logits)[target], so equal losses to 1e-4 need equal logits).
2. A folder HF saved (save_pretrained, safetensors, tied head left out as HF does) evaluates in
   loom to HF's own loss, and trains in loom (the loss goes down).

Example i of a token file is tokens [i*B, i*B + B + 1): loom predicts the last B from the first
B; HF given those B + 1 tokens with labels = input_ids shifts them itself and scores the same B
predictions (causal attention: the extra last token changes no earlier logit).

Usage: hf_roundtrip.py BUILD_DIR [--device cuda|cpu]. Exits 77 when transformers or torch is
not importable (the CPU machines loom is developed on have neither).
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

try:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"hf_roundtrip.py: SKIPPED: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cli"))
from loomtest import write_tokens  # noqa: E402

build = sys.argv[1]
device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cuda"
loom = os.path.join(build, "bin", "loom")
plugin = ["--plugin", "cuda"] if device == "cuda" else ["--no_cuda"]
tmp = tempfile.mkdtemp(prefix="loomhf-")
B, VOCAB = 64, 512
SHAPE = dict(n_layer=2, n_head=4, n_embd=128, vocab_size=VOCAB, n_positions=128)
NANO = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "4", "--gpt2.n_embd", "128", "--gpt2.vocab_size",
        str(VOCAB), "--gpt2.n_positions", "128", "--block_size", str(B)]
train_bin, val_bin = os.path.join(tmp, "train.bin"), os.path.join(tmp, "validation.bin")
write_tokens(train_bin, 40000, VOCAB, 7)
write_tokens(val_bin, 4000, VOCAB, 11)
failed = False


def run(*args):
    p = subprocess.run([loom, *args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"loom {' '.join(args)} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def loom_eval_loss(model_dir):
    out = os.path.join(tmp, "eval-" + os.path.basename(model_dir))
    run("evaluate", "--model_name_or_path", model_dir, "--output_dir", out, "--validation_file", val_bin,
        "--block_size", str(B), "--disable_tqdm", *plugin)
    with open(os.path.join(out, "eval_results.json")) as f:
        return json.load(f)["eval_loss"]


def hf_loss(model):
    with open(val_bin, "rb") as f:
        header = struct.unpack("<256i", f.read(1024))
        tokens = list(struct.unpack(f"<{header[2]}H", f.read(2 * header[2])))
    n = (len(tokens) - 1) // B
    ids = torch.tensor([tokens[i * B:i * B + B + 1] for i in range(n)], dtype=torch.long, device=device)
    model = model.to(device).eval()
    with torch.no_grad():
        total = 0.0
        for start in range(0, n, 16):  # HF averages per batch; all blocks have B targets, so weight by rows
            chunk = ids[start:start + 16]
            total += model(input_ids=chunk, labels=chunk).loss.double().item() * len(chunk)
    return total / n


def check(name, ours, theirs, tol=1e-4):
    global failed
    ok = abs(ours - theirs) <= tol * max(1.0, abs(theirs))
    failed |= not ok
    print(f"{'PASS' if ok else 'FAIL'} {name}: loom {ours:.6f}, transformers {theirs:.6f}")


# 1. loom saves, HF loads.
trained = os.path.join(tmp, "loom-trained")
run("train", "--output_dir", trained, "--overwrite_output_dir", "--disable_tqdm", "--train_file", train_bin,
    "--per_device_train_batch_size", "8", "--max_steps", "20", "--learning_rate", "1e-3", "--seed", "3",
    "--save_strategy", "no", *NANO, *plugin)
check("a folder loom saved, loaded by GPT2LMHeadModel.from_pretrained", loom_eval_loss(trained),
      hf_loss(GPT2LMHeadModel.from_pretrained(trained)))

# 2. HF saves, loom loads and trains.
torch.manual_seed(0)
hf_dir = os.path.join(tmp, "hf-saved")
hf_model = GPT2LMHeadModel(GPT2Config(**SHAPE))
hf_model.save_pretrained(hf_dir, safe_serialization=True)
check("a folder transformers saved, evaluated by loom", loom_eval_loss(hf_dir), hf_loss(hf_model))
out = run("train", "--model_name_or_path", hf_dir, "--output_dir", os.path.join(tmp, "from-hf"),
          "--overwrite_output_dir", "--disable_tqdm", "--train_file", train_bin, "--per_device_train_batch_size", "8",
          "--max_steps", "30", "--logging_steps", "1", "--learning_rate", "1e-3", "--seed", "3", "--save_strategy",
          "no", "--block_size", str(B), *plugin)
losses = [float(x) for x in re.findall(r"'loss': ([0-9.e+-]+)", out)]
ok = len(losses) == 30 and losses[-1] < losses[0]
failed |= not ok
print(f"{'PASS' if ok else 'FAIL'} a folder transformers saved trains in loom: loss {losses[:1]} -> {losses[-1:]}")
sys.exit(1 if failed else 0)
