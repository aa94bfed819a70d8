import Foundation

/// Finds and opens the safetensors weights of a Hugging Face model directory.
public enum SafetensorsCheckpoint {
  /// The single-file checkpoint name Hugging Face uses.
  public static let singleFileName = "model.safetensors"
  /// The shard index name Hugging Face uses.
  public static let indexFileName = "model.safetensors.index.json"

  /// Opens the weights in `directory`: `model.safetensors`, else
  /// `model.safetensors.index.json` and its shards, else every `*.safetensors` file there
  /// (as shards of one checkpoint, in name order).
  public static func open(directory: URL) throws -> any SafetensorsSource {
    let fm = FileManager.default
    let single = directory.appendingPathComponent(singleFileName)
    if fm.fileExists(atPath: single.path) { return try SafetensorsFile(contentsOf: single) }
    let index = directory.appendingPathComponent(indexFileName)
    if fm.fileExists(atPath: index.path) { return try ShardedCheckpoint(index: index) }

    let files = safetensorsFiles(in: directory)
    switch files.count {
    case 0:
      throw ModelFileError(directory.path, "no safetensors weights: looked for \(singleFileName), "
        + "\(indexFileName) and any *.safetensors file; download the model's weights into this directory")
    case 1:
      return try SafetensorsFile(contentsOf: files[0])
    default:
      return try ShardedCheckpoint(shards: files.map { try SafetensorsFile(contentsOf: $0) })
    }
  }

  /// Whether `directory` holds weights `open(directory:)` would look at.
  public static func hasWeights(in directory: URL) -> Bool {
    let fm = FileManager.default
    return fm.fileExists(atPath: directory.appendingPathComponent(singleFileName).path)
      || fm.fileExists(atPath: directory.appendingPathComponent(indexFileName).path)
      || !safetensorsFiles(in: directory).isEmpty
  }

  /// The `*.safetensors` files directly in `directory`, sorted by name (hidden files, such
  /// as a crashed writer's temporaries, skipped).
  static func safetensorsFiles(in directory: URL) -> [URL] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
    return names.filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix(".") }
      .sorted()
      .map { directory.appendingPathComponent($0) }
  }
}
