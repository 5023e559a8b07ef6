"""Files that only one node has (docs/checkpoints.md#files-on-one-node): two nodes with disks of their
own, mostly without --save_on_each_node, so that only node 0 has the checkpoints. Every rank must
end with the best checkpoint's weights; a resume, a save or a tokenizer that one node cannot make
or find stops both nodes at once with one line naming that node's rank."""
import json
import os
import shutil
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import LOOM, run, write_byte_vocab, write_pairs, write_tokens  # noqa: E402
from test_cli_nodes import STEPS, NodesTestCase  # noqa: E402

# Loss taken as a score to maximise: training lowers it, so the best evaluation is an early one
# and never the last, whatever the exact numbers.
BEST = ("--evaluation_strategy", "steps", "--eval_steps", "4", "--save_steps", "4", "--load_best_model_at_end",
        "--metric_for_best_model", "loss", "--greater_is_better", "true", "--do_eval")


class FilesOnOneNodeTest(NodesTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.validation = os.path.join(cls.tmp, "validation.bin")
        write_tokens(cls.validation, 6000, 512, 71)

    def results(self, disk):
        with open(os.path.join(disk, "eval_results.json")) as f:
            return json.load(f)

    def check_best_everywhere(self, name, *extra, exact=True, best=max):
        args = ("--validation_file", self.validation, *BEST, *extra)
        # Each rank writes what the optimizer would step from next (trainer_save.c, tests only).
        apart = self.nodes(name, *args, env={"LOOM_TEST_STATES_AFTER_BEST": self.out(f"{name}-states")})
        self.assert_ran(apart)
        # The reference: the same job with one folder both nodes see (a shared filesystem).
        shared = self.nodes(f"{name}-shared", *args, private=False,
                            env={"LOOM_TEST_STATES_AFTER_BEST": self.out(f"{name}-shared-states")})
        self.assert_ran(shared)
        disk, one_folder = apart[0][3], shared[0][3]
        state = self.state(disk)
        evals = [(e["step"], e["eval_loss"]) for e in state["log_history"] if "eval_loss" in e and "step" in e]
        best_step, best_loss = best(evals, key=lambda e: e[1])
        self.assertNotEqual(best_step, state["global_step"])
        self.assertEqual(state["best_model_checkpoint"], os.path.join(self.out(name), f"checkpoint-{best_step}"))
        # Node 0 saves the best checkpoint's weights, byte for byte.
        self.assertEqual(self.read(disk, "model.safetensors"),
                         self.read(disk, f"checkpoint-{best_step}", "model.safetensors"))
        # The final evaluation sums both ranks' shares of the validation set: it is the best
        # evaluation's loss again only if node 1 holds the best weights too, and it is the
        # shared-folder run's to the bit.
        final = self.results(disk)
        if exact:
            self.assertEqual(final["eval_loss"], best_loss)
        else:
            self.assertAlmostEqual(final["eval_loss"], best_loss, delta=1e-12 * best_loss)
        self.assertEqual(final, self.results(one_folder) | {"eval_runtime": final["eval_runtime"],
                         "eval_samples_per_second": final["eval_samples_per_second"],
                         "eval_steps_per_second": final["eval_steps_per_second"]})
        self.assertEqual(self.read(disk, "model.safetensors"), self.read(one_folder, "model.safetensors"))
        self.assertEqual(os.listdir(apart[1][3]), [])
        # And every rank's f32 master weights and optimizer states are the shared-folder run's.
        for rank in range(2):
            shard = f"optimizer.rank-{rank}-of-2.safetensors"
            self.assertEqual(self.read(self.out(f"{name}-states"), shard),
                             self.read(self.out(f"{name}-shared-states"), shard), f"rank {rank}")
        return apart

    def masters(self, *path):
        """The "<tensor>.fp32_master[@offset]" entries of a safetensors file, as bytes."""
        data = self.read(*path)
        size = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + size])
        return {k: data[8 + size + v["data_offsets"][0]:8 + size + v["data_offsets"][1]]
                for k, v in header.items() if ".fp32_master" in k}

    def assert_same_masters(self, held, saved, what):
        # By name, so that a failure lists the tensors (a diff of the bytes takes minutes).
        self.assertEqual(sorted(held), sorted(saved), what)
        self.assertEqual([k for k in sorted(saved) if held[k] != saved[k]], [], what)

    def test_mixed_precision_ends_with_the_best_checkpoints_master_weights(self):
        # Under --bf16 a full checkpoint holds the f32 master weights, here in node 0's
        # optimizer.safetensors only. After load_best_model_at_end every rank holds them, bit for
        # bit (HF under DeepSpeed restores them from the best checkpoint's optimizer files), not
        # the bf16 parameters widened, and so does each rank of the shared-folder run.
        apart = self.check_best_everywhere("best-bf16", "--bf16")
        best = self.state(apart[0][3])["best_model_checkpoint"].replace(self.out("best-bf16"), apart[0][3])
        saved = self.masters(best, "optimizer.safetensors")
        self.assertTrue(saved)
        for rank in range(2):
            self.assert_same_masters(self.masters(self.out("best-bf16-states"), f"optimizer.rank-{rank}-of-2.safetensors"),
                                     saved, f"rank {rank}")

    def test_each_rank_takes_its_own_shard_of_the_master_weights(self):
        # zero1 + bf16 with --save_on_each_node: each node's best checkpoint holds its own rank's
        # shard of the masters, which that rank takes from its own disk.
        states = self.out("best-zero1-states")
        results = self.nodes("best-zero1", "--validation_file", self.validation, *BEST, "--bf16", "--plugin", "zero1",
                             "--save_on_each_node", env={"LOOM_TEST_STATES_AFTER_BEST": states})
        self.assert_ran(results)
        for rank, (_, _, _, disk) in enumerate(results):
            best = self.state(disk)["best_model_checkpoint"].replace(self.out("best-zero1"), disk)
            self.assertNotEqual(best, os.path.join(disk, f"checkpoint-{STEPS}"))
            shard = f"optimizer.rank-{rank}-of-2.safetensors"
            saved = self.masters(best, shard)
            self.assertTrue(saved)
            self.assert_same_masters(self.masters(states, shard), saved, f"rank {rank}")

    def test_the_best_model_reaches_the_node_without_checkpoints(self):
        apart = self.check_best_everywhere("best")
        self.assertIn("loading best model from", apart[0][1])

    def test_sharded_and_mixed_precision_take_the_best_model_too(self):
        # A model-only save writes no shard, so zero2 runs on disks of their own without the flag.
        # zero2 + bf16 on two ranks evaluates the same weights a last bit apart after training (on
        # one shared disk too, before this test existed): the shared-disk run is the exact reference.
        self.check_best_everywhere("best-zero2", "--plugin", "zero2", "--bf16", "--save_only_model", exact=False)

    def test_early_stopping_ends_with_the_best_model_on_every_node(self):
        # HF's EarlyStoppingCallback stops once an evaluation is no better than the best, and the
        # run then loads the best, as at the end of a full run. Loss taken as a loss here: it
        # rises over the first steps, so the first evaluation is the best and the second stops.
        apart = self.check_best_everywhere("best-early", "--plugin", "early_stopping",
                                           "--early_stopping.early_stopping_patience", "1", "--eval_steps", "2",
                                           "--save_steps", "2", "--greater_is_better", "false", best=min)
        self.assertLess(self.state(apart[0][3])["global_step"], STEPS)

    def test_optimizer_shards_need_a_folder_on_each_node(self):
        # zero1 writes each rank's shard into the folder rank 0 made, which node 1 does not see:
        # both nodes stop at the first save, with node 1's line, and leave no half checkpoint.
        results = self.nodes("shards", "--save_steps", "6", "--plugin", "zero1")
        self.assert_stopped(results, r"rank 1: \S*shards/checkpoint-6\.tmp, the folder rank 0 made for this "
                            r"checkpoint, is not on this rank's disk: with a disk of its own each node needs "
                            r"--save_on_each_node")
        for node, (_, _, _, disk) in enumerate(results):
            self.assertEqual([n for n in os.listdir(disk) if n.startswith("checkpoint-")], [], f"node {node}")

    def test_a_writer_without_the_tokenizer_stops_both_at_the_save(self):
        # --save_on_each_node: each node's writer copies --tokenizer_name from its own disk into
        # the checkpoint; node 1's disk lacks it, and both nodes stop at the first save.
        seed = self.out("tokenizer-seed")
        write_byte_vocab(os.path.join(seed, "tokenizer"))
        empty = self.out("tokenizer-empty")
        os.makedirs(empty)
        tokenizer = os.path.join(self.out("tokenizer"), "tokenizer")
        results = self.nodes("tokenizer", "--save_on_each_node", "--save_steps", "6", "--overwrite_output_dir",
                             "--tokenizer_name", tokenizer, seed=[seed, empty])
        self.assert_stopped(results, r"rank 1: --tokenizer_name \S*tokenizer/tokenizer: no tokenizer there")
        # Node 0's own save was whole before the ranks compared; node 1 leaves no half folder.
        self.assertEqual(os.listdir(results[1][3]), [])

    def test_a_resume_that_node_1_cannot_make_stops_both_nodes(self):
        first = self.nodes("resume-first", "--save_steps", "6")
        self.assert_ran(first)
        # Node 0's disk as it was at checkpoint-6; node 1's as it is (empty).
        seeds = [self.disks_at(first[:1], 6, "resume")[0], first[1][3]]
        checkpoint = os.path.join(self.out("resume-again"), "checkpoint-6")
        cases = (("implicit", (), r"rank 1 has no checkpoint in its output_dir \S*resume-again to resume from, "
                  r"and rank 0 resumes from the one in its own \(on disks of their own only the node that saved "
                  r"has the checkpoints: save with --save_on_each_node"),
                 ("true", ("--resume_from_checkpoint", "true"), r"rank 1: --resume_from_checkpoint true: no valid "
                  r"checkpoint found in output directory \(\S*resume-again\)"),
                 ("path", ("--resume_from_checkpoint", checkpoint), r"rank 1: --resume_from_checkpoint: "
                  r"\S*resume-again/checkpoint-6: no such checkpoint folder"))
        for how, extra, line in cases:
            begun = time.monotonic()
            results = self.nodes("resume-again", "--save_steps", "6", *extra, seed=seeds)
            # At once, on both nodes, the one line naming node 1's rank and what it lacks: never a
            # run whose ranks start from different steps, nor one waiting for --ddp_timeout (30 s).
            self.assertLess(time.monotonic() - begun, 25, how)
            self.assert_stopped(results, line, before_a_step=True, what=how)


T5_TINY = ("--vocab_size", "16", "--d_model", "32", "--d_kv", "8", "--num_heads", "4", "--d_ff", "64", "--num_layers",
           "2")


class GenerationOnOneNodeTest(NodesTestCase):
    """--predict_with_generate decodes each rank's rows on that rank, with the tokenizer and the
    generation settings its disk has."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pairs, cls.dev = os.path.join(cls.tmp, "pairs.jsonl"), os.path.join(cls.tmp, "dev.jsonl")
        write_pairs(cls.pairs, 64, 1)
        write_pairs(cls.dev, 7, 2)
        cls.vocab = write_byte_vocab(os.path.join(cls.tmp, "vocab"))

    def train_args(self, out, *extra):
        model = () if "--model_name_or_path" in extra else T5_TINY
        return ["train", "--output_dir", out, "--overwrite_output_dir", "--train_file", self.pairs, "--validation_file",
                self.dev, "--disable_tqdm", *model, "--per_device_train_batch_size", "8", "--max_steps", "2",
                "--evaluation_strategy", "steps", "--eval_steps", "2", "--save_strategy", "no",
                "--predict_with_generate", "--ddp_timeout", "30", *extra]

    def disk_with_tokenizer(self, name):
        disk = self.out(name)
        shutil.copytree(self.vocab, os.path.join(disk, "tokenizer"))
        return disk

    def test_a_node_without_the_tokenizer_stops_both(self):
        empty = self.out("tok-empty")
        os.makedirs(empty)
        tokenizer = ("--generation_max_length", "6", "--tokenizer_name", os.path.join(self.out("tok"), "tokenizer"))
        results = self.nodes("tok", *tokenizer, seed=[self.disk_with_tokenizer("tok-seed0"), empty])
        self.assert_stopped(results, r"rank 1: no tokenizer in \S*tok/tokenizer \(vocab\.json \+ merges\.txt, "
                            r"spiece\.model or char_vocab\.json\), where rank 0 decodes with vocab\.json \+ "
                            r"merges\.txt", before_a_step=True)
        # With the files on both disks the same job runs, and scores as on one shared folder.
        both = self.nodes("tok", *tokenizer, seed=[self.disk_with_tokenizer("tok-seed1"),
                                                   self.disk_with_tokenizer("tok-seed2")])
        self.assert_ran(both)
        shared = self.out("tok-shared")
        shutil.copytree(self.vocab, os.path.join(shared, "tokenizer"))
        one = self.nodes("tok-shared", "--generation_max_length", "6", "--tokenizer_name",
                         os.path.join(shared, "tokenizer"), private=False)
        self.assert_ran(one)
        evals = [[e for e in self.state(r[0][3])["log_history"] if "eval_rouge1" in e] for r in (both, one)]
        self.assertEqual(len(evals[0]), 1)
        for key in ("eval_rouge1", "eval_bleu", "eval_gen_len"):
            self.assertEqual(evals[0][0][key], evals[1][0][key], key)

    def test_a_node_without_the_generation_config_stops_both(self):
        # The same model folder on both disks, but only node 0's copy has generation_config.json
        # (num_beams 2): node 1 would search greedily for its share of the examples.
        model = self.out("gen-model")
        run(LOOM, "train", "--train_file", self.pairs, "--output_dir", model, "--disable_tqdm",
            "--per_device_train_batch_size", "8", "--max_steps", "2", "--save_strategy", "no", *T5_TINY)
        seeds = []
        for node in range(2):
            seeds.append(self.out(f"gen-seed{node}"))
            shutil.copytree(model, os.path.join(seeds[-1], "model"))
        with open(os.path.join(seeds[0], "model", "generation_config.json"), "w") as f:
            json.dump({"num_beams": 2, "max_length": 6}, f)
        results = self.nodes("gen", "--model_name_or_path", os.path.join(self.out("gen"), "model"), seed=seeds)
        self.assert_stopped(results, r"rank 1: generation setting num_beams is 1 here and 2 on rank 0 \(from the model "
                            r"folder \S*gen/model: generation_config\.json, else config\.json\): every node needs the "
                            r"same copy of it", before_a_step=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
