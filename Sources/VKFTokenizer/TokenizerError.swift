// Typed errors for loading tokenizer.json files.

/// Why a tokenizer.json could not be loaded; every message says what to check.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
  /// The file could not be read from disk.
  case unreadable(path: String, reason: String)
  /// The bytes are not JSON, or the top level is not an object.
  case notJSON(reason: String)
  /// A required field is absent or has the wrong JSON type.
  case malformed(field: String, reason: String)
  /// A component `type` (model, normalizer, pre-tokenizer, …) this library does not implement.
  case unsupported(component: String, type: String)
  /// A merge names a token that is not in the vocabulary.
  case unknownMergeToken(merge: String, token: String)
  /// A regex pattern could not be compiled.
  case badPattern(pattern: String, reason: String)
  /// A JSON file read beside the tokenizer (tokenizer_config.json, generation_config.json)
  /// that exists but is not a JSON object of the expected shape.
  case invalidSideFile(path: String, reason: String)
  /// One of the errors above in the tokenizer.json at `path` (loading from a file names it).
  indirect case inFile(path: String, TokenizerError)

  /// A sentence for the user: what is wrong and what to do.
  public var description: String {
    switch self {
    case let .unreadable(path, reason):
      return "cannot read tokenizer file \(path): \(reason). Check the path and permissions."
    case let .notJSON(reason):
      return "tokenizer.json is not a JSON object (\(reason)). Pass a Hugging Face tokenizer.json file."
    case let .malformed(field, reason):
      return "tokenizer.json field '\(field)' is malformed: \(reason)."
    case let .unsupported(component, type):
      return "tokenizer.json uses \(component) type '\(type)', which vkfinetune does not support. "
        + "Supported: BPE models with the components listed in VKFTokenizer's README."
    case let .unknownMergeToken(merge, token):
      return "tokenizer.json merge '\(merge)' references '\(token)', which is not in model.vocab. "
        + "The file is corrupt or was edited by hand; re-export it with `tokenizers`."
    case let .badPattern(pattern, reason):
      return "tokenizer.json regex '\(pattern)' does not compile: \(reason)."
    case let .invalidSideFile(path, reason):
      return "\(path) \(reason). Fix or remove the file: what it sets (special tokens, chat "
        + "template, stop ids) would otherwise be lost without a word."
    case let .inFile(path, inner):
      let text = inner.description, generic = "tokenizer.json "
      return "\(path): " + (text.hasPrefix(generic) ? String(text.dropFirst(generic.count)) : text)
    }
  }
}
