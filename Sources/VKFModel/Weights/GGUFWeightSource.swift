/// A GGUF file seen as Hugging Face weights: HF names, HF shapes (outermost first), and
/// f32 data that is dequantised and, for architectures whose converter permuted q/k rows,
/// un-permuted (see `GGUFNameMap.permutedArchitectures`).
///
/// Tensors with no HF counterpart (e.g. `rope_freqs.weight`) are left out of `tensorNames`
/// and listed in `unmappedTensorNames`; they stay readable through `file`.
public final class GGUFWeightSource: WeightSource {
  /// The underlying file.
  public let file: GGUFFile
  /// HF names, sorted.
  public let tensorNames: [String]
  /// The GGUF file's path (`WeightSource`).
  public var weightsPath: String { file.path }
  /// GGUF tensor names that have no HF name, in file order.
  public let unmappedTensorNames: [String]
  private let byHFName: [String: GGUFTensorInfo]

  /// Opens and indexes the GGUF file at `path`.
  public convenience init(path: String) throws(ModelFileError) {
    try self.init(file: GGUFFile(path: path))
  }

  /// Indexes an open GGUF file.
  public init(file: GGUFFile) throws(ModelFileError) {
    self.file = file
    var map: [String: GGUFTensorInfo] = [:]
    var unmapped: [String] = []
    for info in file.tensors {
      guard let hf = GGUFNameMap.huggingFaceName(for: info.name, architecture: file.architecture) else {
        unmapped.append(info.name)
        continue
      }
      if let previous = map.updateValue(info, forKey: hf) {
        throw ModelFileError(file.path, "tensors \(previous.name) and \(info.name) both map to \(hf)")
      }
    }
    byHFName = map
    tensorNames = map.keys.sorted()
    unmappedTensorNames = unmapped
  }

  /// The GGUF tensor info behind an HF name.
  public func info(for name: String) throws(ModelFileError) -> GGUFTensorInfo {
    guard let info = byHFName[name] else {
      throw ModelFileError(file.path, "no tensor \(name) in this GGUF file (it has \(tensorNames.count) "
        + "mapped tensors; \(unmappedTensorNames.count) unmapped)")
    }
    return info
  }

  /// The HF shape (outermost first): the reverse of the GGUF dimensions.
  public func shape(of name: String) throws -> [Int] { try info(for: name).reversedShape }

  /// The ggml type name ("Q4_1", "F32", …).
  public func storedType(of name: String) throws -> String { try info(for: name).type.name }

  /// Row-major f32 in HF layout; see `dequantized(_:)`.
  public func floats(_ name: String) throws -> [Float] { try dequantized(name) }

  /// The tensor as row-major f32 in HF layout (typed-throwing form of `floats`).
  public func dequantized(_ name: String) throws(ModelFileError) -> [Float] {
    let info = try info(for: name)
    let raw = try GGUFWeightSource.dequantize(info, in: file)
    if let arch = file.architecture, GGUFNameMap.normPlusOneArchitectures.contains(arch),
       info.name.hasSuffix("norm.weight") {
      return raw.map { $0 - 1 }
    }
    guard let group = GGUFNameMap.permutation(for: info.name, architecture: file.architecture) else {
      return raw
    }
    let heads = try headCount(group, tensor: info.name)
    let rows = info.dimensions.count >= 2 ? info.dimensions[1] : info.dimensions.first ?? 0
    let columns = info.dimensions.count >= 2 ? info.dimensions[0] : 1
    guard info.dimensions.count <= 2, heads > 0, rows % (2 * heads) == 0 else {
      throw ModelFileError(file.path, "cannot un-permute \(info.name): \(rows) rows do not split "
        + "into \(heads) heads of even size")
    }
    return [Float](unsafeUninitializedCapacity: raw.count) { out, initialized in
      raw.withUnsafeBufferPointer { src in
        if let s = src.baseAddress, let d = out.baseAddress {
          GGUFNameMap.unpermuteRows(s, into: d, rows: rows, columns: columns, heads: heads)
        }
      }
      initialized = raw.count
    }
  }

  /// Selected rows (HF row indices, outermost dimension) of a tensor, concatenated, in HF
  /// layout: reads only those rows, e.g. a few embedding rows without the whole table.
  public func dequantizedRows(_ name: String, _ rows: [Int]) throws(ModelFileError) -> [Float] {
    let info = try info(for: name)
    guard info.type.canDequantize else { return try GGUFWeightSource.dequantize(info, in: file) }
    let rowLength = info.dimensions.first ?? 1
    let rowCount = rowLength == 0 ? 0 : info.elementCount / rowLength
    let rowBytes = rowCount == 0 ? 0 : info.byteCount / rowCount
    let group = GGUFNameMap.permutation(for: info.name, architecture: file.architecture)
    let heads = try group.map { g throws(ModelFileError) in try headCount(g, tensor: info.name) } ?? 1
    guard rowCount % (2 * heads) == 0 || group == nil else {
      throw ModelFileError(file.path, "cannot un-permute \(info.name): \(rowCount) rows do not split "
        + "into \(heads) heads of even size")
    }
    var out = [Float](repeating: 0, count: rows.count * rowLength)
    for (position, row) in rows.enumerated() {
      guard (0 ..< rowCount).contains(row) else {
        throw ModelFileError(file.path, "row \(row) of \(name) is out of range 0..<\(rowCount)")
      }
      var stored = row
      if group != nil {
        // HF row h·hd + s·hd/2 + i is stored at h·hd + 2i + s (LlamaModel.permute).
        let headDim = rowCount / heads, halfDim = headDim / 2
        let head = row / headDim, within = row % headDim
        stored = head * headDim + 2 * (within % halfDim) + within / halfDim
      }
      file.withRawBytes(of: info) { bytes in
        out.withUnsafeMutableBufferPointer { dst in
          if let src = bytes.baseAddress, let base = dst.baseAddress {
            _ = GGUFDequantizer.dequantize(info.type, src + stored * rowBytes, count: rowLength,
                                           into: base + position * rowLength)
          }
        }
      }
    }
    return out
  }

  /// Dequantises a GGUF tensor as stored (no un-permuting), row-major f32.
  public static func dequantize(_ info: GGUFTensorInfo, in file: GGUFFile) throws(ModelFileError) -> [Float] {
    guard info.type.canDequantize else {
      throw ModelFileError(file.path, "tensor \(info.name) has type \(info.type.name), which this reader "
        + "cannot dequantise (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, Q8_K); "
        + "re-quantise the model to one of these")
    }
    let count = info.elementCount
    return file.withRawBytes(of: info) { bytes in
      [Float](unsafeUninitializedCapacity: count) { out, initialized in
        if let src = bytes.baseAddress, let dst = out.baseAddress {
          _ = GGUFDequantizer.dequantize(info.type, src, count: count, into: dst)
        }
        initialized = count
      }
    }
  }

  private func headCount(_ group: GGUFNameMap.HeadGroup, tensor: String) throws(ModelFileError) -> Int {
    let arch = file.architecture ?? ""
    let queryKey = "\(arch).attention.head_count"
    guard let query = file.metadata[queryKey]?.int else {
      throw ModelFileError(file.path, "\(queryKey) is missing or not an integer; needed to un-permute \(tensor)")
    }
    guard group == .key else { return query }
    // Converter: n_head_kv = hparams.get("num_key_value_heads") or n_head when absent.
    return file.metadata["\(arch).attention.head_count_kv"]?.int ?? query
  }
}
