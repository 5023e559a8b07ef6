"""`loom tokenize` for text pairs (docs/seq2seq.md#tokenize): the character / whitespace vocabulary
built from the data and reused, truncation as T5Tokenizer's, the HF JSON-lines shapes, a
SentencePiece model held to Debian's spm_encode, every bad input named by file and line, and the
G2P example's data trained by the t5 model for a few steps."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from loomtest import SOURCE, loom, run

SPECIAL = ["<pad>", "</s>", "<unk>"]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


PAIRS = [{"source": "read", "target": "R EH1 D"}, {"source": "reads", "target": "R IY1 D Z"},
         {"source": "sea-café", "target": "S IY1 K AE0 F EY1"}, {"source": "a b", "target": "AH0"}]


class TokenizePairs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loomtest-s2sdata-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def fails(self, *args):
        code, stdout, stderr = loom("tokenize", *args, check=False)
        self.assertEqual(code, 2, stdout + stderr)
        lines = [l for l in stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, stderr)
        return lines[0]

    def test_char_vocabulary_built_then_reused(self):
        train = write_jsonl(self.path("g_train.jsonl"), PAIRS)
        dev = write_jsonl(self.path("g_dev.jsonl"), [{"source": "sear", "target": "S IH1 R"}])
        out = self.path("g_out")
        _, stdout, _ = loom("tokenize", "--train_file", train, "--validation_file", dev, "--output_dir", out,
                            "--char_vocab", "--target_split", "space")
        self.assertIn("wrote " + os.path.join(out, "char_vocab.json"), stdout)
        with open(os.path.join(out, "char_vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        self.assertEqual((vocab["source_split"], vocab["target_split"]), ("char", "space"))
        symbols = set()
        for row in PAIRS + [{"source": "sear", "target": "S IH1 R"}]:
            symbols |= set(row["source"]) | set(row["target"].split())
        # ids 0-2 are T5's specials; then every symbol of the data once, in byte order
        self.assertEqual(vocab["tokens"], SPECIAL + sorted(symbols, key=lambda s: s.encode("utf-8")))
        index = {t: i for i, t in enumerate(vocab["tokens"])}
        got = read_jsonl(os.path.join(out, "train.jsonl"))
        self.assertEqual(len(got), len(PAIRS))
        for row, pair in zip(got, PAIRS):
            self.assertEqual(row["input_ids"], [index[c] for c in pair["source"]] + [1])
            self.assertEqual(row["labels"], [index[p] for p in pair["target"].split()] + [1])
        self.assertEqual(read_jsonl(os.path.join(out, "validation.jsonl"))[0]["labels"],
                         [index["S"], index["IH1"], index["R"], 1])
        # the pair files are what `loom train` reads (docs/seq2seq.md#pair-format)
        self.assertIn("é", vocab["tokens"])
        # a second run reuses the file; data it does not cover is refused with the symbols
        test = write_jsonl(self.path("g_test.jsonl"), [{"source": "read", "target": "R EH1 D"},
                                                        {"source": "naïve", "target": "N AY0 IY1 V"},
                                                        {"source": "xa", "target": "AH0"}])
        message = self.fails("--test_file", test, "--output_dir", out, "--char_vocab")
        self.assertIn(test + ":2: not in the vocabulary " + os.path.join(out, "char_vocab.json"), message)
        for symbol in ('"n"', '"ï"', '"v"', '"N"', '"AY0"', '"V"', '"x"'):
            self.assertIn(symbol, message)
        self.assertNotIn('"IY1"', message)
        self.assertIn("(2 lines)", message)
        ok = write_jsonl(self.path("g_ok.jsonl"), [{"source": "sea", "target": "S IY1"}])
        _, stdout, _ = loom("tokenize", "--test_file", ok, "--output_dir", out, "--char_vocab")
        self.assertIn("reusing", stdout)
        self.assertEqual(read_jsonl(os.path.join(out, "test.jsonl")),
                         [{"input_ids": [index["s"], index["e"], index["a"], 1], "labels": [index["S"], index["IY1"], 1]}])
        message = self.fails("--test_file", ok, "--output_dir", out, "--char_vocab", "--target_split", "char")
        self.assertIn("char_vocab.json splits the target by whitespace", message)

    def test_truncation_prefix_and_translation_shape(self):
        rows = [{"translation": {"en": "abcdefgh", "ro": "xyzxyzxyz", "de": "q"}},
                {"translation": {"ro": "yx", "en": "ba"}}]
        train = write_jsonl(self.path("t_train.jsonl"), rows)
        dev = write_jsonl(self.path("t_dev.jsonl"), rows[:1])
        out = self.path("t_out")
        loom("tokenize", "--train_file", train, "--validation_file", dev, "--output_dir", out, "--char_vocab",
             "--source_lang", "en", "--target_lang", "ro", "--source_prefix", "en: ", "--max_source_length", "6",
             "--max_target_length", "4", "--val_max_target_length", "7")
        with open(os.path.join(out, "char_vocab.json"), encoding="utf-8") as f:
            index = {t: i for i, t in enumerate(json.load(f)["tokens"])}
        self.assertNotIn("q", index, "the other language is not read")
        enc = lambda s: [index[c] for c in s]
        got = read_jsonl(os.path.join(out, "train.jsonl"))
        # T5Tokenizer(truncation=True, max_length=m): the first m - 1 tokens, then </s>
        self.assertEqual(got[0], {"input_ids": enc("en: a") + [1], "labels": enc("xyz") + [1]})
        self.assertEqual(got[1], {"input_ids": enc("en: b") + [1], "labels": enc("yx") + [1]})
        self.assertEqual(read_jsonl(os.path.join(out, "validation.jsonl"))[0]["labels"], enc("xyzxyz") + [1])
        # truncation off: a side over its maximum is an error naming the line
        message = self.fails("--train_file", train, "--output_dir", self.path("t_out2"), "--char_vocab",
                             "--source_lang", "en", "--target_lang", "ro", "--max_source_length", "6",
                             "--truncation", "false")
        self.assertIn(train + ":1: the source is 9 tokens with </s>, longer than --max_source_length 6", message)

    def test_defaults_are_hf_run_translation(self):
        long = {"source": "s" * 1500, "target": "t" * 300}
        train = write_jsonl(self.path("d_train.jsonl"), [long])
        out = self.path("d_out")
        loom("tokenize", "--train_file", train, "--validation_file", train, "--output_dir", out, "--char_vocab")
        row = read_jsonl(os.path.join(out, "train.jsonl"))[0]
        self.assertEqual((len(row["input_ids"]), len(row["labels"])), (1024, 128))
        self.assertEqual(len(read_jsonl(os.path.join(out, "validation.jsonl"))[0]["labels"]), 128)

    def test_bad_input_names_file_and_line(self):
        good = json.dumps({"source": "ab", "target": "c"})
        cases = [
            ([good, '{"source": "ab"}'], [], ':2: no "target" in the pair'),
            ([good, '{"target": "ab"}'], [], ':2: no "source" in the pair'),
            ([good, '{"translation": {"en": "ab", "de": "c"}}'], ["--source_lang", "en", "--target_lang", "ro"],
             ':2: no "ro" in "translation" (--target_lang) (it has: en, de)'),
            (['{"translation": {"en": "ab", "ro": "c"}}'], ["--source_lang", "fr", "--target_lang", "ro"],
             ':1: no "fr" in "translation" (--source_lang)'),
            (['{"translation": {"en": "ab", "ro": "c"}}'], [], ':1: a "translation" pair needs --source_lang'),
            ([good, good, '{"source": "ab", "target": }'], [], ':3:28: malformed JSON'),
            ([good, '["ab", "c"]'], [], ":2: not a JSON object"),
            # What json.loads refuses and cJSON took: text after the object, a key given twice, an
            # escaped NUL (cJSON's C string ended there: "a\u0000b" became "a").
            ([good + ' {"x": 1}'], [], ":1: not a JSON object"),
            (['{"source": "ab", "target": "c", "target": "d"}'], [], ':1: key "target" given twice'),
            (['{"source": "a\\u0000b", "target": "c"}'], [], ":1:14: \\u0000 (a NUL character) in a text"),
            ([good, '{"source": "ab", "target": 3}'], [], ':2: "target" in the pair ("source" and "target") is a number'),
            (['{"input_ids": [3, 1], "labels": [4, 1]}'], [], ":1: already tokenized"),
            (['{"source": "a<unk>", "target": "<unk> c"}'], ["--target_split", "space"],
             ':1: the token "<unk>" is reserved'),
        ]
        for i, (lines, extra, expected) in enumerate(cases):
            path = write_jsonl(self.path("bad%d.jsonl" % i), lines)
            message = self.fails("--train_file", path, "--output_dir", self.path("bad_out%d" % i), "--char_vocab",
                                 *extra)
            self.assertIn(path + expected, message)
        # Bytes that are not UTF-8 became tokens, and char_vocab.json unreadable to json.load.
        for name, raw, expected in (("latin1.jsonl", b'{"source": "a\xe9b", "target": "c"}\n', ":1:14: a byte that is not UTF-8"),
                                    ("nul.jsonl", b'{"source": "ab", "target": "c"}\x00\n', ":1:32: a NUL byte")):
            with open(self.path(name), "wb") as f:
                f.write(raw)
            self.assertIn(self.path(name) + expected,
                          self.fails("--train_file", self.path(name), "--output_dir", self.path("bad_bytes"), "--char_vocab"))
        message = self.fails("--train_file", self.path("nosuch.jsonl"), "--output_dir", self.path("x"), "--char_vocab")
        self.assertIn("nosuch.jsonl", message)
        self.assertIn("give --tokenizer_name", self.fails("--train_file", self.path("bad0.jsonl"), "--output_dir",
                                                          self.path("x")))
        message = self.fails("--train_file", self.path("bad0.jsonl"), "--output_dir", self.path("x"),
                             "--tokenizer_name", self.path("nosuch.model"))
        self.assertIn("nosuch.model", message)
        junk = self.path("junk.model")
        with open(junk, "wb") as f:
            f.write(b"not a model\x00\x01")
        self.assertIn(junk + ": not a SentencePiece model",
                      self.fails("--train_file", write_jsonl(self.path("ok.jsonl"), [good]), "--output_dir",
                                 self.path("x"), "--tokenizer_name", junk))

    def test_train_points_text_pairs_to_tokenize(self):
        path = write_jsonl(self.path("text_pairs.jsonl"), PAIRS)
        code, _, stderr = loom("train", "--train_file", path, "--do_train", "--output_dir", self.path("tp"),
                               "--vocab_size", "16", check=False)
        self.assertNotEqual(code, 0)
        self.assertIn(path + ":1: text pairs, not token ids: tokenize them first (loom tokenize --train_file", stderr)

    @unittest.skipUnless(shutil.which("spm_train") and shutil.which("spm_encode"),
                         "Debian's sentencepiece (spm_train, spm_encode) is not installed")
    def test_sentencepiece_model_of_a_t5_folder(self):
        corpus = self.path("spm_corpus.txt")
        words = ["the", "house", "is", "small", "casa", "este", "mica", "green", "verde", "a", "big", "dog",
                 "câine", "mare", "translate", "English", "to", "Romanian:"]
        with open(corpus, "w", encoding="utf-8") as f:
            for i in range(400):
                f.write(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(2 + i % 6)) + "\n")
        folder = self.path("t5")
        os.makedirs(folder)
        # T5's special ids: <pad> 0, </s> 1, <unk> 2, no <s>
        run("spm_train", "--input=" + corpus, "--model_prefix=" + os.path.join(folder, "spiece"), "--vocab_size=40",
            "--model_type=unigram", "--character_coverage=1.0", "--pad_id=0", "--eos_id=1", "--unk_id=2",
            "--bos_id=-1", "--minloglevel=2", "--num_threads=1", "--random_seed=1", "--hard_vocab_limit=false")
        with open(os.path.join(folder, "spiece.vocab"), encoding="utf-8") as f:
            pieces = len(f.read().splitlines())
        pairs = [{"translation": {"en": "the house is small", "ro": "casa este mica"}},
                 {"translation": {"en": "a big green dog", "ro": "câine mare verde Ω"}}]
        train = write_jsonl(self.path("spm_train.jsonl"), pairs)
        out = self.path("spm_out")
        prefix = "translate English to Romanian: "
        _, stdout, _ = loom("tokenize", "--train_file", train, "--output_dir", out, "--tokenizer_name", folder,
                            "--source_lang", "en", "--target_lang", "ro", "--source_prefix", prefix)
        self.assertIn("vocabulary: %d tokens" % pieces, stdout)

        def spm_encode(text):
            p = subprocess.run(["spm_encode", "--model=" + os.path.join(folder, "spiece.model"), "--output_format=id"],
                               input=text + "\n", capture_output=True, text=True, check=True)
            return [int(v) for v in p.stdout.split()]

        got = read_jsonl(os.path.join(out, "train.jsonl"))
        for row, pair in zip(got, pairs):
            self.assertEqual(row["input_ids"], spm_encode(prefix + pair["translation"]["en"]) + [1])
            self.assertEqual(row["labels"], spm_encode(pair["translation"]["ro"]) + [1])
        self.assertIn(2, got[1]["labels"], "a character the model lacks is <unk>, as T5Tokenizer's")
        # the model file itself works as --tokenizer_name too, and truncation keeps </s>
        loom("tokenize", "--train_file", train, "--output_dir", out, "--tokenizer_name",
             os.path.join(folder, "spiece.model"), "--source_lang", "en", "--target_lang", "ro",
             "--max_source_length", "3")
        self.assertEqual(read_jsonl(os.path.join(out, "train.jsonl"))[0]["input_ids"],
                         spm_encode(pairs[0]["translation"]["en"])[:2] + [1])


TINY = ["--d_model", "32", "--d_kv", "8", "--num_heads", "4", "--d_ff", "64", "--num_layers", "2"]

DICT = """A  AH0
A(1)  EY1
READ  R EH1 D
READ(1)  R IY1 D
READS  R IY1 D Z
SEA  S IY1
SEE  S IY1
CAT  K AE1 T
CATS  K AE1 T S
DOG  D AO1 G
DOGS  D AO1 G Z
HOUSE  HH AW1 S
HOUSES  HH AW1 S AH0 Z
MOUSE  M AW1 S
TREE  T R IY1
TREES  T R IY1 Z
WORD  W ER1 D
WORDS  W ER1 D Z
EMPTY(1)  
O'NEIL  OW0 N IY1 L
SHIP  SH IH1 P
WATER  W AO1 T ER0
WATER(1)  W AA1 T ER0
"""


class G2PExample(unittest.TestCase):
    def test_prepare_tokenize_and_train_a_few_steps(self):
        tmp = tempfile.mkdtemp(prefix="loomtest-g2p-")
        try:
            d = os.path.join(tmp, "dict.txt")
            with open(d, "w") as f:
                f.write(DICT)
            dest = os.path.join(tmp, "g2p")
            env = dict(os.environ, LOOM=os.path.join(os.environ.get("LOOM_BIN", ""), "loom"))
            subprocess.run([sys.executable, os.path.join(SOURCE, "examples", "g2p", "prepare.py"), "--dict", d,
                            "--dest", dest], check=True, env=env, capture_output=True, text=True)
            text = {name: read_jsonl(os.path.join(dest, "text", name + ".jsonl")) for name in ("train", "dev", "test")}
            words = {name: {r["source"] for r in rows} for name, rows in text.items()}
            self.assertEqual(words["train"] | words["dev"] | words["test"],
                             {"a", "read", "reads", "sea", "see", "cat", "cats", "dog", "dogs", "house", "houses",
                              "mouse", "tree", "trees", "word", "words", "o'neil", "ship", "water"})
            # by the md5 of the word (mod 20: 0 test, 1 dev)
            self.assertEqual((words["dev"], words["test"]), ({"ship"}, {"water"}))
            self.assertEqual(text["test"], [{"source": "water", "target": "W AO T ER",
                                             "references": ["W AO T ER", "W AA T ER"]}])
            self.assertEqual(len(text["train"]), 19, "one line per pronunciation")
            everything = text["train"] + text["dev"] + text["test"]
            read = [r for r in everything if r["source"] == "read"]
            self.assertEqual({r["target"] for r in read} | {t for r in read for t in r.get("references", [])},
                             {"R EH D", "R IY D"}, "both pronunciations, in the word's split, stress removed")
            vocab = os.path.join(dest, "data", "char_vocab.json")
            with open(vocab) as f:
                tokens = json.load(f)["tokens"]
            self.assertIn("'", tokens)
            self.assertIn("HH", tokens)
            self.assertNotIn("AH0", tokens)
            out = os.path.join(tmp, "run")
            loom("train", "--train_file", os.path.join(dest, "data", "train.jsonl"), "--validation_file",
                 os.path.join(dest, "data", "validation.jsonl"), "--do_train", "--do_eval", "--output_dir", out,
                 "--vocab_size", str(len(tokens)), *TINY, "--max_steps", "4", "--logging_steps", "1",
                 "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--sortish_sampler",
                 "--tokenizer_name", vocab, "--disable_tqdm", "true")
            # The vocabulary travels with the model, and generated ids come back as its symbols.
            with open(os.path.join(out, "char_vocab.json")) as f:
                self.assertEqual(json.load(f)["tokens"], tokens)
            pred = os.path.join(tmp, "pred")
            loom("predict", "--model_name_or_path", out, "--test_file", os.path.join(dest, "data", "test.jsonl"),
                 "--output_dir", pred, "--predict_with_generate", "--generation_max_length", "6", "--disable_tqdm",
                 "true")
            with open(os.path.join(pred, "generated_predictions.txt")) as f:
                lines = f.read().split("\n")
            symbols = [w for line in lines for w in line.split()]
            self.assertTrue(symbols and all(w in tokens[3:] for w in symbols), symbols[:20])
            with open(os.path.join(out, "trainer_state.json")) as f:
                losses = [e["loss"] for e in json.load(f)["log_history"] if "loss" in e]
            self.assertEqual(len(losses), 4)
            with open(os.path.join(out, "eval_results.json")) as f:
                self.assertGreater(json.load(f)["eval_loss"], 0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
