"""--train_sampling_strategy sequential (docs/semantics/trainer.md#every-hf-argument): training
reads the file in its order, every epoch the same, and several ranks take whole batches of that
order in turn as accelerate's BatchSamplerShard hands them out (the last round filled from the
first examples, or dropped with --dataloader_drop_last). The order is read off the logged losses
of a model that does not learn (--learning_rate 0), each example's loss known from a run on that
example alone; N ranks of batch B train as one rank of batch N x B; a resumed run ends bit for bit
where one that never stopped ends."""
import json
import os
import shutil
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
from loomtest import LOOM, LoomTestCase, free_port, lcg, loom, run  # noqa: E402
from test_sampler_orders import hf_sequential_shard  # noqa: E402

FEATURES, CLASSES = 6, 4


def write_examples(path, rows):
    """A LOOMCLS1 file of (features, label) rows."""
    with open(path, "wb") as f:
        f.write(struct.pack("<8sIIIIQ", b"LOOMCLS1", 1, FEATURES, CLASSES, 0, len(rows)))
        for x, _ in rows:
            f.write(struct.pack("<%df" % FEATURES, *x))
        f.write(struct.pack("<%di" % len(rows), *[y for _, y in rows]))


def make_rows(n, seed):
    """n examples of pseudo-random features in [-4, 4], labels 0, 1, 2, 3, 0, ..."""
    state, rows = seed, []
    for i in range(n):
        x = []
        for _ in range(FEATURES):
            state = lcg(state)
            x.append(((state >> 33) % 2001 - 1000) / 250.0)
        rows.append((x, i % CLASSES))
    return rows


def losses(out):
    with open(os.path.join(out, "trainer_state.json")) as f:
        return [e["loss"] for e in json.load(f)["log_history"] if "loss" in e]


class Sequential(LoomTestCase):
    data_kind = "blobs"
    N = 7

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rows = make_rows(cls.N, 11)
        cls.file = os.path.join(cls.tmp, "seven.bin")
        write_examples(cls.file, rows)
        # Each example's loss under the untrained model, from a run that reads it alone.
        cls.alone = []
        for i, row in enumerate(rows):
            path = os.path.join(cls.tmp, f"alone{i}.bin")
            write_examples(path, [row])
            out = os.path.join(cls.tmp, f"alone{i}")
            loom("train", "--output_dir", out, "--train_file", path, "--disable_tqdm", "--max_steps", "1",
                 "--logging_steps", "1", "--save_strategy", "no", "--per_device_train_batch_size", "1")
            cls.alone.append(losses(out)[0])
        assert len(set(round(v, 4) for v in cls.alone)) == cls.N, f"two examples with one loss: {cls.alone}"

    def train(self, out, world, *extra, train_file=None, resume=False):
        """A sequential run's logged losses; resume: from the checkpoint found in `out`."""
        args = ["train", "--output_dir", out, *([] if resume else ["--overwrite_output_dir"]), "--train_file",
                train_file or self.file, "--disable_tqdm", "--logging_steps", "1", "--save_strategy", "no",
                "--ddp_timeout", "30", "--train_sampling_strategy", "sequential", *extra]
        if world == 1:
            _, self.stdout, _ = run(LOOM, *args)
        else:
            _, self.stdout, _ = run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *args)
        return losses(out)

    def expected(self, batch, world, accumulation, drop_last, epochs=1):
        """The logged losses HF's order gives: each step's mean over the examples every rank
        reads in it."""
        shards = [hf_sequential_shard(self.N, batch, drop_last, world, r) for r in range(world)]
        per_rank = len(shards[0])
        losses = []
        for _ in range(epochs):
            for first in range(0, per_rank, accumulation):
                seen = [i for r in range(world) for b in shards[r][first:first + accumulation] for i in b]
                losses.append(sum(self.alone[i] for i in seen) / len(seen))
        return losses

    def assert_losses(self, got, want):
        self.assertEqual(len(got), len(want), (got, want))
        for g, w in zip(got, want):
            self.assertAlmostEqual(g, w, delta=1e-6 * max(1.0, abs(w)), msg=(got, want))

    def test_one_rank_reads_the_file_in_order_every_epoch(self):
        frozen = ("--learning_rate", "0", "--num_train_epochs", "2")
        got = self.train(self.out("one"), 1, *frozen, "--per_device_train_batch_size", "1")
        self.assertEqual(got[:self.N], got[self.N:])
        self.assert_losses(got, self.alone * 2)
        # batches of 2: the short last one is kept, or dropped with --dataloader_drop_last
        got = self.train(self.out("one_b2"), 1, *frozen, "--per_device_train_batch_size", "2")
        self.assert_losses(got, self.expected(2, 1, 1, False, epochs=2))
        got = self.train(self.out("one_drop"), 1, *frozen, "--per_device_train_batch_size", "2",
                         "--dataloader_drop_last")
        self.assert_losses(got, self.expected(2, 1, 1, True, epochs=2))
        got = self.train(self.out("one_ga"), 1, *frozen, "--per_device_train_batch_size", "1",
                         "--gradient_accumulation_steps", "3")
        self.assert_losses(got, self.expected(1, 1, 3, False, epochs=2))
        # another seed changes nothing: there is no draw
        self.assertEqual(self.train(self.out("one_seed"), 1, *frozen, "--per_device_train_batch_size", "1",
                                    "--data_seed", "9"), self.train(self.out("one"), 1, *frozen,
                                                                    "--per_device_train_batch_size", "1"))

    def test_ranks_take_whole_batches_in_turn(self):
        frozen = ("--learning_rate", "0", "--num_train_epochs", "1")
        # (3, 1, False) and the drop_last cases tell whole batches from DistributedSampler's every
        # other example: the last round is other examples, or another number of them
        for batch, accumulation, drop_last in ((1, 1, False), (2, 1, False), (3, 1, False), (1, 2, False),
                                               (1, 1, True), (2, 1, True)):
            with self.subTest(batch=batch, accumulation=accumulation, drop_last=drop_last):
                got = self.train(self.out(f"two_{batch}_{accumulation}_{drop_last}"), 2, *frozen,
                                 "--per_device_train_batch_size", str(batch), "--gradient_accumulation_steps",
                                 str(accumulation), *(["--dataloader_drop_last"] if drop_last else []))
                self.assert_losses(got, self.expected(batch, 2, accumulation, drop_last))

    def test_two_ranks_train_as_one_rank_of_twice_the_batch(self):
        """Rank r reads batches r, r + 2, ...: the two batches of a step are the one batch of
        twice the size one rank reads (with drop_last, whatever the number of examples)."""
        path = os.path.join(self.tmp, "sixty_one.bin")
        write_examples(path, make_rows(61, 5))
        common = ("--num_train_epochs", "3", "--gradient_accumulation_steps", "2", "--learning_rate", "1e-2",
                  "--dataloader_drop_last")
        one = self.train(self.out("as_one"), 1, *common, "--per_device_train_batch_size", "8", train_file=path)
        two = self.train(self.out("as_two"), 2, *common, "--per_device_train_batch_size", "4", train_file=path)
        self.assertEqual(len(one), 12)
        for a, b in zip(one, two):
            self.assertAlmostEqual(a, b, delta=2e-5 * max(1.0, abs(a)))
        self.assertNotAlmostEqual(one[0], one[1], delta=1e-3)

    def test_a_resumed_run_ends_where_an_unstopped_one_ends(self):
        path = os.path.join(self.tmp, "thirty_seven.bin")
        write_examples(path, make_rows(37, 3))
        for world in (1, 2):
            with self.subTest(world=world):
                # 37 examples in batches of 4 (of 2 per rank): 10 batches, 5 steps an epoch; the
                # checkpoint at step 7 is in the middle of the second epoch
                args = ("--per_device_train_batch_size", str(4 // world), "--gradient_accumulation_steps", "2",
                        "--num_train_epochs", "3", "--learning_rate", "1e-2", "--save_strategy", "steps",
                        "--save_steps", "7")
                full = self.out(f"full{world}")
                self.train(full, world, *args, train_file=path)
                half = self.out(f"half{world}")
                shutil.rmtree(half, ignore_errors=True)
                os.makedirs(half)
                shutil.copytree(os.path.join(full, "checkpoint-7"), os.path.join(half, "checkpoint-7"))
                self.train(half, world, *args, train_file=path, resume=True)
                self.assertIn(f"resuming training at {half}/checkpoint-7: step 7", self.stdout)
                self.assertEqual(losses(half), losses(full))
                self.assertEqual(len(losses(full)), 15)
                with open(os.path.join(full, "model.safetensors"), "rb") as a, \
                        open(os.path.join(half, "model.safetensors"), "rb") as b:
                    self.assertEqual(a.read(), b.read())

    def test_another_order_at_the_same_time_is_refused(self):
        for other in ("--group_by_length", "--sortish_sampler"):
            self.assert_error(self.train_args(self.out("both"), "--train_sampling_strategy", "sequential", other),
                              "--train_sampling_strategy sequential", other[2:], "pick one order")


if __name__ == "__main__":
    unittest.main()
