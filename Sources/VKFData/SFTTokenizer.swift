// Masking: which tokens of a rendered conversation are trained.
import Foundation
import VKFTokenizer

/// Tokenizes examples for supervised fine-tuning: prompt tokens masked, assistant tokens
/// (and the EOS that ends each answer) trained.
public struct SFTTokenizer {
  /// The tokenizer (must know its EOS id).
  public let tokenizer: Tokenizer
  /// How conversations become text.
  public let template: any ConversationTemplate
  /// Masking, truncation and reasoning settings.
  public let config: DataConfig
  /// The EOS token's text, used to check whether a rendering already ends with it.
  private let eosText: String
  private let eosID: Int

  /// Fails when the tokenizer has no EOS id (nothing could end an answer).
  public init(tokenizer: Tokenizer, template: any ConversationTemplate, config: DataConfig) throws {
    guard let eos = tokenizer.eosTokenID, let text = tokenizer.token(for: eos) else {
      throw DatasetError.invalidConfig("the tokenizer has no EOS token; add eos_token to tokenizer_config.json")
    }
    guard config.maxSeqLength >= 2 else {
      throw DatasetError.invalidConfig("max_seq_length is \(config.maxSeqLength); it must be at least 2")
    }
    self.tokenizer = tokenizer
    self.template = template
    self.config = config
    eosText = text
    eosID = eos
  }

  /// Tokenizes one example; `index` names it in errors; `stats` counts truncation and fallbacks.
  public func tokenize(_ example: Example, index: Int = 0, stats: inout RenderStats) throws -> TokenizedExample {
    var ids: [Int]
    var trained: [Bool]
    switch example {
    case let .text(text):
      ids = tokenizer.encode(text)
      if ids.last != eosID { ids.append(eosID) }
      trained = Array(repeating: true, count: ids.count)
    case let .conversation(conversation):
      (ids, trained) = try tokenizeConversation(conversation, index: index, stats: &stats)
    }
    if ids.count > config.maxSeqLength {
      stats.droppedTokens += ids.count - config.maxSeqLength
      stats.longestCut = max(stats.longestCut, ids.count)
      ids.removeLast(ids.count - config.maxSeqLength)
      trained.removeLast(trained.count - config.maxSeqLength)
      stats.truncated += 1
    }
    // Causal shift: position i predicts token i+1, trained when token i+1 is.
    var targets = Array(repeating: TokenizedExample.ignoreIndex, count: ids.count)
    for i in 0..<max(0, ids.count - 1) where trained[i + 1] || config.trainOnPrompt {
      targets[i] = ids[i + 1]
    }
    return TokenizedExample(inputIds: ids, targets: targets)
  }

  /// The template's messages, with reasoning wrapped into the answer when the template drops it.
  func messages(_ conversation: Conversation) -> [ChatMessage] {
    var out: [ChatMessage] = []
    if let system = conversation.system { out.append(ChatMessage(role: "system", content: system)) }
    for turn in conversation.turns {
      if let reasoning = turn.reasoningContent, !template.rendersReasoning, turn.role == "assistant" {
        let wrapped = config.reasoningTemplate.replacingOccurrences(of: "{reasoning}", with: reasoning)
        out.append(ChatMessage(role: turn.role, content: wrapped + turn.content))
      } else {
        out.append(ChatMessage(role: turn.role, content: turn.content, reasoningContent: turn.reasoningContent))
      }
    }
    return out
  }

  /// Byte ranges of the full rendering that are assistant answers.
  private func answerSpans(_ messages: [ChatMessage], full: [UInt8], index: Int,
                           stats: inout RenderStats) throws -> [Range<Int>] {
    let assistantIndices = messages.indices.filter { messages[$0].role == "assistant" }
    var spans: [Range<Int>] = []
    for i in assistantIndices {
      let prefix = Array(try render(Array(messages[..<i]), generation: true, index: index).utf8)
      let upTo = Array(try render(Array(messages[...i]), generation: false, index: index).utf8)
      guard full.starts(with: upTo), upTo.starts(with: prefix) else { spans = []; break }
      spans.append(prefix.count..<upTo.count)
    }
    if spans.count == assistantIndices.count { return spans }
    // The template rewrites earlier turns (e.g. drops old reasoning): train the last turn only.
    guard let last = assistantIndices.last else { return [] }
    let prefix = Array(try render(Array(messages[..<last]), generation: true, index: index).utf8)
    guard full.starts(with: prefix) else {
      throw DatasetError.templateFailed(record: index, problem: "the generation prompt is not a prefix of the full rendering")
    }
    stats.lastTurnOnly += 1
    return [prefix.count..<full.count]
  }

  private func render(_ messages: [ChatMessage], generation: Bool, index: Int) throws -> String {
    do {
      return try template.render(messages: messages, addGenerationPrompt: generation)
    } catch {
      throw DatasetError.templateFailed(record: index, problem: "\(error)")
    }
  }

  private func tokenizeConversation(_ conversation: Conversation, index: Int,
                                    stats: inout RenderStats) throws -> ([Int], [Bool]) {
    let msgs = messages(conversation)
    let full = Array(try render(msgs, generation: false, index: index).utf8)
    let spans = try answerSpans(msgs, full: full, index: index, stats: &stats)
    let eosBytes = Array(eosText.utf8)
    var ids: [Int] = []
    var trained: [Bool] = []
    func append(_ bytes: ArraySlice<UInt8>, train: Bool) {
      guard !bytes.isEmpty else { return }
      let piece = tokenizer.encode(String(decoding: bytes, as: UTF8.self), addSpecialTokens: false)
      ids += piece
      trained += Array(repeating: train, count: piece.count)
    }
    var cursor = 0
    for span in spans {
      append(full[cursor..<span.lowerBound], train: false)
      // Whitespace the template prints after EOS belongs to the next prompt, not the answer.
      var end = span.upperBound
      while end > span.lowerBound, full[end - 1] == 0x0A || full[end - 1] == 0x20 { end -= 1 }
      let answer = full[span.lowerBound..<end]
      if answer.count >= eosBytes.count, answer.suffix(eosBytes.count).elementsEqual(eosBytes) {
        append(answer, train: true)
      } else {
        end = span.upperBound  // no EOS printed: keep the answer whole and end it with EOS
        append(full[span.lowerBound..<end], train: true)
        ids.append(eosID)
        trained.append(true)
      }
      cursor = end
    }
    append(full[cursor...], train: false)
    return (ids, trained)
  }
}
