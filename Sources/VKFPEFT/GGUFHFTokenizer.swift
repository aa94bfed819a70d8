// tokenizer.ggml.* for a byte-level BPE tokenizer.json, as llama.cpp's converter writes them
// (its get_vocab_base + gguf-py's SpecialVocab): tokens with their types, merges, special ids,
// add_bos/add_eos/add_sep from the post-processor and tokenizer_config.json, the chat template.
import Foundation
import VKFCore
import VKFModel
import VKFTokenizer

/// The tokenizer half of `GGUFHFMetadata`.
enum GGUFHFTokenizer {
  /// The special-token kinds gguf-py looks up, in its order (tokenizer.ggml.<kind>_token_id).
  static let kinds = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"]
  /// gguf-py's key for each kind's id (tokenizer.ggml.<key>).
  static let idKeys = ["bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "sep": "seperator_token_id",
                       "pad": "padding_token_id", "cls": "cls_token_id", "mask": "mask_token_id"]

  /// Metadata entries in the converter's order.
  static func entries(directory: URL, tokenizer: Tokenizer, vocabularySize: Int,
                      config: [String: Any]) throws -> [(String, GGUFValue)] {
    let tokURL = directory.appendingPathComponent("tokenizer.json")
    guard let json = try JSONSideFile.object(at: tokURL) else {
      throw PEFTError("\(tokURL.path): missing; GGUF export writes the tokenizer from tokenizer.json")
    }
    let tcURL = directory.appendingPathComponent("tokenizer_config.json")
    var tc = try JSONSideFile.object(at: tcURL)
    var out = [(String, GGUFValue)]()
    if let space = tc?["add_prefix_space"] as? Bool { out.append(("tokenizer.ggml.add_space_prefix", .bool(space))) }

    let model = json["model"] as? [String: Any] ?? [:]
    guard model["type"] as? String == "BPE", let vocab = model["vocab"] as? [String: Int],
          (json["decoder"] as? [String: Any])?["type"] as? String == "ByteLevel" else {
      throw PEFTError("\(tokURL.path): only byte-level BPE tokenizers (llama.cpp's gpt2 model) are exported to GGUF here; "
        + "convert this one with llama.cpp's convert_hf_to_gguf.py")
    }
    guard let pre = preTokenizerName(tokenizer: tokenizer, json["pre_tokenizer"]) else {
      throw PEFTError("\(tokURL.path): its pre_tokenizer matches none llama.cpp names that this exporter knows "
        + "(gpt-2, smollm, llama-bpe, qwen2); convert with llama.cpp's convert_hf_to_gguf.py")
    }
    out.append(("tokenizer.ggml.model", .string("gpt2")))
    out.append(("tokenizer.ggml.pre", .string(pre)))

    // Tokens by id: the model's vocabulary and the added tokens.
    let added = (json["added_tokens"] as? [[String: Any]]) ?? []
    var byID = [Int: String]()
    for (token, id) in vocab { byID[id] = token }
    var addedByID = [Int: (special: Bool, normalized: Bool)]()
    for a in added {
      guard let id = a["id"] as? Int, let content = a["content"] as? String else { continue }
      byID[id] = content
      addedByID[id] = ((a["special"] as? Bool) ?? false, (a["normalized"] as? Bool) ?? false)
    }
    if let top = byID.keys.max(), top >= vocabularySize {
      throw PEFTError("\(tokURL.path): token id \(top) is outside the model's vocab_size \(vocabularySize)")
    }
    var tokens = [GGUFValue](), types = [GGUFValue]()
    tokens.reserveCapacity(vocabularySize)
    types.reserveCapacity(vocabularySize)
    for id in 0..<vocabularySize {
      guard var token = byID[id] else {
        tokens.append(.string("[PAD\(id)]"))
        types.append(.int32(GGUFHFMetadata.unused))
        continue
      }
      var type = GGUFHFMetadata.normal
      if let a = addedByID[id] {
        // llama.cpp wants added tokens pre-normalised: a non-normalised one as it round-trips.
        if !a.normalized { token = tokenizer.decode(tokenizer.encode(token, addSpecialTokens: false)) }
        if a.special || looksSpecial(token) {
          type = GGUFHFMetadata.control
        } else {
          token = token.replacingOccurrences(of: "\u{2581}", with: " ")
          type = GGUFHFMetadata.userDefined
        }
      }
      tokens.append(.string(token))
      types.append(.int32(type))
    }
    out.append(("tokenizer.ggml.tokens", .array(elementType: .string, tokens)))
    out.append(("tokenizer.ggml.token_type", .array(elementType: .int32, types)))

    // Merges: "a b" strings, or pairs joined with their spaces written as U+0120.
    var merges = [GGUFValue]()
    if let list = model["merges"] as? [Any] {
      for entry in list {
        if let s = entry as? String {
          merges.append(.string(s))
        } else if let pair = entry as? [String], pair.count == 2 {
          merges.append(.string(pair.map { $0.replacingOccurrences(of: " ", with: "\u{120}") }.joined(separator: " ")))
        } else {
          throw PEFTError("\(tokURL.path): model.merges has an entry that is neither \"a b\" nor [a, b]")
        }
      }
    }
    if !merges.isEmpty { out.append(("tokenizer.ggml.merges", .array(elementType: .string, merges))) }

    // Special ids: tokenizer_config's <kind>_token by content, then config.json's <kind>_token_id.
    var addFlags = [(String, Bool)]()
    func setAdd(_ kind: String, _ value: Bool, overwrite: Bool) {
      if let i = addFlags.firstIndex(where: { $0.0 == kind }) {
        if overwrite { addFlags[i].1 = value }
      } else {
        addFlags.append((kind, value))
      }
    }
    let content = { (v: Any?) -> String? in (v as? String) ?? ((v as? [String: Any])?["content"] as? String) }
    do {
      var bos = content(tc?["bos_token"]), eos = content(tc?["eos_token"])
      let cls = content(tc?["cls_token"]), sep = content(tc?["sep_token"])
      if bos == nil, let cls { tc?["bos_token"] = cls; bos = cls }
      if eos == nil, let sep { tc?["eos_token"] = sep; eos = sep }
      let processor = json["post_processor"] as? [String: Any]
      let processors = (processor?["processors"] as? [[String: Any]]) ?? (processor.map { [$0] } ?? [])
      for proc in processors {
        switch proc["type"] as? String {
        case "ByteLevel"?:
          setAdd("bos", false, overwrite: false)
          setAdd("eos", false, overwrite: false)
        case "TemplateProcessing"?:
          try templateFlags(proc, bos: bos, eos: eos, cls: cls, sep: sep, path: tokURL.path, setAdd: { setAdd($0, $1, overwrite: true) })
        case let other?:
          throw PEFTError("\(tokURL.path): post_processor \(other) is not exported to GGUF here")
        case nil:
          break
        }
      }
    }
    var ids = [(String, Int)]()
    func setID(_ kind: String, _ id: Int?) throws {
      guard let id else { return }
      guard id >= 0 else { throw PEFTError("\(tcURL.path): \(kind) token id \(id) is negative") }
      if id < vocabularySize, !ids.contains(where: { $0.0 == kind }) { ids.append((kind, id)) }
    }
    if let tc {
      for kind in kinds {
        if let flag = tc["add_\(kind)_token"] as? Bool { setAdd(kind, flag, overwrite: false) }
        guard let text = content(tc["\(kind)_token"]) else { continue }
        try setID(kind, added.first { $0["content"] as? String == text }?["id"] as? Int)
      }
    }
    for kind in kinds { try setID(kind, config["\(kind)_token_id"] as? Int) }
    for (kind, id) in ids { out.append(("tokenizer.ggml." + idKeys[kind]!, .uint32(UInt32(id)))) }
    for (kind, flag) in addFlags { out.append(("tokenizer.ggml.add_\(kind)_token", .bool(flag))) }
    if tc != nil, let template = try chatTemplate(directory: directory, tokenizerConfig: tc!) {
      out.append(("tokenizer.chat_template", .string(template)))
    }
    return out
  }

  /// A token the converter marks CONTROL though not flagged special: <|…|>, <｜…｜>, <unused…>, …
  static func looksSpecial(_ t: String) -> Bool {
    ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].contains(t) || (t.hasPrefix("<|") && t.hasSuffix("|>"))
      || (t.hasPrefix("<\u{FF5C}") && t.hasSuffix("\u{FF5C}>")) || (t.hasPrefix("<unused") && t.hasSuffix(">"))
  }

  /// gguf-py's reading of a TemplateProcessing post-processor, for the simple templates it
  /// handles: a leading special token that is the BOS/CLS adds BOS; a trailing one that is the
  /// EOS adds EOS; a separator between A and B in the pair template adds SEP.
  static func templateFlags(_ proc: [String: Any], bos: String?, eos: String?, cls: String?, sep: String?, path: String,
                            setAdd: (String, Bool) -> Void) throws {
    let single = (proc["single"] as? [[String: Any]]) ?? []
    let pair = (proc["pair"] as? [[String: Any]]) ?? []
    let special = { (e: [String: Any]?) -> String? in (e?["SpecialToken"] as? [String: Any])?["id"] as? String }
    let sequence = { (e: [String: Any]?) -> String? in (e?["Sequence"] as? [String: Any])?["id"] as? String }
    var first: String?, last: String?
    if single.count > 1 {
      first = special(single.first)
      if let first {
        guard first == bos || first == cls else {
          throw PEFTError("\(path): post_processor starts with \(first), which is not the BOS/CLS token")
        }
        setAdd("bos", true)
      }
      last = special(single.last)
      if let last {
        guard last == eos else { throw PEFTError("\(path): post_processor ends with \(last), which is not the EOS token") }
        setAdd("eos", true)
      }
    }
    guard !pair.isEmpty else { return }
    let start = first != nil && special(pair.first) == first ? 1 : 0
    let stop = last != nil && special(pair.last) == last ? pair.count - 1 : pair.count
    guard start < stop else { return }
    var middle = Array(pair[start..<stop])
    guard sequence(middle.first) == "A", sequence(middle.last) == "B" else { return }
    middle = Array(middle.dropFirst().dropLast())
    guard !middle.isEmpty else { return }
    var addSep = false
    if let entry = special(middle.first), entry == sep || entry == eos, last == nil { addSep = true }
    if middle.count == 2, let entry = special(middle[1]), entry == sep || entry == eos { addSep = true }
    setAdd("sep", addSep)
  }

  /// tokenizer_config.json's chat_template, else chat_template.jinja, else chat_template.json's.
  static func chatTemplate(directory: URL, tokenizerConfig tc: [String: Any]) throws -> String? {
    if let t = tc["chat_template"] {
      guard let s = t as? String else {
        throw PEFTError("\(directory.appendingPathComponent("tokenizer_config.json").path): chat_template is not a "
          + "string (named template lists are not exported to GGUF here)")
      }
      return s
    }
    let jinja = directory.appendingPathComponent("chat_template.jinja")
    if FileManager.default.fileExists(atPath: jinja.path) {
      do { return try String(contentsOf: jinja, encoding: .utf8) } catch {
        throw PEFTError("\(jinja.path): unreadable as UTF-8 text")
      }
    }
    let json = directory.appendingPathComponent("chat_template.json")
    return try JSONSideFile.object(at: json)?["chat_template"] as? String
  }

  /// llama.cpp's name (tokenizer.ggml.pre) for the tokenizer, as its converter finds it: the
  /// SHA-256 of the ids (printed as a Python list) the tokenizer gives `fingerprintText`, looked
  /// up among the converter's known tokenizers. A tokenizer it does not know gets the name whose
  /// pre-tokenizer splits text as tokenizer.json's does (those `GGUFTokenizerBuilder` reads
  /// back), or nil.
  static func preTokenizerName(tokenizer: Tokenizer, _ pre: Any?) -> String? {
    let ids = tokenizer.encode(fingerprintText)
    let digest = SHA256.hex(Array(("[" + ids.map(String.init).joined(separator: ", ") + "]").utf8))
    if let name = knownFingerprints[digest] { return name }
    guard let pre = pre as? [String: Any] else { return nil }
    for name in ["gpt-2", "smollm", "llama-bpe", "qwen2"] {
      if let want = GGUFTokenizerBuilder.preTokenizerJSON(name), sameSplits(pre, want) { return name }
    }
    return nil
  }

  /// The text llama.cpp's converter tokenises to fingerprint a BPE pre-tokenizer (whitespace
  /// runs, emoji sequences, digit runs, Khmer, CJK, Cyrillic, quotes and English contractions).
  static let fingerprintText = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\u{1F680} (normal) \u{1F636}\u{200D}\u{1F32B}\u{FE0F} (multiple emojis concatenated) \u{2705} \u{1F999}\u{1F999} 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u{1780}\u{17B6}\u{1793}\u{17CB}\u{178F}\u{17C2}\u{1796}\u{17B7}\u{179F}\u{17C1}\u{179F}\u{17A2}\u{17B6}\u{1785}\u{1F601} ?\u{6211}\u{60F3}\u{5728}apple\u{5DE5}\u{4F5C}1314151\u{5929}\u{FF5E} ------======= \u{43D}\u{435}\u{449}\u{43E} \u{43D}\u{430} \u{411}\u{44A}\u{43B}\u{433}\u{430}\u{440}\u{441}\u{43A}\u{438} ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"

  /// Fingerprints (of `fingerprintText`'s ids) the converter recognises, for the names
  /// `GGUFTokenizerBuilder` reads back: GPT-2, SmolLM, Llama 3, Qwen2, StarCoder, Refact.
  static let knownFingerprints: [String: String] = [
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
  ]

  /// Whether two pre-tokenizer JSON objects split text alike (type, regex, digits, use_regex,
  /// add_prefix_space, behaviour, invert; trim_offsets only moves offsets).
  static func sameSplits(_ a: Any?, _ b: Any?) -> Bool {
    guard let a = a as? [String: Any], let b = b as? [String: Any], a["type"] as? String == b["type"] as? String else {
      return false
    }
    switch a["type"] as? String {
    case "Sequence"?:
      let x = (a["pretokenizers"] as? [Any]) ?? [], y = (b["pretokenizers"] as? [Any]) ?? []
      return x.count == y.count && zip(x, y).allSatisfy { sameSplits($0, $1) }
    case "ByteLevel"?:
      return (a["add_prefix_space"] as? Bool ?? true) == (b["add_prefix_space"] as? Bool ?? true)
        && (a["use_regex"] as? Bool ?? true) == (b["use_regex"] as? Bool ?? true)
    case "Digits"?:
      return (a["individual_digits"] as? Bool ?? false) == (b["individual_digits"] as? Bool ?? false)
    case "Split"?:
      return ((a["pattern"] as? [String: Any])?["Regex"] as? String) == ((b["pattern"] as? [String: Any])?["Regex"] as? String)
        && a["behavior"] as? String == b["behavior"] as? String && (a["invert"] as? Bool ?? false) == (b["invert"] as? Bool ?? false)
    default:
      return false
    }
  }
}
