// Whole-file reads with a size cap per kind of file.
import Foundation

/// Reads files that are parsed whole in memory, after checking their size (one `stat`, before
/// any byte is read) against a cap for their kind: a corrupt or hostile file of many GiB ends
/// in one line naming it instead of exhausting memory. The caps sit far above the largest real
/// files of each kind.
public enum BoundedFile {
  /// A kind of file and the most bytes one may have.
  public struct Limit: Sendable {
    /// What the file is, for messages ("settings file", "tokenizer.json").
    public let kind: String
    public let bytes: Int
  }

  /// JSON and text settings: config.json, generation_config.json, tokenizer_config.json,
  /// adapter_config.json, safetensors indexes, chat_template.jinja, trainer_state.json, recipes.
  /// The largest real ones are a few MiB (a tokenizer_config.json listing 256k added tokens is
  /// about 20 MiB).
  public static let settings = Limit(kind: "settings file", bytes: 64 << 20)
  /// tokenizer.json: the largest public ones (262k-token vocabularies with their merges) are
  /// about 35 MiB.
  public static let tokenizer = Limit(kind: "tokenizer.json", bytes: 1 << 30)
  /// Files a run writes for itself and reads back (reference_logps.json: two numbers per
  /// preference pair; 1 GiB is tens of millions of pairs).
  public static let runCache = Limit(kind: "run cache file", bytes: 1 << 30)

  /// The bytes of `url`, or `FileTooLargeError` when it is larger than `limit` (other read
  /// failures are Foundation's errors, as from `Data(contentsOf:)`).
  public static func read(_ url: URL, _ limit: Limit) throws -> Data {
    var info = stat()
    if stat(url.path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, Int(info.st_size) > limit.bytes {
      throw FileTooLargeError(path: url.path, size: Int(info.st_size), limit: limit)
    }
    let data = try Data(contentsOf: url)
    // A file that grew between the stat and the read.
    guard data.count <= limit.bytes else { throw FileTooLargeError(path: url.path, size: data.count, limit: limit) }
    return data
  }
}

/// A file larger than its kind's cap (`BoundedFile.Limit`).
public struct FileTooLargeError: Error, CustomStringConvertible, LocalizedError {
  public let path: String
  public let size: Int
  public let limit: BoundedFile.Limit

  /// Without the path: callers wrap it in their own "cannot read <path>: …" messages.
  public var errorDescription: String? {
    "it is \(Self.size(size)), over the \(Self.size(limit.bytes)) a \(limit.kind) may be; it is not one, or it is corrupt"
  }

  /// The same words: every reader wraps it in a message that names the file.
  public var description: String { errorDescription ?? "" }

  /// Bytes as MiB or GiB with one decimal.
  static func size(_ bytes: Int) -> String {
    bytes >= 1 << 30 ? String(format: "%.1f GiB", Double(bytes) / Double(1 << 30))
      : String(format: "%.1f MiB", Double(bytes) / Double(1 << 20))
  }
}
