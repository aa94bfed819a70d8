import Foundation
import VKFTokenizer

/// Writes `.safetensors` files the way the reference Python/Rust library does.
///
/// Matches `safetensors.tensor.prepare`/`serialize` (0.4–0.8): tensors are laid out by
/// descending dtype rank (U64, I64, F64, F32, …, U8, BOOL — widest first, so every tensor
/// stays aligned to its item size) and then by name, byte-wise; the header is compact
/// JSON with `__metadata__` first (omitted when empty) and the tensors in layout order,
/// padded with spaces so the data section starts at a multiple of 8. The one deliberate
/// difference: metadata keys are sorted (the Rust library uses a HashMap, whose order
/// varies run to run), so our output is deterministic. With no metadata or one key the
/// bytes are identical to Python's.
public enum SafetensorsWriter {
  /// Alignment of the data section, as in the reference library (`N_LEN`).
  static let dataAlignment = 8

  /// One tensor to write: its name, shape, stored type and little-endian element bytes.
  public struct Tensor: Sendable {
    /// The tensor's name in the file.
    public var name: String
    /// The shape, outermost first; `[]` is a scalar.
    public var shape: [Int]
    /// The stored element type.
    public var dtype: SafetensorsDType
    /// `prod(shape) · dtype.itemSize` little-endian bytes.
    public var data: [UInt8]

    /// A tensor from raw bytes; sizes are checked when written.
    public init(name: String, shape: [Int], dtype: SafetensorsDType, data: [UInt8]) {
      self.name = name
      self.shape = shape
      self.dtype = dtype
      self.data = data
    }

    /// A tensor from f32 values, stored as F32, F16 or BF16 (round to nearest even).
    public init(name: String, shape: [Int], floats: [Float], as dtype: SafetensorsDType = .f32) throws {
      guard let bytes = dtype.encode(floats) else {
        throw ModelFileError("tensor \"\(name)\"",
                             "cannot store floats as \(dtype.rawValue); use F32, F16 or BF16")
      }
      self.init(name: name, shape: shape, dtype: dtype, data: bytes)
    }
  }

  // MARK: - Writing

  /// Writes `tensors` and `metadata` to `url` atomically (temporary file + rename).
  public static func write(tensors: [Tensor], metadata: [String: String] = [:], to url: URL) throws {
    let (header, ordered) = try prepare(tensors, metadata: metadata, path: url.path)
    try AtomicWrite.write(to: url) { out in
      try out.write(header)
      for t in ordered { try out.write(t.data) }
    }
  }

  /// Writes f32 tensors (`name: (shape, values)`), stored as `dtype` (F32, F16 or BF16).
  public static func write(floats: [String: ([Int], [Float])], as dtype: SafetensorsDType = .f32,
                           metadata: [String: String] = [:], to url: URL) throws {
    guard [.f32, .f16, .bf16].contains(dtype) else {
      throw ModelFileError(url.path, "cannot store floats as \(dtype.rawValue); use F32, F16 or BF16")
    }
    let tensors = try floats.map { name, value in
      try Tensor(name: name, shape: value.0, floats: value.1, as: dtype)
    }
    try write(tensors: tensors, metadata: metadata, to: url)
  }

  /// The whole file as bytes (for small files and tests).
  public static func serialize(tensors: [Tensor], metadata: [String: String] = [:]) throws -> [UInt8] {
    let (header, ordered) = try prepare(tensors, metadata: metadata, path: "<memory>")
    return ordered.reduce(into: header) { $0 += $1.data }
  }

  // MARK: - Header

  /// Validates the tensors and returns the length prefix + padded header, and the tensors
  /// in layout order.
  static func prepare(_ tensors: [Tensor], metadata: [String: String],
                      path: String) throws -> (header: [UInt8], ordered: [Tensor]) {
    var seen = Set<String>()
    for t in tensors {
      guard t.name != SafetensorsHeader.metadataKey else {
        throw ModelFileError(path, "a tensor cannot be named \"__metadata__\"; rename it")
      }
      guard seen.insert(t.name).inserted else {
        throw ModelFileError(path, "tensor \"\(t.name)\" is given twice; pass each name once")
      }
      try checkSize(t, path: path)
    }
    let ordered = tensors.sorted { a, b in
      if a.dtype.serializationRank != b.dtype.serializationRank {
        return a.dtype.serializationRank > b.dtype.serializationRank
      }
      return a.name.utf8.lexicographicallyPrecedes(b.name.utf8)
    }

    var json = "{"
    var first = true
    if !metadata.isEmpty {
      let entries = metadata.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
        .map { "\(jsonString($0.key)):\(jsonString($0.value))" }
      json += "\(jsonString(SafetensorsHeader.metadataKey)):{\(entries.joined(separator: ","))}"
      first = false
    }
    var offset = 0
    for t in ordered {
      if !first { json += "," }
      first = false
      let shape = t.shape.map(String.init).joined(separator: ",")
      json += "\(jsonString(t.name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(shape)],"
        + "\"data_offsets\":[\(offset),\(offset + t.data.count)]}"
      offset += t.data.count
    }
    json += "}"

    var body = Array(json.utf8)
    let padding = (dataAlignment - body.count % dataAlignment) % dataAlignment
    body += repeatElement(UInt8(ascii: " "), count: padding)
    var header = [UInt8]()
    header.reserveCapacity(SafetensorsFile.lengthPrefixBytes + body.count)
    withUnsafeBytes(of: UInt64(body.count).littleEndian) { header += $0 }
    header += body
    return (header, ordered)
  }

  /// Checks `data.count == prod(shape) · itemSize`, with overflow checks.
  private static func checkSize(_ t: Tensor, path: String) throws {
    var count = 1
    for d in t.shape {
      guard d >= 0 else {
        throw ModelFileError(path, "tensor \"\(t.name)\": shape \(t.shape) has a negative dimension")
      }
      let (p, overflow) = count.multipliedReportingOverflow(by: d)
      guard !overflow else {
        throw ModelFileError(path, "tensor \"\(t.name)\": shape \(t.shape) is too large")
      }
      count = p
    }
    let (bytes, overflow) = count.multipliedReportingOverflow(by: t.dtype.itemSize)
    guard !overflow, bytes == t.data.count else {
      throw ModelFileError(path, "tensor \"\(t.name)\": \(t.data.count) bytes of data do not match "
        + "shape \(t.shape) of \(t.dtype.rawValue) (\(overflow ? "overflow" : String(bytes)) bytes); "
        + "check the shape and dtype")
    }
  }

  /// `s` as a JSON string literal, escaped exactly as serde_json does: `"` `\` and the
  /// short escapes, other control characters as lowercase `\u00xx`, everything else raw UTF-8
  /// (also what Python's `json.dumps(…, ensure_ascii=False)` writes).
  public static func jsonString(_ s: String) -> String { JSONLiteral.string(s) }
}
