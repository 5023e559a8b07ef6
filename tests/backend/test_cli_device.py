"""The trainer on a device without a GPU: fake_gpu.so (host memory that checks every kernel
pointer) stands in for one. A run on it must match the CPU run step for step, keep every
buffer the model's kernels touch on the device, allocate nothing there after the start-up
report, and stage each batch with copies. The refusals (named backend that cannot run,
--no_cuda beside it, the real cuda backend without a driver) are one line each."""
import ctypes.util
import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cli"))
from loomtest import BUILD, LOOM, free_port, loom, write_tokens  # noqa: E402
from test_cli_seq2seq import write_pairs  # noqa: E402

FIXTURES = os.environ.get("LOOM_FIXTURE_DIR", os.path.join(BUILD, "tests", "backend_fixtures"))
FAKE = os.path.join(FIXTURES, "fake_gpu.so")
NANO = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64",
        "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64", "--block_size", "32"]
# A tiny T5 (picked from the pair file) with dropout and label smoothing: every kernel it uses,
# the dropout masks drawn inside mha included.
T5_TINY = ["--vocab_size", "16", "--d_model", "32", "--d_kv", "8", "--num_heads", "4", "--d_ff", "64",
           "--num_layers", "2", "--dropout_rate", "0.1", "--label_smoothing_factor", "0.1"]


def losses(stdout):
    return [float(x) for x in re.findall(r"'loss': ([0-9.e+-]+)", stdout)]


def read_report(path):
    with open(path) as f:
        return dict(line.split(" ", 1) for line in f.read().splitlines())


class DeviceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loomdevice-")
        cls.tokens = os.path.join(cls.tmp, "train.bin")
        write_tokens(cls.tokens, 8000, 512, 7)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def train(self, name, *extra, env=None, check=True):
        out = os.path.join(self.tmp, name)
        return loom("train", "--output_dir", out, "--overwrite_output_dir", "--disable_tqdm", "--train_file",
                    self.tokens, "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
                    "--max_steps", "6", "--logging_steps", "1", "--learning_rate", "3e-3", "--seed", "3",
                    "--save_strategy", "no", *NANO, *extra, env=env, check=check)

    def device_run(self, name, *extra):
        report = os.path.join(self.tmp, name + ".report")
        _, stdout, stderr = self.train(name, "--plugin", FAKE, *extra, env={"LOOM_FAKE_GPU_REPORT": report})
        return stdout, read_report(report)

    def check_placement(self, stdout, report, steps, micro):
        self.assertIn("loom: device     cuda:0 (Fake GPU 0, 8.0 GiB, sm_90, driver 13.0, runtime 13.0)", stdout)
        # Every pointer a kernel got was device memory.
        self.assertEqual(report["host_pointers"], "0", report["last_bad"])
        # Everything was allocated before step 1: the start-up figure is the device's peak, and
        # no allocation came after it.
        m = re.search(r"on the device +[0-9.]+ [KMG]?i?B +in (\d+) allocations \((\d+) B\)", stdout)
        self.assertIsNotNone(m, stdout)
        self.assertEqual(int(report["allocations"]), int(m.group(1)))
        self.assertEqual(int(report["peak"]), int(m.group(2)))
        # Two copies (tokens, labels) per micro-batch, none the other way.
        self.assertEqual(int(report["h2d"]), 2 * steps * micro)
        self.assertEqual(report["d2h"], "0")

    def test_fp32_on_the_device_matches_the_cpu(self):
        _, cpu, _ = self.train("cpu")
        stdout, report = self.device_run("fake")
        self.check_placement(stdout, report, 6, 2)
        self.assertEqual(len(losses(cpu)), 6)
        self.assertEqual(losses(stdout), losses(cpu))
        # The step ran on the device's table (ABI 1.5): one AdamW update and one norm pass per
        # step, over device memory only (host_pointers 0 above), with the CPU's bits.
        self.assertEqual(report["adam_updates"], "6")
        self.assertEqual(report["sum_squares"], "6")

    def test_bf16_on_the_device_matches_the_cpu(self):
        _, cpu, _ = self.train("cpu_bf16", "--bf16")
        stdout, report = self.device_run("fake_bf16", "--bf16")
        self.check_placement(stdout, report, 6, 2)
        self.assertEqual(losses(stdout), losses(cpu))
        # The f32 master weights are host memory: the step stays on the CPU's table.
        self.assertEqual(report["adam_updates"], "0")
        self.assertEqual(report["sum_squares"], "0")

    def test_neftune_on_the_device_matches_the_cpu(self):
        # NEFTune's noise is added by the model on the host over the device's (CPU-addressable)
        # activations, as embd_pdrop's dropout is: the same bits as the CPU run, f32 and bf16
        # parameters (wte's rows widened by the device's convert).
        for extra in ((), ("--bf16",)):
            tag = "".join(extra).strip("-")
            _, plain, _ = self.train("cpu_plain" + tag, *extra)
            _, cpu, _ = self.train("cpu_neftune" + tag, "--neftune_noise_alpha", "5", *extra)
            stdout, report = self.device_run("fake_neftune" + tag, "--neftune_noise_alpha", "5", *extra)
            self.check_placement(stdout, report, 6, 2)
            self.assertEqual(len(losses(cpu)), 6)
            self.assertEqual(losses(stdout), losses(cpu))
            self.assertNotEqual(losses(cpu)[0], losses(plain)[0])

    def test_t5_on_the_device_matches_the_cpu(self):
        pairs = os.path.join(self.tmp, "pairs.jsonl")
        write_pairs(pairs, 64, 5)

        def t5(name, *extra, env=None, check=True):
            code, stdout, stderr = loom("train", "--do_train", "--do_eval", "--output_dir",
                                        os.path.join(self.tmp, name), "--overwrite_output_dir", "--disable_tqdm",
                                        "--train_file", pairs, "--validation_file", pairs,
                                        "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2",
                                        "--max_steps", "4", "--logging_steps", "1", "--learning_rate", "3e-3",
                                        "--seed", "3", "--save_strategy", "no", *T5_TINY, *extra, env=env,
                                        check=check)
            return stdout if check else (code, stderr)

        def eval_loss(stdout):
            return re.findall(r"'eval_loss': ([0-9.e+-]+)", stdout)

        cpu = t5("t5_cpu")
        report = os.path.join(self.tmp, "t5_fake.report")
        stdout = t5("t5_fake", "--plugin", FAKE, env={"LOOM_FAKE_GPU_REPORT": report})
        report = read_report(report)
        self.assertIn("loom: device     cuda:0 (Fake GPU 0", stdout)
        # The padded batches, their masks and every activation were on the device.
        self.assertEqual(report["host_pointers"], "0", report["last_bad"])
        # Three copies (inputs, attention mask, labels) per batch (8 training micro-batches and
        # the 8 evaluation batches), none the other way.
        self.assertEqual(int(report["h2d"]), 3 * (4 * 2 + 8))
        self.assertEqual(report["d2h"], "0")
        self.assertEqual(len(losses(cpu)), 4)
        self.assertEqual(losses(stdout), losses(cpu))
        self.assertEqual(len(eval_loss(cpu)), 1)
        self.assertEqual(eval_loss(stdout), eval_loss(cpu))
        # Generation stays on the CPU: refused in one line, not a crash.
        code, err = t5("t5_generate", "--plugin", FAKE, "--predict_with_generate", check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("generation with t5 runs on the CPU only for now", err)
        self.assertEqual(len([l for l in err.splitlines() if "error" in l]), 1, err)
        code, _, err = self.train("determinism", "--plugin", FAKE, "--full_determinism", check=False)
        self.assertEqual(code, 2, err)
        self.assertIn("--full_determinism on a GPU", err)
        self.assertEqual(len([l for l in err.splitlines() if "error" in l]), 1, err)

    def offload_pair(self, world, *extra):
        """zero2 on the fake GPU without and with cpu_offload: stdout, each rank's report."""
        runs = {}
        for name, more in (("plain", []), ("offload", ["--zero2.cpu_offload", "true"])):
            tag = f"z2-{name}-{world}"
            out = os.path.join(self.tmp, tag)
            report = os.path.join(self.tmp, tag + ".%d.report")
            args = ["train", "--output_dir", out, "--overwrite_output_dir", "--disable_tqdm", "--train_file",
                    self.tokens, "--per_device_train_batch_size", str(4 // world), "--gradient_accumulation_steps", "2",
                    "--max_steps", "6", "--logging_steps", "1", "--learning_rate", "3e-3", "--seed", "3",
                    "--save_strategy", "no", "--ddp_timeout", "30", *NANO, "--plugin", FAKE, "--plugin", "zero2",
                    *extra, *more]
            env = {"LOOM_FAKE_GPU_REPORT": report, "LOOM_FAKE_GPU_COUNT": str(world)}
            if world > 1:
                _, stdout, _ = loom("launch", "--nproc_per_node", str(world), "--master_port", str(free_port()), LOOM,
                                    *args, env=env)
            else:
                _, stdout, _ = loom(*args, env=env)
            runs[name] = (stdout, [read_report(report.replace("%d", str(r))) for r in range(world)])
        return runs

    def check_offload(self, world, param_bytes, *extra):
        runs = self.offload_pair(world, *extra)
        plain, offload = runs["plain"], runs["offload"]
        self.assertEqual(losses(offload[0]), losses(plain[0]))
        self.assertEqual(len(losses(offload[0])), 6)
        for rank in range(world):
            line = next(l for l in offload[0].splitlines() if f"memory budget, rank {rank} of {world}" in l)
            b = {k.strip(): int(v) for k, v in re.findall(r"([a-z ]+) (\d+) B", line)}
            psi = int(re.search(r"\((\d+) parameters", line).group(1))
            even = -(-psi // world)
            p = -(-even // 16384) * 16384
            mine = max(0, min(p, psi - rank * p))
            # The device holds the weights and the gradient partition: 2 psi + 2 psi / N in 16 bit.
            self.assertEqual(b["device model states"], param_bytes * psi + param_bytes * p)
            self.assertEqual(b["host model states"], 12 * mine)
            r_plain, r_off = plain[1][rank], offload[1][rank]
            for report in (r_plain, r_off):
                self.assertEqual(report["host_pointers"], "0", report["last_bad"])
            # The device's own count: offload took exactly Adam's two f32 moments off it (the
            # master weights never were on it), and nothing else moved.
            self.assertEqual(int(r_plain["peak"]) - int(r_off["peak"]), 8 * mine)
            # The pinned memory: the host copies of the partition's parameters and gradients.
            self.assertEqual(r_plain["pinned_peak"], "0")
            self.assertEqual(int(r_off["pinned_peak"]), 2 * param_bytes * mine)
            # Copies: batches (2 per micro-batch) and one update per step to the device; the
            # initial partition and at least one gradient piece per step from it.
            self.assertEqual(int(r_plain["h2d"]), 2 * 6 * 2)
            self.assertEqual(r_plain["d2h"], "0")
            self.assertEqual(int(r_off["h2d"]), 2 * 6 * 2 + 6)
            self.assertGreaterEqual(int(r_off["d2h"]), 1 + 6)
            # Offload's copies (every d2h, and the updates) ran on a stream of their own, each
            # ordered after the compute stream by an event; the batches stay on the compute one.
            self.assertEqual(int(r_off["stream_copies"]), int(r_off["d2h"]) + 6)
            self.assertEqual(r_off["stream_waits"], r_off["stream_copies"])
            self.assertEqual(r_plain["stream_copies"], "0")
        self.assertIn("device states", offload[0])
        self.assertIn("host total", offload[0])
        return plain, offload

    def test_offload_keeps_master_and_optimizer_states_off_the_device(self):
        self.check_offload(1, 2, "--bf16")

    def test_offload_on_two_fake_gpus(self):
        # Gloo between the fake GPUs: nccl, the default on GPUs, needs a real driver.
        self.check_offload(2, 4, "--ddp_backend", "gloo")

    def test_no_cuda_runs_on_the_cpu(self):
        _, stdout, _ = self.train("no_cuda", "--no_cuda")
        self.assertIn("loom: device     cpu", stdout)

    def test_refusals_are_one_line(self):
        code, _, err = self.train("both", "--plugin", FAKE, "--no_cuda", check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("--plugin fake_gpu names a GPU backend but --no_cuda/--use_cpu asks for the CPU", err)
        code, _, err = self.train("none", "--plugin", FAKE, env={"LOOM_FAKE_GPU_COUNT": "0"}, check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("--plugin fake_gpu cannot run here: fake_gpu: no GPU visible (LOOM_FAKE_GPU_COUNT=0)", err)
        self.assertEqual(len([l for l in err.splitlines() if "error" in l]), 1, err)

    def test_full_determinism_on_the_cpu(self):
        # What a CPU run always is: the same model, bit for bit, from two runs.
        models = []
        for name in ("det-a", "det-b"):
            self.train(name, "--full_determinism", "--save_strategy", "steps", "--save_steps", "6")
            with open(os.path.join(self.tmp, name, "model.safetensors"), "rb") as f:
                models.append(f.read())
        self.assertEqual(models[0], models[1])

    def test_a_model_larger_than_the_device_is_refused_before_allocating(self):
        # nano: 2*64*64*12 + 512*64 + 64*64 + ... parameters; f32 parameters + gradients alone
        # are over 1 MiB, and the fake reports a 1 MiB device.
        code, _, err = self.train("small_device", "--plugin", FAKE, env={"LOOM_FAKE_GPU_MEMORY_MIB": "1"},
                                  check=False)
        self.assertNotEqual(code, 0)
        errors = [l for l in err.splitlines() if "error" in l]
        self.assertEqual(len(errors), 1, err)
        self.assertRegex(errors[0], r"rank 0: the model \(\d+ parameters\) needs at least [0-9.]+ MiB of device "
                                    r"memory for parameters, gradients and master weights, and cuda:0 \(Fake GPU 0")
        self.assertIn("MiB free", errors[0])
        # With room it trains (the default 8 GiB), as the other tests show.

    @unittest.skipUnless(os.environ.get("LOOM_HAVE_CUDA") == "ON", "the cuda backend was not built")
    def test_cuda_without_a_driver(self):
        if ctypes.util.find_library("cuda") and os.path.exists("/dev/nvidiactl"):
            self.skipTest("this machine has an NVIDIA driver")
        code, _, err = self.train("cuda", "--plugin", "cuda", check=False)
        self.assertNotEqual(code, 0)
        self.assertRegex(err, r"--plugin cuda cannot run here: cuda: (no NVIDIA driver|no GPU visible)")
        # Not named: the same machine trains on the CPU.
        _, stdout, _ = self.train("auto")
        self.assertIn("loom: device     cpu", stdout)


if __name__ == "__main__":
    unittest.main()
