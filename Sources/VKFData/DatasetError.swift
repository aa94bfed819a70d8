// Errors of the dataset layer: each names the file, the place and what the user can do.
import Foundation

/// A problem loading, normalising or rendering a fine-tuning dataset.
public enum DatasetError: Error, Equatable, CustomStringConvertible {
  /// The file could not be read at all.
  case unreadable(file: String, reason: String)
  /// A JSON line (JSONL, 1-based `line`) or the whole JSON array (`line` nil) did not parse.
  case malformedJSON(file: String, line: Int?, problem: String)
  /// A record is not a JSON object.
  case notAnObject(file: String, record: Int)
  /// The file holds no records (after skipping bad ones).
  case empty(file: String)
  /// A record's keys match none of the supported formats.
  case unknownShape(file: String, record: Int, keys: [String])
  /// A record has the keys of its format but a field has the wrong type or value.
  case invalidRecord(file: String, record: Int, problem: String)
  /// The chat template failed on a conversation (`file` "" when rendering outside a file).
  case templateFailed(file: String = "", record: Int, problem: String)
  /// A configuration value is out of range.
  case invalidConfig(String)
  /// The file or one record is too large to read (`DatasetLimits`); `problem` says by how much.
  case tooLarge(file: String, problem: String)

  /// One line naming the formats `DatasetFormat.detect` understands.
  public static let supportedFormats =
    "alpaca {instruction, input, output[, system]}, {prompt, response[, reasoning_content]}, "
    + "{prompt, completion}, {messages: [{role, content}]}, {conversations: [{from, value}]}, {text}"

  /// One-line message for the user, saying what to do.
  public var description: String {
    switch self {
    case let .unreadable(file, reason):
      return "\(file): cannot read the dataset (\(reason)); check the path and permissions"
    case let .malformedJSON(file, line?, problem):
      return "\(file):\(line): malformed JSON line: \(problem); fix the line or set skipBadRecords: true"
    case let .malformedJSON(file, nil, problem):
      return "\(file): malformed JSON: \(problem); the file must be a JSON array of objects or JSONL (one object per line)"
    case let .notAnObject(file, record):
      return "\(file): record \(record) is not a JSON object; every record must be {…}"
    case let .empty(file):
      return "\(file): the dataset has no records; give a non-empty JSON array or JSONL file"
    case let .unknownShape(file, record, keys):
      return "\(file): record \(record) has keys [\(keys.sorted().joined(separator: ", "))], "
        + "which match no supported format (\(Self.supportedFormats)); rename the keys or set the format"
    case let .invalidRecord(file, record, problem):
      return "\(file): record \(record): \(problem)"
    case let .templateFailed(file, record, problem):
      return (file.isEmpty ? "" : "\(file): ")
        + "record \(record): the chat template failed (\(problem)); check the roles or pick another template"
    case let .invalidConfig(message):
      return "invalid data config: \(message)"
    case let .tooLarge(file, problem):
      return "\(file): \(problem)"
    }
  }
}

extension DatasetError {
  /// This error with `file` filled in where it names a record but no file (rendering).
  public func naming(file: String) -> DatasetError {
    if case let .templateFailed("", record, problem) = self {
      return .templateFailed(file: file, record: record, problem: problem)
    }
    return self
  }
}

extension DatasetError: LocalizedError {
  /// Same as `description`, so `localizedDescription` is useful.
  public var errorDescription: String? { description }
}
