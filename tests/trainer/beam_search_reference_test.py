#!/usr/bin/env python3
"""beam_search_reference_test.py TEST_BEAM_SEARCH - loom's beam search (core/trainer/beam_search.c)
against HF transformers v4.2's generate() for an encoder-decoder, reimplemented here from its
BeamSearchScorer / BeamHypotheses / greedy_search (no torch): random Markov tables of logits
(the next token's logits depend on the example, the step and the previous token), every
combination of num_beams, length_penalty and early_stopping; the chosen sequences must be the
same and their scores agree to 1e-9. Then HF's MinLengthLogitsProcessor and
NoRepeatNGramLogitsProcessor (min_length, no_repeat_ngram_size; min_new_tokens and
max_new_tokens arrive as min_length and max_length, generation_config.c), reimplemented here from
transformers' logits_process.py: each setting must change some example's answer, so the
comparison can fail.
"""
import math
import os
import random
import struct
import subprocess
import sys
import tempfile

MAXLEN = 8  # test_beam_search.c's table depth


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def log_softmax(row):
    m = max(row)
    s = 0.0
    for x in row:
        s += math.exp(x - m)
    lse = m + math.log(s)
    return [x - lse for x in row]


class BeamHypotheses:  # transformers v4.2 generation_beam_search.py
    def __init__(self, num_beams, max_length, length_penalty, early_stopping):
        self.max_length = max_length - 1
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.num_beams = num_beams
        self.beams = []
        self.worst_score = 1e9

    def __len__(self):
        return len(self.beams)

    def add(self, hyp, sum_logprobs):
        score = sum_logprobs / (len(hyp) ** self.length_penalty)
        if len(self) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp))
            if len(self) > self.num_beams:
                sorted_scores = sorted([(s, idx) for idx, (s, _) in enumerate(self.beams)])
                del self.beams[sorted_scores[0][1]]
                self.worst_score = sorted_scores[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs, cur_len):
        if len(self) < self.num_beams:
            return False
        elif self.early_stopping:
            return True
        else:
            cur_score = best_sum_logprobs / cur_len ** self.length_penalty
            return self.worst_score >= cur_score


def process(seq, scores, eos, min_length, ngram):
    """HF's processors over one row; seq is the decoder input so far (start token first)."""
    scores = list(scores)
    cur_len = len(seq)
    if cur_len < min_length:  # MinLengthLogitsProcessor
        scores[eos] = -math.inf
    if ngram > 0 and cur_len + 1 >= ngram:  # NoRepeatNGramLogitsProcessor
        generated = {}
        for ng in zip(*[seq[i:] for i in range(ngram)]):
            generated.setdefault(tuple(ng[:-1]), []).append(ng[-1])
        for tok in generated.get(tuple(seq[cur_len + 1 - ngram:cur_len]), []):
            scores[tok] = -math.inf
    return scores


def topk(scores, k):
    """torch.topk(largest=True, sorted=True); ties: the lower index first."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    return [scores[i] for i in order], order


def beam_search(logits_of, B, V, K, max_length, lp, es, start, eos, pad, min_length=0, ngram=0):
    hyps = [BeamHypotheses(K, max_length, lp, es) for _ in range(B)]
    done = [False] * B
    input_ids = [[start] for _ in range(B * K)]
    beam_scores = [0.0 if r % K == 0 else -1e9 for r in range(B * K)]
    cur_len = 1
    step = 0
    while cur_len < max_length:
        scores = []
        for r in range(B * K):
            lsm = log_softmax(logits_of(r // K, step, input_ids[r][-1]))
            lsm = process(input_ids[r], lsm, eos, min_length, ngram)  # HF: after log_softmax
            scores.append([x + beam_scores[r] for x in lsm])
        step += 1
        next_scores_all, next_tokens_all, next_indices_all = [], [], []
        for b in range(B):
            flat = [s for r in range(b * K, b * K + K) for s in scores[r]]
            vals, idx = topk(flat, 2 * K)
            next_scores_all.append(vals)
            next_tokens_all.append([i % V for i in idx])
            next_indices_all.append([i // V for i in idx])
        # BeamSearchScorer.process
        nb_scores = [0.0] * (B * K)
        nb_tokens = [0] * (B * K)
        nb_indices = [0] * (B * K)
        for b in range(B):
            if done[b]:
                for k in range(K):
                    nb_scores[b * K + k] = 0.0
                    nb_tokens[b * K + k] = pad
                    nb_indices[b * K + k] = b * K  # HF: 0; the row is never used again
                continue
            beam_idx = 0
            for rank, (tok, sc, ni) in enumerate(zip(next_tokens_all[b], next_scores_all[b], next_indices_all[b])):
                row = b * K + ni
                if eos is not None and tok == eos:
                    if rank >= K:
                        continue
                    hyps[b].add(list(input_ids[row]), sc)
                else:
                    nb_scores[b * K + beam_idx] = sc
                    nb_tokens[b * K + beam_idx] = tok
                    nb_indices[b * K + beam_idx] = row
                    beam_idx += 1
                if beam_idx == K:
                    break
            done[b] = done[b] or hyps[b].is_done(max(next_scores_all[b]), cur_len)
        input_ids = [input_ids[nb_indices[r]] + [nb_tokens[r]] for r in range(B * K)]
        beam_scores = nb_scores
        cur_len += 1
        if all(done):
            break
    # finalize
    results = []
    for b in range(B):
        if not done[b]:
            for k in range(K):
                hyps[b].add(input_ids[b * K + k], beam_scores[b * K + k])
        best_score, best = sorted(hyps[b].beams, key=lambda x: x[0]).pop()
        seq = list(best[1:])
        if len(best) < max_length:
            seq.append(eos)
        results.append((best_score, seq))
    return results


def greedy(logits_of, B, V, max_length, start, eos, pad, min_length=0, ngram=0):
    out = []
    for b in range(B):
        seq, prev, total = [], start, 0.0
        for step in range(max_length - 1):
            row = logits_of(b, step, prev)
            processed = process([start] + seq, row, eos, min_length, ngram)  # HF: on the raw logits
            tok = max(range(V), key=lambda v: (processed[v], -v))
            total += log_softmax(row)[tok]
            seq.append(tok)
            prev = tok
            if tok == eos:
                break
        out.append((total, seq))
    return out


def run_case(tool, tmp, rng, K, lp, es, min_length=0, ngram=0, eos_bias=0.7, eos_from=2, V=7):
    """One random table through loom and the reference: (loom's, HF's) per example; the
    reference without the processors third, to tell whether they changed anything."""
    B, ml = 3, rng.choice((5, 6, 8))
    start, eos, pad = 0, 1, 0
    table = {}
    lines = [f"{B} {V} {K} {ml} {lp!r} {es} {start} {eos} {pad} {min_length} {ngram}"]
    for b in range(B):
        for s in range(ml - 1):
            for prev in range(V):
                row = [f32(rng.gauss(0, 1.5)) for _ in range(V)]
                row[eos] = f32(row[eos] + (s - eos_from) * eos_bias)  # ends become likelier
                table[(b, s, prev)] = row
                lines.append(" ".join(repr(x) for x in row))
    path = os.path.join(tmp, "table.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    got = subprocess.run([tool, "--table", path], check=True, capture_output=True, text=True)
    got = [l.split() for l in got.stdout.strip().split("\n")]
    got = [(float(g[0]), [int(x) for x in g[1:]]) for g in got]
    logits_of = lambda b, s, prev: table[(b, s, prev)]
    if K == 1:
        search = lambda mn, ng: greedy(logits_of, B, V, ml, start, eos, pad, mn, ng)
    else:
        search = lambda mn, ng: beam_search(logits_of, B, V, K, ml, lp, es, start, eos, pad, mn, ng)
    return got, search(min_length, ngram), search(0, 0), ml


def agree(got, want, label):
    for b, ((score, seq), (w_score, w_seq)) in enumerate(zip(got, want)):
        if seq != w_seq or abs(score - w_score) > 1e-9 * max(1, abs(score)):
            print(f"FAIL {label} example {b}: loom {score} {seq}, HF {w_score} {w_seq}")
            return False
    return True


def main():
    tool = sys.argv[1]
    rng = random.Random(1234)
    cases = 0
    with tempfile.TemporaryDirectory() as tmp:
        for K in (1, 2, 3, 4):
            for lp in (0.5, 1.0, 2.0):
                for es in (0, 1):
                    for trial in range(3):
                        got, want, _, ml = run_case(tool, tmp, rng, K, lp, es)
                        if not agree(got, want, f"K={K} lp={lp} es={es} ml={ml}"):
                            return 1
                        cases += 1
        # The processors on greedy and beams, each of which must have changed some answer: for
        # min_length eos is made likely early, so there are ends to ban; for the n-grams it is
        # made unlikely and the vocabulary small, so there are repeats to ban.
        changed = {}
        for min_length, ngram in ((3, 0), (5, 0), (0, 1), (0, 2), (0, 3), (4, 2)):
            for K in (1, 2, 4):
                for es in (0, 1):
                    for trial in range(3):
                        shape = dict(eos_bias=0.3, eos_from=6, V=4) if ngram else dict(eos_bias=1.5, eos_from=0)
                        got, want, plain, ml = run_case(tool, tmp, rng, K, 1.0, es, min_length, ngram, **shape)
                        if not agree(got, want, f"K={K} es={es} ml={ml} min_length={min_length} ngram={ngram}"):
                            return 1
                        for (_, seq), (_, w) in zip(want, plain):
                            if ngram:
                                grams = [tuple(([0] + seq)[i:i + ngram]) for i in range(len(seq) + 1 - ngram)]
                                if len(grams) != len(set(grams)):
                                    print(f"FAIL no_repeat_ngram_size {ngram}: {seq} repeats an n-gram")
                                    return 1
                            if min_length and 1 in seq and seq.index(1) + 2 < min_length:
                                print(f"FAIL min_length {min_length}: {seq} ends early")
                                return 1
                            changed[(min_length, ngram, K > 1)] = changed.get((min_length, ngram, K > 1), 0) + (seq != w)
                        cases += 1
        unchanged = [k for k, n in changed.items() if n == 0]
        if unchanged:
            print(f"FAIL: these (min_length, no_repeat_ngram_size, beams) never changed an answer: {unchanged}")
            return 1
    print(f"beam_search_reference: {cases} tables x 3 examples agree with HF v4.2's beam search and HF's "
          f"min_length / no_repeat_ngram_size processors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
