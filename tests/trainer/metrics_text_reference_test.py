#!/usr/bin/env python3
"""metrics_text_reference_test.py TEST_METRICS_TEXT - loom's text metrics (core/trainer/metrics_text.c)
against independent implementations, on 400 random sentence pairs with punctuation, numbers,
dashes and HTML entities:
  - 13a tokens: sacreBLEU's Tokenizer13a regular expressions, rewritten here with Python's re;
  - corpus BLEU: NLTK's corpus_bleu (Debian python3-nltk; default weights, no smoothing) over
    those tokens, x 100 as sacreBLEU reports it;
  - ROUGE-1/2/L F (rouge_score's tokens, no stemming), exact match, token edit distance: written
    here. Exits 77 (skipped) without NLTK.
"""
import os
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter

try:
    from nltk.translate.bleu_score import corpus_bleu
except ImportError:
    # Debian's package is for Debian's interpreter; another python3 on PATH (pyenv) lacks it.
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("python3-nltk is not installed: skipped")
    sys.exit(77)

RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
]


def tok13a(line):
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for r, repl in RULES:
        line = r.sub(repl, line)
    return " ".join(line.split())


def rouge_tokens(text):
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def ngrams(tokens, n):
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def f1(overlap, h, r):
    p = overlap / h if h else 0.0
    rc = overlap / r if r else 0.0
    return 2 * p * rc / (p + rc) if p + rc else 0.0


def lcs(a, b):
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            t[i][j] = t[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(t[i - 1][j], t[i][j - 1])
    return t[-1][-1]


def edits(a, b):
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            prev, d[j] = d[j], cur
    return d[-1]


WORDS = ("the a cat dog sat on mat house river Paris London big small red blue quickly ran jumped over under "
         "said \"hello\" it's don't (see) [note] 3.5 1,000 42 7-8 U.S. e-mail &amp; &lt;tag&gt; ; : ! ? % $ "
         "/ co-op well-known Mr. Smith's 2020 x+y a=b").split()


def sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 18))).replace(" ,", ",")


def perturb(rng, words):
    out = list(words)
    for _ in range(rng.randint(0, 4)):
        op = rng.random()
        if op < 0.3 and len(out) > 1:
            del out[rng.randrange(len(out))]
        elif op < 0.6 and out:
            out[rng.randrange(len(out))] = rng.choice(WORDS)
        elif op < 0.8:
            out.insert(rng.randrange(len(out) + 1), rng.choice(WORDS))
        elif len(out) > 2:
            i = rng.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def main():
    tool = sys.argv[1]
    rng = random.Random(7)
    pairs = []
    for i in range(400):
        ref = sentence(rng)
        hyp = " ".join(perturb(rng, ref.split())) if i % 10 else ref
        # NLTK counts a hypothesis shorter than n as one n-gram (max(1, count)) where sacreBLEU
        # counts none: keep every hypothesis at 4 tokens or more so both read the same corpus.
        while len(tok13a(hyp).split()) < 4:
            hyp += " " + rng.choice(WORDS)
        if i % 37 == 0:
            hyp = hyp + "."
        pairs.append((hyp, ref))
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        for h, r in pairs:
            f.write(f"{h}\t{r}\n")
        path = f.name
    out = subprocess.run([tool, "--score", path], check=True, capture_output=True, text=True).stdout
    lines = out.strip().split("\n")
    toks, metrics = lines[: len(pairs)], dict(l.split("=") for l in lines[len(pairs) :])
    metrics = {k: float(v) for k, v in metrics.items()}
    bad = 0
    for (h, r), line in zip(pairs, toks):
        want = f"{tok13a(h)}\t{tok13a(r)}"
        if line != want:
            print(f"13a differs:\n  loom {line!r}\n  want {want!r}")
            bad += 1
            if bad > 5:
                return 1
    if bad:
        return 1
    hyps = [tok13a(h).split() for h, _ in pairs]
    refs = [[tok13a(r).split()] for _, r in pairs]
    nltk_bleu = 100 * corpus_bleu(refs, hyps)
    want = {"m_bleu": nltk_bleu}
    r1 = r2 = rl = exact = ed = rt = 0.0
    for h, r in pairs:
        th, tr = rouge_tokens(h), rouge_tokens(r)
        for n, acc in ((1, "r1"), (2, "r2")):
            o = sum((ngrams(th, n) & ngrams(tr, n)).values())
            v = f1(o, max(len(th) - n + 1, 0), max(len(tr) - n + 1, 0))
            if n == 1:
                r1 += v
            else:
                r2 += v
        rl += f1(lcs(th, tr), len(th), len(tr))
        wh, wr = h.split(), r.split()
        exact += wh == wr
        ed += edits(wh, wr)
        rt += len(wr)
    n = len(pairs)
    want.update({"m_rouge1": 100 * r1 / n, "m_rouge2": 100 * r2 / n, "m_rougeL": 100 * rl / n,
                 "m_exact_match": exact / n, "m_token_error_rate": ed / rt, "m_sequence_error_rate": 1 - exact / n})
    for k, v in want.items():
        if abs(metrics[k] - v) > 1e-9 * max(1.0, abs(v)):
            print(f"FAIL {k}: loom {metrics[k]!r}, reference {v!r}")
            return 1
    print(f"metrics_text_reference: {n} pairs; BLEU {metrics['m_bleu']:.4f} = NLTK {nltk_bleu:.4f}; "
          f"ROUGE-1/2/L {metrics['m_rouge1']:.2f}/{metrics['m_rouge2']:.2f}/{metrics['m_rougeL']:.2f}; "
          f"13a tokens identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
