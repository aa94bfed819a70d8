import Foundation
import VKFCore

/// Builds a GGUF v3 file: typed metadata plus tensors, each tensor's data aligned to
/// `alignment` (written as `general.alignment` when it is not the default 32).
///
/// Tensors are given in GGUF order (`dimensions[0]` is the row length) with their encoded
/// bytes, or as f32 values in HF shape to be stored as F32, F16 or BF16. The file is written
/// atomically (`AtomicWrite`), streaming each tensor's bytes.
public struct GGUFWriter {
  /// One tensor queued for writing.
  struct PendingTensor {
    var name: String
    var dimensions: [Int]
    var type: GGMLType
    var bytes: [UInt8]
  }

  /// Data alignment in bytes (a power of two).
  public var alignment: Int
  /// Metadata in write order.
  public private(set) var metadata: [(key: String, value: GGUFValue)] = []
  private var tensors: [PendingTensor] = []

  /// A writer for architecture `architecture` (written as `general.architecture`, first).
  public init(architecture: String, alignment: Int = GGUFFile.defaultAlignment) {
    self.alignment = alignment
    set("general.architecture", .string(architecture))
  }

  /// Sets (or replaces) a metadata value.
  public mutating func set(_ key: String, _ value: GGUFValue) {
    if let index = metadata.firstIndex(where: { $0.key == key }) {
      metadata[index].value = value
    } else {
      metadata.append((key, value))
    }
  }

  /// Adds a tensor from already-encoded bytes; `dimensions` are GGUF order (innermost first).
  public mutating func addTensor(
    _ name: String, dimensions: [Int], type: GGMLType, bytes: [UInt8]
  ) throws(ModelFileError) {
    let elements = dimensions.reduce(1, *)
    guard dimensions.count <= GGUFFile.maxDimensions, dimensions.allSatisfy({ $0 >= 0 }),
          let size = type.byteCount(elements: elements, rowLength: dimensions.first ?? 1), size == bytes.count
    else {
      throw ModelFileError("GGUFWriter", "tensor \(name): \(bytes.count) bytes do not encode a \(type.name) tensor "
        + "of dimensions \(dimensions)")
    }
    guard !tensors.contains(where: { $0.name == name }) else {
      throw ModelFileError("GGUFWriter", "tensor \(name) added twice")
    }
    tensors.append(PendingTensor(name: name, dimensions: dimensions, type: type, bytes: bytes))
  }

  /// Adds row-major f32 values of HF shape `shape` (outermost first), stored as `type`
  /// (F32, F16 round-to-nearest-even, or BF16 round-to-nearest-even).
  public mutating func addTensor(
    _ name: String, shape: [Int], values: [Float], as type: GGMLType = .f32
  ) throws(ModelFileError) {
    guard shape.reduce(1, *) == values.count else {
      throw ModelFileError("GGUFWriter", "tensor \(name): \(values.count) values do not fill shape \(shape)")
    }
    var bytes: [UInt8] = []
    switch type {
    case .f32:
      bytes.reserveCapacity(4 * values.count)
      for v in values { GGUFWriter.append(v.bitPattern, to: &bytes) }
    case .f16:
      bytes.reserveCapacity(2 * values.count)
      for v in values { GGUFWriter.append(Float16(v).bitPattern, to: &bytes) }
    case .bf16:
      bytes.reserveCapacity(2 * values.count)
      for v in values { GGUFWriter.append(BFloat16.fromFloat(v), to: &bytes) }
    default:
      throw ModelFileError("GGUFWriter", "tensor \(name): cannot encode f32 values as \(type.name); "
        + "pass encoded bytes instead")
    }
    try addTensor(name, dimensions: shape.reversed(), type: type, bytes: bytes)
  }

  // MARK: - Encoding

  /// Header, metadata and tensor infos, padded so the data section starts aligned.
  public func headerBytes() throws(ModelFileError) -> [UInt8] {
    guard alignment > 0, alignment.nonzeroBitCount == 1 else {
      throw ModelFileError("GGUFWriter", "alignment \(alignment) is not a positive power of two")
    }
    var kvs = metadata
    if alignment != GGUFFile.defaultAlignment, !kvs.contains(where: { $0.key == "general.alignment" }) {
      kvs.append(("general.alignment", .uint32(UInt32(alignment))))
    }
    var out: [UInt8] = []
    GGUFWriter.append(GGUFFile.magic, to: &out)
    GGUFWriter.append(UInt32(3), to: &out)
    GGUFWriter.append(UInt64(tensors.count), to: &out)
    GGUFWriter.append(UInt64(kvs.count), to: &out)
    for (key, value) in kvs {
      GGUFWriter.appendString(key, to: &out)
      GGUFWriter.append(value.type.rawValue, to: &out)
      try GGUFWriter.appendValue(value, key: key, to: &out)
    }
    var offset = 0
    for tensor in tensors {
      GGUFWriter.appendString(tensor.name, to: &out)
      GGUFWriter.append(UInt32(tensor.dimensions.count), to: &out)
      for d in tensor.dimensions { GGUFWriter.append(UInt64(d), to: &out) }
      GGUFWriter.append(tensor.type.rawValue, to: &out)
      GGUFWriter.append(UInt64(offset), to: &out)
      offset = GGUFFile.roundUp(offset + tensor.bytes.count, to: alignment)
    }
    out += [UInt8](repeating: 0, count: GGUFFile.roundUp(out.count, to: alignment) - out.count)
    return out
  }

  /// Writes the file atomically to `path`.
  public func write(to path: String) throws(ModelFileError) {
    let header = try headerBytes()
    let alignment = self.alignment
    do {
      try AtomicWrite.write(to: URL(fileURLWithPath: path)) { output in
        try output.write(header)
        for tensor in tensors {
          try output.write(tensor.bytes)
          let padding = GGUFFile.roundUp(tensor.bytes.count, to: alignment) - tensor.bytes.count
          if padding > 0 { try output.write([UInt8](repeating: 0, count: padding)) }
        }
      }
    } catch let error as ModelFileError {
      throw error
    } catch {
      throw ModelFileError(path, "writing GGUF failed: \(error)")
    }
  }

  private static func append<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
    withUnsafeBytes(of: value.littleEndian) { out += $0 }
  }

  private static func appendString(_ s: String, to out: inout [UInt8]) {
    append(UInt64(s.utf8.count), to: &out)
    out += s.utf8
  }

  private static func appendValue(_ value: GGUFValue, key: String, to out: inout [UInt8]) throws(ModelFileError) {
    switch value {
    case .uint8(let v): append(v, to: &out)
    case .int8(let v): append(v, to: &out)
    case .uint16(let v): append(v, to: &out)
    case .int16(let v): append(v, to: &out)
    case .uint32(let v): append(v, to: &out)
    case .int32(let v): append(v, to: &out)
    case .uint64(let v): append(v, to: &out)
    case .int64(let v): append(v, to: &out)
    case .float32(let v): append(v.bitPattern, to: &out)
    case .float64(let v): append(v.bitPattern, to: &out)
    case .bool(let v): out.append(v ? 1 : 0)
    case .string(let v): appendString(v, to: &out)
    case .array(let elementType, let values):
      append(elementType.rawValue, to: &out)
      append(UInt64(values.count), to: &out)
      for element in values {
        guard element.type == elementType else {
          throw ModelFileError("GGUFWriter", "metadata \(key) mixes \(element.type) into an array of \(elementType)")
        }
        try appendValue(element, key: key, to: &out)
      }
    }
  }
}
