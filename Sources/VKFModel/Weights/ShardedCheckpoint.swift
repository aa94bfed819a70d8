import Foundation
import VKFCore

/// A checkpoint split over several `.safetensors` shards, each opened (mapped) once.
///
/// Built either from a Hugging Face `model.safetensors.index.json`
/// (`{"metadata": {…}, "weight_map": {tensor: shard file}}`) or from a plain list of
/// shard files. Either way every tensor lives in exactly one shard: a tensor found in
/// two shards is an error, as is an index entry whose shard is missing or lacks it.
public final class ShardedCheckpoint: SafetensorsSource, @unchecked Sendable {
  /// The index file, or the first shard when built from a file list.
  public let url: URL
  /// The index's path (`WeightSource`).
  public var weightsPath: String { url.path }
  /// The shards, in the order given (index: sorted by file name).
  public let shards: [SafetensorsFile]
  /// The index's string-valued `metadata` entries (e.g. "total_size" is a number there and
  /// is kept as its decimal text); empty without an index.
  public let metadata: [String: String]
  /// Every tensor name, sorted.
  public let tensorNames: [String]

  /// Tensor name → index into `shards`.
  private let location: [String: Int]

  /// Opens `model.safetensors.index.json` (or any index of that format) and its shards,
  /// which are looked up next to the index.
  public init(index url: URL) throws {
    let path = url.path
    let data: Data
    do {
      data = try BoundedFile.read(url, BoundedFile.settings)
    } catch {
      throw ModelFileError(path, "cannot read the shard index: \(error.localizedDescription)")
    }
    guard let top = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
      throw ModelFileError(path, "shard index is not a JSON object; re-download the checkpoint")
    }
    guard let weightMap = top["weight_map"] as? [String: Any] else {
      throw ModelFileError(path, "shard index has no \"weight_map\" object; re-download the checkpoint")
    }
    var shardOf: [String: String] = [:]
    for (tensor, file) in weightMap {
      guard let file = file as? String, !file.isEmpty, !file.hasPrefix("/") else {
        throw ModelFileError(path, "weight_map entry for \"\(tensor)\" is not a relative file name")
      }
      // Shards sit beside the index: a name with a directory part ("../x", "sub/x") would
      // read outside the checkpoint directory.
      guard !file.contains("/"), !file.contains("\\"), file != ".", file != "..", !file.contains("\0") else {
        throw ModelFileError(path, "weight_map entry for \"\(tensor)\" names \"\(file)\", which is not a file beside "
          + "the index; shard names are plain file names")
      }
      shardOf[tensor] = file
    }
    var meta: [String: String] = [:]
    for (key, value) in top["metadata"] as? [String: Any] ?? [:] {
      if let s = value as? String { meta[key] = s } else if let n = value as? NSNumber { meta[key] = n.stringValue }
    }

    let directory = url.deletingLastPathComponent()
    let fileNames = Set(shardOf.values).sorted()
    var shards: [SafetensorsFile] = []
    var shardIndex: [String: Int] = [:]
    for name in fileNames {
      let shardURL = directory.appendingPathComponent(name)
      guard FileManager.default.fileExists(atPath: shardURL.path) else {
        let example = shardOf.first { $0.value == name }?.key ?? ""
        throw ModelFileError(path, "shard \"\(name)\" (holding e.g. \"\(example)\") is missing from "
          + "\(directory.path); download every shard listed in the index")
      }
      shardIndex[name] = shards.count
      shards.append(try SafetensorsFile(contentsOf: shardURL))
    }
    try Self.checkNoDuplicates(shards, path: path)
    var location: [String: Int] = [:]
    for (tensor, file) in shardOf {
      guard let i = shardIndex[file] else { continue }
      guard shards[i].contains(tensor) else {
        let actual = shards.first { $0.contains(tensor) }.map { " (it is in \($0.url.lastPathComponent))" } ?? ""
        throw ModelFileError(path, "index maps \"\(tensor)\" to \"\(file)\", which does not hold it"
          + "\(actual); the index and shards do not match, re-download the checkpoint")
      }
      location[tensor] = i
    }
    self.url = url
    self.shards = shards
    self.metadata = meta
    self.location = location
    self.tensorNames = location.keys.sorted()
  }

  /// Combines already-opened shards without an index; every tensor of every shard is exposed.
  public init(shards: [SafetensorsFile]) throws {
    guard let first = shards.first else {
      throw ModelFileError("<no files>", "a sharded checkpoint needs at least one .safetensors file")
    }
    let path = first.url.deletingLastPathComponent().path
    try Self.checkNoDuplicates(shards, path: path)
    var location: [String: Int] = [:]
    for (i, shard) in shards.enumerated() {
      for name in shard.tensorNames { location[name] = i }
    }
    self.url = first.url
    self.shards = shards
    self.metadata = [:]
    self.location = location
    self.tensorNames = location.keys.sorted()
  }

  /// Throws if a tensor name appears in more than one shard: which copy is meant is unknowable.
  private static func checkNoDuplicates(_ shards: [SafetensorsFile], path: String) throws {
    var owner: [String: String] = [:]
    for shard in shards {
      let file = shard.url.lastPathComponent
      for name in shard.tensorNames {
        if let other = owner.updateValue(file, forKey: name) {
          throw ModelFileError(path, "tensor \"\(name)\" appears in two shards, \"\(other)\" and "
            + "\"\(file)\"; remove the stray file or re-download the checkpoint")
        }
      }
    }
  }

  // MARK: - Lookup

  /// The shard holding `name`, or an error naming the checkpoint and the tensor.
  public func shard(holding name: String) throws -> SafetensorsFile {
    guard let i = location[name] else {
      throw ModelFileError(url.path, "no tensor named \"\(name)\" in this sharded checkpoint "
        + "(\(location.count) tensors); check the checkpoint matches the model")
    }
    return shards[i]
  }

  /// The header entry of `name` in its shard.
  public func info(of name: String) throws -> SafetensorsTensorInfo { try shard(holding: name).info(of: name) }

  /// The tensor's bytes inside its shard's map, valid while this checkpoint is alive.
  public func rawTensor(_ name: String) throws -> SafetensorsRawTensor { try shard(holding: name).rawTensor(name) }

  /// The tensor's shape as stored.
  public func shape(of name: String) throws -> [Int] { try info(of: name).shape }

  /// The stored dtype's header spelling.
  public func storedType(of name: String) throws -> String { try info(of: name).dtype.rawValue }

  /// The tensor as row-major f32.
  public func floats(_ name: String) throws -> [Float] { try shard(holding: name).floats(name) }
}
