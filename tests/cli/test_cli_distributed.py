"""Data parallelism with real processes over Gloo on loopback: N ranks equal one rank with the
same global batch, a dead rank stops everyone with a message, a wrong port fails cleanly, and
two ranks in two network namespaces talk across a real interface."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

from loomtest import BUILD, LOOM, LoomTestCase, loom, read_safetensors, run

TRACE = os.path.join(BUILD, "tests", "trainer-fixtures", "trace_callback.so")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tokens(path, n, vocab, seed):
    state, tokens = seed, []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        tokens.append((state >> 33) % vocab)
    header = [20240520, 1, n] + [0] * 253
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header) + struct.pack(f"<{n}H", *tokens))


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
                       MASTER_ADDR="10.77.0.1", MASTER_PORT="29777", OMP_NUM_THREADS="1")
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
