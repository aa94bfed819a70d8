/// The value types a GGUF metadata entry can hold, with their on-disk codes (gguf.h `gguf_type`).
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
  case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5
  case float32 = 6, bool = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12
}

/// One GGUF metadata value: a scalar, a string or an array (arrays may nest).
public enum GGUFValue: Equatable, Sendable {
  case uint8(UInt8)
  case int8(Int8)
  case uint16(UInt16)
  case int16(Int16)
  case uint32(UInt32)
  case int32(Int32)
  case uint64(UInt64)
  case int64(Int64)
  case float32(Float)
  case float64(Double)
  case bool(Bool)
  case string(String)
  /// An array of values; GGUF arrays are homogeneous, `elementType` says of what.
  case array(elementType: GGUFValueType, [GGUFValue])

  /// The on-disk type of this value.
  public var type: GGUFValueType {
    switch self {
    case .uint8: .uint8
    case .int8: .int8
    case .uint16: .uint16
    case .int16: .int16
    case .uint32: .uint32
    case .int32: .int32
    case .uint64: .uint64
    case .int64: .int64
    case .float32: .float32
    case .float64: .float64
    case .bool: .bool
    case .string: .string
    case .array: .array
    }
  }

  // MARK: - Accessors

  /// Any integer value as `Int` (nil for non-integers or a UInt64 above `Int.max`).
  public var int: Int? {
    switch self {
    case .uint8(let v): Int(v)
    case .int8(let v): Int(v)
    case .uint16(let v): Int(v)
    case .int16(let v): Int(v)
    case .uint32(let v): Int(v)
    case .int32(let v): Int(v)
    case .uint64(let v): Int(exactly: v)
    case .int64(let v): Int(v)
    default: nil
    }
  }

  /// Any numeric value as `Double` (integers convert; bools and strings do not).
  public var double: Double? {
    switch self {
    case .float32(let v): Double(v)
    case .float64(let v): v
    default: int.map(Double.init)
    }
  }

  /// Any numeric value as `Float`.
  public var float: Float? {
    if case .float32(let v) = self { return v }
    return double.map(Float.init)
  }

  /// The value if it is a bool.
  public var bool: Bool? {
    if case .bool(let v) = self { return v }
    return nil
  }

  /// The value if it is a string.
  public var string: String? {
    if case .string(let v) = self { return v }
    return nil
  }

  /// The elements if this is an array.
  public var array: [GGUFValue]? {
    if case .array(_, let v) = self { return v }
    return nil
  }

  /// An array of strings (nil if not an array or any element is not a string).
  public var stringArray: [String]? { mapArray(\.string) }

  /// An array of integers (nil if not an array or any element is not an integer).
  public var intArray: [Int]? { mapArray(\.int) }

  /// An array of numbers as `Float` (nil if not an array or any element is not numeric).
  public var floatArray: [Float]? { mapArray(\.float) }

  private func mapArray<T>(_ element: (GGUFValue) -> T?) -> [T]? {
    guard case .array(_, let values) = self else { return nil }
    var out: [T] = []
    out.reserveCapacity(values.count)
    for value in values {
      guard let converted = element(value) else { return nil }
      out.append(converted)
    }
    return out
  }
}
