"""`loom convert --from llmc`: an llm.c GPT-2 checkpoint to HF's model.safetensors + config.json.

Writes tiny llm.c files with struct (every parameter a distinct value, a padded vocabulary
Vp > V), runs the real `loom` binary, and reads its output back with a small reader written
here (struct + json, no safetensors or numpy): every tensor's name, shape and values, with
llm.c's [out, in] matrices transposed to Conv1D's [in, out] and wte's padding rows dropped.
Then the failures: a truncated file (exit 2, one error line naming the file), a bad magic,
bad arguments.

Run by ctest with LOOM_BIN set to the build's bin folder (or LOOM_BUILD_DIR).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

MAGIC = 20240326


def loom_binary():
    if os.environ.get("LOOM_BIN"):
        return os.path.join(os.environ["LOOM_BIN"], "loom")
    return os.path.join(os.environ.get("LOOM_BUILD_DIR", "build"), "bin", "loom")


def value(i):
    """Parameter i of the file: distinct for every i and exact in fp32 AND bf16 (at most 8
    significant bits: an odd integer 1..249 times a power of two, so no two i share a value),
    with alternating signs."""
    mantissa = 2 * (i % 125) + 1
    exponent = i // 125 - 12
    v = mantissa * 2.0 ** exponent
    return -v if (i // 3) % 2 else v


def bf16_bits(v):
    return struct.unpack("<I", struct.pack("<f", v))[0] >> 16


def llmc_layout(maxT, V, Vp, L, C):
    """(kind, element count) in the file's order."""
    return [("wte", Vp * C), ("wpe", maxT * C), ("ln1w", L * C), ("ln1b", L * C),
            ("qkvw", L * 3 * C * C), ("qkvb", L * 3 * C), ("attprojw", L * C * C), ("attprojb", L * C),
            ("ln2w", L * C), ("ln2b", L * C), ("fcw", L * 4 * C * C), ("fcb", L * 4 * C),
            ("fcprojw", L * C * 4 * C), ("fcprojb", L * C), ("lnfw", C), ("lnfb", C)]


def write_llmc(path, maxT, V, Vp, L, NH, C, version=3, truncate=0, magic=MAGIC):
    header = [0] * 256
    header[:8] = [magic, version, maxT, V, L, NH, C, Vp]
    n = sum(count for _, count in llmc_layout(maxT, V, Vp, L, C))
    values = [value(i) for i in range(n)]
    if version == 5:
        body = struct.pack("<%dH" % n, *[bf16_bits(v) for v in values])
    else:
        body = struct.pack("<%df" % n, *values)
    data = struct.pack("<256i", *header) + body
    with open(path, "wb") as f:
        f.write(data[:len(data) - truncate])
    return values


def expected_tensors(values, maxT, V, Vp, L, C):
    """HF name -> (shape, flat values), in GPT2LMHeadModel's order, computed independently of
    the converter: index arithmetic over llm.c's layout."""
    start, at = {}, 0
    for kind, count in llmc_layout(maxT, V, Vp, L, C):
        start[kind] = at
        at += count

    def take(kind, offset, count):
        b = start[kind] + offset
        return values[b:b + count]

    def transposed(kind, layer, out_dim, in_dim):
        # llm.c [out, in] at layer -> HF Conv1D [in, out]
        m = take(kind, layer * out_dim * in_dim, out_dim * in_dim)
        return [m[o * in_dim + i] for i in range(in_dim) for o in range(out_dim)]

    t = [("transformer.wte.weight", [V, C], take("wte", 0, V * C)),
         ("transformer.wpe.weight", [maxT, C], take("wpe", 0, maxT * C))]
    for l in range(L):
        p = "transformer.h.%d." % l
        t += [(p + "ln_1.weight", [C], take("ln1w", l * C, C)),
              (p + "ln_1.bias", [C], take("ln1b", l * C, C)),
              (p + "attn.c_attn.weight", [C, 3 * C], transposed("qkvw", l, 3 * C, C)),
              (p + "attn.c_attn.bias", [3 * C], take("qkvb", l * 3 * C, 3 * C)),
              (p + "attn.c_proj.weight", [C, C], transposed("attprojw", l, C, C)),
              (p + "attn.c_proj.bias", [C], take("attprojb", l * C, C)),
              (p + "ln_2.weight", [C], take("ln2w", l * C, C)),
              (p + "ln_2.bias", [C], take("ln2b", l * C, C)),
              (p + "mlp.c_fc.weight", [C, 4 * C], transposed("fcw", l, 4 * C, C)),
              (p + "mlp.c_fc.bias", [4 * C], take("fcb", l * 4 * C, 4 * C)),
              (p + "mlp.c_proj.weight", [4 * C, C], transposed("fcprojw", l, C, 4 * C)),
              (p + "mlp.c_proj.bias", [C], take("fcprojb", l * C, C))]
    t += [("transformer.ln_f.weight", [C], take("lnfw", 0, C)),
          ("transformer.ln_f.bias", [C], take("lnfb", 0, C))]
    return t


def read_safetensors(path):
    """(metadata, [(name, dtype, shape, values)] in data order), checking the format's rules."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    metadata = header.pop("__metadata__", {})
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    out, end = [], 0
    for name, e in entries:
        b, e_ = e["data_offsets"]
        assert b == end, "gap or overlap before %s" % name
        assert e["dtype"] == "F32", e["dtype"]
        count = 1
        for d in e["shape"]:
            count *= d
        assert e_ - b == 4 * count, name
        out.append((name, e["dtype"], e["shape"], list(struct.unpack_from("<%df" % count, data, base + b))))
        end = e_
    assert base + end == len(data), "trailing bytes"
    return metadata, out


class ConvertLlmc(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="loom-convert-")
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def run_loom(self, *args):
        return subprocess.run([loom_binary(), "convert", *args], capture_output=True, text=True, timeout=120)

    def check_conversion(self, version):
        maxT, V, Vp, L, NH, C = 5, 11, 16, 2, 2, 4
        src = os.path.join(self.dir, "model.bin")
        out = os.path.join(self.dir, "hf")
        values = write_llmc(src, maxT, V, Vp, L, NH, C, version=version)
        r = self.run_loom("--from", "llmc", "--input", src, "--output_dir", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("model.safetensors", r.stdout)

        metadata, tensors = read_safetensors(os.path.join(out, "model.safetensors"))
        self.assertEqual(metadata.get("format"), "pt")
        want = expected_tensors(values, maxT, V, Vp, L, C)
        self.assertEqual([t[0] for t in tensors], [w[0] for w in want])  # names, in HF's order
        for (name, _, shape, got), (wname, wshape, wvalues) in zip(tensors, want):
            self.assertEqual(shape, wshape, name)
            self.assertEqual(got, wvalues, name)  # exact: every value is representable
        # Spot checks written out by hand, independent of expected_tensors' arithmetic:
        # c_attn.weight[in=1, out=2] of layer 0 is llm.c qkvw[0][out=2][in=1].
        qkvw_start = Vp * C + maxT * C + 2 * L * C
        by_name = {t[0]: t[3] for t in tensors}
        self.assertEqual(by_name["transformer.h.0.attn.c_attn.weight"][1 * 3 * C + 2], value(qkvw_start + 2 * C + 1))
        # wte's last kept row is row V-1; the padding rows V..Vp-1 are gone.
        self.assertEqual(by_name["transformer.wte.weight"][-1], value(V * C - 1))
        self.assertEqual(len(by_name["transformer.wte.weight"]), V * C)

        with open(os.path.join(out, "config.json")) as f:
            config = json.load(f)
        self.assertEqual(config["model_type"], "gpt2")
        self.assertEqual(config["architectures"], ["GPT2LMHeadModel"])
        for key, v in [("vocab_size", V), ("n_positions", maxT), ("n_ctx", maxT), ("n_embd", C), ("n_layer", L),
                       ("n_head", NH), ("activation_function", "gelu_new"), ("layer_norm_epsilon", 1e-5),
                       ("resid_pdrop", 0.0), ("embd_pdrop", 0.0), ("attn_pdrop", 0.0),
                       ("tie_word_embeddings", True)]:
            self.assertEqual(config[key], v, key)

    def test_fp32(self):
        self.check_conversion(3)

    def test_bf16(self):
        self.check_conversion(5)

    def test_truncated(self):
        src = os.path.join(self.dir, "short.bin")
        write_llmc(src, 5, 11, 16, 2, 2, 4, truncate=4)
        r = self.run_loom("--from", "llmc", "--input", src, "--output_dir", os.path.join(self.dir, "out"))
        self.assertEqual(r.returncode, 2)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("loom: error: truncated: "), lines[0])
        self.assertIn(src, lines[0])
        self.assertFalse(os.path.exists(os.path.join(self.dir, "out", "model.safetensors")))
        # Shorter than the header itself.
        with open(src, "wb") as f:
            f.write(b"\0" * 100)
        r = self.run_loom("--from", "llmc", "--input", src, "--output_dir", os.path.join(self.dir, "out"))
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("truncated", r.stderr)

    def test_bad_inputs(self):
        src = os.path.join(self.dir, "bad.bin")
        write_llmc(src, 5, 11, 16, 2, 2, 4, magic=1234)
        r = self.run_loom("--from", "llmc", "--input", src, "--output_dir", self.dir)
        self.assertEqual(r.returncode, 2)
        self.assertIn("magic", r.stderr)
        write_llmc(src, 5, 11, 16, 2, 2, 4, version=4)
        r = self.run_loom("--from", "llmc", "--input", src, "--output_dir", self.dir)
        self.assertEqual(r.returncode, 2)
        self.assertIn("version 4", r.stderr)
        r = self.run_loom("--from", "llmc", "--input", os.path.join(self.dir, "missing.bin"), "--output_dir", self.dir)
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing.bin", r.stderr)
        r = self.run_loom("--from", "gguf", "--input", src, "--output_dir", self.dir)
        self.assertEqual(r.returncode, 2)
        r = self.run_loom("--input", src)
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage", r.stderr)


if __name__ == "__main__":
    sys.exit(unittest.main())
