/// Why a chat template could not be parsed, loaded or rendered.
public enum ChatTemplateError: Error, Equatable, CustomStringConvertible, Sendable {
  /// The template source is not valid (for this Jinja subset); `line` is 1-based.
  case syntax(String, line: Int)
  /// The template called `raise_exception(message)`, e.g. roles that do not alternate.
  case raised(String)
  /// Rendering failed: undefined attribute, wrong operand type, unknown filter, ….
  case runtime(String, line: Int)
  /// No template could be found (no `chat_template` key, no `chat_template.jinja`, unknown
  /// built-in name).
  case notFound(String)

  /// A message that says what went wrong and what to do.
  public var description: String {
    switch self {
    case let .syntax(m, line):
      return "chat template syntax error on line \(line): \(m). Fix the template or pick a built-in one."
    case let .raised(m):
      return "chat template rejected the conversation: \(m)"
    case let .runtime(m, line):
      return "chat template failed on line \(line): \(m)"
    case let .notFound(m):
      return "no chat template: \(m). Pass one explicitly or choose a built-in (\(ChatTemplate.builtinNames.joined(separator: ", ")))."
    }
  }
}
