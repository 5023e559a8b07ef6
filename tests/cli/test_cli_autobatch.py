"""--auto_find_batch_size (docs/semantics/trainer.md#auto-batch-size): before step 1 the run takes
the first per-device train batch of accelerate's sequence (int(batch x 0.9) after each size that
does not fit) whose memory budget fits the room, trains exactly as a run given that size, and
records it in trainer_state.json; a resumed run takes the checkpoint's size; ranks agree on the
smallest. The room is stated with LOOM_MEMORY_LIMIT, midway between the budgets of two
neighbouring sizes measured by runs given those sizes."""
import os
import re
import subprocess

from loomtest import BUILD, LOOM, LoomTestCase, free_port, loom, write_tokens

# One hidden layer of 100000: 1.6 MB of activations an example, so neighbouring sizes of the
# sequence are megabytes apart, far more than the process's own size varies from run to run.
WIDE = ("--mlp.hidden_sizes", "100000")
MARGIN = 1 << 20  # below the gap between neighbours, far above how much the process's size varies


def sequence(start):
    """accelerate's find_executable_batch_size with its default reduce_batch_size_fn."""
    sizes = [start]
    while sizes[-1] > 1:
        sizes.append(int(sizes[-1] * 0.9))
    return sizes


def budgets(stdout):
    """rank -> the total of its memory budget in bytes (the --verbose line)."""
    return {int(r): int(b) for r, b in re.findall(r"memory budget, rank (\d+) of \d+ .*?, total (\d+) B", stdout)}


class AutoBatchTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 20000, 512, 7)

    def args(self, name, batch, *extra):
        return self.train_args(self.out(name), *WIDE, "--per_device_train_batch_size", str(batch),
                               "--logging_steps", "1", *extra)

    def budget(self, batch):
        _, out, _ = loom(*self.args(f"budget{batch}", batch, "--max_steps", "1"), env={"LOOM_MEMORY_LIMIT": "64G"})
        return budgets(out)[0]

    def between(self, low, high):
        """A room that fits the budget `low` and not `high`, each by MARGIN at least."""
        self.assertGreater(high - low, 2 * MARGIN)
        return str((low + high) // 2)

    def losses(self, name):
        return [e["loss"] for e in self.state(self.out(name))["log_history"] if "loss" in e]

    def model_bytes(self, name):
        with open(os.path.join(self.out(name), "model.safetensors"), "rb") as f:
            return f.read()

    def test_the_first_size_of_the_sequence_that_fits_trains_as_that_size_given(self):
        self.assertEqual(sequence(64)[:6], [64, 57, 51, 45, 40, 36])
        room = self.between(self.budget(40), self.budget(45))
        one_epoch = ("--num_train_epochs", "1")
        code, out, err = loom(*self.args("auto", 64, *one_epoch, "--auto_find_batch_size"),
                              env={"LOOM_MEMORY_LIMIT": room}, check=False)
        self.assertEqual(code, 0, err)
        for size in (64, 57, 51, 45):
            self.assertIn(f"auto_find_batch_size, rank 0: per-device train batch {size}: needs ", out)
        self.assertIn("auto_find_batch_size, rank 0: per-device train batch 40: fits", out)
        line = re.search(r"loom: auto_find_batch_size: per-device train batch 64 needs ([\d.]+) MiB, this process may "
                         r"use ([\d.]+) MiB \(LOOM_MEMORY_LIMIT=(\d+)\); running with 40 \(([\d.]+) MiB\)\n", out)
        self.assertIsNotNone(line, out)
        self.assertAlmostEqual(float(line.group(2)), int(room) / 1048576, delta=0.06)
        self.assertGreater(float(line.group(1)), float(line.group(2)))
        self.assertLess(float(line.group(4)), float(line.group(2)))
        # The loader, the step count (one epoch of 40-example batches), the budget and the state
        # follow the size found.
        examples = int(re.search(r"loom: data +(\d+) training examples", out).group(1))
        steps = -(-examples // 40)
        self.assertIn(f"loom: steps      {steps} over 1 epoch ({steps} per epoch; batch 40 x 1 accumulation x 1 rank)",
                      out)
        self.assertLessEqual(budgets(out)[0], int(room))
        state = self.state(self.out("auto"))
        self.assertEqual(state["train_batch_size"], 40)
        self.assertEqual(state["max_steps"], steps)
        # Bit for bit the run given --per_device_train_batch_size 40.
        loom(*self.args("given", 40, *one_epoch))
        self.assertEqual(self.losses("auto"), self.losses("given"))
        self.assertEqual(len(self.losses("auto")), steps)
        self.assertEqual(self.model_bytes("auto"), self.model_bytes("given"))
        # Without the flag the same room refuses the run, as before.
        self.assert_error(self.args("refused", 64, "--max_steps", "1"), "rank 0: the memory budget needs",
                          f"LOOM_MEMORY_LIMIT={room}", status=None, env={"LOOM_MEMORY_LIMIT": room})

    def test_a_plugin_built_for_abi_1_9_is_bound_once(self):
        # The search binds the model once per size, which ABI 1.10 allows; the same mlp stamped
        # 1.9 is refused in one line with the flag, and trains as loom's own mlp without it.
        old = os.path.join(BUILD, "tests", "trainer-fixtures", "mlp_abi19.so")
        self.assert_error(self.args("abi19-auto", 8, "--model", old, "--max_steps", "2", "--auto_find_batch_size"),
                          "--auto_find_batch_size binds the model plugin 'mlp'", "built for ABI 1.9",
                          "--per_device_train_batch_size", status=None)
        loom(*self.args("abi19", 8, "--model", old, "--max_steps", "2"))
        loom(*self.args("abi110", 8, "--model", "mlp", "--max_steps", "2"))
        self.assertEqual(self.model_bytes("abi19"), self.model_bytes("abi110"))

    def test_a_room_that_no_size_fits_is_refused(self):
        # Above what the parameters need (the first check), below the budget of a batch of 1,
        # whose activations are still bound for the evaluation batch of 8.
        _, _, err = loom(*self.args("floor", 64, "--max_steps", "1"), check=False, env={"LOOM_MEMORY_LIMIT": "1M"})
        floor = float(re.search(r"needs ([\d.]+) MiB", err).group(1)) * 1048576
        smallest = self.budget(8)
        self.assertLess(floor + 2 * MARGIN, smallest)
        room = self.between(floor, smallest)
        args = self.args("nothing", 64, "--max_steps", "1", "--auto_find_batch_size")
        line = self.assert_error(args, "rank 0: --auto_find_batch_size down to a per-device train batch of 1 (from 64): "
                                 "the memory budget (activations for --per_device_eval_batch_size 8, which is not "
                                 "reduced) needs", f"(LOOM_MEMORY_LIMIT={room})", status=None,
                                 env={"LOOM_MEMORY_LIMIT": room})
        need = float(re.search(r"needs ([\d.]+) MiB", line).group(1))
        self.assertAlmostEqual(need, smallest / 1048576, delta=0.5)
        # Every size of the sequence was tried; from 8 down the budget is the same.
        _, out, _ = loom(*args, check=False, env={"LOOM_MEMORY_LIMIT": room})
        tried = [int(s) for s in re.findall(r"auto_find_batch_size, rank 0: per-device train batch (\d+): needs", out)]
        self.assertEqual(tried, sequence(64))

    def test_a_resumed_run_takes_the_checkpoint_size_and_checks_it(self):
        b36, b40, b45 = (self.budget(b) for b in (36, 40, 45))
        steps = ("--max_steps", "4", "--save_steps", "2")
        loom(*self.args("first", 64, *steps, "--auto_find_batch_size"),
             env={"LOOM_MEMORY_LIMIT": self.between(b40, b45)})
        checkpoint = os.path.join(self.out("first"), "checkpoint-2")
        with open(os.path.join(checkpoint, "trainer_state.json")) as f:
            self.assertIn('"train_batch_size": 40', f.read())
        # With room for 64: the checkpoint's 40, not a new search from 64.
        _, out, _ = loom(*self.args("resumed", 64, *steps, "--auto_find_batch_size", "--resume_from_checkpoint",
                                    checkpoint), env={"LOOM_MEMORY_LIMIT": "64G"})
        self.assertIn(f"auto_find_batch_size: resuming with the per-device train batch it found for {checkpoint}, 40 "
                      "(its trainer_state.json's train_batch_size), not --per_device_train_batch_size 64, if it still "
                      "fits", out)
        self.assertIn("auto_find_batch_size: per-device train batch 40 fits", out)
        self.assertEqual(self.state(self.out("resumed"))["train_batch_size"], 40)
        # The resumed history holds the checkpoint's first two entries, then its own two.
        self.assertEqual(self.losses("resumed"), self.losses("first"))
        self.assertEqual(self.model_bytes("resumed"), self.model_bytes("first"))
        # Without the flag too, as HF takes the size its search recorded.
        loom(*self.args("resumed_plain", 64, *steps, "--resume_from_checkpoint", checkpoint))
        self.assertEqual(self.state(self.out("resumed_plain"))["train_batch_size"], 40)
        self.assertEqual(self.losses("resumed_plain"), self.losses("first"))
        # Where 40 no longer fits, the search goes on from it: 36. A resumed process holds more
        # before the run than a fresh one: the room is the resumed budget of 40 less half of
        # what 36 saves.
        resumed40 = budgets(out)[0]
        self.assertGreater(b40 - b36, 2 * MARGIN)
        room = str(resumed40 - (b40 - b36) // 2)
        _, out, err = loom(*self.args("shrunk", 64, *steps, "--auto_find_batch_size", "--resume_from_checkpoint",
                                      checkpoint), env={"LOOM_MEMORY_LIMIT": room})
        self.assertIn("per-device train batch 40 needs", out)
        self.assertIn("running with 36", out)
        self.assertEqual(self.state(self.out("shrunk"))["train_batch_size"], 36)
        self.assertIn("this run takes 36", err)  # the data position moves in steps: warned

    def test_gpt2_in_bf16_trains_as_the_size_given(self):
        # A model whose rebinding replaces more (its classifier's buffers, the 16-bit paths),
        # and a precision plugin whose f32 step works in a piece of the activations.
        gpt2 = ("--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64",
                "--gpt2.vocab_size", "512", "--gpt2.n_positions", "128", "--train_file", self.tokens, "--bf16",
                "--max_steps", "3", "--logging_steps", "1")

        def run(name, batch, *extra, env=None):
            return loom("train", "--output_dir", self.out(name), "--overwrite_output_dir", "--disable_tqdm", *gpt2,
                        "--per_device_train_batch_size", str(batch), *extra, env=env)

        self.assertEqual(sequence(32)[:5], [32, 28, 25, 22, 19])
        b22, b25 = (budgets(run(f"gpt2_{b}", b, env={"LOOM_MEMORY_LIMIT": "64G"})[1])[0] for b in (22, 25))
        _, out, _ = run("gpt2_auto", 32, "--auto_find_batch_size", env={"LOOM_MEMORY_LIMIT": self.between(b22, b25)})
        self.assertIn("auto_find_batch_size: per-device train batch 32 needs ", out)
        self.assertIn("running with 22 (", out)
        self.assertEqual(self.state(self.out("gpt2_auto"))["train_batch_size"], 22)
        self.assertEqual(self.losses("gpt2_auto"), self.losses("gpt2_22"))
        self.assertEqual(self.model_bytes("gpt2_auto"), self.model_bytes("gpt2_22"))

    def ranks(self, name, batch, rooms, *extra):
        """Two ranks started by hand, rank r with LOOM_MEMORY_LIMIT rooms[r] (the launcher gives
        every rank the same environment); returns [(code, stdout, stderr)]."""
        port = free_port()
        procs = []
        for rank in range(2):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", LOOM_VERBOSE="1",
                       LOOM_MEMORY_LIMIT=rooms[rank])
            env.pop("LOOM_PLUGIN_PATH", None)
            procs.append(subprocess.Popen([LOOM, *self.args(name, batch, "--ddp_timeout", "60", *extra)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        try:
            outputs = [p.communicate(timeout=240) for p in procs]
            return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()

    def rank_budgets(self, batch):
        results = self.ranks(f"budget2_{batch}", batch, ("64G", "64G"), "--max_steps", "1")
        for code, _, err in results:
            self.assertEqual(code, 0, err)
        return [budgets(out)[rank] for rank, (_, out, _) in enumerate(results)]

    def test_ranks_with_different_rooms_take_the_smallest_size(self):
        b28, b32, b40, b45 = (self.rank_budgets(b) for b in (28, 32, 40, 45))
        # Rank 0 alone would run 40, rank 1 alone 28.
        rooms = (self.between(b40[0], b45[0]), self.between(b28[1], b32[1]))
        steps = ("--max_steps", "3")
        results = self.ranks("two", 64, rooms, *steps, "--auto_find_batch_size")
        for rank, (code, out, err) in enumerate(results):
            self.assertEqual(code, 0, f"rank {rank}:\n{err}")
            self.assertIn("loom: auto_find_batch_size: per-device train batch 64 needs ", out)
            self.assertRegex(out, r"loom: auto_find_batch_size: per-device train batch 64 .*; running with 28 \([\d.]+ MiB\)")
        out0, out1 = results[0][1], results[1][1]
        self.assertIn("loom: auto_find_batch_size, rank 0: per-device train batch 40: fits", out0)
        self.assertIn("running with 28 (", out0)
        self.assertIn(", the largest that fits on every rank", out0)
        self.assertIn("loom: auto_find_batch_size, rank 1: per-device train batch 32: needs", out1)
        self.assertNotIn("the largest that fits on every rank", out1)
        self.assertIn("batch 28 x 1 accumulation x 2 ranks", out0)
        self.assertLess(abs(budgets(out0)[0] - b28[0]), MARGIN)
        self.assertLess(abs(budgets(out1)[1] - b28[1]), MARGIN)
        self.assertEqual(self.state(self.out("two"))["train_batch_size"], 28)
        # Bit for bit two ranks given 28.
        for code, _, err in self.ranks("two_given", 28, ("64G", "64G"), *steps):
            self.assertEqual(code, 0, err)
        self.assertEqual(self.losses("two"), self.losses("two_given"))
        self.assertEqual(self.model_bytes("two"), self.model_bytes("two_given"))
