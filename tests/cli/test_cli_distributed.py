"""Data parallelism with real processes over Gloo on loopback: N ranks equal one rank with the
same global batch, a dead rank stops everyone with a message, a wrong port fails cleanly, and
two ranks in two network namespaces talk across a real interface."""
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from loomtest import BUILD, LOOM, LoomTestCase, free_port, loom, read_safetensors, run, write_tokens

TRACE = os.path.join(BUILD, "tests", "trainer-fixtures", "trace_callback.so")




class DistributedTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 20000, 512, 7)

    def run_world(self, name, world, batch, *args):
        out = self.out(name)
        common = ["train", "--output_dir", out, "--overwrite_output_dir", "--disable_tqdm", "--ddp_timeout", "30",
                  "--per_device_train_batch_size", str(batch), *args]
        if world == 1:
            loom(*common)
        else:
            run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *common)
        losses = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        return losses, read_safetensors(os.path.join(out, "model.safetensors"))

    def assert_same_run(self, a, b, tolerance):
        (la, pa), (lb, pb) = a, b
        self.assertEqual(len(la), len(lb))
        for x, y in zip(la, lb):
            self.assertAlmostEqual(x, y, delta=tolerance * max(1.0, abs(x)))
        for name in pa:
            worst = max(abs(x - y) for x, y in zip(pa[name][2], pb[name][2]))
            self.assertLess(worst, tolerance, name)

    def test_mlp_ranks_equal_one_rank(self):
        args = ("--train_file", os.path.join(self.data, "train.bin"), "--max_steps", "20", "--logging_steps", "1",
                "--gradient_accumulation_steps", "2", "--max_grad_norm", "0.5", "--learning_rate", "1e-2",
                "--weight_decay", "0.01")
        one = self.run_world("mlp1", 1, 32, *args)
        self.assert_same_run(one, self.run_world("mlp2", 2, 16, *args), 2e-5)
        self.assert_same_run(one, self.run_world("mlp4", 4, 8, *args), 2e-5)

    def test_gpt2_nano_ranks_equal_one_rank(self):
        args = ("--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64",
                "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64", "--block_size", "32",
                "--train_file", self.tokens, "--max_steps", "20", "--logging_steps", "1",
                "--gradient_accumulation_steps", "2", "--max_grad_norm", "1.0", "--learning_rate", "3e-3",
                "--weight_decay", "0.01", "--ddp_bucket_cap_mb", "1")
        one = self.run_world("gpt1", 1, 8, *args)
        self.assert_same_run(one, self.run_world("gpt2", 2, 4, *args), 1e-4)
        self.assert_same_run(one, self.run_world("gpt4", 4, 2, *args), 1e-4)

    def test_a_dead_rank_stops_the_launch(self):
        start = time.time()
        code, _, stderr = run(LOOM, "launch", "--nproc_per_node", "3", "--master_port", free_port(),
                              *self.train_args(self.out("dead"), "--max_steps", "400", "--plugin", TRACE,
                                               "--trace_callback.trace_file", os.path.join(self.tmp, "t.txt"),
                                               "--trace_callback.kill_at_step", "5", "--trace_callback.kill_rank", "1",
                                               "--ddp_timeout", "10"), check=False)
        self.assertEqual(code, 128 + signal.SIGKILL)
        self.assertIn("rank 1", stderr)
        self.assertLess(time.time() - start, 60)

    def test_replicas_log_warnings_only_unless_asked(self):
        # HF's log_level_replica defaults to warning: the other ranks' info lines (a peak memory
        # line each, the comm plugin's connection) are left out; --log_level_replica info shows them.
        common = ["launch", "--nproc_per_node", "2", *self.train_args(self.out("replica"), "--max_steps", "2"),
                  "--ddp_timeout", "30"]
        _, stdout, stderr = run(LOOM, *common, env={"LOOM_VERBOSE": "0"})
        self.assertIn("[rank 0] loom: peak resident memory, rank 0", stdout)
        self.assertNotIn("[rank 1]", stdout + stderr)
        _, stdout, _ = run(LOOM, *common, "--log_level_replica", "info", env={"LOOM_VERBOSE": "0"})
        self.assertIn("[rank 1] loom: peak resident memory, rank 1", stdout)

    def test_ranks_stopped_while_starting_are_stopped_gently(self):
        # A rank fails before the last of 32 ranks is started: a SIGTERM that met a rank between
        # fork and exec ran the launcher's handler there, which took it for the user's second
        # signal and sent SIGKILL ("second signal"), in most runs of five.
        for _ in range(5):
            code, _, stderr = run(LOOM, "launch", "--nproc_per_node", "32", "false", check=False)
            self.assertEqual(code, 1, stderr)
            self.assertRegex(stderr, r"rank \d+ exited with status 1")
            self.assertNotIn("second signal", stderr)

    def test_a_dead_rank_makes_the_others_fail_within_the_timeout(self):
        # Without the launcher: the survivors must notice by themselves.
        port = free_port()
        procs = []
        for rank in range(2):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen(
                [LOOM, *self.train_args(self.out(f"alone{rank}"), "--max_steps", "400", "--plugin", TRACE,
                                        "--trace_callback.trace_file", os.path.join(self.tmp, f"a{rank}.txt"),
                                        "--trace_callback.kill_at_step", "5", "--trace_callback.kill_rank", "1",
                                        "--ddp_timeout", "5")],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        start = time.time()
        out, err = procs[0].communicate(timeout=60)
        procs[1].wait(timeout=60)
        self.assertEqual(procs[1].returncode, -signal.SIGKILL)
        self.assertNotEqual(procs[0].returncode, 0)
        self.assertLess(time.time() - start, 45)
        self.assertIn("loom: error:", err)

    def test_a_rank_that_does_not_come_is_waited_for_aloud(self):
        # Rank 0 alone of 2: after a quarter of --ddp_timeout it says what it waits for, once,
        # then gives up at the timeout.
        port = free_port()
        env = dict(os.environ, RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        p = subprocess.run([LOOM, *self.train_args(self.out("waiting"), "--ddp_timeout", "4")], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        waiting = [l for l in p.stderr.splitlines() if "waiting for ranks" in l]
        self.assertEqual(waiting, [f"loom: warning: waiting for ranks: 1 of 2 have joined the rendezvous at "
                                   f"127.0.0.1:{port} (giving up after 4 s in all: --ddp_timeout)"], p.stderr)
        self.assertIn("only 1 of 2 ranks joined", p.stderr)

    def test_wrong_master_port_fails_with_the_address(self):
        start = time.time()
        env = dict(os.environ, RANK="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        p = subprocess.run([LOOM, *self.train_args(self.out("port"), "--ddp_timeout", "3")], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("127.0.0.1:" + env["MASTER_PORT"], p.stderr)
        self.assertLess(time.time() - start, 30)


class NamespaceTest(LoomTestCase):
    """Two ranks in two network namespaces joined by a veth pair: traffic crosses an interface."""
    data_kind = "blobs"
    A, B = "loomtestA", "loomtestB"

    def ip(self, *args, check=True):
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)

    def setUp(self):
        if os.geteuid() != 0 or not shutil.which("ip"):
            self.skipTest("needs root and iproute2 to create network namespaces")
        for ns in (self.A, self.B):
            self.ip("netns", "del", ns, check=False)
        try:
            self.ip("netns", "add", self.A)
            self.ip("netns", "add", self.B)
            self.ip("link", "add", "loomvethA", "type", "veth", "peer", "name", "loomvethB")
            self.ip("link", "set", "loomvethA", "netns", self.A)
            self.ip("link", "set", "loomvethB", "netns", self.B)
            for ns, dev, addr in ((self.A, "loomvethA", "10.77.0.1/24"), (self.B, "loomvethB", "10.77.0.2/24")):
                self.ip("-n", ns, "addr", "add", addr, "dev", dev)
                self.ip("-n", ns, "link", "set", dev, "up")
                self.ip("-n", ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as e:
            self.tearDown()
            self.skipTest(f"cannot create network namespaces here: {e.stderr.strip()}")

    def tearDown(self):
        for ns in (self.A, self.B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def test_two_namespaces(self):
        args = ["--train_file", os.path.join(self.data, "train.bin"), "--max_steps", "10", "--logging_steps", "1",
                "--learning_rate", "1e-2", "--ddp_timeout", "30"]
        procs = []
        for rank, ns in enumerate((self.A, self.B)):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                       MASTER_ADDR="10.77.0.1", MASTER_PORT="29777", OMP_NUM_THREADS="1",
                       LOOM_STORE_SECRET="namespace-test-secret-0123456789")
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns, LOOM,
                                           *self.train_args(self.out(f"ns{rank}"), *args)],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, results):
            self.assertEqual(p.returncode, 0, err)
        loom(*self.train_args(self.out("single"), *args[:-2], "--per_device_train_batch_size", "16"))
        a = read_safetensors(os.path.join(self.out("ns0"), "model.safetensors"))
        b = read_safetensors(os.path.join(self.out("single"), "model.safetensors"))
        for name in a:
            self.assertLess(max(abs(x - y) for x, y in zip(a[name][2], b[name][2])), 2e-5)


if __name__ == "__main__":
    unittest.main(verbosity=2)


class ShardingTest(LoomTestCase):
    """ZeRO-1 and FairScale-style sharded DDP train the same model as DDP, with the optimizer
    states split over the ranks (the memory budget shows it) and checkpointed shard by shard."""
    data_kind = "blobs"

    def launch(self, name, world, *extra):
        out = self.out(name)
        _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(),
                           *self.train_args(out, "--train_file", os.path.join(self.data, "train.bin"),
                                            "--per_device_train_batch_size", str(32 // world), "--max_steps", "20",
                                            "--logging_steps", "1", "--gradient_accumulation_steps", "2",
                                            "--max_grad_norm", "0.5", "--learning_rate", "1e-2", "--weight_decay",
                                            "0.01", "--save_steps", "10", "--ddp_timeout", "30", *extra))
        losses = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        budgets = {}
        for line in stdout.splitlines():
            m = re.search(r"\[rank (\d+)\] loom: memory budget.*optimizer states (\d+) B", line)
            if m:
                budgets[int(m.group(1))] = int(m.group(2))
        return out, losses, read_safetensors(os.path.join(out, "model.safetensors")), budgets

    def test_zero1_and_sharded_ddp_match_ddp(self):
        _, ddp_losses, ddp_params, ddp_budget = self.launch("ddp", 2)
        psi = sum(math.prod(shape) for _, shape, _ in ddp_params.values())
        self.assertEqual(ddp_budget, {0: 8 * psi, 1: 8 * psi})
        for plugin in ("zero1", "sharded_ddp"):
            for world in (2, 4):
                out, losses, params, budget = self.launch(f"{plugin}{world}", world, "--plugin", plugin)
                for x, y in zip(losses, ddp_losses):
                    self.assertAlmostEqual(x, y, delta=2e-5 * max(1.0, abs(y)))
                for name in params:
                    worst = max(abs(x - y) for x, y in zip(params[name][2], ddp_params[name][2]))
                    self.assertLess(worst, 2e-5, f"{plugin} x{world} {name}")
                self.assertEqual(sum(budget.values()), 8 * psi)   # every state element on exactly one rank
                if plugin == "zero1":
                    part = -(-psi // world)
                    part = -(-part // 16384) * 16384               # block-aligned partitions
                    self.assertEqual(budget[0], 8 * min(part, psi))  # Adam's 8 bytes for rank 0's partition
                shards = sorted(n for n in os.listdir(os.path.join(out, "checkpoint-20")) if n.startswith("optimizer"))
                self.assertEqual(shards, [f"optimizer.rank-{r}-of-{world}.safetensors" for r in range(world)])
                states = {}
                for shard in shards:
                    states.update(read_safetensors(os.path.join(out, "checkpoint-20", shard)))
                self.assertEqual(sum(len(v[2]) for v in states.values()), 2 * psi)


class ParityTest(LoomTestCase):
    """Every reduction has one canonical order, so ddp, zero1 and sharded_ddp end bit for bit
    identical at any world size: 30 steps of gpt2-nano with accumulation, clipping and decay."""
    data_kind = "blobs"

    def test_bitwise_identical_across_strategies(self):
        tokens = os.path.join(self.tmp, "parity.bin")
        write_tokens(tokens, 30000, 512, 11)
        for world in (2, 4):
            files = {}
            for plugin in ("ddp", "zero1", "sharded_ddp"):
                out = self.out(f"parity-{plugin}-{world}")
                # HF's own flag for FairScale's strategy; --plugin for the others.
                choose = ["--sharded_ddp"] if plugin == "sharded_ddp" else ["--plugin", plugin]
                _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(),
                    *self.train_args(out, *choose, "--model", "gpt2", "--gpt2.n_layer", "2",
                                     "--gpt2.n_head", "2", "--gpt2.n_embd", "64", "--gpt2.vocab_size", "512",
                                     "--gpt2.n_positions", "64", "--block_size", "32", "--train_file", tokens,
                                     "--per_device_train_batch_size", str(8 // world), "--max_steps", "30",
                                     "--gradient_accumulation_steps", "2", "--max_grad_norm", "0.5",
                                     "--weight_decay", "0.1", "--learning_rate", "3e-3", "--logging_steps", "1",
                                     "--ddp_timeout", "30"))
                self.assertIn(f"[sharding] {plugin} ", stdout)            # really that strategy
                with open(os.path.join(out, "model.safetensors"), "rb") as f:
                    files[plugin] = f.read()
                losses = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
                files[plugin + "-losses"] = losses
            self.assertEqual(files["zero1"], files["ddp"], f"zero1 != ddp at {world} ranks")
            self.assertEqual(files["sharded_ddp"], files["ddp"], f"sharded_ddp != ddp at {world} ranks")
            self.assertEqual(files["zero1-losses"], files["ddp-losses"])
            self.assertEqual(files["sharded_ddp-losses"], files["ddp-losses"])


class Zero2Test(LoomTestCase):
    """ZeRO-2 keeps only its gradient partition; it reduces on every micro-batch as DeepSpeed does,
    so it equals ddp bit for bit with one micro-batch per step and to round-off with accumulation;
    overlap_comm changes timing, never bits."""
    data_kind = "blobs"

    def train(self, name, world, plugin, accumulation, *extra):
        tokens = os.path.join(self.tmp, "z2.bin")
        if not os.path.exists(tokens):
            write_tokens(tokens, 30000, 512, 13)
        out = self.out(name)
        _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(),
                           *self.train_args(out, "--plugin", plugin, "--model", "gpt2", "--gpt2.n_layer", "2",
                                            "--gpt2.n_head", "2", "--gpt2.n_embd", "64", "--gpt2.vocab_size", "512",
                                            "--gpt2.n_positions", "64", "--block_size", "32", "--train_file", tokens,
                                            "--per_device_train_batch_size", str(8 // world), "--max_steps", "15",
                                            "--gradient_accumulation_steps", str(accumulation), "--max_grad_norm",
                                            "0.5", "--weight_decay", "0.1", "--learning_rate", "3e-3",
                                            "--logging_steps", "1", "--ddp_timeout", "30", *extra))
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            return f.read(), read_safetensors(os.path.join(out, "model.safetensors")), stdout

    def test_zero2(self):
        for world in (2, 4):
            ddp, _, _ = self.train(f"d{world}", world, "ddp", 1)
            z2, _, stdout = self.train(f"z{world}", world, "zero2", 1)
            z2o, _, _ = self.train(f"zo{world}", world, "zero2", 1, "--zero2.overlap_comm", "true")
            self.assertEqual(z2, ddp, f"zero2 != ddp at {world} ranks")
            self.assertEqual(z2o, ddp)
            grads = int(re.search(r"\[rank 0\] loom: memory budget.*gradients (\d+) B", stdout).group(1))
            params = int(re.search(r"\[rank 0\] loom: memory budget.*parameters (\d+) B", stdout).group(1))
            self.assertLess(grads, params)                           # only a partition of the gradients
        _, ddp_params, _ = self.train("dga", 2, "ddp", 3)
        z2, z2_params, _ = self.train("zga", 2, "zero2", 3)
        z2o, _, _ = self.train("zgao", 2, "zero2", 3, "--zero2.overlap_comm", "true")
        self.assertEqual(z2o, z2)
        for name in ddp_params:
            self.assertLess(max(abs(x - y) for x, y in zip(ddp_params[name][2], z2_params[name][2])), 2e-5, name)


class TwoPartGradientTest(LoomTestCase):
    """The tied embedding's gradient in two parts (docs/architecture.md#two-part-gradients): in a
    multi-rank run the head's part is reduced during backward and the looked-up rows by the host
    after it. Every strategy still ends with the same bits (zero2 with one micro-batch), the
    result differs from the one-range path by round-off only, and a one-process run is untouched."""
    data_kind = "blobs"

    def train(self, name, world, plugin, accumulation, rows, *extra):
        tokens = os.path.join(self.tmp, "two.bin")
        if not os.path.exists(tokens):
            write_tokens(tokens, 30000, 512, 19)
        out = self.out(name)
        args = self.train_args(out, "--plugin", plugin, "--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head",
                               "2", "--gpt2.n_embd", "64", "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64",
                               "--block_size", "32", "--train_file", tokens, "--per_device_train_batch_size",
                               str(8 // world), "--max_steps", "12", "--gradient_accumulation_steps",
                               str(accumulation), "--max_grad_norm", "0.5", "--weight_decay", "0.1",
                               "--learning_rate", "3e-3", "--logging_steps", "1", "--ddp_timeout", "30", *extra)
        env = {"LOOM_GRAD_ROWS": rows}
        if world == 1:
            _, stdout, _ = loom(*args, env=env)
        else:
            _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *args, env=env)
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            return f.read(), read_safetensors(os.path.join(out, "model.safetensors")), stdout

    def test_two_part_gradient(self):
        ddp, ddp_params, stdout = self.train("ddp", 2, "ddp", 1, "report")
        self.assertRegex(stdout, r"\[rank 0\].*grad rows: 12 steps, \d+ rows reduced")   # the path ran
        for plugin in ("zero1", "zero2", "sharded_ddp"):
            other, _, stdout = self.train(plugin, 2, plugin, 1, "report")
            self.assertIn("grad rows:", stdout)
            self.assertEqual(other, ddp, f"{plugin} != ddp through the two-part gradient")
        accumulated = {p: self.train(f"{p}-ga", 2, p, 3, "report")[0] for p in ("ddp", "zero1", "sharded_ddp")}
        self.assertEqual(accumulated["zero1"], accumulated["ddp"])
        self.assertEqual(accumulated["sharded_ddp"], accumulated["ddp"])
        # One range (the old path): the same training to round-off, not the same bits.
        whole, whole_params, stdout = self.train("ddp-off", 2, "ddp", 1, "off")
        self.assertNotIn("grad rows:", stdout)
        self.assertNotEqual(whole, ddp)
        for name in ddp_params:
            worst = max(abs(x - y) for x, y in zip(ddp_params[name][2], whole_params[name][2]))
            self.assertLess(worst, 2e-5, name)
        # One process: nothing to reduce, the rows part is not offered, the bits are the old ones.
        one, _, stdout = self.train("one", 1, "ddp", 2, "report")
        one_off, _, _ = self.train("one-off", 1, "ddp", 2, "off")
        self.assertNotIn("grad rows:", stdout)
        self.assertEqual(one, one_off)


    def test_shared_memory_gives_the_tcp_bits(self):
        # gloo between ranks of one machine goes through shared memory unless told not to; the
        # sums are the same rank-order sums, so every strategy keeps TCP's bits.
        tcp, _, stdout = self.train("ddp-tcp", 2, "ddp", 1, "report", "--gloo.shm", "false")
        self.assertNotIn("through shared memory", stdout)
        self.assertNotIn("all-reduced in place", stdout)
        for plugin in ("ddp", "zero2", "sharded_ddp"):
            shm, _, stdout = self.train(f"{plugin}-shm", 2, plugin, 1, "report")
            self.assertRegex(stdout, r"\[rank 1\].*all_reduce through shared memory")  # the path ran
            self.assertEqual(shm, tcp, f"{plugin} through shared memory != ddp over TCP")
            # ddp's gradients live in the shared memory and are summed in place (ABI 1.6)
            self.assertEqual("all-reduced in place" in stdout, plugin == "ddp", plugin)
        # ddp through the segment's slots instead, and with gradient accumulation both ways
        slots, _, stdout = self.train("ddp-slots", 2, "ddp", 1, "report", "--ddp.shared_gradients", "false")
        self.assertNotIn("all-reduced in place", stdout)
        self.assertEqual(slots, tcp, "ddp through the slots != ddp over TCP")
        in_place = self.train("ddp-ga-shared", 2, "ddp", 3, "report")[0]
        self.assertEqual(in_place, self.train("ddp-ga-tcp", 2, "ddp", 3, "report", "--gloo.shm", "false")[0])
        with self.assertRaises(AssertionError) as refused:
            self.train("bad-shm", 2, "ddp", 1, "report", "--gloo.shm", "sometimes")
        self.assertIn("shm", str(refused.exception))


class LambTest(LoomTestCase):
    """LAMB's trust ratio needs whole-tensor norms: under ZeRO a tensor is split over ranks and
    the host sums the pieces' statistics across them, so every strategy trains the same model."""
    data_kind = "blobs"

    def test_lamb_under_each_strategy(self):
        tokens = os.path.join(self.tmp, "lamb.bin")
        write_tokens(tokens, 20000, 512, 17)
        results = {}
        for plugin, world in (("ddp", 1), ("ddp", 2), ("zero1", 2), ("zero2", 2), ("sharded_ddp", 2)):
            out = self.out(f"lamb-{plugin}-{world}")
            args = self.train_args(out, "--plugin", "lamb", "--model", "gpt2", "--gpt2.n_layer", "2",
                                   "--gpt2.n_head", "2", "--gpt2.n_embd", "64", "--gpt2.vocab_size", "512",
                                   "--gpt2.n_positions", "64", "--block_size", "32", "--train_file", tokens,
                                   "--per_device_train_batch_size", str(8 // world), "--max_steps", "10",
                                   "--learning_rate", "1e-2", "--weight_decay", "0.01", "--logging_steps", "1",
                                   "--ddp_timeout", "30")
            if world == 1:
                _, stdout, _ = loom(*args)
            else:
                _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *args,
                                   "--plugin", plugin)
            self.assertIn("[optimizer] lamb ", stdout)
            results[(plugin, world)] = read_safetensors(os.path.join(out, "model.safetensors"))
        base = results[("ddp", 1)]
        for key, params in results.items():
            for name in base:
                worst = max(abs(x - y) for x, y in zip(base[name][2], params[name][2]))
                self.assertLess(worst, 5e-5, f"{key} {name}")
