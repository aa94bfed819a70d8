// Preference pairs for DPO and reward-model training: parsing, templating, truncation.
import Foundation
import VKFTokenizer

/// One preference record, normalised: the prompt conversation (ending with a user turn) and
/// two candidate assistant answers.
public struct PreferenceRecord: Sendable, Equatable {
  /// System prompt and turns before the answer (the last turn is the user's).
  public var prompt: Conversation
  /// The preferred answer.
  public var chosen: String
  /// The dispreferred answer.
  public var rejected: String

  public init(prompt: Conversation, chosen: String, rejected: String) {
    self.prompt = prompt; self.chosen = chosen; self.rejected = rejected
  }

  /// Normalises `{prompt, chosen, rejected}` (strings or message lists), `{chosen, rejected}`
  /// message lists sharing their prompt turns, and hh-rlhf's `{chosen, rejected}` transcripts
  /// ("\n\nHuman: …\n\nAssistant: …", the prompt being the shared prefix up to the last
  /// "\n\nAssistant:").
  /// The preference formats `normalise` understands, for messages.
  public static let supportedFormats = "{prompt, chosen, rejected} (strings or message lists), {chosen, rejected} "
    + "message lists sharing their prompt, or hh-rlhf {chosen, rejected} transcripts"

  public static func normalise(_ record: DatasetRecord, file: String = "", index: Int = 0) throws -> PreferenceRecord {
    func fail(_ problem: String) -> DatasetError {
      DatasetError.invalidRecord(file: file, record: index, problem: problem)
    }
    guard let chosenValue = record["chosen"], let rejectedValue = record["rejected"] else {
      let missing = ["chosen", "rejected"].filter { record[$0] == nil }.map { "\"\($0)\"" }
      let keys = record.keys.sorted().joined(separator: ", ")
      let sft = DatasetFormat.detect(keys: Set(record.keys)).map {
        " (an SFT record, format \($0.rawValue): train it without --objective dpo/reward)"
      } ?? ""
      throw fail("has keys [\(keys)] but no \(missing.joined(separator: " and "))\(sft); preference records are "
        + Self.supportedFormats)
    }
    if let promptValue = record["prompt"] {
      let prompt: Conversation
      if let text = promptValue as? String {
        prompt = Conversation(system: record["system"] as? String, turns: [Turn(role: "user", content: text)])
      } else if let list = promptValue as? [Any] {
        prompt = try messages(list, key: "prompt", fail: fail)
      } else {
        throw fail("\"prompt\" must be a string or a list of messages")
      }
      guard prompt.turns.last?.role == "user" else { throw fail("\"prompt\" must end with a user message") }
      return PreferenceRecord(prompt: prompt, chosen: try answer(chosenValue, key: "chosen", fail: fail),
                              rejected: try answer(rejectedValue, key: "rejected", fail: fail))
    }
    if let c = chosenValue as? String, let r = rejectedValue as? String {
      return try transcriptPair(c, r, fail: fail)
    }
    if let c = chosenValue as? [Any], let r = rejectedValue as? [Any] {
      let cc = try messages(c, key: "chosen", fail: fail), rc = try messages(r, key: "rejected", fail: fail)
      guard let ca = cc.turns.last, ca.role == "assistant", let ra = rc.turns.last, ra.role == "assistant" else {
        throw fail("\"chosen\" and \"rejected\" must end with an assistant message")
      }
      let cp = Conversation(system: cc.system, turns: Array(cc.turns.dropLast()))
      let rp = Conversation(system: rc.system, turns: Array(rc.turns.dropLast()))
      guard cp == rp, cp.turns.last?.role == "user" else {
        throw fail("\"chosen\" and \"rejected\" must share their prompt messages (ending with a user message)")
      }
      return PreferenceRecord(prompt: cp, chosen: ca.content, rejected: ra.content)
    }
    throw fail("\"chosen\" and \"rejected\" must both be strings or both be message lists")
  }

  /// hh-rlhf: both strings are whole transcripts; the prompt is their shared prefix up to the
  /// last "\n\nAssistant:" inside it (an answer may itself contain that marker).
  static func transcriptPair(_ chosen: String, _ rejected: String,
                             fail: (String) -> DatasetError) throws -> PreferenceRecord {
    let marker = "\n\nAssistant:"
    let c = Array(chosen.utf8), r = Array(rejected.utf8)
    var common = 0
    while common < min(c.count, r.count), c[common] == r[common] { common += 1 }
    let shared = String(decoding: c[..<common], as: UTF8.self)
    guard let m = shared.range(of: marker, options: .backwards) else {
      throw fail("without \"prompt\", \"chosen\" and \"rejected\" must be \"\\n\\nHuman: …\\n\\nAssistant: …\" "
        + "transcripts sharing their prompt")
    }
    let prefixBytes = shared.utf8.distance(from: shared.startIndex, to: m.lowerBound)
    let answerStart = shared.utf8.distance(from: shared.startIndex, to: m.upperBound)
    let turns = try transcriptTurns(String(decoding: c[..<prefixBytes], as: UTF8.self), fail: fail)
    guard turns.last?.role == "user" else { throw fail("the transcript's prompt must end with a Human turn") }
    func answer(_ bytes: ArraySlice<UInt8>) -> String {
      let s = String(decoding: bytes, as: UTF8.self)
      return s.hasPrefix(" ") ? String(s.dropFirst()) : s
    }
    return PreferenceRecord(prompt: Conversation(turns: turns), chosen: answer(c[answerStart...]),
                            rejected: answer(r[answerStart...]))
  }

  /// Splits "\n\nHuman: a\n\nAssistant: b\n\nHuman: c" into turns.
  static func transcriptTurns(_ text: String, fail: (String) -> DatasetError) throws -> [Turn] {
    let markers = [("\n\nHuman:", "user"), ("\n\nAssistant:", "assistant")]
    var turns: [Turn] = []
    var rest = Substring(text)
    guard rest.hasPrefix("\n\nHuman:") else {
      throw fail("a transcript must start with \"\\n\\nHuman:\"")
    }
    while !rest.isEmpty {
      guard let (marker, role) = markers.first(where: { rest.hasPrefix($0.0) }) else {
        throw fail("unexpected text in the transcript")
      }
      rest = rest.dropFirst(marker.count)
      let next = markers.compactMap { rest.range(of: $0.0)?.lowerBound }.min() ?? rest.endIndex
      var content = rest[..<next]
      if content.hasPrefix(" ") { content = content.dropFirst() }
      turns.append(Turn(role: role, content: String(content)))
      rest = rest[next...]
    }
    return turns
  }

  /// A message list: leading system message apart.
  static func messages(_ list: [Any], key: String, fail: (String) -> DatasetError) throws -> Conversation {
    var system: String?
    var turns: [Turn] = []
    for (i, item) in list.enumerated() {
      guard let m = item as? [String: Any], let role = m["role"] as? String else {
        throw fail("\(key)[\(i)] must be an object with a string \"role\"")
      }
      let content = m["content"] as? String ?? ""
      if role == "system", turns.isEmpty, system == nil { system = content; continue }
      turns.append(Turn(role: role, content: content))
    }
    return Conversation(system: system, turns: turns)
  }

  /// An answer given as a string or as a list whose last message is the assistant's.
  static func answer(_ value: Any, key: String, fail: (String) -> DatasetError) throws -> String {
    if let s = value as? String { return s }
    if let list = value as? [Any] {
      let c = try messages(list, key: key, fail: fail)
      guard let last = c.turns.last, last.role == "assistant" else {
        throw fail("\"\(key)\" must end with an assistant message")
      }
      return last.content
    }
    throw fail("\"\(key)\" must be a string or a list of messages")
  }
}

/// Length limits of preference pairs, with TRL's names.
public struct PreferenceLimits: Sendable, Equatable, Codable {
  /// Prompt + longer answer, in tokens (`max_length`).
  public var maxLength: Int = 1024
  /// Prompt tokens kept when a pair is too long (`max_prompt_length`).
  public var maxPromptLength: Int = 512
  public init(maxLength: Int = 1024, maxPromptLength: Int = 512) {
    self.maxLength = maxLength; self.maxPromptLength = maxPromptLength
  }
}

/// A tokenized pair: the shared prompt and both answers (each ends with EOS unless cut).
public struct PreferencePair: Sendable, Equatable {
  public var prompt: [Int]
  public var chosen: [Int]
  public var rejected: [Int]

  public init(prompt: [Int], chosen: [Int], rejected: [Int]) {
    self.prompt = prompt; self.chosen = chosen; self.rejected = rejected
  }

  /// prompt + answer as a causal-LM example whose targets are the answer tokens only.
  public func example(chosen isChosen: Bool) -> TokenizedExample {
    let answer = isChosen ? chosen : rejected
    let ids = prompt + answer
    var targets = Array(repeating: TokenizedExample.ignoreIndex, count: ids.count)
    for i in max(0, prompt.count - 1)..<max(0, ids.count - 1) { targets[i] = ids[i + 1] }
    return TokenizedExample(inputIds: ids, targets: targets)
  }
}

/// What preference tokenization dropped or cut.
public struct PreferenceStats: Sendable, Equatable {
  /// Pairs shortened to `maxLength`.
  public var truncated = 0
  /// Tokens the cuts dropped (prompt, chosen and rejected together).
  public var droppedTokens = 0
  /// The longest cut pair's prompt + longer answer before the cut (0 when none was cut).
  public var longestCut = 0
  /// Pairs skipped because both answers were the same tokens after truncation.
  public var identical = 0
  /// Pairs skipped because an answer was empty after truncation.
  public var empty = 0
  public init() {}
}

/// Tokenizes preference pairs through the chat template.
///
/// Truncation (TRL's rule): when prompt + the longer answer exceeds `maxLength`, the prompt
/// keeps its last `maxPromptLength` tokens (the end of the conversation matters most);
/// answers that still do not fit keep their first `maxLength − prompt` tokens. A pair whose
/// answers are then empty or identical carries no preference and is skipped and counted.
public struct PreferenceTokenizer {
  public let tokenizer: Tokenizer
  public let template: any ConversationTemplate
  public let limits: PreferenceLimits
  private let eosID: Int
  private let eosText: String

  public init(tokenizer: Tokenizer, template: any ConversationTemplate, limits: PreferenceLimits) throws {
    guard let eos = tokenizer.eosTokenID, let text = tokenizer.token(for: eos) else {
      throw DatasetError.invalidConfig("the tokenizer has no EOS token; add eos_token to tokenizer_config.json")
    }
    guard limits.maxLength >= 2, limits.maxPromptLength >= 1, limits.maxPromptLength < limits.maxLength else {
      throw DatasetError.invalidConfig("max_length \(limits.maxLength) and max_prompt_length "
        + "\(limits.maxPromptLength): need 1 ≤ max_prompt_length < max_length")
    }
    self.tokenizer = tokenizer; self.template = template; self.limits = limits
    eosID = eos; eosText = text
  }

  /// The pair's tokens, or nil (counted in `stats`) when it carries no preference.
  public func tokenize(_ record: PreferenceRecord, index: Int = 0,
                       stats: inout PreferenceStats) throws -> PreferencePair? {
    var messages: [ChatMessage] = []
    if let s = record.prompt.system { messages.append(ChatMessage(role: "system", content: s)) }
    messages += record.prompt.turns.map { ChatMessage(role: $0.role, content: $0.content) }
    let promptText = try render(messages, generation: true, index: index)
    var prompt = tokenizer.encode(promptText, addSpecialTokens: false)
    var chosen = try answerIDs(messages, record.chosen, promptText: promptText, index: index)
    var rejected = try answerIDs(messages, record.rejected, promptText: promptText, index: index)
    if prompt.count + max(chosen.count, rejected.count) > limits.maxLength {
      stats.truncated += 1
      let before = prompt.count + chosen.count + rejected.count
      stats.longestCut = max(stats.longestCut, prompt.count + max(chosen.count, rejected.count))
      if prompt.count > limits.maxPromptLength { prompt = Array(prompt.suffix(limits.maxPromptLength)) }
      let room = limits.maxLength - prompt.count
      chosen = Array(chosen.prefix(room)); rejected = Array(rejected.prefix(room))
      stats.droppedTokens += before - (prompt.count + chosen.count + rejected.count)
    }
    if chosen.isEmpty || rejected.isEmpty { stats.empty += 1; return nil }
    if chosen == rejected { stats.identical += 1; return nil }
    return PreferencePair(prompt: prompt, chosen: chosen, rejected: rejected)
  }

  /// One prompt and one answer (KTO's unpaired examples), truncated by the same rule: nil
  /// (counted as empty) when the answer is empty after truncation.
  public func tokenize(prompt conversation: Conversation, answer: String, index: Int = 0,
                       stats: inout PreferenceStats) throws -> (prompt: [Int], answer: [Int])? {
    var messages: [ChatMessage] = []
    if let s = conversation.system { messages.append(ChatMessage(role: "system", content: s)) }
    messages += conversation.turns.map { ChatMessage(role: $0.role, content: $0.content) }
    let promptText = try render(messages, generation: true, index: index)
    var prompt = tokenizer.encode(promptText, addSpecialTokens: false)
    var ids = try answerIDs(messages, answer, promptText: promptText, index: index)
    if prompt.count + ids.count > limits.maxLength {
      stats.truncated += 1
      let before = prompt.count + ids.count
      stats.longestCut = max(stats.longestCut, before)
      if prompt.count > limits.maxPromptLength { prompt = Array(prompt.suffix(limits.maxPromptLength)) }
      ids = Array(ids.prefix(limits.maxLength - prompt.count))
      stats.droppedTokens += before - (prompt.count + ids.count)
    }
    if ids.isEmpty { stats.empty += 1; return nil }
    return (prompt, ids)
  }

  /// The answer's tokens as the template renders it after the prompt, ending with EOS.
  private func answerIDs(_ prompt: [ChatMessage], _ answer: String, promptText: String,
                         index: Int) throws -> [Int] {
    let full = try render(prompt + [ChatMessage(role: "assistant", content: answer)], generation: false, index: index)
    guard full.hasPrefix(promptText) else {
      throw DatasetError.templateFailed(record: index, problem: "the generation prompt is not a prefix of the full rendering")
    }
    var text = Substring(full.dropFirst(promptText.count))
    while let last = text.last, last == "\n" || last == " " { text = text.dropLast() }
    if answer.isEmpty && (text.isEmpty || text == Substring(eosText)) { return [] }
    var ids = tokenizer.encode(String(text), addSpecialTokens: false)
    if !text.hasSuffix(eosText) { ids.append(eosID) }
    return ids
  }

  private func render(_ messages: [ChatMessage], generation: Bool, index: Int) throws -> String {
    do { return try template.render(messages: messages, addGenerationPrompt: generation) } catch {
      throw DatasetError.templateFailed(record: index, problem: "\(error)")
    }
  }
}

/// A loaded preference dataset.
public struct PreferenceDataset {
  public var pairs: [PreferencePair]
  public var skippedRecords: Int
  public var stats: PreferenceStats

  /// Loads a JSON / JSONL file of preference records and tokenizes them.
  public static func load(_ url: URL, tokenizer: PreferenceTokenizer,
                          skipBadRecords: Bool = false) throws -> PreferenceDataset {
    let loaded = try DatasetLoader.load(url, skipBadRecords: skipBadRecords)
    var stats = PreferenceStats()
    var pairs: [PreferencePair] = []
    for (i, record) in loaded.records.enumerated() {
      let r = try PreferenceRecord.normalise(record, file: loaded.file, index: i)
      do {
        if let p = try tokenizer.tokenize(r, index: i, stats: &stats) { pairs.append(p) }
      } catch let error as DatasetError {
        throw error.naming(file: loaded.file)
      }
    }
    guard !pairs.isEmpty else {
      throw DatasetError.invalidConfig("\(loaded.file): no usable preference pair (\(stats.empty) empty, "
        + "\(stats.identical) identical after truncation)")
    }
    return PreferenceDataset(pairs: pairs, skippedRecords: loaded.skippedRecords, stats: stats)
  }
}
