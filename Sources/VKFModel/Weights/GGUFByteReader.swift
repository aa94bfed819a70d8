/// A bounds-checked little-endian cursor over a GGUF file's bytes.
///
/// Every read checks the remaining length first and throws a `ModelFileError` naming the
/// file and what was being read, so a truncated or lying file never traps.
struct GGUFByteReader {
  let bytes: UnsafeRawBufferPointer
  let path: String
  private(set) var offset: Int = 0

  /// Longest metadata string accepted (1 GiB): longer claims are corrupt, not data.
  static let maxStringLength = 1 << 30

  init(bytes: UnsafeRawBufferPointer, path: String) {
    self.bytes = bytes
    self.path = path
  }

  var remaining: Int { bytes.count - offset }

  func error(_ detail: String) -> ModelFileError { ModelFileError(path, detail) }

  mutating func require(_ count: Int, _ what: @autoclosure () -> String) throws(ModelFileError) {
    guard count >= 0, count <= remaining else {
      throw error("truncated GGUF: \(what()) needs \(count) bytes at offset \(offset) "
        + "but the file has \(remaining) left; re-download or re-export the file")
    }
  }

  mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws(ModelFileError) -> T {
    try require(MemoryLayout<T>.size, what())
    let value = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
    offset += MemoryLayout<T>.size
    return T(littleEndian: value)
  }

  /// A u64 count that must fit in `Int` and be plausible: each item takes at least
  /// `minItemBytes`, so more items than remaining bytes allow is a lie.
  mutating func readCount(_ what: String, minItemBytes: Int) throws(ModelFileError) -> Int {
    let raw = try read(UInt64.self, what)
    guard let count = Int(exactly: raw), count <= remaining / max(minItemBytes, 1) else {
      throw error("\(what) is \(raw), more than the \(remaining) remaining bytes can hold; "
        + "the file is corrupt or truncated")
    }
    return count
  }

  mutating func readString(_ what: @autoclosure () -> String) throws(ModelFileError) -> String {
    let raw = try read(UInt64.self, "length of \(what())")
    guard raw <= UInt64(GGUFByteReader.maxStringLength), Int(raw) <= remaining else {
      throw error("string length \(raw) for \(what()) at offset \(offset - 8) runs past the end "
        + "of the file (\(remaining) bytes left); the file is corrupt or truncated")
    }
    let count = Int(raw)
    let slice = UnsafeRawBufferPointer(rebasing: bytes[offset ..< offset + count])
    offset += count
    // Invalid UTF-8 is repaired (U+FFFD) rather than rejected: tokens may hold byte pieces.
    return String(decoding: slice, as: UTF8.self)
  }

  // MARK: - Metadata values

  /// Deepest array nesting accepted; real files use at most 2.
  static let maxArrayDepth = 8

  mutating func readValueType(_ what: @autoclosure () -> String) throws(ModelFileError) -> GGUFValueType {
    let code = try read(UInt32.self, "type of \(what())")
    guard let type = GGUFValueType(rawValue: code) else {
      throw error("unknown metadata value type \(code) for \(what()); the file is corrupt "
        + "or from a newer GGUF version")
    }
    return type
  }

  mutating func readValue(_ type: GGUFValueType, _ key: String, depth: Int = 0) throws(ModelFileError) -> GGUFValue {
    switch type {
    case .uint8: return .uint8(try read(UInt8.self, key))
    case .int8: return .int8(try read(Int8.self, key))
    case .uint16: return .uint16(try read(UInt16.self, key))
    case .int16: return .int16(try read(Int16.self, key))
    case .uint32: return .uint32(try read(UInt32.self, key))
    case .int32: return .int32(try read(Int32.self, key))
    case .uint64: return .uint64(try read(UInt64.self, key))
    case .int64: return .int64(try read(Int64.self, key))
    case .float32: return .float32(Float(bitPattern: try read(UInt32.self, key)))
    case .float64: return .float64(Double(bitPattern: try read(UInt64.self, key)))
    case .bool:
      let byte = try read(UInt8.self, key)
      guard byte <= 1 else { throw error("bool \(key) holds \(byte), not 0 or 1; the file is corrupt") }
      return .bool(byte == 1)
    case .string: return .string(try readString(key))
    case .array:
      guard depth < GGUFByteReader.maxArrayDepth else {
        throw error("metadata \(key) nests arrays deeper than \(GGUFByteReader.maxArrayDepth); the file is corrupt")
      }
      let elementType = try readValueType("elements of \(key)")
      let count = try readCount("element count of \(key)", minItemBytes: GGUFByteReader.minBytes(of: elementType))
      var values: [GGUFValue] = []
      values.reserveCapacity(count)
      for _ in 0 ..< count {
        values.append(try readValue(elementType, key, depth: depth + 1))
      }
      return .array(elementType: elementType, values)
    }
  }

  /// The smallest encoding of one value of `type` (strings: the u64 length; arrays: type + count).
  static func minBytes(of type: GGUFValueType) -> Int {
    switch type {
    case .uint8, .int8, .bool: 1
    case .uint16, .int16: 2
    case .uint32, .int32, .float32: 4
    case .uint64, .int64, .float64, .string: 8
    case .array: 12
    }
  }
}
