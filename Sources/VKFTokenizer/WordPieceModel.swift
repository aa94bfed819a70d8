// The WordPiece model of tokenizer.json (BERT and its descendants).
import Foundation

/// What the tokenizer needs of a subword model: the vocabulary both ways and one word's ids.
protocol SubwordModel: Sendable {
  /// Token bytes → id (code points compared, as HF does).
  var vocab: [[UInt8]: Int] { get }
  /// id → token text (nil for ids the vocabulary skips).
  var idToToken: [String?] { get }
  /// The ids of one pre-tokenized word.
  func tokenize(_ word: String) -> [Int]
}

/// WordPiece exactly as HF `tokenizers` `models::wordpiece::WordPiece`: greedy longest match
/// first from the start of the word, every piece after the first looked up with the
/// continuing-subword prefix ("##"); a word longer than `max_input_chars_per_word` scalars,
/// or one with a remainder no vocabulary entry starts, is the unknown token alone.
final class WordPieceModel: SubwordModel {
  let vocab: [[UInt8]: Int]
  let idToToken: [String?]
  private let unkID: Int
  private let prefix: [UInt8]
  private let maxChars: Int

  /// Parses `model` (type WordPiece).
  init(json: JSONObject) throws {
    let (vocab, idToToken) = try BPEModel.vocabulary(json)
    self.vocab = vocab
    self.idToToken = idToToken
    let unk = try json.optionalString("unk_token") ?? "[UNK]"
    guard let id = vocab[Array(unk.utf8)] else {
      throw json.missing("unk_token", "a token of the vocabulary (\"\(unk)\" is not)")
    }
    unkID = id
    prefix = Array((try json.optionalString("continuing_subword_prefix") ?? "##").utf8)
    maxChars = try json.int("max_input_chars_per_word", default: 100)
  }

  func tokenize(_ word: String) -> [Int] {
    let scalars = Array(word.unicodeScalars)
    if scalars.isEmpty { return [] }
    if scalars.count > maxChars { return [unkID] }
    // UTF-8 offsets of every scalar boundary, so pieces are byte slices of the word.
    let bytes = Array(word.utf8)
    var bounds = [0]
    bounds.reserveCapacity(scalars.count + 1)
    for s in scalars { bounds.append(bounds[bounds.count - 1] + UTF8.width(s)) }
    var ids: [Int] = []
    var start = 0  // index into bounds
    while start < scalars.count {
      var end = scalars.count
      var found: Int?
      while start < end {
        let piece = bytes[bounds[start]..<bounds[end]]
        let key = start > 0 ? prefix + piece : Array(piece)
        if let id = vocab[key] { found = id; break }
        end -= 1
      }
      guard let id = found else { return [unkID] }
      ids.append(id)
      start = end
    }
    return ids
  }
}
