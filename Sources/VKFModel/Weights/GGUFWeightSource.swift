/// A GGUF file seen as Hugging Face weights: HF names, HF shapes (outermost first), and
/// f32 data that is dequantised and, for architectures whose converter permuted q/k rows,
/// un-permuted (see `GGUFNameMap.permutedArchitectures`).
///
/// A stacked expert tensor (`blk.N.ffn_gate_exps.weight`, ne = [C, F, E]) appears as its E
/// experts' 2-D Hugging Face tensors (`….experts.{e}.w1.weight`, (F, C)), each read from its
/// own block of rows, so only that expert is dequantised.
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
  private let byHFName: [String: Entry]

  /// Where an HF tensor lives: a whole GGUF tensor, or one expert's rows of a stacked one.
  private struct Entry {
    var info: GGUFTensorInfo
    /// The expert index in a stacked tensor (outermost HF dimension), nil for a whole tensor.
    var expert: Int?

    /// ggml rows (HF rows of the 2-D slice) per entry and the first of them in the tensor.
    var rowLength: Int { info.dimensions.first ?? 1 }
    var rows: Int {
      let all = rowLength == 0 ? 0 : info.elementCount / rowLength
      guard expert != nil, let experts = info.dimensions.last, experts > 0 else { return all }
      return all / experts
    }
    var firstRow: Int { (expert ?? 0) * rows }
    /// The HF shape: the reversed GGUF dimensions, less the expert dimension for a slice.
    var shape: [Int] { expert == nil ? info.reversedShape : Array(info.reversedShape.dropFirst()) }
  }

  /// Opens and indexes the GGUF file at `path`.
  public convenience init(path: String) throws(ModelFileError) {
    try self.init(file: GGUFFile(path: path))
  }

  /// Indexes an open GGUF file.
  public init(file: GGUFFile) throws(ModelFileError) {
    self.file = file
    var map: [String: Entry] = [:]
    var unmapped: [String] = []
    func add(_ hf: String, _ entry: Entry) throws(ModelFileError) {
      if let previous = map.updateValue(entry, forKey: hf) {
        throw ModelFileError(file.path, "tensors \(previous.info.name) and \(entry.info.name) both map to \(hf)")
      }
    }
    let arch = file.architecture
    for info in file.tensors {
      if let stack = GGUFNameMap.expertStack(info.name, architecture: arch),
         let style = GGUFNameMap.moeStyle(architecture: arch) {
        guard info.dimensions.count == 3, info.dimensions[2] > 0 else {
          throw ModelFileError(file.path, "tensor \(info.name) has dimensions \(info.dimensions); a stacked "
            + "expert tensor has three, ne = [columns, rows, experts]")
        }
        for e in 0 ..< info.dimensions[2] {
          let hf = GGUFNameMap.expertName(layer: stack.layer, projection: stack.projection, expert: e, style: style)
          try add(hf, Entry(info: info, expert: e))
        }
        continue
      }
      guard let hf = GGUFNameMap.huggingFaceName(for: info.name, architecture: arch) else {
        unmapped.append(info.name)
        continue
      }
      try add(hf, Entry(info: info, expert: nil))
    }
    byHFName = map
    tensorNames = map.keys.sorted()
    unmappedTensorNames = unmapped
  }

  private func entry(for name: String) throws(ModelFileError) -> Entry {
    guard let entry = byHFName[name] else {
      throw ModelFileError(file.path, "no tensor \(name) in this GGUF file (it has \(tensorNames.count) "
        + "mapped tensors; \(unmappedTensorNames.count) unmapped)")
    }
    return entry
  }

  /// The GGUF tensor info behind an HF name (for one expert's tensor: the whole stack).
  public func info(for name: String) throws(ModelFileError) -> GGUFTensorInfo { try entry(for: name).info }

  /// The expert index an HF name reads from its stacked GGUF tensor, nil for a whole tensor.
  public func expertIndex(of name: String) throws(ModelFileError) -> Int? { try entry(for: name).expert }

  /// The HF shape (outermost first): the reverse of the GGUF dimensions (for one expert,
  /// without the expert dimension).
  public func shape(of name: String) throws -> [Int] { try entry(for: name).shape }

  /// The ggml type name ("Q4_1", "F32", …).
  public func storedType(of name: String) throws -> String { try info(for: name).type.name }

  /// Row-major f32 in HF layout; see `dequantized(_:)`.
  public func floats(_ name: String) throws -> [Float] { try dequantized(name) }

  /// The tensor as row-major f32 in HF layout (typed-throwing form of `floats`).
  public func dequantized(_ name: String) throws(ModelFileError) -> [Float] {
    let entry = try entry(for: name)
    let info = entry.info
    if entry.expert != nil { return try expertSlice(entry) }
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

  /// Selected rows (HF row indices, outermost dimension; for one expert's tensor, rows of
  /// that expert) of a tensor, concatenated, in HF layout: reads only those rows, e.g. a few
  /// embedding rows without the whole table.
  public func dequantizedRows(_ name: String, _ rows: [Int]) throws(ModelFileError) -> [Float] {
    let entry = try entry(for: name)
    let info = entry.info
    guard info.type.canDequantize else { return try GGUFWeightSource.dequantize(info, in: file) }
    let rowLength = entry.rowLength
    let rowCount = entry.rows
    let allRows = rowLength == 0 ? 0 : info.elementCount / rowLength
    // Every ggml block lies within one row (GGUFFile checked ne[0] % block size), so a row
    // is a whole number of bytes and an expert's rows are one contiguous byte range.
    let rowBytes = allRows == 0 ? 0 : info.byteCount / allRows
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
      var stored = entry.firstRow + row
      if group != nil {
        // HF row h·hd + s·hd/2 + i is stored at h·hd + 2i + s (DecoderModel.permute).
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

  /// One expert's rows of a stacked tensor, dequantised in one pass over their contiguous
  /// bytes (expert tensors are never permuted nor stored + 1).
  private func expertSlice(_ entry: Entry) throws(ModelFileError) -> [Float] {
    let info = entry.info
    guard info.type.canDequantize else { return try GGUFWeightSource.dequantize(info, in: file) }
    let count = entry.rows * entry.rowLength
    let allRows = entry.rowLength == 0 ? 0 : info.elementCount / entry.rowLength
    let rowBytes = allRows == 0 ? 0 : info.byteCount / allRows
    return file.withRawBytes(of: info) { bytes in
      [Float](unsafeUninitializedCapacity: count) { out, initialized in
        if let src = bytes.baseAddress, let dst = out.baseAddress {
          _ = GGUFDequantizer.dequantize(info.type, src + entry.firstRow * rowBytes, count: count, into: dst)
        }
        initialized = count
      }
    }
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
