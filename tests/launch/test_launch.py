"""`loom launch`: real processes started through the built `loom`, with tests/launch/fake_rank
standing in for a trainer rank (see fake_rank.c for its actions)."""
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BIN = os.environ.get("LOOM_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "bin"))
LOOM = os.path.join(BIN, "loom")
FAKE = os.environ.get("FAKE_RANK", os.path.join(BIN, "..", "tests", "launch", "fake_rank"))


def launch(*args, env=None, timeout=60):
    """Run `loom launch ARGS`; return (code, stdout, stderr, seconds)."""
    full_env = dict(os.environ)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "OMP_NUM_THREADS", "LOOM_STORE_SECRET", "CUDA_VISIBLE_DEVICES"):
        full_env.pop(name, None)
    # The GPUs the launcher believes this node has (test-only override of its /dev/nvidiaN
    # count): none unless a test says, so the CPU behaviour is checked on a GPU machine too.
    full_env["LOOM_TEST_LAUNCH_GPUS"] = "0"
    if env:
        full_env.update(env)
    start = time.monotonic()
    p = subprocess.run([LOOM, "launch", *[str(a) for a in args]], capture_output=True, text=True, env=full_env,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - start


def by_rank(text):
    """'[rank N] line' lines -> {N: [line, ...]}; any other line fails."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\[rank (\d+)\] (.*)", line)
        assert m, f"unprefixed line {line!r} in:\n{text}"
        out.setdefault(int(m.group(1)), []).append(m.group(2))
    return out


def pids(text):
    return [int(m) for m in re.findall(r"pid=(\d+)", text)]


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class LaunchTest(unittest.TestCase):
    def test_environment_of_three_ranks(self):
        code, out, err, _ = launch("--nproc_per_node", "3", FAKE, "env", env={"OMP_NUM_THREADS": "5"})
        self.assertEqual(code, 0, err)
        lines = by_rank(out)
        self.assertEqual(sorted(lines), [0, 1, 2])
        for r in range(3):
            self.assertEqual(lines[r], [f"RANK={r} WORLD_SIZE=3 LOCAL_RANK={r} LOCAL_WORLD_SIZE=3 "
                                        f"MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 OMP_NUM_THREADS=5"])
        self.assertNotIn("OMP_NUM_THREADS", err)  # the user's value is kept, silently

    def test_environment_of_a_second_node(self):
        code, out, err, _ = launch("--nproc_per_node=3", "--nnodes", "2", "--node_rank", "1", "--master_addr",
                                   "10.1.2.3", "--master-port", "4567", "--", FAKE, "env",
                                   env={"LOOM_STORE_SECRET": "s" * 32})
        self.assertEqual(code, 0, err)
        lines = by_rank(out)
        self.assertEqual(sorted(lines), [3, 4, 5])
        cores = len(os.sched_getaffinity(0))
        for r in range(3, 6):
            self.assertEqual(lines[r], [f"RANK={r} WORLD_SIZE=6 LOCAL_RANK={r - 3} LOCAL_WORLD_SIZE=3 "
                                        f"MASTER_ADDR=10.1.2.3 MASTER_PORT=4567 OMP_NUM_THREADS={max(1, cores // 3)}"])
        notes = [l for l in err.splitlines() if "OMP_NUM_THREADS" in l]
        self.assertEqual(len(notes), 1, err)  # said once, not once per rank

    def test_store_secret(self):
        # One node: a fresh random secret per job, the same for every rank of the job.
        show = ["sh", "-c", "echo secret=$LOOM_STORE_SECRET"]
        secrets = []
        for _ in range(2):
            code, out, err, _ = launch("--nproc_per_node", "2", *show)
            self.assertEqual(code, 0, err)
            lines = by_rank(out)
            self.assertEqual(lines[0], lines[1])
            self.assertRegex(lines[0][0], r"^secret=[0-9a-f]{64}$")
            secrets.append(lines[0][0])
        self.assertNotEqual(secrets[0], secrets[1])
        # A secret given is passed on as it is.
        code, out, err, _ = launch("--nproc_per_node", "2", *show, env={"LOOM_STORE_SECRET": "given" * 4})
        self.assertEqual(by_rank(out)[1], ["secret=" + "given" * 4])
        # Several nodes cannot agree on a random one: it must be given.
        line = self.assert_error("--nnodes", "2", "--node_rank", "0", FAKE, "env")
        self.assertIn("LOOM_STORE_SECRET", line)

    def test_deepspeed_spelling_and_defaults(self):
        code, out, err, _ = launch("--num_gpus", "2", FAKE, "env")
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(by_rank(out)), [0, 1])
        code, out, err, _ = launch(FAKE, "env")  # one rank by default, no OMP note
        self.assertEqual(code, 0, err)
        self.assertEqual(by_rank(out)[0][0].split()[:4],
                         ["RANK=0", "WORLD_SIZE=1", "LOCAL_RANK=0", "LOCAL_WORLD_SIZE=1"])
        self.assertEqual(err, "")

    def test_loom_subcommands_run_this_binary(self):
        for command in (["version"], ["loom", "version"]):
            code, out, err, _ = launch("--nproc_per_node", "2", *command)
            self.assertEqual(code, 0, err)
            lines = by_rank(out)
            self.assertEqual(sorted(lines), [0, 1])
            for r in (0, 1):
                self.assertTrue(lines[r][0].startswith("loom "), out)

    def test_path_lookup_and_streams(self):
        code, out, err, _ = launch("--nproc_per_node", "2", "sh", "-c", "echo out $RANK; echo err $RANK >&2")
        self.assertEqual(code, 0, err)
        self.assertEqual(by_rank(out), {0: ["out 0"], 1: ["out 1"]})
        err_lines = by_rank("\n".join(l for l in err.splitlines() if not l.startswith("loom launch:")))
        self.assertEqual(err_lines, {0: ["err 0"], 1: ["err 1"]})

    def test_lines_never_interleave(self):
        code, out, err, _ = launch("--nproc_per_node", "3", FAKE, "partial=40", "noeol=tail")
        self.assertEqual(code, 0, err)
        lines = by_rank(out)
        for r in range(3):
            want = [f"line {k} of rank {r}: begin-middle-end {r}" for k in range(40)] + ["tail"]
            self.assertEqual(lines[r], want)

    def test_carriage_returns(self):
        p = subprocess.run([LOOM, "launch", "--nproc_per_node", "2", FAKE, "cr", "out=done"], capture_output=True,
                           env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
        self.assertEqual(p.returncode, 0, p.stderr)
        # rank 0 redraws live, each segment prefixed; other ranks show the bar's last state only.
        out = p.stdout
        for line in (b"[rank 1] 100%\n", b"[rank 1] done\n"):
            self.assertEqual(out.count(line), 1, out)
            out = out.replace(line, b"")
        self.assertEqual(out, b"[rank 0] 10%\r[rank 0] 50%\r[rank 0] 100%\n[rank 0] done\n")

    def test_all_succeed(self):
        code, _, err, _ = launch("--nproc_per_node", "3", FAKE, "sleep=0.2", "@2:sleep=0.3")
        self.assertEqual(code, 0, err)

    def test_a_failing_rank_stops_the_others(self):
        code, out, err, seconds = launch("--nproc_per_node", "3", FAKE, "pid", "@1:sleep=0.3", "@1:exit=3",
                                         "sleep=60")
        self.assertEqual(code, 3, err)
        self.assertLess(seconds, 8)
        reports = [l for l in err.splitlines() if l.startswith("loom launch:") and "OMP_NUM_THREADS" not in l]
        self.assertEqual(reports, ["loom launch: rank 1 exited with status 3; stopping the other ranks"])
        self.assertEqual(len(pids(out)), 3)
        for pid in pids(out):
            self.assertTrue(gone(pid), pid)

    def test_a_rank_killed_by_a_signal(self):
        code, _, err, seconds = launch("--nproc_per_node", "2", FAKE, "@0:sleep=0.2", "@0:signal=6", "sleep=60")
        self.assertEqual(code, 128 + 6, err)
        self.assertLess(seconds, 8)
        self.assertIn("loom launch: rank 0 exited with signal SIGABRT; stopping the other ranks", err)

    def test_a_rank_ignoring_sigterm_gets_sigkill(self):
        code, out, err, seconds = launch("--nproc_per_node", "3", "--timeout", "1", FAKE, "@0:ignore-term", "pid",
                                         "@2:sleep=0.3", "@2:exit=4", "sleep=60")
        self.assertEqual(code, 4, err)
        self.assertGreaterEqual(seconds, 1.0)
        self.assertLess(seconds, 8)
        self.assertIn("rank 0 still running 1 s after being told to stop; sending SIGKILL", err)
        for pid in pids(out):
            self.assertTrue(gone(pid), pid)

    def test_exec_failure_in_a_rank_is_127(self):
        with tempfile.TemporaryDirectory() as tmp:
            bogus = os.path.join(tmp, "not-a-program")
            with open(bogus, "wb") as f:
                f.write(b"\x7fELF garbage")
            os.chmod(bogus, 0o755)
            code, out, err, seconds = launch("--nproc_per_node", "2", bogus)
        self.assertEqual(code, 127, err)
        self.assertIn("cannot run", err)
        self.assertIn("exited with status 127", err)

    def interrupt(self, sig, want, *extra):
        env = dict(os.environ)
        env.pop("OMP_NUM_THREADS", None)
        # A background job of a script starts with SIGINT ignored, and so would the launcher.
        p = subprocess.Popen([LOOM, "launch", "--nproc_per_node", "3", *extra, FAKE, "pid", "sleep=60"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        seen = []
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen += pids(line)
        self.assertEqual(len(seen), 3)
        start = time.monotonic()
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, want, err)
        self.assertLess(time.monotonic() - start, 8)
        for pid in seen:
            self.assertTrue(gone(pid), pid)
        return err

    def test_sigint_stops_everything(self):
        err = self.interrupt(signal.SIGINT, 130)
        self.assertIn("got SIGINT", err)

    def test_sigterm_stops_everything(self):
        self.interrupt(signal.SIGTERM, 143)

    def test_sigint_then_sigkill_for_a_stubborn_rank(self):
        env = dict(os.environ)
        p = subprocess.Popen([LOOM, "launch", "--nproc_per_node", "2", "--timeout", "0.5", FAKE, "@1:ignore-term",
                              "pid", "sleep=60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        seen = []
        while len(seen) < 2:
            line = p.stdout.readline()
            self.assertTrue(line)
            seen += pids(line)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 143, err)
        self.assertIn("rank 1 still running", err)
        for pid in seen:
            self.assertTrue(gone(pid), pid)

    def test_ctrl_c_at_a_terminal_reaches_each_rank_once(self):
        # The terminal signals the whole foreground process group, ranks included; the launcher
        # must not forward a second SIGINT. The ranks here survive SIGINT and exit 0 on their own.
        if "TSAN_OPTIONS" in os.environ:
            # Under ThreadSanitizer the fake ranks' handlers run when TSan's runtime next gets
            # control, not when the signal arrives: one run in many lost a rank's line. The test
            # runs uninstrumented in the plain ctest step.
            self.skipTest("signal handlers are deferred under ThreadSanitizer")
        try:
            import pty
            pid, fd = pty.fork()
        except OSError as e:
            self.skipTest(f"no pseudo-terminal: {e}")
        if pid == 0:
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.execv(LOOM, [LOOM, "launch", "--nproc_per_node", "2", FAKE, "count-int", "pid", "sleep=1.5",
                                "out=bye"])
            finally:
                os._exit(99)
        out = b""
        deadline = time.monotonic() + 20
        sent = False
        while time.monotonic() < deadline:
            if not sent and out.count(b"pid=") == 2:
                os.write(fd, b"\x03")
                sent = True
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        text = out.decode(errors="replace")
        self.assertTrue(sent, text)
        self.assertEqual(os.waitstatus_to_exitcode(status), 130, text)
        for r in (0, 1):
            self.assertEqual(text.count(f"[rank {r}] SIGINT"), 1, text)
            self.assertIn(f"[rank {r}] bye", text)

    def assert_error(self, *args, env=None):
        code, out, err, _ = launch(*args, env=env)
        self.assertEqual(code, 2, f"{args}: {err}")
        self.assertEqual(out, "")
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, f"{args}: want one line, got:\n{err}")
        self.assertTrue(lines[0].startswith("loom: error: launch: "), lines[0])
        return lines[0]

    def test_bad_options(self):
        self.assertIn("--bogus", self.assert_error("--bogus", "1", FAKE))
        self.assertIn("-x", self.assert_error("-x", FAKE))
        self.assertIn("'0'", self.assert_error("--nproc_per_node", "0", FAKE))
        self.assertIn("'two'", self.assert_error("--nproc_per_node", "two", FAKE))
        self.assertIn("'2x'", self.assert_error("--nnodes", "2x", FAKE))
        self.assertIn("--node_rank", self.assert_error("--nnodes", "2", "--node_rank", "2", FAKE))
        self.assertIn("'70000'", self.assert_error("--master_port", "70000", FAKE))
        self.assertIn("--timeout", self.assert_error("--timeout", "-1", FAKE))
        self.assertIn("needs a value", self.assert_error("--nproc_per_node"))
        self.assertIn("no command", self.assert_error("--nproc_per_node", "2"))
        self.assertIn("no command", self.assert_error("--nproc_per_node", "2", "--"))

    def test_missing_command(self):
        self.assertIn("'no-such-command-xyz' not found", self.assert_error("no-such-command-xyz"))
        self.assertIn("not found", self.assert_error("--", "/nonexistent/prog", "x"))
        with tempfile.TemporaryDirectory() as tmp:
            plain = os.path.join(tmp, "plain")
            open(plain, "w").close()
            self.assertIn("not an executable", self.assert_error(plain))

    def test_help(self):
        p = subprocess.run([LOOM, "launch", "--help"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn("--nproc_per_node", p.stdout)
        self.assertIn("LOOM_STORE_SECRET", p.stdout)
        # torchrun's grace before SIGKILL (its agent's PContext.close waits 30 s).
        self.assertIn("(default 30, as torchrun)", p.stdout)



def env_of(out):
    """{rank: {NAME: value}} from fake_rank's env lines."""
    return {r: dict(item.split("=", 1) for item in lines[0].split()) for r, lines in by_rank(out).items()}


class TorchrunSurfaceTest(unittest.TestCase):
    def test_master_port_0_picks_one_free_port_for_all_ranks(self):
        code, out, err, _ = launch("--nproc_per_node", "2", "--master_port", "0", FAKE, "env")
        self.assertEqual(code, 0, err)
        ports = {e["MASTER_PORT"] for e in env_of(out).values()}
        self.assertEqual(len(ports), 1)
        port = int(ports.pop())
        self.assertGreater(port, 0)
        self.assertIn(f"--master_port 0: using port {port}", err)
        import socket
        with socket.socket() as s:  # nobody holds it: the ranks' store can bind it
            s.bind(("127.0.0.1", port))

    def test_standalone_is_one_local_node_with_a_free_port(self):
        code, out, err, _ = launch("--standalone", "--nproc_per_node", "2", FAKE, "env")
        self.assertEqual(code, 0, err)
        envs = env_of(out)
        self.assertEqual(sorted(envs), [0, 1])
        self.assertEqual({e["MASTER_ADDR"] for e in envs.values()}, {"127.0.0.1"})
        self.assertEqual({e["WORLD_SIZE"] for e in envs.values()}, {"2"})
        self.assertNotEqual(envs[0]["MASTER_PORT"], "0")
        code, _, err, _ = launch("--standalone", "--nnodes", "2", FAKE, "env")
        self.assertEqual(code, 2)
        self.assertIn("--standalone", err)
        code, _, err, _ = launch("--standalone=yes", FAKE, "env")
        self.assertEqual(code, 2)

    def test_nproc_per_node_auto_is_the_cores_without_gpus(self):
        cores = len(os.sched_getaffinity(0))
        for word in ("auto", "cpu"):
            code, out, err, _ = launch("--nproc_per_node", word, "--master_port", "0", FAKE, "env")
            self.assertEqual(code, 0, err)
            self.assertEqual(sorted(env_of(out)), list(range(cores)))
            self.assertIn(f"--nproc_per_node {word}: {cores} ranks (cores)", err)
        code, _, err, _ = launch("--nproc_per_node", "gpu", FAKE, "env")
        self.assertEqual(code, 2)
        self.assertIn("no GPU", err)
        code, _, err, _ = launch("--nproc_per_node", "many", FAKE, "env")
        self.assertEqual(code, 2)
        self.assertIn("auto", err)

    def test_rdzv_endpoint_sets_address_and_port(self):
        for flag, value, addr, port in (("--rdzv-endpoint", "10.0.0.7:4321", "10.0.0.7", "4321"),
                                        ("--rdzv_endpoint", "node1", "node1", "29400"),
                                        ("--rdzv_endpoint", "[::1]:5000", "::1", "5000")):
            with self.subTest(flag=flag, value=value):
                code, out, err, _ = launch(flag, value, "--rdzv_backend", "c10d", "--rdzv_id", "job", FAKE, "env")
                self.assertEqual(code, 0, err)
                e = env_of(out)[0]
                self.assertEqual((e["MASTER_ADDR"], e["MASTER_PORT"]), (addr, port))
        for bad in (":80", "host:port", "host:70000", "[::1"):
            code, _, err, _ = launch("--rdzv_endpoint", bad, FAKE, "env")
            self.assertEqual(code, 2, bad)
            self.assertIn("--rdzv_endpoint", err)

    def test_master_port_0_needs_one_node(self):
        code, _, err, _ = launch("--nnodes", "2", "--master_port", "0", FAKE, "env")
        self.assertEqual(code, 2)
        self.assertIn("--master_port 0", err)


class GpuLaunchTest(unittest.TestCase):
    """DeepSpeed's launcher rules on a node whose GPU count is injected (LOOM_TEST_LAUNCH_GPUS)."""
    assert_error = LaunchTest.assert_error

    def gpu_ranks(self, gpus, *args, visible=None):
        env = {"LOOM_TEST_LAUNCH_GPUS": str(gpus)}
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        code, out, err, _ = launch(*args, FAKE, "gpu", env=env)
        self.assertEqual(code, 0, err)
        lines = by_rank(out)
        return [lines[r][0] for r in sorted(lines)], err

    def expect_gpus(self, lines, visible):
        n = len(visible.split(","))
        self.assertEqual(lines, [f"LOCAL_RANK={r} WORLD_SIZE={n} CUDA_VISIBLE_DEVICES={visible}" for r in range(n)])

    def test_gpus_default_to_every_visible_gpu(self):
        lines, err = self.gpu_ranks(4)
        self.expect_gpus(lines, "0,1,2,3")
        self.assertIn("4 ranks on GPUs 0,1,2,3", err)
        lines, _ = self.gpu_ranks(1)
        self.expect_gpus(lines, "0")

    def test_num_gpus_include_exclude(self):
        self.expect_gpus(self.gpu_ranks(4, "--num_gpus", "2")[0], "0,1")
        self.expect_gpus(self.gpu_ranks(4, "--include", "localhost:0,2")[0], "0,2")
        self.expect_gpus(self.gpu_ranks(4, "--include=localhost:3")[0], "3")
        self.expect_gpus(self.gpu_ranks(4, "--include", "localhost")[0], "0,1,2,3")
        self.expect_gpus(self.gpu_ranks(4, "--exclude", "localhost:1")[0], "0,2,3")
        self.expect_gpus(self.gpu_ranks(4, "--exclude", "localhost:0,3", "--num_gpus", "1")[0], "1")

    def test_cuda_visible_devices_is_respected(self):
        self.expect_gpus(self.gpu_ranks(4, visible="3,1")[0], "3,1")
        self.expect_gpus(self.gpu_ranks(4, "--include", "localhost:1", visible="3,1")[0], "1")
        self.expect_gpus(self.gpu_ranks(4, "--exclude", "localhost:3", visible="3,1,2")[0], "1,2")
        self.expect_gpus(self.gpu_ranks(4, "--num_gpus", "1", visible="2,0")[0], "2")
        line = self.assert_error("--include", "localhost:0", FAKE, "gpu",
                                 env={"LOOM_TEST_LAUNCH_GPUS": "4", "CUDA_VISIBLE_DEVICES": "3,1"})
        self.assertIn("GPU 0 is not visible (CUDA_VISIBLE_DEVICES=3,1)", line)

    def test_nproc_per_node_number_leaves_the_gpus_alone(self):
        lines, err = self.gpu_ranks(4, "--nproc_per_node", "2")
        self.assertEqual(lines, [f"LOCAL_RANK={r} WORLD_SIZE=2 CUDA_VISIBLE_DEVICES=-" for r in range(2)])
        self.assertNotIn("GPU", err)
        lines, _ = self.gpu_ranks(2, "--nproc_per_node", "gpu")
        self.expect_gpus(lines, "0,1")

    def test_without_a_gpu_num_gpus_is_ranks_on_the_cpu(self):
        lines, err = self.gpu_ranks(0, "--num_gpus", "3")
        self.assertEqual(lines, [f"LOCAL_RANK={r} WORLD_SIZE=3 CUDA_VISIBLE_DEVICES=-" for r in range(3)])
        lines, _ = self.gpu_ranks(0)
        self.assertEqual(lines, ["LOCAL_RANK=0 WORLD_SIZE=1 CUDA_VISIBLE_DEVICES=-"])

    def test_bad_gpu_specs(self):
        four = {"LOOM_TEST_LAUNCH_GPUS": "4"}
        cases = [
            (("--include", "localhost:0", "--exclude", "localhost:1"), "cannot be combined"),
            (("--include", "worker-7:0"), "unknown host 'worker-7'"),
            (("--include", "localhost:4"), "GPU 4 is out of range (this node has 4: 0..3)"),
            (("--include", "localhost:x"), "'x' is not a device index"),
            (("--include", "localhost:"), "no device index"),
            (("--exclude", "localhost"), "leaves no GPU"),
            (("--num_gpus", "5"), "--num_gpus 5: only 4 GPUs visible"),
            (("--include", "localhost:1,2", "--num_gpus", "3"), "only 2 GPUs left by --include/--exclude"),
            (("--nproc_per_node", "2", "--num_gpus", "2"), "both choose the ranks"),
        ]
        for args, message in cases:
            self.assertIn(message, self.assert_error(*args, FAKE, "gpu", env=four), args)
        self.assertIn("--include: no GPU on this node", self.assert_error("--include", "localhost:0", FAKE, "gpu"))


if __name__ == "__main__":
    unittest.main()
