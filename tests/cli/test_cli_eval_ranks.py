"""Evaluation and prediction do not depend on the number of ranks: each example is scored once
(no DistributedSampler padding), and predictions.txt / generated_predictions.txt hold one row
per example in the order of the data, written by rank 0 and byte for byte the one-rank file,
also when the ranks get different numbers of batches or none. A full disk leaves the old
predictions file and says why."""
import errno
import json
import os
import unittest

from loomtest import LOOM, LoomTestCase, free_port, loom, run, write_pairs

WORLDS = (1, 2, 3)
# Each example's loss is a float32 from matrix products whose blocking depends on how many
# rows the batch has, and the batches differ with the ranks: the per-example losses, so their
# mean, move by a few float32 ulps (seen: 4e-8 relative). 1e-5 is far above that and far below
# what one example counted twice moves a mean of 7 (more than 1e-3 here).
LOSS_TOLERANCE = 1e-5

T5 = ["--vocab_size", "16", "--d_model", "32", "--d_kv", "8", "--num_heads", "4", "--d_ff", "64", "--num_layers",
      "2", "--dropout_rate", "0.0"]


class EvalRanks(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # 7 examples per split: batches of 2 split them 4+3 on 2 ranks (2 batches each, one
        # partial) and 3+2+2 on 3 (2, 1 and 1 batches); 8 ranks leave one rank without any.
        cls.small = os.path.join(cls.tmp, "small")
        loom("make-data", "--kind", "blobs", "--n_samples", "70", "--n_features", "6", "--n_classes", "4", "--seed",
             "5", "--output_dir", cls.small)
        cls.mlp = os.path.join(cls.tmp, "mlp")
        loom("train", "--model", "mlp", "--train_file", os.path.join(cls.data, "train.bin"), "--output_dir", cls.mlp,
             "--max_steps", "30", "--per_device_train_batch_size", "16", "--learning_rate", "1e-2", "--disable_tqdm",
             "true")

    def launch(self, world, mode, out, *args):
        run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), LOOM, mode, "--output_dir", out,
            "--disable_tqdm", "true", "--ddp_timeout", "30", "--per_device_eval_batch_size", "2", *args)
        split = "eval" if mode == "evaluate" else "test"
        with open(os.path.join(out, split + "_results.json")) as f:
            return json.load(f)

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def assert_same_metrics(self, one, other, world):
        for key, value in one.items():
            if key.endswith(("_runtime", "_per_second")):
                continue
            if key.endswith(("_loss", "perplexity", "_bleu", "_rouge1", "_rouge2", "_rougeL")):
                self.assertAlmostEqual(other[key], value, delta=LOSS_TOLERANCE * abs(value), msg=f"{key}, {world}")
            else:
                self.assertEqual(other[key], value, f"{key}, {world} ranks")

    def test_predictions_are_the_one_rank_file(self):
        test = os.path.join(self.small, "test.bin")
        files, metrics = {}, {}
        for world in WORLDS + (8,):
            out = self.out(f"predict{world}")
            metrics[world] = self.launch(world, "predict", out, "--model_name_or_path", self.mlp, "--test_file", test)
            files[world] = self.read(os.path.join(out, "predictions.txt"))
        lines = files[1].decode().split("\n")
        self.assertEqual(lines[0], "index\tprediction")
        self.assertEqual([l.split("\t")[0] for l in lines[1:-1]], [str(i) for i in range(7)])
        self.assertEqual(lines[-1], "")
        for world in WORLDS[1:] + (8,):
            self.assertEqual(files[world], files[1], f"{world} ranks")
            self.assert_same_metrics(metrics[1], metrics[world], world)

    def test_evaluation_counts_each_example_once(self):
        validation = os.path.join(self.small, "validation.bin")
        metrics = {w: self.launch(w, "evaluate", self.out(f"evaluate{w}"), "--model_name_or_path", self.mlp,
                                  "--validation_file", validation) for w in WORLDS}
        # Accuracy is a count over 7: only k/7 can come out, and a duplicate would break that.
        right = metrics[1]["eval_accuracy"] * 7
        self.assertAlmostEqual(right, round(right), places=9)
        self.assertGreater(right, 0)
        for world in WORLDS[1:]:
            self.assert_same_metrics(metrics[1], metrics[world], world)

    def test_generated_predictions_are_the_one_rank_file(self):
        train, test = os.path.join(self.tmp, "pairs.jsonl"), os.path.join(self.tmp, "pairs-test.jsonl")
        write_pairs(train, 64, 1)
        write_pairs(test, 7, 2)
        model = os.path.join(self.tmp, "t5")
        loom("train", "--train_file", train, "--output_dir", model, "--disable_tqdm", "true",
             "--per_device_train_batch_size", "16", "--learning_rate", "5e-3", "--max_steps", "40", "--save_strategy",
             "no", *T5)
        files, metrics = {}, {}
        for world in WORLDS:
            out = self.out(f"generate{world}")
            metrics[world] = self.launch(world, "predict", out, "--model_name_or_path", model, "--test_file", test,
                                         "--predict_with_generate", "--generation_max_length", "6", "--num_beams", "2")
            files[world] = self.read(os.path.join(out, "generated_predictions.txt"))
            self.assertEqual(sorted(os.listdir(out)),
                             ["all_results.json", "generated_predictions.txt", "test_results.json"])
        self.assertEqual(files[1].count(b"\n"), 7)
        self.assertGreater(metrics[1]["test_rouge1"], 0)
        for world in WORLDS[1:]:
            self.assertEqual(files[world], files[1], f"{world} ranks")
            self.assert_same_metrics(metrics[1], metrics[world], world)

    def test_a_full_disk_keeps_the_old_predictions(self):
        """The file grows past the size limit (as on a full disk): the old file stays whole and
        the one-line error names the file and the system's reason."""
        out = self.out("full")
        os.makedirs(out)
        path = os.path.join(out, "predictions.txt")
        with open(path, "w") as f:
            f.write("old\n")
        # 200 rows are more than the 512 bytes ulimit -f 1 allows; XFSZ ignored turns the
        # signal into EFBIG from write().
        code, _, stderr = run("sh", "-c", 'ulimit -f 1; trap "" XFSZ; exec "$@"', "sh", LOOM, "predict",
                              "--model_name_or_path", self.mlp, "--test_file", os.path.join(self.data, "test.bin"),
                              "--output_dir", out, "--disable_tqdm", "true", check=False)
        self.assertNotEqual(code, 0)
        lines = [l for l in stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, stderr)
        self.assertIn("predictions.txt", lines[0])
        self.assertIn(os.strerror(errno.EFBIG), lines[0])
        self.assertEqual(self.read(path), b"old\n")
        self.assertEqual(sorted(os.listdir(out)), ["predictions.txt"])


if __name__ == "__main__":
    unittest.main()
