"""The progress bar as a terminal shows it: `loom train` (and `loom launch`) on a pseudo-terminal of
40, 80 and 120 columns, read back byte by byte; and plain lines when stdout is not a terminal."""
import fcntl
import os
import pty
import re
import struct
import termios
import unittest

from loomtest import LOOM, LoomTestCase, free_port, loom

ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def set_width(fd, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))


def run_on_pty(args, cols, resize_to=None):
    """Run LOOM ARGS with stdout, stderr on a pty `cols` wide; return the bytes it wrote. With
    resize_to, the pty is resized once the first bar is read: the run cannot end before that,
    since it blocks on a full pty until we read on."""
    env = dict(os.environ)
    for name in ("COLUMNS", "LINES", "LOOM_PROGRESS_TTY", "LOOM_PROGRESS_INDENT"):
        env.pop(name, None)
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execve(LOOM, [LOOM, *args], env)
        finally:
            os._exit(127)
    set_width(fd, cols)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the pty
            break
        if not chunk:
            break
        out += chunk
        if resize_to and b"it/s" in out:
            set_width(fd, resize_to)
            resize_to = None
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out.decode(errors="replace")
    return out.decode()


def screen_lines(text):
    """What a terminal keeps: each '\\n'-ended line as its last '\\r'-separated redraw, plus every
    redraw (segment) seen on the way, both with escapes removed."""
    text = text.replace("\r\n", "\n")
    lines, segments = [], []
    for line in text.split("\n"):
        parts = [ESCAPE.sub("", p) for p in line.split("\r")]
        segments += parts
        kept = [p for p in parts if p]
        lines.append(kept[-1] if kept else "")
    return lines, segments


class ProgressTest(LoomTestCase):
    def train(self, name, *extra, steps=300):
        return self.train_args(self.out(name), "--validation_file", os.path.join(self.data, "validation.bin"),
                               "--max_steps", str(steps), "--logging_steps", "100", "--evaluation_strategy", "steps",
                               "--eval_steps", "150", "--progress.refresh_seconds", "0", *extra)

    def args(self, name, **kw):
        args = self.train(name, **kw)
        args.remove("--disable_tqdm")
        return args

    def check_bar(self, text, cols, steps=300):
        lines, segments = screen_lines(text)
        bars = [s for s in segments if "it/s" in s or "s/it" in s]
        for s in bars:  # a terminal wraps a redraw that reaches the last column
            self.assertLess(len(s), cols, f"{s!r} does not fit {cols} columns")
        self.assertGreater(len(bars), 10)
        # The bar never leaves a line behind: only the finished bar ends with a newline.
        finished = [line for line in lines if "it/s" in line or "s/it" in line]
        self.assertEqual(len(finished), 1, finished)
        self.assertRegex(finished[0], rf"\b{steps}/{steps}\b")
        self.assertTrue(any(s.startswith("Eval") for s in bars), "no evaluation bar")
        logged = [line for line in lines if line.startswith("{'loss'")]
        self.assertEqual(len(logged), steps // 100)
        return bars, lines

    def test_bar_at_40_80_120_columns(self):
        for cols in (40, 80, 120):
            with self.subTest(cols=cols):
                bars, lines = self.check_bar(run_on_pty(self.args(f"w{cols}"), cols), cols)
                if cols == 40:
                    continue  # room for the numbers only
                train_bars = [b for b in bars if not b.startswith("Eval")]
                self.assertIn("|", train_bars[0])
                # Before the first log there is no loss to show (never a made-up 0); after it, the
                # logged one, as the log line has it.
                first_log = next(i for i, b in enumerate(train_bars) if re.search(r"\b10[0-9]/300\b", b))
                self.assertNotIn("loss=", " ".join(train_bars[:first_log - 1]))
                if cols == 120:
                    loss = float(re.search(r"\{'loss': ([0-9.e+-]+)", "\n".join(lines)).group(1))
                    shown = re.search(r"loss=([0-9.e+-]+)", train_bars[first_log + 1]).group(1)
                    self.assertAlmostEqual(float(shown), loss, delta=abs(loss) * 1e-3)
                    self.assertIn("lr=", train_bars[first_log + 1])

    def test_bar_follows_a_resize(self):
        text = run_on_pty(self.args("resize", steps=3000), 120, resize_to=40)
        _, segments = screen_lines(text)
        bars = [s for s in segments if "it/s" in s or "s/it" in s]
        self.assertGreater(len(bars[0]), 40)
        self.assertLess(len(bars[-1]), 40, bars[-1])

    def test_no_terminal_plain_lines(self):
        _, out, _ = loom(*self.args("plain"))
        self.assertNotIn("\r", out)
        self.assertNotIn("\x1b", out)
        self.assertEqual(len(re.findall(r"(?m)^\{'loss'", out)), 3)

    def test_launch_shows_rank_0_bar_on_the_launchers_terminal(self):
        port = str(free_port())
        text = run_on_pty(["launch", "--nproc_per_node", "2", "--master_port", port, *self.args("launch")], 80)
        lines, segments = screen_lines(text)
        bars = [s for s in segments if "it/s" in s]
        for s in bars:
            self.assertLess(len(s), 80, f"{s!r} does not fit 80 columns")
        self.assertTrue(bars, text)
        self.assertTrue(all(b.startswith("[rank 0] ") for b in bars), bars)
        finished = [line for line in lines if "it/s" in line]
        self.assertEqual(len(finished), 1, finished)


if __name__ == "__main__":
    unittest.main()
