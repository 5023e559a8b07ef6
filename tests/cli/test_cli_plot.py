"""Curves: log_history.jsonl written as the run logs (intact after a SIGKILL), `loom plot` (a PNG
per metric, checked with an independent PNG reader, and an HTML page of inline SVG charts), and
`--report_to html` refreshing that page during a run."""
import html.parser
import json
import os
import shutil
import signal
import struct
import subprocess
import time
import unittest
import xml.etree.ElementTree as ET
import zlib

from loomtest import LOOM, LoomTestCase, loom

METRICS = {"loss", "eval_loss", "learning_rate", "grad_norm", "eval_accuracy"}


def read_png(path):
    """(width, height) after checking the signature, every chunk's CRC and that IDAT inflates to
    height rows of 1 + width * channels bytes."""
    with open(path, "rb") as f:
        blob = f.read()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, []
    while pos < len(blob):
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        kind, data = blob[pos + 4:pos + 8], blob[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", blob[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + data) == crc, f"bad CRC in {kind}"
        chunks.append((kind, data))
        pos += 12 + n
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    raw = zlib.decompress(b"".join(d for k, d in chunks if k == b"IDAT"))
    assert depth == 8 and len(raw) == height * (1 + width * channels), "pixel data of the wrong size"
    return width, height


class Charts(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.figures, self.svgs, self.stack = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append(attrs.get("data-metric"))
        if tag == "svg":
            self.svgs += 1
            assert self.stack and self.stack[-1] == "figure", "an svg outside a figure"
        self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):  # <meta/>, <polyline/>
        self.handle_starttag(tag, attrs)
        self.stack.pop()

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"</{tag}> does not close the open element"


def check_page(test, path, metrics):
    with open(path) as f:
        page = f.read()
    charts = Charts()
    charts.feed(page)
    test.assertEqual(sorted(charts.figures), sorted(metrics))
    test.assertEqual(charts.svgs, len(metrics))
    # Well-formed too (every SVG element closed), and nothing fetched from elsewhere.
    ET.fromstring(page.split("\n", 1)[1])
    test.assertNotIn("<script", page)
    test.assertNotIn("http://", page.replace('xmlns="http://www.w3.org/2000/svg"', ""))
    return page


class CurvesTest(LoomTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.run_dir = os.path.join(cls.tmp, "run")
        loom(*cls.train_args(cls, cls.run_dir, "--validation_file", os.path.join(cls.data, "validation.bin"),
                             "--max_steps", "200", "--logging_steps", "20", "--evaluation_strategy", "steps",
                             "--eval_steps", "100", "--report_to", "html"))

    def jsonl(self, run):
        with open(os.path.join(run, "log_history.jsonl")) as f:
            return [json.loads(line) for line in f]

    def test_jsonl_matches_trainer_state(self):
        entries = self.jsonl(self.run_dir)
        with open(os.path.join(self.run_dir, "trainer_state.json")) as f:
            history = json.load(f)["log_history"]
        self.assertGreaterEqual(len(entries), len(history))
        self.assertEqual(len([e for e in history if "loss" in e]), 200 // 20)
        self.assertGreaterEqual(len([e for e in history if "eval_loss" in e]), 2)
        for mine, reference in zip(entries, history):
            self.assertEqual(sorted(mine), sorted(reference))
            for key, value in reference.items():
                self.assertAlmostEqual(mine[key], value, delta=abs(value) * 1e-12, msg=key)

    def test_jsonl_survives_sigkill(self):
        out = self.out("killed")
        p = subprocess.Popen([LOOM, *self.train_args(out, "--max_steps", "100000", "--logging_steps", "5")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = os.path.join(out, "log_history.jsonl")
        try:
            for _ in range(600):
                if os.path.exists(path) and os.path.getsize(path) > 4000:
                    break
                time.sleep(0.05)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        with open(path, "rb") as f:
            blob = f.read()
        self.assertTrue(blob.endswith(b"\n"), "the last line was cut")
        entries = [json.loads(line) for line in blob.decode().splitlines()]
        self.assertGreater(len(entries), 10)
        self.assertEqual([e["step"] for e in entries], [5 * (i + 1) for i in range(len(entries))])
        self.assertTrue(all("loss" in e and "learning_rate" in e for e in entries))

    def test_plot_writes_a_png_per_metric_and_a_page(self):
        out = self.out("plots")
        _, stdout, _ = loom("plot", self.run_dir, "--output_dir", out, "--width", "640", "--height", "400")
        for metric in METRICS:
            path = os.path.join(out, f"curves_{metric}.png")
            self.assertIn(f"wrote {path}", stdout)
            self.assertEqual(read_png(path), (640, 400))
        self.assertIn(f"wrote {os.path.join(out, 'curves.html')}", stdout)
        check_page(self, os.path.join(out, "curves.html"), METRICS)

    def test_plot_overlays_runs(self):
        other = self.out("other")
        loom(*self.train_args(other, "--max_steps", "60", "--logging_steps", "20", "--learning_rate", "1e-3"))
        _, stdout, _ = loom("plot", self.run_dir, other, "--output_dir", self.out("both"))
        page = check_page(self, os.path.join(self.out("both"), "curves.html"), METRICS)
        self.assertIn(">other</text>", page)
        self.assertIn(">run</text>", page)
        self.assertEqual(read_png(os.path.join(self.out("both"), "curves_loss.png")), (800, 500))

    def test_report_to_html_refreshes_the_page(self):
        check_page(self, os.path.join(self.run_dir, "curves.html"), METRICS)

    @unittest.skipUnless(shutil.which("chromium"), "chromium is not installed (optional: apt-get install chromium)")
    def test_page_renders_in_headless_chromium(self):
        page = os.path.join(self.run_dir, "curves.html")
        p = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                            "file://" + os.path.abspath(page)], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertEqual(p.stdout.count("<svg"), len(METRICS))
        self.assertEqual(p.stdout.count("<polyline"), open(page).read().count("<polyline"))

    def test_plot_errors(self):
        code, _, stderr = loom("plot", self.out("nothing-here"), check=False)
        self.assertEqual(code, 2)
        self.assertEqual(len(stderr.strip().splitlines()), 1)
        self.assertIn("nothing-here", stderr)
        code, _, stderr = loom("plot", check=False)
        self.assertEqual(code, 2)
        code, _, stderr = loom("plot", self.run_dir, "--width", "5", check=False)
        self.assertEqual(code, 2)
        self.assertIn("--width", stderr)


if __name__ == "__main__":
    unittest.main()
