"""Helpers for the end-to-end tests: run the built `loom`, make data, read outputs."""
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import unittest

BIN = os.environ.get("LOOM_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "bin"))
LOOM = os.path.join(BIN, "loom")
BUILD = os.environ.get("LOOM_BUILD_DIR", os.path.join(BIN, ".."))
SOURCE = os.environ.get("LOOM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def run(*args, check=True, env=None, timeout=240):
    """Run a program; return (returncode, stdout, stderr). An argument may be bytes (a name
    that is not UTF-8); a variable of `env` set to None is removed."""
    full_env = dict(os.environ)
    full_env.pop("LOOM_PLUGIN_PATH", None)
    # As --verbose: the tests read the full resolved configuration and the byte-exact budgets
    # from the output (test_cli_startup turns it off to see what a person sees).
    full_env.setdefault("LOOM_VERBOSE", "1")
    for name, value in (env or {}).items():
        if value is None:
            full_env.pop(name, None)
        else:
            full_env[name] = value
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    p = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p.returncode, p.stdout, p.stderr


def loom(*args, **kw):
    return run(LOOM, *args, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_token_file(path, tokens):
    """Token ids in llm.c's .bin layout: a 256-int header, then uint16 ids."""
    header = [20240520, 1, len(tokens)] + [0] * 253
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header) + struct.pack(f"<{len(tokens)}H", *tokens))


def lcg(state):
    """The tests' own pseudo-random generator (Knuth's MMIX constants): the next state."""
    return (state * 6364136223846793005 + 1442695040888963407) % 2**64


def write_tokens(path, n, vocab, seed):
    """n pseudo-random token ids below vocab, in llm.c's .bin layout (a generator of its own)."""
    state, tokens = seed, []
    for _ in range(n):
        state = lcg(state)
        tokens.append((state >> 33) % vocab)
    write_token_file(path, tokens)


def write_pairs(path, n, seed, longest=5):
    """n seq2seq pairs as JSON lines: a source of 1..longest tokens in 3..12 and its reversal as
    the target, each ending in eos (1); sources and targets differ in length from row to row.
    Returns the targets without eos."""
    r = random.Random(seed)
    rows = []
    with open(path, "w") as f:
        for _ in range(n):
            s = [r.randint(3, 12) for _ in range(r.randint(1, longest))]
            rows.append(s[::-1])
            f.write(json.dumps({"input_ids": s + [1], "labels": s[::-1] + [1]}) + "\n")
    return rows


def read_safetensors(path):
    """name -> (dtype, shape, list of floats); an independent reader (struct + json only)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        raw = blob[base + b:base + e]
        if t["dtype"] == "F32":
            values = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        elif t["dtype"] == "F16":
            values = list(struct.unpack(f"<{len(raw) // 2}e", raw))
        elif t["dtype"] == "BF16":  # the high half of an f32
            halves = struct.unpack(f"<{len(raw) // 2}H", raw)
            values = list(struct.unpack(f"<{len(halves)}f", struct.pack(f"<{len(halves)}I", *(h << 16 for h in halves))))
        else:
            raise AssertionError(f"unexpected dtype {t}")
        out[name] = (t["dtype"], t["shape"], values)
    return out


def gpt2_byte_chars():
    """GPT-2's byte alphabet (its bytes_to_unicode): byte -> the character its BPE vocab uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_byte_vocab(folder):
    """A GPT-2 byte-level BPE without merges: one token per byte (vocab.json + merges.txt)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({c: i for i, c in enumerate(gpt2_byte_chars().values())}, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return folder


class LoomTestCase(unittest.TestCase):
    data_kind = "spirals"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loomtest-")
        cls.data = os.path.join(cls.tmp, "data")
        if cls.data_kind == "spirals":
            loom("make-data", "--kind", "spirals", "--n_samples", "3000", "--n_features", "2", "--n_classes", "3",
                 "--seed", "3", "--output_dir", cls.data)
        else:
            loom("make-data", "--kind", "blobs", "--n_samples", "2000", "--n_features", "6", "--n_classes", "4",
                 "--seed", "5", "--output_dir", cls.data)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def out(self, name):
        return os.path.join(self.tmp, name)

    def train_args(self, out, *extra):
        return ["train", "--output_dir", out, "--overwrite_output_dir", "--train_file",
                os.path.join(self.data, "train.bin"), "--disable_tqdm", *extra]

    def assert_error(self, args, *expected, status=2, env=None):
        """A refusal as the project promises it: exit `status` (None: any failure) and one
        stderr line, "loom: error: ...", holding each of `expected`; returns that line."""
        code, stdout, stderr = loom(*args, check=False, env=env)
        if status is None:
            self.assertNotEqual(code, 0, f"{args}: exit 0\nstdout:{stdout}\nstderr:{stderr}")
        else:
            self.assertEqual(code, status, f"{args}: exit {code}\nstdout:{stdout}\nstderr:{stderr}")
        lines = [l for l in stderr.splitlines() if l.strip() and not l.startswith("loom: warning:")]
        self.assertEqual(len(lines), 1, f"{args}: want one error line, got:\n{stderr}")
        self.assertTrue(lines[0].startswith("loom: error: "), lines[0])
        for text in expected:
            self.assertIn(text, lines[0])
        return lines[0]

    def state(self, out):
        with open(os.path.join(out, "trainer_state.json")) as f:
            return json.load(f)


# A two-layer GPT-2 small enough for seconds-long multi-process runs on token data.
GPT2_NANO = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64",
             "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64", "--block_size", "32"]


class TokensTestCase(LoomTestCase):
    """A LoomTestCase with cls.tokens: 30000 tokens of a 512-token vocabulary, for GPT2_NANO."""
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 30000, 512, 23)
