// Labelled sentences for sequence classification (SST-2 style): {"text" | "sentence", "label"}.
import Foundation

/// The label names of a classification run, in id order, and how records' labels map to ids.
public struct ClassificationLabels: Sendable, Equatable {
  /// Names by id ("0", "1" … when the data gives integers and the model names none).
  public var names: [String]

  public init(names: [String]) { self.names = names }

  /// The labels of a training file: integers 0…k−1 (names from `modelNames` when it has k or
  /// more, else "0"…), or strings (the model's names when they cover every one, else the
  /// distinct strings sorted). Mixed integers and strings are refused by record.
  public static func infer(_ records: [DatasetRecord], file: String, modelNames: [String]) throws -> ClassificationLabels {
    var ints = Set<Int>(), strings = Set<String>()
    for (i, r) in records.enumerated() {
      switch try rawLabel(r, file: file, record: i + 1) {
      case .id(let v): ints.insert(v)
      case .name(let s): strings.insert(s)
      }
      if !ints.isEmpty, !strings.isEmpty {
        throw DatasetError.invalidRecord(file: file, record: i + 1,
          problem: "\"label\" mixes integers and strings across records; use one kind")
      }
    }
    if let top = ints.max() {
      let k = max(top + 1, 2)
      return ClassificationLabels(names: modelNames.count >= k ? modelNames : (0..<k).map(String.init))
    }
    if Set(modelNames).isSuperset(of: strings), !modelNames.isEmpty { return ClassificationLabels(names: modelNames) }
    return ClassificationLabels(names: strings.sorted())
  }

  /// The id of record `record`'s label.
  public func id(of r: DatasetRecord, file: String, record: Int) throws -> Int {
    switch try Self.rawLabel(r, file: file, record: record) {
    case .id(let v):
      guard v < names.count else {
        throw DatasetError.invalidRecord(file: file, record: record,
          problem: "label \(v) is not one of the \(names.count) labels 0…\(names.count - 1)")
      }
      return v
    case .name(let s):
      guard let v = names.firstIndex(of: s) else {
        throw DatasetError.invalidRecord(file: file, record: record,
          problem: "label \"\(s)\" is not one of [\(names.joined(separator: ", "))]")
      }
      return v
    }
  }

  enum Raw { case id(Int), name(String) }

  static func rawLabel(_ r: DatasetRecord, file: String, record: Int) throws -> Raw {
    guard let value = r["label"] else {
      throw DatasetError.invalidRecord(file: file, record: record, problem: "has no \"label\" (an integer id or a name)")
    }
    if let s = value as? String { return .name(s) }
    if let n = value as? NSNumber, let v = Int(exactly: n.doubleValue), v >= 0 { return .id(v) }
    throw DatasetError.invalidRecord(file: file, record: record,
      problem: "\"label\" must be an integer ≥ 0 or a string, not \(value)")
  }
}

/// Tokenized labelled sentences: each example's ids are [CLS] … [SEP] (the tokenizer's
/// template) and its targets hold the label id at position 0, −100 elsewhere — the shape
/// the trainer's batching keeps (it never trains the last position of a row).
public struct ClassificationDataset: Sendable {
  public var examples: [TokenizedExample]
  /// Examples longer than the limit, cut (the final special token kept).
  public var truncated = 0
  /// Records skipped as malformed (with `skipBadRecords`).
  public var skippedRecords = 0

  /// Reads `url` (JSON array or JSONL) with `encode` (text → ids with special tokens).
  public static func load(_ url: URL, labels: ClassificationLabels, maxLength: Int,
                          encode: (String) -> [Int]) throws -> ClassificationDataset {
    let loaded = try DatasetLoader.load(url)
    return try make(loaded.records, file: loaded.file, labels: labels, maxLength: maxLength, encode: encode)
  }

  /// Builds examples from parsed records (1-based record numbers in errors).
  public static func make(_ records: [DatasetRecord], file: String, labels: ClassificationLabels, maxLength: Int,
                          encode: (String) -> [Int]) throws -> ClassificationDataset {
    guard maxLength >= 2 else { throw DatasetError.invalidConfig("max_seq_length must be ≥ 2 for classification") }
    var out = ClassificationDataset(examples: [])
    for (i, r) in records.enumerated() {
      let text = try Self.text(r, file: file, record: i + 1)
      let label = try labels.id(of: r, file: file, record: i + 1)
      var ids = encode(text)
      guard ids.count >= 2 else {
        throw DatasetError.invalidRecord(file: file, record: i + 1,
          problem: "encodes to \(ids.count) token(s); the tokenizer adds no [CLS]/[SEP] (check its post_processor)")
      }
      if ids.count > maxLength {
        ids = Array(ids.prefix(maxLength - 1)) + [ids[ids.count - 1]]
        out.truncated += 1
      }
      var targets = [Int](repeating: TokenizedExample.ignoreIndex, count: ids.count)
      targets[0] = label
      out.examples.append(TokenizedExample(inputIds: ids, targets: targets))
    }
    return out
  }

  /// The record's sentence: "text", else "sentence" (GLUE's SST-2 column).
  static func text(_ r: DatasetRecord, file: String, record: Int) throws -> String {
    for key in ["text", "sentence"] {
      if let v = r[key] {
        guard let s = v as? String else {
          throw DatasetError.invalidRecord(file: file, record: record, problem: "\"\(key)\" must be a string")
        }
        return s
      }
    }
    throw DatasetError.invalidRecord(file: file, record: record,
      problem: "has no \"text\" (or \"sentence\") string; classification records are {\"text\": …, \"label\": …}")
  }
}

