/// Element types a tensor can hold.
public enum DType: String, Sendable, CaseIterable, Codable {
  case f32, f16, bf16, i32, u8

  /// Bytes per element.
  public var size: Int {
    switch self {
    case .f32, .i32: return 4
    case .f16, .bf16: return 2
    case .u8: return 1
    }
  }

  /// True for the floating-point types.
  public var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

/// Where a tensor's memory lives. Host-visible memory is what paged optimizer state uses:
/// the CPU can read and write it without a staging copy, at lower device bandwidth.
public enum MemoryKind: String, Sendable {
  case device, hostVisible
}
