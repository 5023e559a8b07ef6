"""Several nodes, each with a disk of its own: HF's --save_on_each_node and --log_on_each_node.

Each "node" is a `loom launch --nnodes 2 --node_rank R` in a mount namespace of its own, with a
private tmpfs mounted over the same output_dir path, so the two nodes see one path and two disks
(and nothing of each other's files). Each node's folder is copied out when its launch ends."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import GPT2_NANO, LOOM, TokensTestCase, free_port, run  # noqa: E402

STEPS = 12
SECRET = "nodes-test-secret-0123456789abcdef"

# Mount a tmpfs over $1 (the output_dir), fill it from $3 when that is a folder (a node's disk as
# an earlier run left it), run the rest, then copy the disk out to $2 whatever the exit status.
NODE_SCRIPT = ('d=$1; out=$2; seed=$3; shift 3; mount -t tmpfs tmpfs "$d" || exit 97; '
               'if [ -d "$seed" ]; then cp -a "$seed"/. "$d"/ || exit 98; fi; '
               '"$@"; rc=$?; rm -rf "$out"; cp -a "$d" "$out"; exit $rc')


def manifest_problems(folder):
    """Check a checkpoint folder against its loom_manifest.json, independently of loom: every
    listed file there with its size and SHA-256, and every file there listed."""
    with open(os.path.join(folder, "loom_manifest.json")) as f:
        listed = {e["name"]: e for e in json.load(f)["files"]}
    present = {n for n in os.listdir(folder) if n != "loom_manifest.json"}
    problems = [f"not listed: {n}" for n in sorted(present - set(listed))]
    problems += [f"listed, absent: {n}" for n in sorted(set(listed) - present)]
    for name in sorted(present & set(listed)):
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        if len(data) != listed[name]["bytes"] or hashlib.sha256(data).hexdigest() != listed[name]["sha256"]:
            problems.append(f"differs: {name}")
    return problems


class NodesTestCase(TokensTestCase):
    """The two-node harness (no tests of its own: test_cli_nodes_best.py uses it too)."""

    def setUp(self):
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare(1) to give each node a private tmpfs")
        probe = self.out("mount-probe")
        os.makedirs(probe, exist_ok=True)
        p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs tmpfs "$1"',
                            "sh", probe], capture_output=True, text=True)
        if p.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs in a mount namespace here: {p.stderr.strip()}")

    def train_args(self, out, *extra):
        return ["train", "--output_dir", out, "--train_file", self.tokens, "--disable_tqdm", *GPT2_NANO,
                "--per_device_train_batch_size", "4", "--max_steps", str(STEPS), "--gradient_accumulation_steps",
                "2", "--max_grad_norm", "0.5", "--weight_decay", "0.1", "--learning_rate", "3e-3",
                "--logging_steps", "1", "--ddp_timeout", "30", *extra]

    def nodes(self, name, *args, private=True, seed=None, verbose="1", env=None):
        """Two nodes of one rank each; returns [(returncode, stdout, stderr, disk copy)] by node.
        private=False: both nodes write the same folder (a shared filesystem)."""
        out = self.out(name)
        os.makedirs(out, exist_ok=True)
        port = free_port()
        env = dict(os.environ, LOOM_STORE_SECRET=SECRET, OMP_NUM_THREADS="1", LOOM_VERBOSE=verbose, **(env or {}))
        env.pop("LOOM_PLUGIN_PATH", None)
        procs, disks = [], []
        for node in range(2):
            disk = self.out(f"{name}-node{node}")
            launch = [LOOM, "launch", "--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1",
                      "--master_addr", "127.0.0.1", "--master_port", str(port), *self.train_args(out, *args)]
            if private:
                seed_dir = seed[node] if seed else "/nonexistent"
                argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", NODE_SCRIPT, "sh", out, disk,
                        seed_dir, *launch]
            else:
                argv = launch
            procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
            disks.append(disk if private else out)
        results = []
        for p, disk in zip(procs, disks):
            stdout, stderr = p.communicate(timeout=240)
            results.append((p.returncode, stdout, stderr, disk))
        return results

    def assert_ran(self, results):
        for node, (code, stdout, stderr, _) in enumerate(results):
            self.assertEqual(code, 0, f"node {node}\nstdout:\n{stdout}\nstderr:\n{stderr}")

    def assert_stopped(self, results, line, before_a_step=False, what=""):
        """Every node exits non-zero with one error line, which matches the regex `line`."""
        for node, (code, stdout, stderr, _) in enumerate(results):
            self.assertNotEqual(code, 0, f"{what} node {node}")
            if before_a_step:
                self.assertNotIn("'loss'", stdout, f"{what} node {node}")
            errors = [e for e in stderr.splitlines() if "loom: error:" in e]
            self.assertEqual(len(errors), 1, f"{what} node {node}:\n{stderr}")
            self.assertRegex(errors[0], "loom: error: " + line, f"{what} node {node}")

    def disks_at(self, results, step, name):
        """Each node's disk as it was when checkpoint-<step> was the newest: that folder alone."""
        seeds = []
        for node, (_, _, _, disk) in enumerate(results):
            seed = self.out(f"{name}-seed{node}")
            shutil.rmtree(seed, ignore_errors=True)
            os.makedirs(seed)
            shutil.copytree(os.path.join(disk, f"checkpoint-{step}"), os.path.join(seed, f"checkpoint-{step}"))
            seeds.append(seed)
        return seeds

    def read(self, *path):
        with open(os.path.join(*path), "rb") as f:
            return f.read()

    def losses(self, disk):
        return [e["loss"] for e in self.state(disk)["log_history"] if "loss" in e]

class NodesTest(NodesTestCase):

    def test_each_node_writes_complete_checkpoints_on_its_own_disk(self):
        results = self.nodes("each", "--save_on_each_node", "--save_steps", "4", "--save_total_limit", "2")
        self.assert_ran(results)
        # The reference: the same run on one machine, one folder, without the flag.
        run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(),
            *self.train_args(self.out("one-folder"), "--save_steps", "4", "--save_total_limit", "2"))
        reference = self.out("one-folder")
        for node, (_, _, _, disk) in enumerate(results):
            # Rotation ran on each disk: the two newest of 4, 8, 12.
            self.assertEqual(sorted(n for n in os.listdir(disk) if n.startswith("checkpoint-")),
                             ["checkpoint-12", "checkpoint-8"], f"node {node}")
            for step in (8, 12):
                folder = os.path.join(disk, f"checkpoint-{step}")
                self.assertEqual(manifest_problems(folder), [], f"node {node} step {step}")
                # Every file of the one-folder run's checkpoint, byte for byte, but
                # trainer_state.json, whose is_world_process_zero is the writer's own (HF's too).
                self.assertEqual(sorted(os.listdir(folder)), sorted(os.listdir(os.path.join(reference,
                                                                                             f"checkpoint-{step}"))))
                for name in os.listdir(folder):
                    if name not in ("trainer_state.json", "training_args.json", "loom_manifest.json"):
                        self.assertEqual(self.read(folder, name), self.read(reference, f"checkpoint-{step}", name),
                                         f"node {node} {name}")
            self.assertEqual(self.read(disk, "model.safetensors"), self.read(reference, "model.safetensors"))
            self.assertEqual(self.read(disk, "config.json"), self.read(reference, "config.json"))
            with open(os.path.join(disk, "training_args.json")) as f:
                self.assertIs(json.load(f)["save_on_each_node"], True)
            state = self.state(disk)
            self.assertEqual(state["global_step"], STEPS)
            self.assertEqual(state["is_world_process_zero"], node == 0)
            self.assertTrue(state["is_local_process_zero"])
            self.assertEqual(self.losses(disk), self.losses(reference))
        self.assertEqual(self.read(results[0][3], "model.safetensors"), self.read(results[1][3], "model.safetensors"))

    def test_without_the_flag_only_node_0_writes(self):
        results = self.nodes("main-only", "--save_steps", "4")
        self.assert_ran(results)
        self.assertIn("checkpoint-12", os.listdir(results[0][3]))
        self.assertIn("model.safetensors", os.listdir(results[0][3]))
        self.assertEqual(os.listdir(results[1][3]), [])

    def test_each_node_resumes_from_its_own_disk(self):
        full = self.nodes("resume-full", "--save_on_each_node", "--save_steps", "6")
        self.assert_ran(full)
        seeds = self.disks_at(full, 6, "resume")
        # No --overwrite_output_dir: each node finds checkpoint-6 on its own disk and resumes.
        half = self.nodes("resume-half", "--save_on_each_node", "--save_steps", "6", seed=seeds)
        self.assert_ran(half)
        self.assertIn("resuming training at", half[0][1])
        for node in range(2):
            self.assertEqual(self.read(half[node][3], "model.safetensors"),
                             self.read(full[node][3], "model.safetensors"), f"node {node}")
            self.assertEqual(self.losses(half[node][3]), self.losses(full[node][3]))
            self.assertEqual(manifest_problems(os.path.join(half[node][3], "checkpoint-12")), [])

    def test_sharded_states_stay_with_their_node(self):
        common = ("--save_on_each_node", "--save_steps", "6", "--plugin", "zero1", "--bf16")
        full = self.nodes("zero-full", *common)
        self.assert_ran(full)
        for node, (_, _, _, disk) in enumerate(full):
            folder = os.path.join(disk, "checkpoint-12")
            # A node's folder holds its own rank's shard, and its manifest lists what is there.
            self.assertEqual(sorted(n for n in os.listdir(folder) if n.startswith("optimizer")),
                             [f"optimizer.rank-{node}-of-2.safetensors"])
            self.assertEqual(manifest_problems(folder), [], f"node {node}")
        self.assertEqual(self.read(full[0][3], "model.safetensors"), self.read(full[1][3], "model.safetensors"))
        seeds = self.disks_at(full, 6, "zero")
        # Same world size and sharding: each rank reads its own shard, and the run goes on bit for bit.
        half = self.nodes("zero-half", *common, seed=seeds)
        self.assert_ran(half)
        self.assertEqual(self.read(half[0][3], "model.safetensors"), self.read(full[0][3], "model.safetensors"))
        self.assertEqual(self.losses(half[0][3]), self.losses(full[0][3]))
        # Another sharding needs the other node's shard: refused in one line, on every rank, before a step.
        other = self.nodes("zero-ddp", "--save_on_each_node", "--save_steps", "6", "--plugin", "ddp", "--bf16",
                           seed=seeds)
        for node, (code, stdout, stderr, _) in enumerate(other):
            self.assertNotEqual(code, 0, f"node {node}")
            self.assertNotIn("'loss'", stdout)
        self.assertRegex(other[0][2] + other[1][2], r"holds the optimizer shards of 1 of its 2 ranks "
                                                    r"\(--save_on_each_node on disks of their own: "
                                                    r"optimizer\.rank-[01]-of-2\.safetensors is on another node\)")
        # loom consolidate joins every shard's master weights: one node's folder is not enough.
        code, _, stderr = run(LOOM, "consolidate", os.path.join(full[1][3], "checkpoint-12"),
                              self.out("consolidated"), check=False)
        self.assertEqual(code, 2, stderr)
        self.assertIn("optimizer.rank-0-of-2.safetensors is missing", stderr)
        self.assertIn("--save_on_each_node", stderr)
        self.assertFalse(os.path.exists(os.path.join(self.out("consolidated"), "model.safetensors")))

    def test_a_shared_folder_is_refused(self):
        results = self.nodes("shared", "--save_on_each_node", "--save_steps", "4", private=False)
        for node, (code, stdout, stderr, _) in enumerate(results):
            self.assertNotEqual(code, 0, f"node {node}")
            self.assertIn("is one folder shared by several nodes", stderr)
            self.assertNotIn("'loss'", stdout)
        # Ranks started by hand with LOCAL_RANK and no LOCAL_WORLD_SIZE (which then defaults to
        # the world size): two writers all the same, and the same refusal.
        port, procs = free_port(), []
        for rank in range(2):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port), LOOM_STORE_SECRET=SECRET, OMP_NUM_THREADS="1")
            env.pop("LOCAL_WORLD_SIZE", None)
            procs.append(subprocess.Popen([LOOM, *self.train_args(self.out("shared-by-hand"), "--save_on_each_node")],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for rank, p in enumerate(procs):
            stdout, stderr = p.communicate(timeout=120)
            self.assertNotEqual(p.returncode, 0, f"rank {rank}")
            self.assertIn("is one folder shared by several nodes", stderr)

    def test_data_of_one_length_and_other_bytes_is_refused(self):
        # Each node's train.bin on its own disk, of one length: the example counts agree, the
        # bytes do not (one token changed). Every rank stops before a step, naming the file.
        data = os.path.join(self.out("data"), "data", "train.bin")
        seeds = []
        for node in range(2):
            seeds.append(self.out(f"data-seed{node}"))
            os.makedirs(os.path.join(seeds[-1], "data"))
            shutil.copyfile(self.tokens, os.path.join(seeds[-1], "data", "train.bin"))
        with open(os.path.join(seeds[1], "data", "train.bin"), "r+b") as f:
            f.seek(-2, os.SEEK_END)
            token = f.read(2)
            f.seek(-2, os.SEEK_END)
            f.write(bytes([token[0] ^ 1, token[1]]))
        self.tokens = data
        try:
            results = self.nodes("data", "--overwrite_output_dir", seed=seeds)
        finally:
            del self.tokens
        size = os.path.getsize(os.path.join(seeds[0], "data", "train.bin"))
        # Each node's checksum is what sha256sum prints for its copy.
        sums = []
        for seed in seeds:
            with open(os.path.join(seed, "data", "train.bin"), "rb") as f:
                sums.append(hashlib.sha256(f.read()).hexdigest())
        self.assert_stopped(results, rf"rank 1 differs from rank 0: --train_file {data} holds other bytes than "
                            rf"rank 0's: checksum {sums[1]} \(SHA-256 of {size} bytes in 1 file\) \(rank 0: "
                            rf"{sums[0]} \(SHA-256 of {size} bytes in 1 file\)\): every node needs the same copy "
                            rf"of the file$", before_a_step=True)
        # The same bytes on both disks train as before.
        shutil.copyfile(os.path.join(seeds[0], "data", "train.bin"), os.path.join(seeds[1], "data", "train.bin"))
        self.tokens = data
        try:
            self.assert_ran(self.nodes("data", "--overwrite_output_dir", seed=seeds))
        finally:
            del self.tokens

    def test_log_on_each_node_decides_node_1s_level(self):
        # HF's should_log: with log_on_each_node (its default) node 1's local rank 0 logs at
        # log_level (info here: passive), without it at log_level_replica (warning).
        line = "[rank 1] loom: peak resident memory, rank 1"
        for flag, shown in ((None, True), ("true", True), ("false", False)):
            extra = ["--log_on_each_node", flag] if flag else []
            results = self.nodes(f"log-{flag}", "--overwrite_output_dir", *extra, verbose="0")
            self.assert_ran(results)
            self.assertIn("[rank 0] loom: peak resident memory, rank 0", results[0][1])
            if shown:
                self.assertIn(line, results[1][1], flag)
            else:
                self.assertNotIn("[rank 1] loom:", results[1][1], flag)
            # HF's PrinterCallback prints the log dicts where state.is_local_process_zero, which
            # log_on_each_node does not change: each node's console shows the same dicts.
            # The loss dicts are the same numbers (the loss is every rank's mean); the last dict's
            # train_runtime is each node's own clock, as in HF.
            dicts = [self.loss_dicts(r[1], node) for node, r in enumerate(results)]
            self.assertEqual(len(dicts[0]), STEPS, flag)
            self.assertEqual(dicts[1], dicts[0], flag)
            self.assertIn("[rank 1] {'train_runtime': ", results[1][1], flag)

    def test_only_the_local_main_process_prints_the_log_dicts(self):
        # Two ranks on one node: local rank 1 prints none (HF's is_local_process_zero).
        out = self.out("local-ranks")
        code, stdout, stderr = run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(),
                                   *self.train_args(out, "--save_strategy", "no"), check=False)
        self.assertEqual(code, 0, stderr)
        self.assertEqual(len(self.loss_dicts(stdout, 0)), STEPS)
        self.assertEqual(self.loss_dicts(stdout, 1), [])
        self.assertNotIn("[rank 1] {", stdout)

    def loss_dicts(self, stdout, rank):
        prefix = f"[rank {rank}] {{'loss': "
        return [line[len(prefix):] for line in stdout.splitlines() if line.startswith(prefix)]


if __name__ == "__main__":
    unittest.main(verbosity=2)
