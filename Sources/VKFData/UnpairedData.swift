// Unpaired preference data for KTO: one prompt, one answer and whether it is desirable.
import Foundation

/// One tokenized KTO example.
public struct UnpairedExample: Sendable, Equatable {
  public var prompt: [Int]
  public var answer: [Int]
  /// Desirable (TRL's `label` true) or undesirable.
  public var desirable: Bool

  public init(prompt: [Int], answer: [Int], desirable: Bool) {
    self.prompt = prompt; self.answer = answer; self.desirable = desirable
  }

  /// The causal-LM example: prompt then answer, targets on the answer only.
  public var example: TokenizedExample {
    PreferencePair(prompt: prompt, chosen: answer, rejected: answer).example(chosen: true)
  }
}

/// A KTO dataset: TRL's unpaired records `{prompt, completion, label}` (strings or message
/// lists), or preference pairs, each split into a desirable and an undesirable example (TRL's
/// `unpair_preference_dataset`).
public struct UnpairedDataset {
  public var examples: [UnpairedExample]
  public var skippedRecords: Int
  public var stats: PreferenceStats

  public static let supportedFormats = "{prompt, completion, label} (strings or message lists) or preference pairs ("
    + PreferenceRecord.supportedFormats + ")"

  public static func load(_ url: URL, tokenizer: PreferenceTokenizer, skipBadRecords: Bool = false) throws -> UnpairedDataset {
    let loaded = try DatasetLoader.load(url, skipBadRecords: skipBadRecords)
    var stats = PreferenceStats()
    var examples: [UnpairedExample] = []
    for (i, record) in loaded.records.enumerated() {
      func fail(_ problem: String) -> DatasetError {
        DatasetError.invalidRecord(file: loaded.file, record: i, problem: problem)
      }
      do {
        if record["chosen"] != nil || record["rejected"] != nil {
          let r = try PreferenceRecord.normalise(record, file: loaded.file, index: i)
          for (answer, desirable) in [(r.chosen, true), (r.rejected, false)] {
            if let t = try tokenizer.tokenize(prompt: r.prompt, answer: answer, index: i, stats: &stats) {
              examples.append(UnpairedExample(prompt: t.prompt, answer: t.answer, desirable: desirable))
            }
          }
          continue
        }
        guard let label = record["label"] as? Bool else {
          throw fail("has keys [\(record.keys.sorted().joined(separator: ", "))] without a boolean \"label\"; "
            + "KTO records are " + supportedFormats)
        }
        let prompt: Conversation
        switch record["prompt"] {
        case let text as String:
          prompt = Conversation(system: record["system"] as? String, turns: [Turn(role: "user", content: text)])
        case let list as [Any]:
          prompt = try PreferenceRecord.messages(list, key: "prompt", fail: fail)
        default:
          throw fail("\"prompt\" must be a string or a list of messages")
        }
        guard prompt.turns.last?.role == "user" else { throw fail("\"prompt\" must end with a user message") }
        let answer: String
        switch record["completion"] {
        case let text as String: answer = text
        case let list as [Any]:
          let c = try PreferenceRecord.messages(list, key: "completion", fail: fail)
          guard c.turns.count == 1, let a = c.turns.first, a.role == "assistant" else {
            throw fail("\"completion\" must be a string or one assistant message")
          }
          answer = a.content
        default:
          throw fail("\"completion\" must be a string or one assistant message")
        }
        if let t = try tokenizer.tokenize(prompt: prompt, answer: answer, index: i, stats: &stats) {
          examples.append(UnpairedExample(prompt: t.prompt, answer: t.answer, desirable: label))
        }
      } catch let error as DatasetError {
        throw error.naming(file: loaded.file)
      }
    }
    guard examples.contains(where: \.desirable) || examples.contains(where: { !$0.desirable }), !examples.isEmpty else {
      throw DatasetError.invalidConfig("\(loaded.file): no usable example (\(stats.empty) empty after truncation)")
    }
    return UnpairedDataset(examples: examples, skippedRecords: loaded.skippedRecords, stats: stats)
  }
}
