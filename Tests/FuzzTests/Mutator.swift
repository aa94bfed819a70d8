import Foundation
import VKFCore

/// A deterministic, structure-aware mutation fuzzer: each input is a seed from the corpus
/// (real files of the format) changed by a few random edits — bit flips, byte runs deleted,
/// duplicated or inserted, "interesting" integers (0, −1, 2³¹, 2⁶³, huge lengths) written over
/// little-endian fields, dictionary tokens of the format spliced in, two seeds crossed. Edits
/// aimed at a format's structure (its keywords, its length fields) reach past the first
/// validity check far more often than random bytes do.
struct Mutator {
  var rng: SplitMix64
  /// Tokens of the format (JSON keys, Jinja keywords, dtype names, …) to splice in.
  let dictionary: [[UInt8]]

  init(seed: UInt64, dictionary: [String]) {
    rng = SplitMix64(seed: seed)
    self.dictionary = dictionary.map { Array($0.utf8) }
  }

  /// Values that sit on the edges of length and offset checks.
  static let interesting: [UInt64] = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
                                      0x1_0000_0000, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, UInt64.max,
                                      1 << 40, 1 << 20]

  mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(rng.next() % UInt64(n)) }

  /// One to eight edits of `input`; `other` is another seed for crossing over.
  mutating func mutate(_ input: [UInt8], other: [UInt8]) -> [UInt8] {
    var b = input
    for _ in 0..<(1 + below(8)) { edit(&b, other: other) }
    return b
  }

  private mutating func edit(_ b: inout [UInt8], other: [UInt8]) {
    let at = below(b.count + 1)
    switch below(10) {
    case 0 where !b.isEmpty:  // flip a bit
      let i = below(b.count); b[i] ^= UInt8(1) << UInt8(below(8))
    case 1 where !b.isEmpty:  // random byte
      b[below(b.count)] = UInt8(truncatingIfNeeded: rng.next())
    case 2 where !b.isEmpty:  // delete a run
      let n = min(1 + below(16), b.count - min(at, b.count))
      if at < b.count { b.removeSubrange(at..<(at + n)) }
    case 3 where !b.isEmpty:  // duplicate a run
      let start = below(b.count), n = min(1 + below(64), b.count - start)
      b.insert(contentsOf: b[start..<(start + n)], at: at)
    case 4, 5:  // splice a dictionary token
      if let token = dictionary.isEmpty ? nil : dictionary[below(dictionary.count)] { b.insert(contentsOf: token, at: at) }
    case 6 where b.count >= 8:  // an interesting integer over a little-endian field
      let value = Self.interesting[below(Self.interesting.count)]
      let width = [1, 2, 4, 8][below(4)], i = below(b.count - width + 1)
      for k in 0..<width { b[i + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k))) }
    case 7:  // an interesting integer as decimal text (JSON numbers, shape entries)
      let value = Self.interesting[below(Self.interesting.count)]
      let text = below(2) == 0 ? String(value) : "-" + String(value)
      b.insert(contentsOf: Array(text.utf8), at: at)
    case 8 where !other.isEmpty:  // cross over: our prefix, the other seed's suffix
      let j = below(other.count)
      b = Array(b.prefix(at)) + other[j...]
    case 9 where !b.isEmpty:  // truncate
      b.removeSubrange(below(b.count)...)
    default:
      b.insert(UInt8(truncatingIfNeeded: rng.next()), at: at)
    }
  }
}

/// Runs a fuzz target over its corpus: in the suite a fixed number of seeded inputs; with
/// `VKF_FUZZ_SECONDS` set (tools/fuzz) for that long, with fresh seeds, saving the input
/// being tried to `VKF_FUZZ_DIR/<target>.current` first so a crash leaves it behind, and any
/// input slower than `slowSeconds` to `<target>-slow-<n>`.
struct FuzzRun {
  let name: String
  let seeds: [[UInt8]]
  let dictionary: [String]
  /// An input that takes longer than this is a hang (tools/fuzz only; never timed in the suite).
  static let slowSeconds = 1.0

  /// Inputs per target in the suite: enough to cross every mutation with every seed, small
  /// enough for a debug build (~1–5 s per target).
  static let suiteIterations = 3_000

  /// Runs `body` on each mutated input; errors thrown by `body` are the expected outcome of
  /// bad input, a crash ends the process (and the test).
  func run(_ body: ([UInt8]) -> Void) -> (inputs: Int, slow: [String]) {
    precondition(!seeds.isEmpty, "\(name): empty corpus")
    let env = ProcessInfo.processInfo.environment
    let seconds = env["VKF_FUZZ_SECONDS"].flatMap(Double.init)
    let dir = env["VKF_FUZZ_DIR"].map { URL(fileURLWithPath: $0) }
    let seed = env["VKF_FUZZ_SEED"].flatMap(UInt64.init) ?? 0x5EED_F022
    var m = Mutator(seed: seed ^ Self.stableHash(name), dictionary: dictionary)
    let deadline = seconds.map { Date().addingTimeInterval($0) }
    var n = 0
    var slow: [String] = []
    let current = dir?.appendingPathComponent("\(name).current")
    // Seeds themselves first, unchanged.
    for s in seeds { body(s) }
    while deadline.map({ Date() < $0 }) ?? (n < Self.suiteIterations) {
      let input = m.mutate(seeds[m.below(seeds.count)], other: seeds[m.below(seeds.count)])
      if let current { try? Data(input).write(to: current) }
      let t0 = Date()
      body(input)
      if seconds != nil, Date().timeIntervalSince(t0) > Self.slowSeconds, let dir {
        let url = dir.appendingPathComponent("\(name)-slow-\(slow.count)")
        try? Data(input).write(to: url)
        slow.append(url.path)
      }
      n += 1
    }
    if let current { try? FileManager.default.removeItem(at: current) }
    return (n, slow)
  }

  /// FNV-1a of `s`: a seed per target that does not change between runs (`hashValue` does).
  static func stableHash(_ s: String) -> UInt64 {
    s.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
  }
}
