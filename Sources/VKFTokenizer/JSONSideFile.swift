import Foundation
import VKFCore

/// The JSON files read beside a tokenizer.json or a model (tokenizer_config.json,
/// generation_config.json): absent is fine, present must parse — a file silently skipped
/// would change the run (a lost chat template trains on another format).
public enum JSONSideFile {
  /// The JSON object in `url`, or nil when there is no file there. Throws
  /// `TokenizerError.unreadable` / `.invalidSideFile` naming the file otherwise.
  public static func object(at url: URL) throws -> [String: Any]? {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return nil }
    guard !isDirectory.boolValue else {
      throw TokenizerError.invalidSideFile(path: url.path, reason: "is a directory, not a JSON file")
    }
    let data: Data
    do {
      data = try BoundedFile.read(url, BoundedFile.settings)
    } catch {
      throw TokenizerError.unreadable(path: url.path, reason: error.localizedDescription)
    }
    let parsed: Any
    do {
      parsed = try JSONSerialization.jsonObject(with: data)
    } catch {
      throw TokenizerError.invalidSideFile(path: url.path, reason: "is not valid JSON")
    }
    guard let object = parsed as? [String: Any] else {
      throw TokenizerError.invalidSideFile(path: url.path, reason: "is not a JSON object at the top level")
    }
    return object
  }
}
