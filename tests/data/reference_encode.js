#!/usr/bin/env node
// reference_encode.js DEPS_DIR INPUT - GPT-2 token ids of each line of INPUT, by the npm
// package gpt-3-encoder (a port of OpenAI's encoder.py) installed in DEPS_DIR/node_modules by
// scripts/fetch-data.sh. Prints one line per input line: the ids, space-separated (an empty
// line for an empty text).
//
// INPUT is plain text (each line is one text, without its newline) or, when its name ends in
// .jsonl, one JSON string per line (so a text may hold newlines, tabs, anything).
//
// Where this reference is not GPT-2 (documented in tests/data/README.md): JavaScript's
// \s differs from Python regex's \s on U+0085 and U+FEFF; and the package looks merges up by
// String(pair) = "a,b", so a pair of tokens containing commas can alias another merge.
'use strict';
const fs = require('fs');
const path = require('path');

const [deps, input] = process.argv.slice(2);
if (!deps || !input) {
  process.stderr.write('usage: reference_encode.js DEPS_DIR INPUT\n');
  process.exit(2);
}
const { encode } = require(path.join(path.resolve(deps), 'node_modules', 'gpt-3-encoder'));
let lines = fs.readFileSync(input, 'utf8').split('\n');
if (lines.length && lines[lines.length - 1] === '') lines.pop(); // the file's last newline
if (input.endsWith('.jsonl')) lines = lines.map((l) => JSON.parse(l));
const out = [];
for (const text of lines) out.push(encode(text).join(' '));
process.stdout.write(out.join('\n') + (out.length ? '\n' : ''));
