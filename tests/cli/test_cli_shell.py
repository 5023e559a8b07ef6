"""The manual page and the bash completion: installed by `cmake --install`, the page renders
without a warning and names every command, the completion offers commands and each command's
own flags."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import BIN, BUILD, LOOM, SOURCE, run  # noqa: E402

PAGE = os.path.join(SOURCE, "tools", "man", "loom.1")
COMPLETION = os.path.join(SOURCE, "tools", "completion", "loom.bash")


def complete(*words):
    """COMPREPLY of _loom for the words typed so far (the last one being completed)."""
    script = (f"source {COMPLETION}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; _loom; "
              "printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = dict(os.environ, PATH=os.path.abspath(BIN) + os.pathsep + os.environ["PATH"])
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, check=True).stdout
    return out.split()


class ShellTest(unittest.TestCase):
    def test_page_renders_and_names_every_command(self):
        if not shutil.which("groff"):
            self.skipTest("groff is not installed")
        p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", PAGE], capture_output=True, text=True)
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        _, usage, _ = run(LOOM, "help")
        commands = re.findall(r"(?m)^  ([a-z-]+)\s", usage)
        self.assertGreater(len(commands), 8)
        with open(PAGE) as f:
            page = f.read()
        for command in commands:
            self.assertIn(f".B {command}\n", page, command)

    def test_completion_offers_commands_and_flags(self):
        self.assertEqual(complete("loom", "tr"), ["train"])
        self.assertIn("consolidate", complete("loom", "co"))
        self.assertEqual(complete("loom", "train", "--output_d"), ["--output_dir"])
        self.assertIn("--resume_from_checkpoint", complete("loom", "train", "--resume"))
        self.assertIn("--nproc_per_node", complete("loom", "launch", "--nproc"))

    def test_install_puts_them_where_man_and_bash_look(self):
        prefix = tempfile.mkdtemp(prefix="loom-install-")
        try:
            run("cmake", "--install", BUILD, "--prefix", prefix)
            self.assertTrue(os.path.isfile(os.path.join(prefix, "share", "man", "man1", "loom.1")))
            self.assertTrue(os.path.isfile(os.path.join(prefix, "share", "bash-completion", "completions", "loom")))
        finally:
            shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
