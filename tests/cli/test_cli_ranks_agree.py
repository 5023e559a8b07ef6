"""Ranks started by hand that disagree (docs/semantics/trainer.md#ranks-agree): a setting that
changes the arithmetic stops every rank at once with one line naming it and both values; a
WORLD_SIZE of its own is refused at the rendezvous; another --seed is replaced by rank 0's, and
every rank starts from rank 0's parameters, so the run is the one the agreeing ranks train."""
import os
import shutil
import subprocess
import unittest

from loomtest import LOOM, LoomTestCase, free_port, loom, run, write_tokens

# A refusal must come at once: far below this, which is itself far below --ddp_timeout.
PROMPT = 60
TIMEOUT = "300"


class RanksAgreeTest(LoomTestCase):
    data_kind = "blobs"

    def ranks(self, name, per_rank, worlds=(2, 2), cwds=None, common=None):
        """Start two ranks by hand, rank r with per_rank[r] flags (and WORLD_SIZE worlds[r], run in
        cwds[r]); returns [(returncode, stderr)] once both exit."""
        port = free_port()
        procs = []
        for rank in range(2):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(worlds[rank]), LOCAL_RANK=str(rank),
                       LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
            args = common or self.train_args(self.out(f"{name}{rank}"), "--max_steps", "10",
                                             "--per_device_train_batch_size", "16")
            procs.append(subprocess.Popen([LOOM, *args, "--ddp_timeout", TIMEOUT, *per_rank[rank]], env=env,
                                          cwd=cwds[rank] if cwds else None, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        try:
            stderrs = [p.communicate(timeout=PROMPT)[1] for p in procs]
            return [(p.returncode, stderr) for p, stderr in zip(procs, stderrs)]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()

    def assert_refused(self, results, line):
        """Both ranks exit non-zero; each says `line` as its one error line."""
        for rank, (code, stderr) in enumerate(results):
            self.assertNotEqual(code, 0, f"rank {rank}:\n{stderr}")
            errors = [l for l in stderr.splitlines() if l.startswith("loom: error:")]
            self.assertEqual(errors, ["loom: error: " + line], f"rank {rank}:\n{stderr}")

    def test_ranks_that_resume_apart_stop_together(self):
        # An output folder each and --resume_from_checkpoint true: each rank finds its own newest.
        for rank, steps in ((0, "4"), (1, "2")):
            loom(*self.train_args(self.out(f"apart{rank}"), "--max_steps", steps, "--save_steps", "2",
                                  "--per_device_train_batch_size", "16"))
        resume = ["--resume_from_checkpoint", "true"]
        self.assert_refused(self.ranks("apart", (resume, resume)), "the ranks resume from different steps (2 to 4): "
                            "give every rank the same --resume_from_checkpoint")
        # One that cannot restore says why; the other stops at once instead of waiting for it in
        # the first collective. Here rank 1's checkpoint holds another optimizer's states.
        loom(*self.train_args(self.out("apart1"), "--max_steps", "4", "--save_steps", "2", "--optim", "sgd",
                              "--per_device_train_batch_size", "16"))
        (code0, err0), (code1, err1) = self.ranks("apart", (resume, resume))
        self.assertNotEqual(code0, 0, err0)
        self.assertNotEqual(code1, 0, err1)
        self.assertIn("loom: error: another rank could not resume (its message says why)", err0)
        self.assertIn("holds the states of optimizer 'sgd'", err1)

    def test_another_learning_rate_stops_both_ranks(self):
        results = self.ranks("lr", (["--learning_rate", "1e-3"], ["--learning_rate", "1e-2"]))
        self.assert_refused(results, "rank 1 differs from rank 0: --learning_rate 0.01 (rank 0: 0.001)")

    def test_other_parameter_shapes_name_the_parameter(self):
        # The same number of parameters (6*64+64+64*64+64+64*4+4 = 6*18+18+18*206+206+206*4+4 = 4868) in
        # other shapes: the sums of mismatched tensors would train without a word.
        results = self.ranks("shape", (["--mlp.hidden_sizes", "64,64"], ["--mlp.hidden_sizes", "18,206"]))
        self.assert_refused(results,
                            "rank 1 differs from rank 0: parameter layers.0.weight has shape [18, 6] (rank 0: [64, 6])")

    def test_another_sharding_strategy_stops_both_ranks(self):
        results = self.ranks("zero", ([], ["--plugin", "zero1"]))
        self.assert_refused(results, "rank 1 differs from rank 0: sharding plugin zero1 (rank 0: ddp)")

    def test_a_rank_that_fails_to_start_stops_the_other(self):
        missing = os.path.join(self.tmp, "missing.bin")
        results = self.ranks("fail", ([], ["--train_file", missing]))
        self.assertNotEqual(results[1][0], 0)
        self.assertNotEqual(results[0][0], 0)
        self.assertIn(f"loom: error: rank 1 failed to start: --train_file: {missing}", results[0][1])

    def test_another_world_size_is_refused_at_the_rendezvous(self):
        for worlds in ((2, 3), (3, 2)):
            results = self.ranks(f"world{worlds[1]}", ([], []), worlds=worlds)
            for code, stderr in results:
                self.assertNotEqual(code, 0, stderr)
                self.assertIn(f"rank 1 has WORLD_SIZE={worlds[1]} but rank 0 has WORLD_SIZE={worlds[0]}", stderr)

    def test_another_seed_trains_rank_0s_run(self):
        # Rank 1's --seed 7 would shuffle its share of the data by another order (and, without
        # the broadcast, start from other weights): it takes rank 0's, so the run is bit for bit
        # the one two ranks with the same seed train.
        results = self.ranks("seed", ([], ["--seed", "7"]))
        for code, stderr in results:
            self.assertEqual(code, 0, stderr)
        self.assertIn("loom: warning: rank 1: --seed 7 differs from rank 0's 42", results[1][1])
        same = self.out("same")
        run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(),
            *self.train_args(same, "--max_steps", "10", "--per_device_train_batch_size", "16"))
        with open(os.path.join(self.out("seed0"), "model.safetensors"), "rb") as a, \
                open(os.path.join(same, "model.safetensors"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_every_rank_starts_from_rank_0s_parameters(self):
        # The same path, other weights behind it on each rank (as on two nodes): under ZeRO-2 with
        # bf16, the partitions and the f32 master weights come from rank 0's parameters, so the run
        # is the one whose ranks both read rank 0's file.
        tokens = os.path.join(self.tmp, "tokens.bin")
        write_tokens(tokens, 4000, 128, 3)
        model = ["--model", "gpt2", "--gpt2.n_layer", "1", "--gpt2.n_head", "2", "--gpt2.n_embd", "32",
                 "--gpt2.vocab_size", "128", "--gpt2.n_positions", "16", "--block_size", "16"]
        for seed in (1, 2):
            loom(*self.train_args(self.out(f"init{seed}"), *model, "--train_file", tokens, "--max_steps", "1",
                                  "--seed", str(seed)))
        common = ["train", "--output_dir", "out", "--train_file", tokens, "--model_name_or_path", "init",
                  "--max_steps", "6", "--per_device_train_batch_size", "4", "--disable_tqdm", "--block_size", "16",
                  "--bf16", "--plugin", "zero2"]
        outputs = []
        for name, inits in (("own", (1, 2)), ("rank0s", (1, 1))):
            cwds = []
            for rank in range(2):
                cwd = self.out(f"{name}-cwd{rank}")
                shutil.copytree(self.out(f"init{inits[rank]}"), os.path.join(cwd, "init"))
                cwds.append(cwd)
            for code, stderr in self.ranks(name, ([], []), cwds=cwds, common=common):
                self.assertEqual(code, 0, stderr)
            with open(os.path.join(cwds[0], "out", "model.safetensors"), "rb") as f:
                outputs.append(f.read())
        self.assertEqual(outputs[0], outputs[1])


if __name__ == "__main__":
    unittest.main(verbosity=2)
