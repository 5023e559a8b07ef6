"""The training orders of --group_by_length and --sortish_sampler (core/data/sampler_length.c)
held to HF's algorithms: trainer_pt_utils.get_length_grouped_indices with
DistributedLengthGroupedSampler, and the seq2seq examples' sortish_sampler_indices with
DistributedSortishSampler, written again below. loom draws its random numbers differently from
numpy/torch, so the orders are compared by structure: a checker that HF's own orders pass and a
plain shuffle fails must pass loom's orders too, for one rank and for several.

--train_sampling_strategy sequential (core/data/sampler_sequential.c) draws nothing, so it is
compared exactly: with HF's SequentialSampler in a BatchSampler, sharded over several ranks by
accelerate's BatchSamplerShard (split_batches false, even_batches true), written again below."""
import json
import os
import random
import subprocess
import tempfile
import unittest

PRINT_ORDER = os.environ.get("LOOM_PRINT_ORDER", os.path.join(os.path.dirname(__file__), "..", "..", "build",
                                                              "tests", "data", "print_order"))


# ---- HF's algorithms (the RNG is Python's) ---------------------------------------------------

def hf_length_grouped(lengths, batch_size, rng):
    n = len(lengths)
    mult = min(n // (batch_size * 4), 50) or 1
    indices = list(range(n))
    rng.shuffle(indices)
    size = mult * batch_size
    megabatches = [sorted(indices[i:i + size], key=lambda i: lengths[i], reverse=True) for i in range(0, n, size)]
    maxima = [lengths[m[0]] for m in megabatches]
    k = maxima.index(max(maxima))
    megabatches[0][0], megabatches[k][0] = megabatches[k][0], megabatches[0][0]
    return sum(megabatches, [])


def hf_distributed_length_grouped(lengths, batch_size, world, rank, rng):
    indices = hf_length_grouped(lengths, batch_size, rng)
    per_rank = -(-len(indices) // world)
    indices += indices[:per_rank * world - len(indices)]
    return indices[rank::world]


def hf_sortish_indices(data, batch_size, rng):
    idxs = list(range(len(data)))
    rng.shuffle(idxs)
    size = batch_size * 50
    sort_idx = sum((sorted(idxs[i:i + size], key=lambda i: data[i], reverse=True)
                    for i in range(0, len(idxs), size)), [])
    chunks = [sort_idx[i:i + batch_size] for i in range(0, len(sort_idx), batch_size)]
    k = max(range(len(chunks)), key=lambda c: (data[chunks[c][0]], -c))
    chunks[0], chunks[k] = chunks[k], chunks[0]
    rest = chunks[1:]
    rng.shuffle(rest)
    return sum([chunks[0]] + rest, [])


def hf_distributed_sortish(lengths, batch_size, world, rank, rng):
    n = len(lengths)
    per_rank = -(-n // world)
    indices = list(range(n))
    indices += indices[:per_rank * world - n]
    available = indices[rank::world]
    return [available[i] for i in hf_sortish_indices([lengths[i] for i in available], batch_size, rng)]


def hf_sequential_shard(n, batch_size, drop_last, world, rank):
    """The batches rank `rank` reads: BatchSampler(SequentialSampler) alone on one process; on
    several, accelerate's BatchSamplerShard._iter_with_no_split with even_batches."""
    batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if world == 1:
        return batches
    mine, pending, first = [], None, []
    for i, batch in enumerate(batches):
        if not drop_last and i < world:
            first += batch
        if i % world == rank:
            pending = batch
        # a round is handed out once its last batch is there and full
        if i % world == world - 1 and len(batch) == batch_size:
            mine.append(pending)
            pending = None
    if drop_last or not first:
        return mine
    if pending is not None and len(pending) == batch_size:
        mine.append(pending)
    while len(first) < world * batch_size:
        first += first
    i, last = len(batches) - 1, batches[-1]
    if len(last) == batch_size:
        i, last = i + 1, []
    used = 0
    # the short last batch and the rest of its round, filled from the first examples again
    while i % world != 0 or last:
        take = batch_size - len(last)
        batch = last + first[used:used + take]
        if i % world == rank:
            mine.append(batch)
        used += take
        i, last = i + 1, []
    return mine


# ---- the structure both must have -------------------------------------------------------------

def non_increasing(values):
    return all(a >= b for a, b in zip(values, values[1:]))


def check_length_grouped(test, order, lengths, batch_size):
    """order: the global order (ranks interleaved) of one epoch."""
    n = len(lengths)
    test.assertEqual(sorted(order), list(range(n)))
    test.assertEqual(lengths[order[0]], max(lengths), "the longest example comes first")
    size = (min(n // (batch_size * 4), 50) or 1) * batch_size
    mega = [[lengths[i] for i in order[s:s + size]] for s in range(0, n, size)]
    for m in mega:
        test.assertTrue(non_increasing(m[1:]), "a megabatch is sorted by decreasing length")
    # the first of one megabatch (and only one) may be the one swapped out of the first
    test.assertLessEqual(sum(1 for m in mega if len(m) > 1 and m[0] < m[1]), 1)
    if len(mega) > 2:
        test.assertTrue(any(a[-1] < b[0] for a, b in zip(mega, mega[1:])), "megabatches, not one sorted list")


def segments(order, batch_size):
    """HF's batches after the shuffle: all of batch_size but one shorter one, anywhere."""
    n = len(order)
    short = n % batch_size
    if not short:
        return [[order[s:s + batch_size] for s in range(0, n, batch_size)]]
    options = []
    for where in range(n // batch_size + 1):
        cut, s = [], 0
        for b in range(n // batch_size + 1):
            size = short if b == where else batch_size
            cut.append(order[s:s + size])
            s += size
        options.append(cut)
    return options


def check_sortish(test, order, share, lengths, batch_size):
    """order: one rank's order; share: the examples that rank owns (with repeats)."""
    test.assertEqual(sorted(order), sorted(share))
    own = [lengths[i] for i in order]
    test.assertEqual(own[0], max(own), "the batch with the longest example comes first")
    fits = []
    for cut in segments(order, batch_size):
        runs = [[lengths[i] for i in b] for b in cut]
        if not all(non_increasing(r) for r in runs) or not non_increasing(runs[0]):
            continue
        # one chunk of 50 batches or fewer: the batches are consecutive pieces of one sorted list
        if len(order) <= 50 * batch_size:
            joined = sum(sorted(runs, key=lambda r: (-r[0], -r[-1])), [])
            if not non_increasing(joined):
                continue
        fits.append(cut)
    test.assertTrue(fits, "the order is sorted batches of a sorted chunk")


class SamplerOrders(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loomtest-sampler-")
        r = random.Random(5)
        cls.files = {}
        for n in (7, 100, 1003):
            lengths = [r.randint(1, 40) for _ in range(n)]
            path = os.path.join(cls.tmp, "pairs%d.jsonl" % n)
            with open(path, "w") as f:
                for length in lengths:
                    f.write(json.dumps({"input_ids": [3] * length, "labels": [4, 1]}) + "\n")
            cls.files[n] = (path, lengths)

    def order(self, n, sampler, batch, seed=42, world=1, rank=0, epoch=0, drop_last=0):
        out = subprocess.run([PRINT_ORDER, self.files[n][0], sampler, str(batch), str(seed), str(world), str(rank),
                              str(epoch), str(drop_last)], capture_output=True, text=True, check=True).stdout
        return [int(v) for v in out.split()]

    def global_order(self, n, sampler, batch, world, **kw):
        shares = [self.order(n, sampler, batch, world=world, rank=r, **kw) for r in range(world)]
        return [shares[r][i] for i in range(len(shares[0])) for r in range(world)]

    def test_checkers_accept_hf_and_reject_a_shuffle(self):
        rng = random.Random(1)
        for n in (100, 1003):
            lengths = self.files[n][1]
            for bs in (1, 4, 8):
                check_length_grouped(self, hf_length_grouped(lengths, bs, rng), lengths, bs)
                order = hf_sortish_indices(lengths, bs, rng)
                check_sortish(self, order, range(n), lengths, bs)
            shuffled = list(range(n))
            rng.shuffle(shuffled)
            with self.assertRaises(AssertionError):
                check_length_grouped(self, shuffled, lengths, 4)
            with self.assertRaises(AssertionError):
                check_sortish(self, shuffled, range(n), lengths, 4)
        lengths = self.files[1003][1]
        for world in (2, 3):
            # every rank draws the same permutation (torch.Generator seeded with seed + epoch)
            glob = sum(map(list, zip(*[hf_distributed_length_grouped(lengths, 4, world, r, random.Random(7))
                                       for r in range(world)])), [])
            check_length_grouped(self, glob[:len(lengths)], lengths, 4)
            for r in range(world):
                share = hf_distributed_sortish(lengths, 4, world, r, rng)
                check_sortish(self, share, share, lengths, 4)

    def test_group_by_length(self):
        for n in (7, 100, 1003):
            lengths = self.files[n][1]
            for bs in (1, 3, 8):
                check_length_grouped(self, self.order(n, "group_by_length", bs), lengths, bs)

    def test_group_by_length_ranks_share_one_global_order(self):
        lengths = self.files[1003][1]
        one = self.order(1003, "group_by_length", 4)
        for world in (2, 3, 4):
            glob = self.global_order(1003, "group_by_length", 4, world)
            # the ranks interleave the single-process order, padded by wrapping around
            self.assertEqual(glob[:1003], one)
            self.assertEqual(glob[1003:], one[:len(glob) - 1003])

    def test_sortish(self):
        for n in (7, 100, 1003):
            lengths = self.files[n][1]
            for bs in (1, 3, 8):
                check_sortish(self, self.order(n, "sortish", bs), range(n), lengths, bs)

    def test_sortish_ranks_sort_their_own_share(self):
        lengths = self.files[1003][1]
        for world in (2, 3):
            per_rank = -(-1003 // world)
            for rank in range(world):
                share = [(k * world + rank) % 1003 for k in range(per_rank)]
                check_sortish(self, self.order(1003, "sortish", 4, world=world, rank=rank), share, lengths, 4)

    def test_the_reference_shards_as_accelerates_docstring_says(self):
        # BatchSamplerShard's own examples: [[0..3], [4..7]] on two processes
        self.assertEqual(hf_sequential_shard(8, 4, False, 2, 0), [[0, 1, 2, 3]])
        self.assertEqual(hf_sequential_shard(8, 4, False, 2, 1), [[4, 5, 6, 7]])
        # 10 examples in batches of 4 on 2 ranks: the short [8, 9] is filled from the start
        self.assertEqual(hf_sequential_shard(10, 4, False, 2, 0), [[0, 1, 2, 3], [8, 9, 0, 1]])
        self.assertEqual(hf_sequential_shard(10, 4, False, 2, 1), [[4, 5, 6, 7], [2, 3, 4, 5]])
        self.assertEqual(hf_sequential_shard(10, 4, True, 2, 1), [[4, 5, 6, 7]])
        self.assertEqual(hf_sequential_shard(10, 4, False, 1, 0), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])

    def test_sequential_is_hfs_order_on_every_rank(self):
        for n in (7, 100, 1003):
            for bs in (1, 3, 8, 16):
                for world in (1, 2, 3, 4):
                    for drop_last in (0, 1):
                        for rank in range(world):
                            want = sum(hf_sequential_shard(n, bs, drop_last, world, rank), [])
                            got = self.order(n, "sequential", bs, world=world, rank=rank, drop_last=drop_last)
                            self.assertEqual(got, want, (n, bs, world, rank, drop_last))

    def test_sequential_ignores_seed_and_epoch(self):
        for world, rank in ((1, 0), (3, 2)):
            a = self.order(100, "sequential", 4, seed=3, epoch=0, world=world, rank=rank)
            self.assertEqual(a, self.order(100, "sequential", 4, seed=4, epoch=5, world=world, rank=rank))

    def test_orders_are_functions_of_seed_and_epoch(self):
        for sampler in ("sortish", "group_by_length", "random"):
            a = self.order(100, sampler, 4, seed=3, epoch=2)
            self.assertEqual(a, self.order(100, sampler, 4, seed=3, epoch=2))
            self.assertNotEqual(a, self.order(100, sampler, 4, seed=4, epoch=2))
            self.assertNotEqual(a, self.order(100, sampler, 4, seed=3, epoch=3))


if __name__ == "__main__":
    unittest.main()
