/// A ggml tensor element type as stored in GGUF tensor infos (ggml.h `ggml_type`).
///
/// Every code llama.cpp defines is listed so a file can be opened and described even when
/// its tensors cannot be dequantised; `canDequantize` says which ones this reader converts.
public enum GGMLType: UInt32, Sendable, CaseIterable {
  case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
  case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
  case iq2_XXS = 16, iq2_XS = 17, iq3_XXS = 18, iq1_S = 19, iq4_NL = 20, iq3_S = 21
  case iq2_S = 22, iq4_XS = 23, i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28
  case iq1_M = 29, bf16 = 30, tq1_0 = 34, tq2_0 = 35, mxfp4 = 39

  /// Elements per K-quant super-block (ggml `QK_K`).
  static let superBlock = 256

  /// The short name llama.cpp prints ("Q4_K", "BF16", …).
  public var name: String { String(describing: self).uppercased() }

  /// Elements per block and bytes per block (gguf-py `GGML_QUANT_SIZES`).
  public var blockLayout: (elements: Int, bytes: Int) {
    let qk = GGMLType.superBlock
    switch self {
    case .f32: return (1, 4)
    case .f16, .bf16: return (1, 2)
    case .q4_0: return (32, 2 + 16)
    case .q4_1: return (32, 2 + 2 + 16)
    case .q5_0: return (32, 2 + 4 + 16)
    case .q5_1: return (32, 2 + 2 + 4 + 16)
    case .q8_0: return (32, 2 + 32)
    case .q8_1: return (32, 4 + 4 + 32)
    case .q2_K: return (qk, 2 + 2 + qk / 16 + qk / 4)
    case .q3_K: return (qk, 2 + qk / 4 + qk / 8 + 12)
    case .q4_K: return (qk, 2 + 2 + qk / 2 + 12)
    case .q5_K: return (qk, 2 + 2 + qk / 2 + qk / 8 + 12)
    case .q6_K: return (qk, 2 + qk / 2 + qk / 4 + qk / 16)
    case .q8_K: return (qk, 4 + qk + qk / 8)
    case .iq2_XXS: return (qk, 2 + qk / 4)
    case .iq2_XS: return (qk, 2 + qk / 4 + qk / 32)
    case .iq3_XXS: return (qk, 2 + qk / 4 + qk / 8)
    case .iq1_S: return (qk, 2 + qk / 8 + qk / 16)
    case .iq4_NL: return (32, 2 + 16)
    case .iq3_S: return (qk, 2 + qk / 4 + qk / 8 + qk / 32 + 4)
    case .iq2_S: return (qk, 2 + qk / 4 + qk / 16)
    case .iq4_XS: return (qk, 2 + 2 + qk / 2 + qk / 64)
    case .i8: return (1, 1)
    case .i16: return (1, 2)
    case .i32: return (1, 4)
    case .i64, .f64: return (1, 8)
    case .iq1_M: return (qk, qk / 8 + qk / 16 + qk / 32)
    case .tq1_0: return (qk, 2 + 4 * 13)
    case .tq2_0: return (qk, 2 + 64)
    case .mxfp4: return (32, 1 + 16)
    }
  }

  /// Whether `GGUFDequantizer` converts this type to f32.
  public var canDequantize: Bool {
    switch self {
    case .f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K, .q8_K: true
    default: false
    }
  }

  /// Bytes needed for `elements` values in a row of length `rowLength`, or nil when the row
  /// length is not a multiple of the block size or the size overflows.
  func byteCount(elements: Int, rowLength: Int) -> Int? {
    let (perBlock, bytes) = blockLayout
    guard rowLength % perBlock == 0, elements % perBlock == 0 else { return nil }
    let (size, overflow) = (elements / perBlock).multipliedReportingOverflow(by: bytes)
    return overflow ? nil : size
  }
}
