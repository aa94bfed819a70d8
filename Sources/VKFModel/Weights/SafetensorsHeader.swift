import Foundation

/// One tensor's entry in a safetensors header, checked against the data section.
public struct SafetensorsTensorInfo: Equatable, Sendable {
  /// The stored element type.
  public var dtype: SafetensorsDType
  /// The shape, outermost first; `[]` is a scalar.
  public var shape: [Int]
  /// Byte range in the data section (relative to the end of the header), begin ..< end.
  public var dataOffsets: Range<Int>

  /// Number of elements (`prod(shape)`, 1 for a scalar).
  public var elementCount: Int { dataOffsets.count / dtype.itemSize }
}

/// A tensor's bytes inside a mapped file, with what they mean.
///
/// `bytes` points into the memory map of the file that produced it: it stays valid only
/// while that `SafetensorsFile` (or the `ShardedCheckpoint` holding it) is alive.
public struct SafetensorsRawTensor {
  /// The tensor's name in the file.
  public var name: String
  /// The stored element type.
  public var dtype: SafetensorsDType
  /// The shape, outermost first.
  public var shape: [Int]
  /// The little-endian element bytes, `prod(shape) · itemSize` of them, any alignment.
  public var bytes: UnsafeRawBufferPointer
}

/// A parsed and fully validated safetensors header.
struct SafetensorsHeader {
  /// Largest header accepted, as in the reference library (`MAX_HEADER_SIZE`).
  static let maxHeaderBytes = 100_000_000
  /// The key that holds the string→string metadata map instead of a tensor.
  static let metadataKey = "__metadata__"

  var tensors: [String: SafetensorsTensorInfo]
  var metadata: [String: String]

  /// Parses `json` (the header bytes) and checks every entry against a data section of
  /// `dataSize` bytes. Each failure names `path`, the tensor and the problem.
  static func parse(json: UnsafeRawBufferPointer, dataSize: Int, path: String) throws -> SafetensorsHeader {
    let object: Any
    do {
      object = try JSONSerialization.jsonObject(with: Data(json), options: [])
    } catch {
      throw ModelFileError(path, "safetensors header is not valid JSON (\(json.count) bytes after the "
        + "8-byte length); the file is corrupt or not a safetensors file")
    }
    guard let top = object as? [String: Any] else {
      throw ModelFileError(path, "safetensors header is JSON but not an object; the file is corrupt "
        + "or not a safetensors file")
    }
    var header = SafetensorsHeader(tensors: [:], metadata: [:])
    for (name, value) in top {
      if name == metadataKey {
        header.metadata = try parseMetadata(value, path: path)
      } else {
        header.tensors[name] = try parseEntry(name: name, value, dataSize: dataSize, path: path)
      }
    }
    try checkNoOverlap(header.tensors, path: path)
    return header
  }

  // MARK: - Pieces

  private static func parseMetadata(_ value: Any, path: String) throws -> [String: String] {
    guard let map = value as? [String: Any] else {
      throw ModelFileError(path, "\"\(metadataKey)\" must be an object of string values; the file "
        + "was written by a non-conforming tool")
    }
    var result: [String: String] = [:]
    for (key, v) in map {
      guard let s = v as? String else {
        throw ModelFileError(path, "\"\(metadataKey)\" entry \"\(key)\" is not a string (metadata "
          + "must map strings to strings); the file was written by a non-conforming tool")
      }
      result[key] = s
    }
    return result
  }

  private static func parseEntry(name: String, _ value: Any, dataSize: Int,
                                 path: String) throws -> SafetensorsTensorInfo {
    func bad(_ problem: String) -> ModelFileError {
      ModelFileError(path, "tensor \"\(name)\": \(problem); the file is corrupt or was written by a "
        + "non-conforming tool")
    }
    guard let entry = value as? [String: Any] else { throw bad("header entry is not an object") }
    guard let dtypeName = entry["dtype"] as? String else { throw bad("missing \"dtype\" string") }
    guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
      throw bad("unknown dtype \"\(dtypeName)\" (supported: \(SafetensorsDType.spellings))")
    }
    guard let shapeValues = entry["shape"] as? [Any] else { throw bad("missing \"shape\" array") }
    var shape: [Int] = []
    shape.reserveCapacity(shapeValues.count)
    for v in shapeValues {
      guard let d = jsonInteger(v) else { throw bad("shape \(shapeValues) holds a non-integer") }
      guard d >= 0 else { throw bad("shape \(shapeValues) has a negative dimension") }
      shape.append(d)
    }
    guard let offsetValues = entry["data_offsets"] as? [Any], offsetValues.count == 2,
          let begin = jsonInteger(offsetValues[0]), let end = jsonInteger(offsetValues[1]) else {
      throw bad("missing \"data_offsets\" [begin, end] integer pair")
    }
    guard begin >= 0, begin <= end else { throw bad("data_offsets [\(begin), \(end)] has begin > end or < 0") }
    guard end <= dataSize else {
      throw bad("data_offsets [\(begin), \(end)] run past the end of the data section "
        + "(\(dataSize) bytes); the file may be truncated")
    }
    // prod(shape) · itemSize with overflow checks: a hostile header must not wrap around
    // to a small, plausible size.
    var count = 1
    for d in shape {
      let (p, overflow) = count.multipliedReportingOverflow(by: d)
      guard !overflow else { throw bad("shape \(shape) has more elements than fit in 64 bits") }
      count = p
    }
    let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.itemSize)
    guard !overflow else { throw bad("shape \(shape) of \(dtypeName) is larger than fits in 64 bits") }
    guard bytes == end - begin else {
      throw bad("byte size \(end - begin) from data_offsets does not match shape \(shape) × "
        + "\(dtype.itemSize) bytes (\(dtypeName)) = \(bytes)")
    }
    return SafetensorsTensorInfo(dtype: dtype, shape: shape, dataOffsets: begin..<end)
  }

  /// Rejects two tensors sharing bytes. Gaps between tensors are allowed (the reference
  /// library never writes them but reading them is harmless); empty tensors overlap nothing.
  private static func checkNoOverlap(_ tensors: [String: SafetensorsTensorInfo], path: String) throws {
    let ranges = tensors.filter { !$0.value.dataOffsets.isEmpty }
      .sorted { ($0.value.dataOffsets.lowerBound, $0.key) < ($1.value.dataOffsets.lowerBound, $1.key) }
    for (a, b) in zip(ranges, ranges.dropFirst())
    where a.value.dataOffsets.upperBound > b.value.dataOffsets.lowerBound {
      let ra = a.value.dataOffsets, rb = b.value.dataOffsets
      throw ModelFileError(path, "tensors \"\(a.key)\" [\(ra.lowerBound), \(ra.upperBound)) and "
        + "\"\(b.key)\" [\(rb.lowerBound), \(rb.upperBound)) overlap in the data section; the file "
        + "is corrupt or was written by a non-conforming tool")
    }
  }

  /// A JSON integer that fits in `Int`; nil for anything else (strings, 2.5, 3.0, 1e30,
  /// booleans, 2^64 − 1).
  private static func jsonInteger(_ value: Any) -> Int? {
    // JSONSerialization gives NSNumber for both numbers and booleans; the ObjC type code
    // tells them apart ("c" is a boolean, "d"/"f" a number written with a fraction or exponent).
    guard let n = value as? NSNumber else { return nil }
    let code = String(cString: n.objCType)
    guard code != "c", code != "d", code != "f" else { return nil }
    return value as? Int
  }
}
