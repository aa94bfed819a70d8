import Foundation
import VKFCore

/// One chat turn in the shape transformers' `apply_chat_template` expects.
public struct ChatMessage: Sendable, Equatable {
  /// `role`: "system", "user", "assistant", "tool", ….
  public var role: String
  /// `content`; nil renders as Python `None` (assistant turns that only call tools).
  public var content: String?
  /// `reasoning_content` (thinking models). Omitted when nil.
  public var reasoningContent: String?
  /// `tool_calls` in OpenAI form. Omitted when nil.
  public var toolCalls: [ChatToolCall]?
  /// `tool_call_id` of a tool result. Omitted when nil.
  public var toolCallId: String?
  /// `name` (tool name on tool results). Omitted when nil.
  public var name: String?

  /// Memberwise initializer.
  public init(role: String, content: String?, reasoningContent: String? = nil, toolCalls: [ChatToolCall]? = nil,
              toolCallId: String? = nil, name: String? = nil) {
    self.role = role; self.content = content; self.reasoningContent = reasoningContent
    self.toolCalls = toolCalls; self.toolCallId = toolCallId; self.name = name
  }

  /// The message as the template sees it (keys in OpenAI order).
  public var jinjaValue: JinjaValue {
    var o = JinjaObject([("role", .string(role)), ("content", content.map(JinjaValue.string) ?? .none)])
    if let reasoningContent { o["reasoning_content"] = .string(reasoningContent) }
    if let toolCalls { o["tool_calls"] = .array(toolCalls.map(\.jinjaValue)) }
    if let toolCallId { o["tool_call_id"] = .string(toolCallId) }
    if let name { o["name"] = .string(name) }
    return .object(o)
  }
}

/// An assistant tool call: `{"id":…, "type": "function", "function": {"name":…, "arguments":…}}`.
public struct ChatToolCall: Sendable, Equatable {
  /// `id`, when the caller has one (Mistral templates require 9 characters).
  public var id: String?
  /// `function.name`.
  public var name: String
  /// `function.arguments`: a JSON object (templates `tojson` it) or a string.
  public var arguments: JinjaValue

  /// Memberwise initializer.
  public init(id: String? = nil, name: String, arguments: JinjaValue) {
    self.id = id; self.name = name; self.arguments = arguments
  }

  /// The call as the template sees it.
  public var jinjaValue: JinjaValue {
    var o = JinjaObject()
    if let id { o["id"] = .string(id) }
    o["type"] = .string("function")
    o["function"] = .object(JinjaObject([("name", .string(name)), ("arguments", arguments)]))
    return .object(o)
  }
}

/// A compiled Hugging Face chat template that renders conversations exactly as
/// transformers' `apply_chat_template(..., tokenize=False)` does.
///
/// The context mirrors `render_jinja_template`: `messages`, `tools` and `documents`
/// (None unless given in `extra`), `add_generation_prompt`, `bos_token`, `eos_token`, then
/// every `extra` entry; the globals `raise_exception`, `strftime_now`, `range`, `namespace`.
public struct ChatTemplate: @unchecked Sendable {
  /// The template text as given.
  public let source: String
  private let nodes: [JinjaNode]

  /// Parses `source`; throws `ChatTemplateError.syntax` with the line of the problem.
  public init(source: String) throws {
    self.source = source
    var parser = JinjaParser(chunks: try JinjaLexer(source).chunks())
    nodes = try parser.parseTemplate()
  }

  /// Renders a conversation given as template values (keeps key order; see `JinjaValue(json:)`).
  public func render(messages: [JinjaValue], addGenerationPrompt: Bool = false, bosToken: String = "",
                     eosToken: String = "", extra: [String: JinjaValue] = [:]) throws -> String {
    var context: [String: JinjaValue] = [
      "messages": .array(messages), "tools": .none, "documents": .none,
      "add_generation_prompt": .bool(addGenerationPrompt),
      "bos_token": .string(bosToken), "eos_token": .string(eosToken),
    ]
    for (k, v) in extra { context[k] = v }
    return try JinjaInterpreter(context: context).render(nodes)
  }

  /// Renders `[[String: Any]]` messages (dictionary keys are sorted, since Swift
  /// dictionaries have no order; this only matters to templates that `tojson` a message).
  public func render(messages: [[String: Any]], addGenerationPrompt: Bool = false, bosToken: String = "",
                     eosToken: String = "", extra: [String: Any] = [:]) throws -> String {
    try render(messages: messages.map { JinjaValue($0) }, addGenerationPrompt: addGenerationPrompt,
               bosToken: bosToken, eosToken: eosToken, extra: extra.mapValues { JinjaValue($0) })
  }

  /// Renders typed messages.
  public func render(messages: [ChatMessage], addGenerationPrompt: Bool = false, bosToken: String = "",
                     eosToken: String = "", extra: [String: JinjaValue] = [:]) throws -> String {
    try render(messages: messages.map(\.jinjaValue), addGenerationPrompt: addGenerationPrompt,
               bosToken: bosToken, eosToken: eosToken, extra: extra)
  }
}

// MARK: - Loading

extension ChatTemplate {
  /// The template from `tokenizer_config.json` bytes: `chat_template` as a string, or a
  /// list of `{name, template}` from which `name` (default "default") is taken.
  public static func fromTokenizerConfig(_ data: Data, name: String = "default") throws -> ChatTemplate {
    guard case let .object(config) = try JinjaValue(json: String(decoding: data, as: UTF8.self)) else {
      throw ChatTemplateError.notFound("tokenizer_config.json is not a JSON object")
    }
    switch config["chat_template"] {
    case let .string(s)?: return try ChatTemplate(source: s)
    case let .array(list)?:
      for case let .object(entry) in list where entry["name"]?.stringValue == name {
        if let s = entry["template"]?.stringValue { return try ChatTemplate(source: s) }
      }
      let names = list.compactMap { if case let .object(o) = $0 { return o["name"]?.stringValue }; return nil }
      throw ChatTemplateError.notFound("tokenizer_config.json has no template named \"\(name)\" (it has \(names.joined(separator: ", ")))")
    default:
      throw ChatTemplateError.notFound("tokenizer_config.json has no chat_template (a base model?)")
    }
  }

  /// The template of a model directory: `chat_template.jinja` when present (newer
  /// transformers saves it there), else `tokenizer_config.json`'s `chat_template`.
  public static func load(modelDirectory: URL, name: String = "default") throws -> ChatTemplate {
    let jinja = modelDirectory.appendingPathComponent("chat_template.jinja")
    let fm = FileManager.default
    if name == "default", fm.isReadableFile(atPath: jinja.path) {
      let data = try BoundedFile.read(jinja, BoundedFile.settings)
      return try ChatTemplate(source: String(decoding: data, as: UTF8.self))
    }
    let config = modelDirectory.appendingPathComponent("tokenizer_config.json")
    guard fm.isReadableFile(atPath: config.path) else {
      throw ChatTemplateError.notFound("\(modelDirectory.path) has neither chat_template.jinja nor tokenizer_config.json")
    }
    let data = try BoundedFile.read(config, BoundedFile.settings)
    return try fromTokenizerConfig(data, name: name)
  }

  /// `bos_token` / `eos_token` strings from `tokenizer_config.json` (plain strings or
  /// `{"content": …}` objects); "" when absent.
  public static func specialTokens(tokenizerConfig data: Data) throws -> (bos: String, eos: String) {
    guard case let .object(config) = try JinjaValue(json: String(decoding: data, as: UTF8.self)) else { return ("", "") }
    func token(_ key: String) -> String {
      switch config[key] {
      case let .string(s)?: return s
      case let .object(o)?: return o["content"]?.stringValue ?? ""
      default: return ""
      }
    }
    return (token("bos_token"), token("eos_token"))
  }
}
