#!/usr/bin/env python3
"""torch_unpadded.py - the check of tests/model/t5_torch_test.py (`loom train` against the PyTorch
T5 of that test, 5 AdamW steps from the same weights, float64 reference) on the kind of batch
--sortish_sampler makes: every source of one length, so no source padding at all, with labels of
different lengths and of one length; a padded batch of mixed lengths for contrast. Prints both
loss series and their largest relative difference (docs/benchmarks.md#g2p-sortish).
  /usr/bin/python3 examples/g2p/torch_unpadded.py build/bin/loom
"""
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "model"))
import t5_torch_test as t5  # noqa: E402  (re-executes under /usr/bin/python3 when torch is elsewhere)
import torch  # noqa: E402


def losses(loom, tmp, name, pairs):
    data = os.path.join(tmp, name + ".jsonl")
    src, smask, labels = t5.write_pairs(pairs, data)
    W = t5.init_weights(False)
    folder = os.path.join(tmp, name)
    t5.save_folder(W, folder, False)
    opt = torch.optim.AdamW(list(W.values()), lr=1e-2, weight_decay=0.0)
    ref = []
    for _ in range(5):
        loss = t5.loss_of(W, src, smask, labels, False)
        ref.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    p = subprocess.run([loom, "train", "--model_name_or_path", folder, "--train_file", data, "--output_dir",
                        folder + "-run", "--per_device_train_batch_size", str(len(pairs)), "--max_steps", "5",
                        "--logging_steps", "1", "--learning_rate", "1e-2", "--weight_decay", "0",
                        "--lr_scheduler_type", "constant", "--max_grad_norm", "0", "--optim", "adamw_torch",
                        "--save_strategy", "no", "--disable_tqdm", "true"], capture_output=True, text=True)
    got = [float(x) for x in re.findall(r"'loss': ([0-9.e+-]+)", p.stdout)]
    return ref, got


def main():
    loom = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="loom-unpadded-")
    worst_all = 0.0
    try:
        for name, src_len, tgt_len in (("equal_sources", lambda: 6, lambda: random.randint(2, 7)),
                                       ("equal_sources_and_labels", lambda: 6, lambda: 5),
                                       ("mixed", lambda: random.randint(3, 9), lambda: random.randint(2, 7))):
            random.seed(2)
            pairs = [([random.randrange(3, t5.V) for _ in range(src_len())] + [1],
                      [random.randrange(3, t5.V) for _ in range(tgt_len())] + [1]) for _ in range(8)]
            ref, got = losses(loom, tmp, name, pairs)
            worst = max(abs(a - b) / abs(b) for a, b in zip(got, ref)) if len(got) == 5 else float("inf")
            worst_all = max(worst_all, worst)
            print(f"{name}: torch {[round(x, 6) for x in ref]}\n{'':{len(name) + 2}}loom  "
                  f"{[round(x, 6) for x in got]}  largest relative difference {worst:.1e}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if worst_all <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
