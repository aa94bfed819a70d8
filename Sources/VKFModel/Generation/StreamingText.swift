import VKFTokenizer

/// Turns token ids into text.
public protocol TokenTextDecoder {
  /// The text of `ids`, special tokens left out.
  func text(of ids: [Int]) -> String
}

extension Tokenizer: TokenTextDecoder {
  /// `decode(ids, skipSpecialTokens: true)`.
  public func text(of ids: [Int]) -> String { decode(ids, skipSpecialTokens: true) }
}

/// Decodes a growing list of ids into text deltas that only ever contain complete
/// characters: a character split over byte tokens (an emoji as four byte-level tokens)
/// appears once its last byte has arrived.
///
/// Matches text-generation-inference's `decode_token` / transformers' `TextStreamer`: decode
/// a window that starts a few tokens back (`prefixOffset`), so decoders that depend on the
/// neighbours (SentencePiece's leading-space strip) see context; emit what the window adds
/// past the previous decode, unless it ends in U+FFFD (an incomplete UTF-8 sequence).
public struct IncrementalDecoder {
  private let decoder: TokenTextDecoder
  private var ids: [Int] = []
  private var prefixOffset = 0
  private var readOffset = 0

  /// A decoder with no tokens yet.
  public init(_ decoder: TokenTextDecoder) { self.decoder = decoder }

  /// Adds one token; returns the newly complete text (often "", never a partial character).
  public mutating func append(_ id: Int) -> String {
    ids.append(id)
    let prefix = decoder.text(of: Array(ids[prefixOffset..<readOffset]))
    let window = decoder.text(of: Array(ids[prefixOffset...]))
    guard window.unicodeScalars.count > prefix.unicodeScalars.count,
          window.unicodeScalars.last != "\u{FFFD}" else { return "" }
    let delta = String(String.UnicodeScalarView(window.unicodeScalars.dropFirst(prefix.unicodeScalars.count)))
    prefixOffset = readOffset
    readOffset = ids.count
    return delta
  }

  /// What is still held back (an incomplete character at the end), decoded as is.
  public mutating func flush() -> String {
    guard readOffset < ids.count else { return "" }
    let prefix = decoder.text(of: Array(ids[prefixOffset..<readOffset]))
    let window = decoder.text(of: Array(ids[prefixOffset...]))
    readOffset = ids.count
    prefixOffset = readOffset
    return String(String.UnicodeScalarView(window.unicodeScalars.dropFirst(prefix.unicodeScalars.count)))
  }
}

/// Watches streamed text for stop strings. Text that could still be the start of a stop
/// string is held back, so nothing of a stop string is ever emitted, even when it spans
/// several tokens. Matching is on Unicode scalars (no canonical equivalence).
public struct StopStringMatcher {
  private let stops: [[Unicode.Scalar]]
  private var held: [Unicode.Scalar] = []
  /// The stop string found, once one is.
  public private(set) var matched: String?

  /// A matcher for `stopStrings` (empty: every push is emitted at once).
  public init(_ stopStrings: [String]) {
    stops = stopStrings.filter { !$0.isEmpty }.map { Array($0.unicodeScalars) }
  }

  /// Adds text; returns what is safe to emit. After a match it returns the text before the
  /// stop string and sets `matched`; later pushes return "".
  public mutating func push(_ text: String) -> String {
    guard matched == nil else { return "" }
    held += text.unicodeScalars
    // The earliest occurrence of any stop string ends the text.
    var first: (at: Int, stop: [Unicode.Scalar])?
    for s in stops {
      if let at = Self.find(s, in: held), at < (first?.at ?? Int.max) { first = (at, s) }
    }
    if let first {
      matched = String(String.UnicodeScalarView(first.stop))
      let out = Self.string(held[..<first.at])
      held.removeAll()
      return out
    }
    // Keep the longest suffix that is a proper prefix of some stop string.
    var keep = 0
    for s in stops {
      for len in stride(from: min(s.count - 1, held.count), to: keep, by: -1)
        where held[(held.count - len)...].elementsEqual(s[..<len]) {
        keep = len
        break
      }
    }
    let out = Self.string(held[..<(held.count - keep)])
    held.removeFirst(held.count - keep)
    return out
  }

  /// The held-back text, when generation ends without a match.
  public mutating func flush() -> String {
    defer { held.removeAll() }
    return matched == nil ? Self.string(held[...]) : ""
  }

  private static func find(_ needle: [Unicode.Scalar], in hay: [Unicode.Scalar]) -> Int? {
    guard needle.count <= hay.count else { return nil }
    for i in 0...(hay.count - needle.count) where hay[i..<(i + needle.count)].elementsEqual(needle) {
      return i
    }
    return nil
  }

  private static func string(_ s: ArraySlice<Unicode.Scalar>) -> String {
    var v = String.UnicodeScalarView()
    v.append(contentsOf: s)
    return String(v)
  }
}
