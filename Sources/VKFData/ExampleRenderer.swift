// Turns normalised examples into token ids with causal-LM targets and loss masks.
import Foundation
import VKFTokenizer

/// Settings of the SFT data pipeline (keys verbatim in YAML via `CodingKeys`).
public struct DataConfig: Codable, Sendable, Equatable {
  /// Record format; default `.auto` (detected per record).
  public var format: DatasetFormat = .auto
  /// Longest example in tokens; longer ones are cut at the end. Default 2048.
  public var maxSeqLength: Int = 2048
  /// Train on prompt tokens too. Default false (only assistant tokens are trained).
  public var trainOnPrompt: Bool = false
  /// Skip malformed records instead of failing. Default false.
  public var skipBadRecords: Bool = false
  /// Wraps reasoning when the template ignores `reasoning_content`; `{reasoning}` is
  /// replaced. Default "<think>\n{reasoning}\n</think>\n\n".
  public var reasoningTemplate: String = "<think>\n{reasoning}\n</think>\n\n"
  /// Seed of shuffling and the validation split. Default 0.
  public var seed: UInt64 = 0
  /// Fraction of examples held out for validation. Default 0.
  public var validationFraction: Double = 0
  /// Pack short examples into full rows. Default false.
  public var packing: Bool = false

  /// The defaults above.
  public init() {}

  enum CodingKeys: String, CodingKey {
    case format, seed, packing
    case maxSeqLength = "max_seq_length", trainOnPrompt = "train_on_prompt"
    case skipBadRecords = "skip_bad_records", reasoningTemplate = "reasoning_template"
    case validationFraction = "validation_fraction"
  }

  /// Decodes, keeping the default of every absent key.
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    format = try c.decodeIfPresent(DatasetFormat.self, forKey: .format) ?? format
    maxSeqLength = try c.decodeIfPresent(Int.self, forKey: .maxSeqLength) ?? maxSeqLength
    trainOnPrompt = try c.decodeIfPresent(Bool.self, forKey: .trainOnPrompt) ?? trainOnPrompt
    skipBadRecords = try c.decodeIfPresent(Bool.self, forKey: .skipBadRecords) ?? skipBadRecords
    reasoningTemplate = try c.decodeIfPresent(String.self, forKey: .reasoningTemplate) ?? reasoningTemplate
    seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
    validationFraction = try c.decodeIfPresent(Double.self, forKey: .validationFraction) ?? validationFraction
    packing = try c.decodeIfPresent(Bool.self, forKey: .packing) ?? packing
  }
}

/// One tokenized example: `targets[i]` is `inputIds[i+1]` where trained, else −100.
public struct TokenizedExample: Sendable, Equatable {
  /// Label value the loss ignores (PyTorch's `ignore_index`).
  public static let ignoreIndex = -100
  /// Token ids fed to the model.
  public var inputIds: [Int]
  /// Next-token targets, −100 where not trained (the last position is always −100).
  public var targets: [Int]

  /// An example from ids and their targets (same length; trainers check it).
  public init(inputIds: [Int], targets: [Int]) {
    self.inputIds = inputIds
    self.targets = targets
  }
}

/// Running counts of what rendering had to do, for the training log.
public struct RenderStats: Sendable, Equatable {
  /// Examples cut to `maxSeqLength`.
  public var truncated = 0
  /// Tokens the cuts dropped, over all cut examples.
  public var droppedTokens = 0
  /// The longest cut example's length before the cut (0 when none was cut).
  public var longestCut = 0
  /// Multi-turn examples whose template broke prefix-ness, so only the last turn was trained.
  public var lastTurnOnly = 0
  /// Makes zeroed counts.
  public init() {}
}

/// Renders a message list to text; `ChatTemplate` and the built-in alpaca prompt conform.
public protocol ConversationTemplate {
  /// The text of `messages`, ending with the assistant header when `addGenerationPrompt`.
  func render(messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String
  /// Whether `reasoning_content` appears in the rendered text.
  var rendersReasoning: Bool { get }
}

/// A Hugging Face chat template bound to its bos/eos strings.
public struct HFChatTemplate: ConversationTemplate {
  /// The compiled template.
  public let template: ChatTemplate
  /// `bos_token` passed to the template.
  public let bosToken: String
  /// `eos_token` passed to the template.
  public let eosToken: String
  /// Probed once: true when the template prints `reasoning_content`.
  public let rendersReasoning: Bool

  /// Binds `template` to the special-token strings and probes reasoning support.
  public init(template: ChatTemplate, bosToken: String, eosToken: String) {
    self.template = template
    self.bosToken = bosToken
    self.eosToken = eosToken
    let marker = "vkf-reasoning-probe-7f3a"
    let probe = [ChatMessage(role: "user", content: "q"),
                 ChatMessage(role: "assistant", content: "a", reasoningContent: marker)]
    let text = try? template.render(messages: probe, bosToken: bosToken, eosToken: eosToken)
    rendersReasoning = text?.contains(marker) ?? false
  }

  /// Renders through the Jinja template.
  public func render(messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
    try template.render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                        bosToken: bosToken, eosToken: eosToken)
  }
}

/// The Stanford Alpaca prompt, for base models without a chat template (never prints EOS).
public struct AlpacaPromptTemplate: ConversationTemplate {
  /// Alpaca has no reasoning field; it is wrapped into the answer.
  public var rendersReasoning: Bool { false }
  /// Makes the template.
  public init() {}

  /// `system\n\n### Instruction:\n…\n\n### Response:\n…`; answers end without a newline so EOS follows them.
  public func render(messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
    var out = ""
    var afterAnswer = false
    for m in messages {
      let content = m.content ?? ""
      switch m.role {
      case "system": out += content + "\n\n"
      case "assistant": out += content
      default: out += (afterAnswer ? "\n\n" : "") + "### Instruction:\n" + content + "\n\n### Response:\n"
      }
      afterAnswer = m.role == "assistant"
    }
    // The response header is already part of each user turn; the flag changes nothing.
    _ = addGenerationPrompt
    return out
  }
}
