#!/usr/bin/env python3
"""An independent safetensors reader (struct + json only), to check that what loom writes is
what the format says, not merely what loom's own reader accepts.

    read_safetensors.py FILE
        print each tensor: name, dtype, shape, sum of its values, and the metadata
    read_safetensors.py --check FILE [--expect NAME:DTYPE:SHAPE:SUM ...] [--meta KEY=VALUE ...]
        exit 0 only if FILE is well formed, its data starts 8-byte aligned, it holds exactly the
        expected tensors (if any --expect is given; SHAPE like 2x3, empty for a scalar; SUM of
        the values) and it carries the metadata given.
"""
import argparse
import json
import math
import struct
import sys

# dtype -> (bytes per element, struct code or None for bf16, decoded by hand)
DTYPES = {
    "F64": (8, "d"), "F32": (4, "f"), "F16": (2, "e"), "BF16": (2, None),
    "I64": (8, "q"), "I32": (4, "i"), "U16": (2, "H"), "U8": (1, "B"),
}


class FormatError(Exception):
    pass


def values(dtype, raw):
    size, code = DTYPES[dtype]
    count = len(raw) // size
    if code is not None:
        return struct.unpack("<%d%s" % (count, code), raw)
    # bf16 is the top half of an f32
    halves = struct.unpack("<%dH" % count, raw)
    return struct.unpack("<%df" % count, struct.pack("<%dI" % count, *[h << 16 for h in halves]))


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise FormatError("%s: %d bytes, shorter than the length field" % (path, len(blob)))
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise FormatError("%s: header length %d runs past the end of the file" % (path, n))
    header_bytes = blob[8:8 + n]
    header = json.loads(header_bytes.decode("utf-8"))
    if not isinstance(header, dict):
        raise FormatError("%s: header is not an object" % path)
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError("%s: __metadata__ must map strings to strings" % path)

    tensors = []
    for name, info in header.items():
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise FormatError("%s: %s: unknown dtype %s" % (path, name, dtype))
        count = 1
        for d in shape:
            if not isinstance(d, int) or d < 0:
                raise FormatError("%s: %s: bad shape %r" % (path, name, shape))
            count *= d
        if end - begin != count * DTYPES[dtype][0] or begin < 0 or end > len(data):
            raise FormatError("%s: %s: offsets [%d, %d] do not fit shape %r" % (path, name, begin, end, shape))
        raw = data[begin:end]
        tensors.append((begin, end, name, dtype, shape, math.fsum(values(dtype, raw))))

    tensors.sort()
    pos = 0
    for begin, end, name, _, _, _ in tensors:
        if begin != pos:
            raise FormatError("%s: %s starts at %d, previous tensor ended at %d" % (path, name, begin, pos))
        pos = end
    if pos != len(data):
        raise FormatError("%s: %d data bytes, tensors cover %d" % (path, len(data), pos))
    return n, metadata, [(name, dtype, shape, total) for _, _, name, dtype, shape, total in tensors]


def parse_expect(text):
    name, dtype, shape, total = text.rsplit(":", 3)
    dims = [int(d) for d in shape.split("x")] if shape else []
    return name, (dtype, dims, float(total))


def check(path, n, metadata, tensors, expects, metas):
    problems = []
    if (8 + n) % 8 != 0:
        problems.append("data starts at byte %d, not 8-byte aligned" % (8 + n))
    want = dict(parse_expect(e) for e in expects)
    got = {name: (dtype, shape, total) for name, dtype, shape, total in tensors}
    for name in sorted(set(want) | set(got)) if expects else []:
        if name not in got:
            problems.append("missing tensor %s" % name)
        elif name not in want:
            problems.append("unexpected tensor %s" % name)
        else:
            (wd, ws, wt), (gd, gs, gt) = want[name], got[name]
            if wd != gd or ws != gs:
                problems.append("%s: expected %s %r, file has %s %r" % (name, wd, ws, gd, gs))
            if not math.isclose(wt, gt, rel_tol=1e-12, abs_tol=1e-12):
                problems.append("%s: expected sum %r, file sums to %r" % (name, wt, gt))
    for kv in metas:
        key, value = kv.split("=", 1)
        if metadata.get(key) != value:
            problems.append("metadata %s: expected %r, file has %r" % (key, value, metadata.get(key)))
    for p in problems:
        print("%s: %s" % (path, p), file=sys.stderr)
    return not problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--meta", action="append", default=[])
    args = ap.parse_args()
    try:
        n, metadata, tensors = read(args.file)
    except (FormatError, ValueError, KeyError, TypeError, struct.error) as e:
        print("%s: malformed: %s" % (args.file, e), file=sys.stderr)
        return 1
    for name, dtype, shape, total in tensors:
        print("%s %s %s %r" % (name, dtype, "x".join(map(str, shape)) or "scalar", total))
    for key, value in metadata.items():
        print("metadata %s=%s" % (key, value))
    if args.check:
        return 0 if check(args.file, n, metadata, tensors, args.expect, args.meta) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
