// The public tokenizer: a Hugging Face tokenizer.json pipeline reproduced exactly.
import Foundation
import VKFCore

/// A Hugging Face `tokenizer.json` tokenizer (BPE or WordPiece model) whose ids equal HF `tokenizers`.
///
/// Pipeline, as in `TokenizerImpl::encode`: added tokens are cut out of the raw text, the
/// rest is normalized, normalized added tokens are cut out, pre-tokenized into words, each
/// word is BPE-encoded, and the post-processor adds special tokens.
public final class Tokenizer: Sendable {
  private let model: any SubwordModel
  private let added: AddedVocabulary
  private let addedByID: [Int: AddedToken]
  /// What `token(for:)` returns for added ids: the normalized form for normalized tokens
  /// (HF `simple_id_to_token` reads its normalized cache).
  private let addedText: [Int: String]
  private let addedByContent: [[UInt8]: AddedToken]
  private let normalizer: Normalizer?
  private let preTokenizer: PreTokenizer?
  private let postProcessor: PostProcessor?
  private let decoder: TokenDecoder?

  /// The added tokens whose `special` flag is set (skipped by `decode(skipSpecialTokens:)`).
  public let specialTokens: Set<String>
  /// All entries of `added_tokens`, in file order.
  public var addedTokens: [AddedToken] { added.tokens }
  /// Beginning-of-sequence id: `bos_token` of a sibling tokenizer_config.json, else the
  /// special token the post-processor puts first, else nil.
  public let bosTokenID: Int?
  /// End-of-sequence id: `eos_token` of a sibling tokenizer_config.json, else the special token
  /// the post-processor puts last, else the first of `</s>`, `<|end_of_text|>`, `<|endoftext|>`, `<eos>`.
  public let eosTokenID: Int?

  /// Loads `tokenizer.json` at `url`, and `tokenizer_config.json` beside it if present
  /// (only for `bos_token` / `eos_token`; present but not a JSON object is an error).
  public convenience init(contentsOf url: URL) throws {
    let data: Data
    do {
      data = try BoundedFile.read(url, BoundedFile.tokenizer)
    } catch {
      throw TokenizerError.unreadable(path: url.path, reason: error.localizedDescription)
    }
    let configURL = url.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
    var names: (bos: String?, eos: String?) = (nil, nil)
    if let config = try JSONSideFile.object(at: configURL) {
      names = (Self.tokenName(config["bos_token"]), Self.tokenName(config["eos_token"]))
    }
    do {
      try self.init(json: data, bosToken: names.bos, eosToken: names.eos)
    } catch let error as TokenizerError {
      throw TokenizerError.inFile(path: url.path, error)  // the message names the file
    }
  }

  /// Parses tokenizer.json bytes; `bosToken` / `eosToken` override the inferred ids.
  public init(json data: Data, bosToken: String? = nil, eosToken: String? = nil) throws {
    let parsed: Any
    do {
      parsed = try JSONSerialization.jsonObject(with: Self.escapingByteOrderMarks(data))
    } catch {
      throw TokenizerError.notJSON(reason: "\(error)")
    }
    guard let dict = parsed as? [String: Any] else { throw TokenizerError.notJSON(reason: "top level is not an object") }
    let root = JSONObject(raw: dict, path: "")
    let modelJSON = try root.object("model")
    let modelType = try modelJSON.optionalString("type") ?? (modelJSON.value("merges") != nil ? "BPE" : "")
    let model: any SubwordModel
    switch modelType {
    case "BPE": model = try BPEModel(json: modelJSON)
    case "WordPiece": model = try WordPieceModel(json: modelJSON)
    default: throw TokenizerError.unsupported(component: "model", type: modelType)
    }
    self.model = model
    normalizer = try root.optionalObject("normalizer").map(Normalizer.init(json:))
    preTokenizer = try root.optionalObject("pre_tokenizer").map(PreTokenizer.init(json:))
    postProcessor = try root.optionalObject("post_processor").map(PostProcessor.init(json:))
    decoder = try root.optionalObject("decoder").map(TokenDecoder.init(json:))
    let tokens = root.value("added_tokens") == nil ? [] : try root.objects("added_tokens").map(AddedToken.init(json:))
    added = AddedVocabulary(tokens: tokens, normalizer: normalizer)
    addedByID = Dictionary(tokens.map { ($0.id, $0) }, uniquingKeysWith: { $1 })
    let norm = normalizer
    addedText = Dictionary(tokens.map { t in (t.id, t.normalized ? (norm?.apply(t.content) ?? t.content) : t.content) },
                           uniquingKeysWith: { $1 })
    addedByContent = Dictionary(tokens.map { (Array($0.content.utf8), $0) }, uniquingKeysWith: { $1 })
    specialTokens = Set(tokens.filter(\.special).map(\.content))

    let lookup = { (name: String) -> Int? in
      let key = Array(name.utf8)
      return tokens.first { Array($0.content.utf8) == key }?.id ?? model.vocab[key]
    }
    let framing = postProcessor?.apply([-1]) ?? [-1]
    let split = framing.firstIndex(of: -1) ?? 0
    bosTokenID = bosToken.flatMap(lookup) ?? framing[..<split].first
    eosTokenID = eosToken.flatMap(lookup) ?? framing[(split + 1)...].last
      ?? ["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"].lazy.compactMap(lookup).first
  }

  /// Rewrites raw U+FEFF inside JSON strings as the escape `\ufeff`.
  ///
  /// Foundation's JSONSerialization silently drops a raw U+FEFF at the start of a string,
  /// which would corrupt vocabulary entries such as "\u{FEFF}" (SentencePiece vocabularies
  /// have them). Its UTF-8 form EF BB BF cannot occur outside a string in valid JSON, except
  /// as a file-leading byte order mark, which is removed.
  static func escapingByteOrderMarks(_ data: Data) -> Data {
    let bom = Data([0xEF, 0xBB, 0xBF])
    let body = data.starts(with: bom) ? Data(data.dropFirst(3)) : data
    guard body.range(of: bom) != nil else { return body }
    let bytes = [UInt8](body)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count + 64)
    var i = 0
    while i < bytes.count {
      if bytes[i] == 0xEF, i + 2 < bytes.count, bytes[i + 1] == 0xBB, bytes[i + 2] == 0xBF {
        out.append(contentsOf: Array("\\ufeff".utf8))
        i += 3
      } else {
        out.append(bytes[i])
        i += 1
      }
    }
    return Data(out)
  }

  /// tokenizer_config.json stores a token as a string or as `{"content": …}`.
  private static func tokenName(_ value: Any?) -> String? {
    if let s = value as? String { return s }
    return (value as? [String: Any])?["content"] as? String
  }

  // MARK: - Vocabulary

  /// Number of ids: one more than the largest id of the model or the added tokens.
  public var vocabularySize: Int { max(model.idToToken.count, (addedByID.keys.max() ?? -1) + 1) }

  /// The id of `token` (added tokens first, then the model vocabulary), compared by code point.
  public func tokenID(for token: String) -> Int? {
    let key = Array(token.utf8)
    return addedByContent[key]?.id ?? model.vocab[key]
  }

  /// The token string of `id`, or nil if no token has it.
  public func token(for id: Int) -> String? {
    if let t = addedText[id] { return t }
    return id >= 0 && id < model.idToToken.count ? model.idToToken[id] : nil
  }

  // MARK: - Encode / decode

  /// Token ids of `text`; `addSpecialTokens` applies the post-processor (e.g. Llama's BOS).
  /// Special tokens written in `text` are always recognised.
  public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
    var ids: [Int] = []
    for (id, piece, start) in added.split(text, normalizedSet: false) {
      if let id {
        ids.append(id)
        continue
      }
      let normalized = normalizer?.apply(piece) ?? piece
      if normalized.isEmpty { continue }
      for (nid, sub, subStart) in added.split(normalized, normalizedSet: true) {
        if let nid {
          ids.append(nid)
        } else if !sub.isEmpty {
          let first = TextPiece(text: sub, atStart: start == 0 && subStart == 0)
          let words = preTokenizer?.apply([first]) ?? [first]
          for w in words { ids.append(contentsOf: model.tokenize(w.text)) }
        }
      }
    }
    if addSpecialTokens, let postProcessor { return postProcessor.apply(ids) }
    return ids
  }

  /// Text of `ids` through the decoder; unknown ids are skipped, as in HF.
  public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
    var tokens: [String] = []
    tokens.reserveCapacity(ids.count)
    for id in ids {
      guard let t = token(for: id) else { continue }
      if skipSpecialTokens && specialTokens.contains(where: { $0.utf8.elementsEqual(t.utf8) }) { continue }
      tokens.append(t)
    }
    guard let decoder else { return tokens.joined(separator: " ") }
    return decoder.decode(tokens)
  }
}
