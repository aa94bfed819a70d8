// The BPE model of tokenizer.json: vocabulary, ranked merges, byte fallback, unknown tokens.
import Foundation

/// Byte-pair encoding exactly as HF `tokenizers` `models::bpe::BPE` (dropout not supported).
///
/// Vocabulary keys are UTF-8 bytes, not `String`: Swift's `String` hashing treats canonically
/// equivalent text ("é" / "e\u{301}") as equal, while HF compares code points.
final class BPEModel: SubwordModel, @unchecked Sendable {
  // Immutable after init except `cache`, which `lock` guards.
  /// Token bytes → id.
  let vocab: [[UInt8]: Int]
  /// id → token text (nil for ids the vocabulary skips).
  let idToToken: [String?]
  /// (left id << 32 | right id) → (rank << 32 | merged id).
  private let merges: [UInt64: UInt64]
  private let unkID: Int?
  private let byteFallback: Bool
  private let fuseUnk: Bool
  private let ignoreMerges: Bool
  private let prefix: String?
  private let suffix: String?
  /// Single-scalar tokens, for the common case without prefix / suffix.
  private let scalarIDs: [UInt32: Int]
  /// `<0xXX>` token ids (byte fallback), -1 when absent.
  private let byteIDs: [Int]
  private var cache: [[UInt8]: [Int]] = [:]
  private let lock = NSLock()
  /// How far past the entry count a vocabulary id may be.
  static let idSlack = 65_536

  /// Words cached at most; the cache is cleared when it grows past this (HF uses 10,000).
  private static let cacheCapacity = 50_000

  /// Parses `model` (type BPE).
  init(json: JSONObject) throws {
    let (vocab, idToToken) = try Self.vocabulary(json)
    self.vocab = vocab
    self.idToToken = idToToken
    let prefix = try json.optionalString("continuing_subword_prefix").flatMap { $0.isEmpty ? nil : $0 }
    self.prefix = prefix
    suffix = try json.optionalString("end_of_word_suffix").flatMap { $0.isEmpty ? nil : $0 }
    byteFallback = try json.bool("byte_fallback", default: false)
    fuseUnk = try json.bool("fuse_unk", default: false)
    ignoreMerges = try json.bool("ignore_merges", default: false)
    if let unk = try json.optionalString("unk_token") {
      guard let id = vocab[Array(unk.utf8)] else {
        throw TokenizerError.malformed(field: "model.unk_token", reason: "'\(unk)' is not in model.vocab")
      }
      unkID = id
    } else {
      unkID = nil
    }
    if let d = (json.value("dropout") as? NSNumber)?.doubleValue, d > 0 {
      throw TokenizerError.unsupported(component: "BPE dropout", type: "\(d)")
    }

    // Merges: ["a b", …] (legacy) or [["a", "b"], …]. Rank is the position in the list.
    guard let mergesRaw = json.value("merges") as? [Any] else { throw json.missing("merges", "an array") }
    let prefixLen = prefix?.utf8.count ?? 0
    var merges: [UInt64: UInt64] = [:]
    merges.reserveCapacity(mergesRaw.count)
    for (rank, entry) in mergesRaw.enumerated() {
      let a: String, b: String
      if let s = entry as? String {
        let parts = s.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2 else {
          throw TokenizerError.malformed(field: "model.merges[\(rank)]", reason: "'\(s)' is not two tokens separated by a space")
        }
        (a, b) = (String(parts[0]), String(parts[1]))
      } else if let pair = entry as? [Any], pair.count == 2, let x = pair[0] as? String, let y = pair[1] as? String {
        (a, b) = (x, y)
      } else {
        throw TokenizerError.malformed(field: "model.merges[\(rank)]", reason: "expected \"a b\" or [\"a\", \"b\"]")
      }
      let mergeName = "\(a) \(b)"
      guard let aID = vocab[Array(a.utf8)] else { throw TokenizerError.unknownMergeToken(merge: mergeName, token: a) }
      guard let bID = vocab[Array(b.utf8)] else { throw TokenizerError.unknownMergeToken(merge: mergeName, token: b) }
      let merged = Array(a.utf8) + Array(b.utf8).dropFirst(prefixLen)
      guard let newID = vocab[merged] else {
        throw TokenizerError.unknownMergeToken(merge: mergeName, token: String(decoding: merged, as: UTF8.self))
      }
      let key = UInt64(aID) << 32 | UInt64(bID)
      if merges[key] == nil { merges[key] = UInt64(rank) << 32 | UInt64(newID) }
    }
    self.merges = merges

    var scalarIDs: [UInt32: Int] = [:]
    for (bytes, id) in vocab where bytes.count <= 4 {
      let s = String(decoding: bytes, as: UTF8.self).unicodeScalars
      if s.count == 1, let c = s.first { scalarIDs[c.value] = id }
    }
    self.scalarIDs = scalarIDs
    byteIDs = (0..<256).map { vocab[Array(String(format: "<0x%02X>", $0).utf8)] ?? -1 }
  }

  /// A model's `vocab` object as token bytes → id and id → token (nil for skipped ids),
  /// shared by BPE and WordPiece.
  static func vocabulary(_ json: JSONObject) throws -> (vocab: [[UInt8]: Int], idToToken: [String?]) {
    guard let vocabRaw = json.value("vocab") as? [String: Any] else { throw json.missing("vocab", "an object") }
    var vocab: [[UInt8]: Int] = [:]
    vocab.reserveCapacity(vocabRaw.count)
    var maxID = -1
    // Ids are dense in every real vocabulary; one far past the entry count would size the
    // id → token table by a corrupt number (a resource cap, checked before allocating).
    let idLimit = max(2 * vocabRaw.count, vocabRaw.count + Self.idSlack)
    for (token, v) in vocabRaw {
      guard let n = v as? NSNumber, n.intValue >= 0 else { throw json.missing("vocab[\(token)]", "an id ≥ 0") }
      guard n.intValue < idLimit else {
        throw json.missing("vocab[\(token)]", "an id below \(idLimit) (the vocabulary has \(vocabRaw.count) entries; "
          + "got \(n.intValue))")
      }
      vocab[Array(token.utf8)] = n.intValue
      maxID = max(maxID, n.intValue)
    }
    var idToToken = [String?](repeating: nil, count: maxID + 1)
    for (token, v) in vocabRaw { if let n = v as? NSNumber { idToToken[n.intValue] = token } }
    return (vocab, idToToken)
  }

  /// The ids of one pre-tokenized word.
  func tokenize(_ word: String) -> [Int] {
    if word.isEmpty { return [] }
    let key = Array(word.utf8)
    if ignoreMerges, let id = vocab[key] { return [id] }
    lock.lock()
    let hit = cache[key]
    lock.unlock()
    if let hit { return hit }
    let ids = merge(initialSymbols(word))
    lock.lock()
    if cache.count >= Self.cacheCapacity { cache.removeAll(keepingCapacity: true) }
    cache[key] = ids
    lock.unlock()
    return ids
  }

  /// HF `BPE::merge_word` before merging: one symbol per scalar, byte fallback, unk fusing.
  private func initialSymbols(_ word: String) -> [Int] {
    var ids: [Int] = []
    ids.reserveCapacity(word.utf8.count)
    var pendingUnk = false  // an unk symbol not yet appended (HF's `unk` variable)
    let scalars = word.unicodeScalars
    var index = scalars.startIndex
    while index < scalars.endIndex {
      let c = scalars[index]
      let isFirst = index == scalars.startIndex
      index = scalars.index(after: index)
      let isLast = index == scalars.endIndex
      var id: Int?
      var piece: String?
      if prefix == nil && suffix == nil {
        id = scalarIDs[c.value]
      } else {
        var s = String(Character(c))
        if !isFirst, let prefix { s = prefix + s }
        if isLast, let suffix { s += suffix }
        id = vocab[Array(s.utf8)]
        piece = s
      }
      if let id {
        if pendingUnk, let unkID { ids.append(unkID) }
        pendingUnk = false
        ids.append(id)
        continue
      }
      if byteFallback {
        let bytes = piece.map { Array($0.utf8) } ?? Array(String(Character(c)).utf8)
        let fallback = bytes.map { byteIDs[Int($0)] }
        if !fallback.contains(-1) {
          // HF appends these without flushing a pending unk first; keep that order.
          ids.append(contentsOf: fallback)
          continue
        }
      }
      if let unkID {
        if pendingUnk && !fuseUnk { ids.append(unkID) }
        pendingUnk = true
      }
    }
    if pendingUnk, let unkID { ids.append(unkID) }
    return ids
  }

  /// HF `Word::merge_all`: repeatedly apply the lowest-ranked merge, leftmost first.
  private func merge(_ initial: [Int]) -> [Int] {
    var ids = initial
    let n = ids.count
    if n < 2 { return ids }
    var next = Array(1...n)  // n means "none"
    var prev = Array(-1..<(n - 1))
    var alive = [Bool](repeating: true, count: n)
    var heap = MinHeap()
    for i in 0..<(n - 1) {
      if let m = merges[UInt64(ids[i]) << 32 | UInt64(ids[i + 1])] {
        heap.push((m & 0xFFFF_FFFF_0000_0000) | UInt64(i))
      }
    }
    while let top = heap.pop() {
      let rank = top >> 32
      let pos = Int(top & 0xFFFF_FFFF)
      guard alive[pos], next[pos] < n else { continue }
      let right = next[pos]
      guard let m = merges[UInt64(ids[pos]) << 32 | UInt64(ids[right])], m >> 32 == rank else { continue }
      ids[pos] = Int(m & 0xFFFF_FFFF)
      alive[right] = false
      next[pos] = next[right]
      if next[pos] < n { prev[next[pos]] = pos }
      if prev[pos] >= 0, let m = merges[UInt64(ids[prev[pos]]) << 32 | UInt64(ids[pos])] {
        heap.push((m & 0xFFFF_FFFF_0000_0000) | UInt64(prev[pos]))
      }
      if next[pos] < n, let m = merges[UInt64(ids[pos]) << 32 | UInt64(ids[next[pos]])] {
        heap.push((m & 0xFFFF_FFFF_0000_0000) | UInt64(pos))
      }
    }
    var out: [Int] = []
    var i = 0
    while i < n {
      out.append(ids[i])
      i = next[i]
    }
    return out
  }
}

/// A binary min-heap of packed (rank << 32 | position) keys: lowest rank, then leftmost.
struct MinHeap {
  private var items: [UInt64] = []

  /// Adds a key.
  mutating func push(_ x: UInt64) {
    items.append(x)
    var i = items.count - 1
    while i > 0 {
      let parent = (i - 1) / 2
      if items[parent] <= items[i] { break }
      items.swapAt(parent, i)
      i = parent
    }
  }

  /// Removes and returns the smallest key.
  mutating func pop() -> UInt64? {
    guard let top = items.first else { return nil }
    let last = items.removeLast()
    if items.isEmpty { return top }
    items[0] = last
    var i = 0
    while true {
      let l = 2 * i + 1, r = l + 1
      var smallest = i
      if l < items.count && items[l] < items[smallest] { smallest = l }
      if r < items.count && items[r] < items[smallest] { smallest = r }
      if smallest == i { break }
      items.swapAt(smallest, i)
      i = smallest
    }
    return top
  }
}
