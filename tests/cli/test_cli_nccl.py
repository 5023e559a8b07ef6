"""--ddp_backend as a user meets it (docs/gpu.md#nccl): nccl on a CPU run is refused in one
line saying why; on a GPU (fake_gpu.so stands in for one) nccl is accepted and is the default
of a multi-process run, and gloo stays selectable there. No real GPU or NCCL is needed: where
the nccl plugin cannot run, the refusal must be one line that names it."""
import os
import unittest

from loomtest import BUILD, LOOM, LoomTestCase, free_port, run, write_tokens

FAKE_GPU = os.path.join(os.environ.get("LOOM_FIXTURE_DIR", os.path.join(BUILD, "tests", "backend_fixtures")),
                        "fake_gpu.so")
NANO = ["--model", "gpt2", "--gpt2.n_layer", "1", "--gpt2.n_head", "2", "--gpt2.n_embd", "32",
        "--gpt2.vocab_size", "256", "--gpt2.n_positions", "32", "--block_size", "16"]


def error_lines(stderr):
    return [l for l in stderr.splitlines() if "error" in l]


class NcclBackendTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 4000, 256, 7)

    def gpt2_args(self, name, *extra):
        return ["train", "--output_dir", self.out(name), "--overwrite_output_dir", "--disable_tqdm",
                "--train_file", self.tokens, "--per_device_train_batch_size", "2", "--max_steps", "2",
                "--save_strategy", "no", "--ddp_timeout", "30", *NANO, *extra]

    def test_nccl_on_the_cpu_is_refused_in_one_line(self):
        for extra in ([], ["--no_cuda"]):
            code, _, err = run(LOOM, *self.train_args(self.out("cpu"), "--max_steps", "1", "--ddp_backend", "nccl",
                                                      *extra), check=False)
            self.assertNotEqual(code, 0)
            self.assertEqual(len(error_lines(err)), 1, err)
            self.assertIn("--ddp_backend nccl: NCCL moves data between GPU memory and this run is on the CPU", err)
            self.assertIn("use --ddp_backend gloo", err)

    def test_gloo_on_the_cpu_still_trains(self):
        run(LOOM, *self.train_args(self.out("gloo1"), "--max_steps", "1", "--ddp_backend", "gloo"))

    @unittest.skipUnless(os.path.exists(FAKE_GPU), "fake_gpu.so not built")
    def test_nccl_on_a_gpu_is_accepted(self):
        # One rank on the fake GPU: the trainer hands the run to the nccl plugin, which cannot
        # work here (not built, no NCCL, or no driver) and says so in one line.
        code, _, err = run(LOOM, *self.gpt2_args("gpu1", "--plugin", FAKE_GPU, "--ddp_backend", "nccl"), check=False)
        self.assertNotIn("this run is on the CPU", err)
        if code != 0:
            self.assertEqual(len(error_lines(err)), 1, err)
            self.assertRegex(err, r"error: (plugin 'nccl'|.*(nccl|NCCL))")

    @unittest.skipUnless(os.path.exists(FAKE_GPU), "fake_gpu.so not built")
    def test_multi_process_gpu_run_defaults_to_nccl_and_gloo_stays_selectable(self):
        env = {"LOOM_FAKE_GPU_COUNT": "2"}
        launch = [LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port()]
        code, _, err = run(*launch, *self.gpt2_args("gpu2", "--plugin", FAKE_GPU), env=env, check=False)
        if code != 0:  # no GPU behind the fake: the nccl plugin refuses, by name
            self.assertRegex(err, r"\[rank \d\] loom: error: (plugin 'nccl'|.*(nccl|NCCL))")
        run(*launch, *self.gpt2_args("gpu2gloo", "--plugin", FAKE_GPU, "--ddp_backend", "gloo"), env=env)


if __name__ == "__main__":
    unittest.main()
