// QLoRA's NF4 base quantised once and reused: the packed codes and block scales of every
// projection in one safetensors file under a cache directory, named by a key over the source
// files' contents and the quantisation settings, so a later run uploads them without reading,
// dequantising or quantising the f32 projections.
import Foundation
import VKFCore
import VKFModel

/// A directory of NF4 bases (`<key>.safetensors`) plus `digests.json`, which remembers each
/// source file's SHA-256 by path, size, modification time and inode (a changed file is hashed
/// again, an unchanged one is not).
public struct QuantizedBaseCache {
  /// Bumped whenever the stored layout or the quantiser's numbers change.
  public static let formatVersion = 1
  public let directory: URL

  public init(directory: URL) { self.directory = directory }

  /// `$XDG_CACHE_HOME/vkfinetune/quantized`, else `~/.cache/vkfinetune/quantized`.
  public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
    let base = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
      ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache")
    return base.appendingPathComponent("vkfinetune/quantized")
  }

  /// Why `source` / `shape` cannot use the cache (fused or expert projections, an in-memory
  /// source), or nil.
  public static func unsupportedReason(source: WeightSource, shape: TransformerShape) -> String? {
    if shape.moe != nil { return "a mixture-of-experts model's expert stacks are not cached" }
    if !shape.fusedModules.isEmpty { return "fused projections are not cached" }
    if files(of: source).isEmpty { return "the weights are not read from files" }
    return nil
  }

  /// The files `source` reads.
  static func files(of source: WeightSource) -> [String] {
    if let sharded = source as? ShardedCheckpoint { return sharded.shards.map(\.weightsPath) }
    return source.weightsPath.isEmpty ? [] : [source.weightsPath]
  }

  /// The cache key: SHA-256 over the format version, each source file's SHA-256, the NF4
  /// settings and the model's dimensions.
  public func key(source: WeightSource, shape: TransformerShape, options: QLoRA.Options) throws -> String {
    var text = "vkfinetune NF4 base v\(Self.formatVersion)\n"
    for file in Self.files(of: source) { text += try digest(of: file) + "\n" }
    text += "block_size \(options.blockSize) double_quant \(options.doubleQuant)\n"
    text += "layers \(shape.layers) hidden \(shape.hidden) heads \(shape.heads) kv_heads \(shape.kvHeads) "
      + "intermediate \(shape.intermediate) vocab \(shape.vocab)\n"
    return SHA256.hex(Array(text.utf8))
  }

  /// The file holding `key`'s base.
  public func url(for key: String) -> URL { directory.appendingPathComponent("\(key).safetensors") }

  /// The NF4 bases stored under `key` (HF weight name → base, uploaded to `backend`), nil when
  /// there are none. A file that cannot be read as one throws, naming it.
  public func load(key: String, backend: Backend) throws -> [String: LinearWeight]? {
    let url = url(for: key)
    guard FileManager.default.fileExists(atPath: url.path) else { return nil }
    let file = try SafetensorsFile(contentsOf: url)
    guard file.metadata["format"] == "vkfinetune-nf4-base/\(Self.formatVersion)", file.metadata["key"] == key,
          let block = file.metadata["block_size"].flatMap(Int.init), block > 0 else {
      throw PEFTError("\(url.path): not a vkfinetune NF4 base for this key; delete it to quantise again")
    }
    let bytes = { (name: String) throws -> [UInt8] in try file.withRawTensor(name) { Array($0.bytes) } }
    let floats = { (name: String) throws -> [Float] in try file.floats(name) }
    var bases = [String: LinearWeight]()
    for name in file.tensorNames where name.hasSuffix(".nf4") {
      let weight = String(name.dropLast(".nf4".count))
      guard let dims = file.metadata["shape." + weight]?.split(separator: ",").compactMap({ Int($0) }), dims.count == 2 else {
        throw PEFTError("\(url.path): \(weight) has no shape entry")
      }
      let packed = try bytes(name)
      guard packed.count * 2 == dims[0] * dims[1] else { throw PEFTError("\(url.path): \(weight) holds \(packed.count) bytes for \(dims)") }
      let scales: NF4Scales
      if let offsetBits = file.metadata["offset." + weight].flatMap({ UInt32($0, radix: 16) }) {
        let codes = try bytes(weight + ".codes"), s = try floats(weight + ".scales")
        scales = .doubleQuantized(codes: try backend.tensor(codes, shape: [codes.count], .u8),
                                  scales: try backend.tensor(s, shape: [s.count]), offset: Float(bitPattern: offsetBits))
      } else {
        let a = try floats(weight + ".absmax")
        scales = .f32(try backend.tensor(a, shape: [a.count]))
      }
      bases[weight] = .nf4(NF4Weight(packed: try backend.tensor(packed, shape: [packed.count], .u8), scales: scales,
                                     rows: dims[0], cols: dims[1], blockSize: block))
    }
    return bases
  }

  /// Stores `weights`' NF4 projection bases under `key`, atomically (a reader sees the old
  /// file or the whole new one).
  public func store(_ weights: DecoderWeights, key: String) throws {
    let be = weights.backend
    var entries = [SafetensorsWriter.Tensor]()
    var metadata = ["format": "vkfinetune-nf4-base/\(Self.formatVersion)", "key": key]
    var block: Int?
    try weights.updateProjections { module, linear in
      guard case .nf4(let q) = linear.base else { return }
      let name = module + ".weight"
      block = q.blockSize
      metadata["shape." + name] = "\(q.rows),\(q.cols)"
      let packed = try be.download(q.packed, as: UInt8.self)
      entries.append(.init(name: name + ".nf4", shape: [packed.count], dtype: .u8, data: packed))
      switch q.scales {
      case .f32(let a):
        entries.append(try .init(name: name + ".absmax", shape: [a.count], floats: try be.floats(a)))
      case .doubleQuantized(let codes, let s, let offset):
        let c = try be.download(codes, as: UInt8.self)
        entries.append(.init(name: name + ".codes", shape: [c.count], dtype: .u8, data: c))
        entries.append(try .init(name: name + ".scales", shape: [s.count], floats: try be.floats(s)))
        metadata["offset." + name] = String(offset.bitPattern, radix: 16)
      }
    }
    guard let block else { throw PEFTError("no NF4 projections to cache") }
    metadata["block_size"] = String(block)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    try SafetensorsWriter.write(tensors: entries, metadata: metadata, to: url(for: key))
  }

  /// `path`'s SHA-256, from `digests.json` when the file's size, modification time and inode
  /// are those recorded, else hashed (4 MiB at a time) and recorded.
  func digest(of path: String) throws -> String {
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    let size = (attributes[.size] as? NSNumber)?.int64Value ?? -1
    let mtime = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
    let inode = (attributes[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0
    let stamp = "\(size) \(mtime.bitPattern) \(inode)"
    let index = directory.appendingPathComponent("digests.json")
    var known = ((try? JSONSerialization.jsonObject(with: Data(contentsOf: index))) as? [String: [String: String]]) ?? [:]
    if let entry = known[path], entry["stamp"] == stamp, let d = entry["sha256"], d.count == 64 { return d }
    guard let handle = FileHandle(forReadingAtPath: path) else { throw PEFTError("\(path): cannot be read to key the NF4 cache") }
    defer { try? handle.close() }
    var hasher = SHA256()
    while let chunk = try handle.read(upToCount: 4 << 20), !chunk.isEmpty { hasher.update(chunk) }
    let digest = hasher.finish().map { String(format: "%02x", $0) }.joined()
    known[path] = ["stamp": stamp, "sha256": digest]
    // Best effort: an unwritable index only costs hashing again next time.
    if (try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)) != nil,
       let data = try? JSONSerialization.data(withJSONObject: known, options: [.sortedKeys]) {
      try? AtomicWrite.write(Array(data), to: index)
    }
    return digest
  }
}
