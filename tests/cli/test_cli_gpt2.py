"""GPT-2 end to end on the real corpus: tokenize, train, evaluate, save/load, HF layout, generate.

Needs the corpus and the GPT-2 vocabulary from scripts/fetch-data.sh ($LOOM_DATA_DIR or
<source>/runs/deps); without them it exits 77, which ctest reports as skipped (never passed).
"""
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import unittest

from loomtest import SOURCE, loom, read_safetensors

DEPS = os.environ.get("LOOM_DATA_DIR", os.path.join(SOURCE, "runs", "deps"))
VOCAB = os.path.join(DEPS, "gpt2")
BOOK = os.path.join(DEPS, "moby-dick.txt")
MODEL = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64",
         "--gpt2.n_positions", "64", "--block_size", "32"]


def write_safetensors(path, tensors):
    """name -> (shape, list of floats), F32, in order; a writer sharing no code with loom's."""
    header, offset, blobs = {}, 0, []
    for name, (shape, values) in tensors.items():
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


class Gpt2Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loomgpt2-")
        with open(BOOK, encoding="utf-8") as f:
            text = f.read()[:120000]
        cls.text = os.path.join(cls.tmp, "book.txt")
        with open(cls.text, "w", encoding="utf-8") as f:
            f.write(text)
        cls.data = os.path.join(cls.tmp, "data")
        loom("tokenize", "--input", cls.text, "--vocab_dir", VOCAB, "--output_dir", cls.data)
        cls.run_dir = os.path.join(cls.tmp, "run")
        loom("train", *MODEL, "--output_dir", cls.run_dir, "--train_file", os.path.join(cls.data, "train.bin"),
             "--validation_file", os.path.join(cls.data, "validation.bin"), "--tokenizer_name", VOCAB,
             "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--warmup_steps", "5",
             "--max_steps", "60", "--logging_steps", "10", "--evaluation_strategy", "steps", "--eval_steps", "30",
             "--disable_tqdm")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def state(self):
        with open(os.path.join(self.run_dir, "trainer_state.json")) as f:
            return json.load(f)

    def test_loss_falls_and_perplexity_is_reported(self):
        history = self.state()["log_history"]
        losses = [e["loss"] for e in history if "loss" in e]
        self.assertGreater(losses[0], 8.0)            # near log(50257) = 10.8 at the start
        self.assertLess(losses[-1], losses[0] - 2.0)
        evals = [e for e in history if "eval_loss" in e]
        self.assertEqual([e["step"] for e in evals], [30, 60])
        for e in evals:
            self.assertAlmostEqual(e["perplexity"], math.exp(e["eval_loss"]), delta=1e-9 * e["perplexity"])
        self.assertLess(evals[-1]["eval_loss"], evals[0]["eval_loss"])

    def test_saved_folder_has_the_hf_layout(self):
        with open(os.path.join(self.run_dir, "config.json")) as f:
            config = json.load(f)
        self.assertEqual(config["model_type"], "gpt2")
        self.assertEqual((config["n_layer"], config["n_head"], config["n_embd"]), (2, 2, 64))
        self.assertEqual((config["vocab_size"], config["n_positions"]), (50257, 64))
        # The keys HF's GPT2Config writes, so transformers reads the folder as a GPT-2 LM.
        self.assertEqual(config["architectures"], ["GPT2LMHeadModel"])
        self.assertEqual((config["bos_token_id"], config["eos_token_id"]), (50256, 50256))
        for key in ("activation_function", "layer_norm_epsilon", "initializer_range", "resid_pdrop", "embd_pdrop",
                    "attn_pdrop", "scale_attn_weights", "use_cache", "tie_word_embeddings"):
            self.assertIn(key, config)
        weights = read_safetensors(os.path.join(self.run_dir, "model.safetensors"))
        self.assertEqual(weights["transformer.wte.weight"][1], [50257, 64])
        self.assertEqual(weights["transformer.wpe.weight"][1], [64, 64])
        self.assertEqual(weights["transformer.h.0.attn.c_attn.weight"][1], [64, 192])  # Conv1D: [in, out]
        self.assertEqual(weights["transformer.h.1.mlp.c_proj.weight"][1], [256, 64])
        self.assertEqual(weights["transformer.ln_f.bias"][1], [64])
        self.assertEqual(len(weights), 2 + 2 * 12 + 2)
        self.assertTrue(os.path.exists(os.path.join(self.run_dir, "vocab.json")))
        self.assertTrue(os.path.exists(os.path.join(self.run_dir, "merges.txt")))

    def evaluate(self, model_dir):
        _, stdout, _ = loom("evaluate", "--model_name_or_path", model_dir, "--output_dir", os.path.join(self.tmp, "eval"),
                            "--validation_file", os.path.join(self.data, "validation.bin"), "--block_size", "32",
                            "--disable_tqdm")
        return float(re.search(r"eval_loss\s+=\s+(\S+)", stdout).group(1)), stdout

    def test_save_then_load_gives_identical_results(self):
        with open(os.path.join(self.run_dir, "eval_results.json")) as f:
            trained = json.load(f)["eval_loss"]
        loaded, stdout = self.evaluate(self.run_dir)
        self.assertAlmostEqual(loaded, trained, delta=1e-5 * trained)  # printed with 6 digits
        self.assertIn("perplexity", stdout)
        with open(os.path.join(self.tmp, "eval", "eval_results.json")) as f:
            self.assertEqual(json.load(f)["eval_loss"], trained)        # bit for bit

    def test_a_folder_in_the_hub_layout_loads_and_trains(self):
        # The same weights as the hub stores GPT-2: no "transformer." prefix, the attention mask
        # buffers, an lm_head copy, and a config with nulls, lists and dropout.
        hub = os.path.join(self.tmp, "hub")
        os.makedirs(hub)
        ours = read_safetensors(os.path.join(self.run_dir, "model.safetensors"))
        tensors = {}
        for name, (_, shape, values) in ours.items():
            tensors[name[len("transformer."):]] = (shape, values)
        for layer in range(2):
            tensors[f"h.{layer}.attn.bias"] = ([1, 1, 64, 64], [1.0] * 64 * 64)
        tensors["lm_head.weight"] = (ours["transformer.wte.weight"][1], ours["transformer.wte.weight"][2])
        write_safetensors(os.path.join(hub, "model.safetensors"), tensors)
        with open(os.path.join(hub, "config.json"), "w") as f:
            json.dump({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": 2, "n_head": 2,
                       "n_embd": 64, "n_positions": 64, "n_ctx": 64, "vocab_size": 50257, "n_inner": None,
                       "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1,
                       "attn_pdrop": 0.1, "layer_norm_epsilon": 1e-05, "initializer_range": 0.02,
                       "bos_token_id": 50256, "eos_token_id": 50256, "summary_type": "cls_index",
                       "task_specific_params": {"text-generation": {"do_sample": True}}}, f)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(VOCAB, name), hub)
        self.evaluate(hub)
        # The saved value, not the printed one (rounded to 4 decimals, it can be 5e-5 away).
        with open(os.path.join(self.tmp, "eval", "eval_results.json")) as f:
            loaded = json.load(f)["eval_loss"]
        with open(os.path.join(self.run_dir, "eval_results.json")) as f:
            self.assertAlmostEqual(loaded, json.load(f)["eval_loss"], delta=0.5e-4 + 1e-12)  # printed as HF rounds it
        out = os.path.join(self.tmp, "finetuned")
        loom("train", "--model_name_or_path", hub, "--output_dir", out, "--train_file",
             os.path.join(self.data, "train.bin"), "--block_size", "32", "--max_steps", "5", "--logging_steps", "1",
             "--learning_rate", "1e-3", "--disable_tqdm")
        with open(os.path.join(out, "trainer_state.json")) as f:
            losses = [e["loss"] for e in json.load(f)["log_history"] if "loss" in e]
        self.assertLess(losses[0], 9.0)               # it starts from the trained weights, not from scratch
        self.assertTrue(os.path.exists(os.path.join(out, "vocab.json")))

    def test_generation(self):
        def generate(*extra):
            # Not verbose: the generated text is all a quiet run prints.
            _, stdout, _ = loom("predict", "--generate", "--prompt", "Call me", "--model_name_or_path", self.run_dir,
                                "--max_new_tokens", "12", *extra, env={"LOOM_VERBOSE": "0"})
            return stdout.strip()
        greedy = generate()
        self.assertTrue(greedy.startswith("Call me"))
        self.assertGreater(len(greedy), len("Call me"))
        self.assertEqual(generate(), greedy)
        sampled = generate("--do_sample", "--top_k", "40", "--temperature", "0.9", "--seed", "5")
        self.assertEqual(generate("--do_sample", "--top_k", "40", "--temperature", "0.9", "--seed", "5"), sampled)
        others = {generate("--do_sample", "--top_p", "0.95", "--seed", str(s)) for s in range(4)}
        self.assertGreater(len(others), 1)

    def test_fp16_and_bf16_end_within_two_percent_of_fp32(self):
        with open(os.path.join(self.run_dir, "eval_results.json")) as f:
            fp32 = json.load(f)["eval_loss"]
        for flag, dtype in (("--fp16", "F16"), ("--bf16", "BF16")):
            out = os.path.join(self.tmp, "run" + flag[2:])
            _, stdout, _ = loom("train", *MODEL, "--output_dir", out, "--train_file", os.path.join(self.data, "train.bin"),
                                "--validation_file", os.path.join(self.data, "validation.bin"), "--tokenizer_name", VOCAB,
                                "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--warmup_steps", "5",
                                "--max_steps", "60", "--logging_steps", "10", "--evaluation_strategy", "steps",
                                "--eval_steps", "30", "--disable_tqdm", flag)
            with open(os.path.join(out, "eval_results.json")) as f:
                ours = json.load(f)["eval_loss"]
            self.assertLess(abs(ours - fp32), 0.02 * fp32, flag)
            self.assertIn("'loss_scale'", stdout)
            weights = read_safetensors(os.path.join(out, "model.safetensors"))
            self.assertEqual({w[0] for w in weights.values()}, {dtype})        # saved in its own dtype
            loaded, _ = self.evaluate(out)                                      # an f32 run reads it back
            self.assertLess(abs(loaded - ours), 0.01 * ours)
            text = loom("predict", "--generate", "--prompt", "Call me", "--model_name_or_path", out,
                        "--max_new_tokens", "8", flag + "_full_eval", env={"LOOM_VERBOSE": "0"})[1].strip()
            self.assertTrue(text.startswith("Call me"), text)             # greedy may end at <|endoftext|>

    def test_gradient_checkpointing_trains_the_same_model_in_less_memory(self):
        # Recomputing the blocks in backward gives the same gradient bits: the same weights after
        # a few steps, in a smaller activation budget; the saved config.json does not carry it.
        weights, activations = {}, {}
        for flags in ((), ("--gradient_checkpointing",)):
            out = os.path.join(self.tmp, "ckpt" + str(len(flags)))
            _, stdout, stderr = loom("train", *MODEL, "--gpt2.n_layer", "3", "--output_dir", out, "--train_file",
                                     os.path.join(self.data, "train.bin"), "--per_device_train_batch_size", "4",
                                     "--max_steps", "4", "--disable_tqdm", *flags)
            m = re.search(r"memory budget.*activations (\d+) B", stdout + stderr)
            self.assertIsNotNone(m, stdout + stderr)
            activations[flags] = int(m.group(1))
            with open(os.path.join(out, "model.safetensors"), "rb") as f:
                weights[flags] = f.read()
            with open(os.path.join(out, "config.json")) as f:
                self.assertNotIn("gradient_checkpointing", json.load(f))
        self.assertEqual(weights[()], weights[("--gradient_checkpointing",)])
        self.assertLess(activations[("--gradient_checkpointing",)], activations[()])

    def test_token_data_errors(self):
        bad = os.path.join(self.tmp, "bad.bin")
        with open(os.path.join(self.data, "train.bin"), "rb") as f:
            blob = f.read()
        with open(bad, "wb") as f:
            f.write(blob[:2000])
        code, _, stderr = loom("train", *MODEL, "--output_dir", os.path.join(self.tmp, "x"), "--train_file", bad,
                               check=False)
        self.assertEqual(code, 2)
        self.assertIn("truncated", stderr)
        self.assertIn(bad, stderr)
        code, _, stderr = loom("train", *MODEL, "--output_dir", os.path.join(self.tmp, "y"), "--train_file",
                               os.path.join(self.data, "train.bin"), "--block_size", "100", check=False)
        self.assertEqual(code, 2)
        self.assertIn("n_positions", stderr)


if __name__ == "__main__":
    missing = [p for p in (BOOK, os.path.join(VOCAB, "vocab.json")) if not os.path.exists(p)]
    if missing:
        print(f"skipped: {', '.join(missing)} missing: run scripts/fetch-data.sh")
        sys.exit(77)
    unittest.main(verbosity=2)
