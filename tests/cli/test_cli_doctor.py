"""`loom doctor` as a user runs it: on this machine (no GPU: not a problem), and against
installations built in a temporary folder to hold each finding to what was planted there: a
toolkit whose host_config.h refuses this g++, a file in the plugin folder that is no plugin, a
backend that reports two GPUs (fake_gpu.so), a kernel driver without its user-space library."""
import ctypes
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest

from loomtest import BUILD, loom

FIXTURES = os.path.join(BUILD, "tests", "backend_fixtures")


def gcc_major():
    try:
        out = subprocess.run(["g++", "-dumpfullversion"], capture_output=True, text=True).stdout
        return int(out.split(".")[0])
    except (OSError, ValueError):
        return 0


class DoctorTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="loomdoctor-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fake_toolkit(self, version, max_gcc):
        root = os.path.join(self.tmp, "cuda-fake")
        os.makedirs(os.path.join(root, "include", "crt"))
        os.makedirs(os.path.join(root, "bin"))
        with open(os.path.join(root, "include", "cuda_runtime_api.h"), "w") as f:
            f.write(f"#define CUDART_VERSION {version}\n")
        with open(os.path.join(root, "include", "crt", "host_config.h"), "w") as f:
            f.write(f"#if __GNUC__ > {max_gcc}\n#error -- unsupported GNU version!\n#endif\n")
        nvcc = os.path.join(root, "bin", "nvcc")
        with open(nvcc, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(nvcc, os.stat(nvcc).st_mode | stat.S_IXUSR)
        return root

    def test_this_machine(self):
        code, out, _ = loom("doctor", check=False)
        self.assertEqual(code, 0, out)
        self.assertTrue(out.rstrip().endswith("no problems found"), out)
        for section in ("CUDA toolkits", "host compiler for nvcc:", "NVIDIA driver", "CUDA libraries", "plugins",
                        "GPUs"):
            self.assertIn(section, out)
        # Every plugin `loom plugins` lists loads, and the doctor counts the same number.
        _, listing, _ = loom("plugins")
        listed = int(re.search(r"^(\d+) plugins", listing, re.M).group(1))
        self.assertEqual(int(re.search(r"^  (\d+) plugins load$", out, re.M).group(1)), listed)

    def test_host_compiler_newer_than_the_toolkit(self):
        gcc = gcc_major()
        if gcc < 6:
            self.skipTest("needs g++ 6 or newer on PATH")
        root = self.fake_toolkit(12040, 5)
        env = {"PATH": os.path.join(root, "bin") + os.pathsep + os.environ["PATH"], "CUDA_HOME": "", "CUDA_PATH": "",
               "CUDACXX": ""}
        code, out, _ = loom("doctor", env=env, check=False)
        self.assertEqual(code, 1, out)
        real = os.path.realpath(root)
        self.assertRegex(out, rf"12\.4\s+{re.escape(real)} \(found as nvcc on PATH\)  <- a CUDA build uses this one")
        self.assertRegex(out, rf"PROBLEM g\+\+ {gcc}\.[0-9.]* is newer than CUDA 12\.4 supports \(up to gcc 5")
        self.assertIn("fix: install g++-5 (or older) and configure with -DCMAKE_CUDA_HOST_COMPILER=g++-5", out)
        self.assertIn("1 problem found", out)

    def test_a_file_that_is_no_plugin(self):
        folder = os.path.join(self.tmp, "plugins")
        os.makedirs(folder)
        with open(os.path.join(folder, "bogus.so"), "w") as f:
            f.write("not an ELF file\n")
        code, out, _ = loom("doctor", "--plugin_dir", folder, check=False)
        self.assertEqual(code, 1, out)
        self.assertRegex(out, r"PROBLEM .*bogus\.so cannot be loaded: ")
        self.assertIn("fix: rebuild it against this loom's abi/ headers, or remove it from the plugin folder", out)

    def test_gpus_a_backend_reports(self):
        code, out, _ = loom("doctor", "--plugin_dir", FIXTURES, env={"LOOM_FAKE_GPU_COUNT": "2"}, check=False)
        self.assertEqual(code, 0, out)
        self.assertIn("  fake_gpu:0  Fake GPU 0, 8.0 GiB, sm_90", out)
        self.assertIn("  fake_gpu:1  Fake GPU 1, 8.0 GiB, sm_90", out)
        code, out, _ = loom("doctor", "--plugin_dir", FIXTURES, env={"LOOM_FAKE_GPU_COUNT": "0"}, check=False)
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"\n  fake_gpu: \S.*\n")
        self.assertNotIn("fake_gpu:0", out)

    def test_kernel_driver_without_its_library(self):
        try:
            ctypes.CDLL("libcuda.so.1")
            self.skipTest("libcuda.so.1 opens here")
        except OSError:
            pass
        module = os.path.join(self.tmp, "version")
        with open(module, "w") as f:
            f.write("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.00\n")
        code, out, _ = loom("doctor", env={"LOOM_DOCTOR_DRIVER_FILE": module}, check=False)
        self.assertEqual(code, 1, out)
        self.assertIn("PROBLEM the kernel driver is loaded but libcuda.so.1 cannot be opened", out)
        self.assertIn("fix: reinstall the NVIDIA driver's user-space libraries", out)

    def test_bad_argument(self):
        code, out, err = loom("doctor", "--verbose_please", check=False)
        self.assertEqual(code, 2)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("doctor: unexpected argument '--verbose_please'", err)


if __name__ == "__main__":
    unittest.main()
