import Foundation

/// Why a Hugging Face `config.json` could not be turned into a `DecoderConfig`.
///
/// Every case names the file (or `"<memory>"` when decoding raw bytes) and, where it
/// applies, the offending JSON key, so the message alone tells the user what to fix.
public enum ConfigError: Error, Equatable, CustomStringConvertible, Sendable {
  /// The file could not be read at all.
  case unreadable(file: String, reason: String)
  /// The bytes are not a JSON object.
  case notJSON(file: String, reason: String)
  /// `model_type` names an architecture this trainer does not implement.
  case unsupportedModelType(String, file: String, supported: [String])
  /// A key that has no sensible default is absent.
  case missingField(String, file: String)
  /// A key is present but holds the wrong JSON type (e.g. a string where a number belongs).
  case wrongType(String, expected: String, file: String)
  /// A key holds a value of the right type that makes no sense (e.g. heads not dividing).
  case invalidValue(String, reason: String, file: String)
  /// `rope_scaling` / `rope_parameters` asks for a RoPE variant that is not implemented.
  case unsupportedRopeScaling(String, file: String, supported: [String])

  /// A one-paragraph message that says what is wrong and what to do.
  public var description: String {
    switch self {
    case let .unreadable(file, reason):
      return "cannot read model config \(file): \(reason). Check the path points at the model's config.json."
    case let .notJSON(file, reason):
      return "model config \(file) is not a JSON object (\(reason)). Re-download config.json from the model repository."
    case let .unsupportedModelType(type, file, supported):
      return "model config \(file) has model_type \"\(type)\", which vkfinetune does not support. "
        + "Supported model types: \(supported.joined(separator: ", "))."
    case let .missingField(field, file):
      return "model config \(file) lacks the required field \"\(field)\". "
        + "Add it (see the model card) or re-download config.json."
    case let .wrongType(field, expected, file):
      return "model config \(file): field \"\(field)\" should be \(expected). Fix the value in config.json."
    case let .invalidValue(field, reason, file):
      return "model config \(file): field \"\(field)\" is invalid: \(reason)."
    case let .unsupportedRopeScaling(type, file, supported):
      return "model config \(file) uses RoPE scaling \"\(type)\", which is not supported. "
        + "Supported: \(supported.joined(separator: ", ")); remove rope_scaling to train at the original context length."
    }
  }
}
