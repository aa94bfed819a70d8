// Text for masked-language-model training, with its masks.
import Foundation
import VKFCore

/// Text for masked-language-model training (BERT's objective): each record's "text" (or
/// "sentence") tokenized without special tokens, cut into pieces of at most maxLength − 2
/// tokens, each wrapped as [CLS] … [SEP]; then 15 % of the ordinary tokens are chosen and of
/// those 80 % become [MASK], 10 % a random token and 10 % stay (transformers'
/// DataCollatorForLanguageModeling). The masks are drawn once, from the seed, in record order
/// (BERT's static masking): every epoch and every resumed run sees the same ones.
public struct MaskedLMDataset: Sendable {
  public var examples: [TokenizedExample]
  /// Masked tokens over all examples (the loss's count).
  public var maskedTokens = 0
  /// Records longer than one piece, split.
  public var split = 0

  /// The special ids the masking needs and never masks.
  public struct SpecialTokens: Sendable {
    public var cls: Int, sep: Int, mask: Int
    /// Every special id (padding, [UNK] …): never chosen for masking.
    public var all: Set<Int>
    public init(cls: Int, sep: Int, mask: Int, all: Set<Int>) {
      self.cls = cls; self.sep = sep; self.mask = mask; self.all = all.union([cls, sep, mask])
    }
  }

  /// transformers' `mlm_probability` default.
  public static let defaultProbability = 0.15

  public static func make(_ records: [DatasetRecord], file: String, maxLength: Int, special: SpecialTokens,
                          vocabulary: Int, probability: Double = defaultProbability, seed: UInt64,
                          encode: (String) -> [Int]) throws -> MaskedLMDataset {
    guard maxLength >= 3 else { throw DatasetError.invalidConfig("max_seq_length must be ≥ 3 for masked-LM training") }
    guard probability > 0, probability < 1 else {
      throw DatasetError.invalidConfig("mlm_probability is \(probability); use a value in (0, 1) such as 0.15")
    }
    var out = MaskedLMDataset(examples: [])
    var rng = SplitMix64(seed: seed)
    let piece = maxLength - 2
    for (i, r) in records.enumerated() {
      let ids = encode(try ClassificationDataset.text(r, file: file, record: i + 1))
      if ids.isEmpty { continue }
      if ids.count > piece { out.split += 1 }
      for start in stride(from: 0, to: ids.count, by: piece) {
        var input = [special.cls] + ids[start..<min(ids.count, start + piece)] + [special.sep]
        var targets = [Int](repeating: TokenizedExample.ignoreIndex, count: input.count)
        for k in 1..<(input.count - 1) where !special.all.contains(input[k]) {
          guard rng.nextUnitDouble() < probability else { continue }
          targets[k] = input[k]
          out.maskedTokens += 1
          let u = rng.nextUnitDouble()
          if u < 0.8 {
            input[k] = special.mask
          } else if u < 0.9 {
            input[k] = Int(rng.next() % UInt64(max(vocabulary, 1)))
          }
        }
        out.examples.append(TokenizedExample(inputIds: input, targets: targets))
      }
    }
    return out
  }
}
