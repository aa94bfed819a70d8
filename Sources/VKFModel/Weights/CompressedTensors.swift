// compressed-tensors' int8 weight-only checkpoints (what llm-compressor writes and vLLM /
// transformers read): the quantiser with its exact f32 arithmetic, the "pack-quantized" byte
// layout, config.json's quantization_config, and a reader that presents such a checkpoint as a
// plain one whose projections load as int8 bases.
import Foundation
import VKFCore

/// compressed-tensors int8 (num_bits 8, type int, weights only).
public enum CompressedTensors {
  /// How many weights share a scale (and zero point).
  public enum Strategy: Equatable, Sendable {
    case tensor, channel, group(Int)

    public var name: String {
      switch self { case .tensor: "tensor"; case .channel: "channel"; case .group: "group" }
    }

    /// Consecutive row-major elements per block of a (rows, cols) weight.
    public func blockSize(rows: Int, cols: Int) -> Int {
      switch self {
      case .tensor: max(rows * cols, 1)
      case .channel: max(cols, 1)
      case .group(let g): g
      }
    }
  }

  /// Symmetric (zero point 0) or asymmetric, and the strategy.
  public struct Scheme: Equatable, Sendable {
    public var symmetric: Bool
    public var strategy: Strategy
    public init(symmetric: Bool, strategy: Strategy) { self.symmetric = symmetric; self.strategy = strategy }
  }

  /// The projections' quantised values, one scale per block and (asymmetric) one zero point.
  public struct Quantized: Sendable {
    public var q: [Int8]
    public var scales: [Float]
    public var zeroPoints: [Int8]?
  }

  /// Quantises a (rows, cols) weight as llm-compressor's memoryless min-max observer and
  /// compressed-tensors' calculate_qparams / quantize do it in f32: per block lo = min(min, 0),
  /// hi = max(max, 0); symmetric scale = max(|lo|, |hi|) / 127.5, asymmetric scale =
  /// (hi − lo) / 255 and zp = rint(clamp(−128 − lo/scale, −128, 127)) (NaN → 0) from that scale;
  /// a zero scale becomes 2⁻²³; q = rint(clamp(x/scale + zp, −128, 127)), rint rounding half to even.
  public static func quantize(_ w: [Float], rows: Int, cols: Int, scheme: Scheme) throws -> Quantized {
    if case .group(let g) = scheme.strategy, g <= 0 || cols % g != 0 {
      throw VKFError.shapeMismatch(op: "quantize", detail: "group size \(g) does not divide the row length \(cols)")
    }
    let block = scheme.strategy.blockSize(rows: rows, cols: cols)
    let blocks = w.isEmpty ? 0 : (w.count + block - 1) / block
    var q = [Int8](repeating: 0, count: w.count)
    var scales = [Float](repeating: 0, count: blocks)
    var zps: [Int8]? = scheme.symmetric ? nil : [Int8](repeating: 0, count: blocks)
    for b in 0..<blocks {
      let range = (b * block)..<min(w.count, (b + 1) * block)
      var lo: Float = 0, hi: Float = 0
      for i in range {
        lo = min(lo, w[i])
        hi = max(hi, w[i])
      }
      var scale: Float
      var zp: Float = 0
      if scheme.symmetric {
        scale = max(abs(lo), abs(hi)) / 127.5
      } else {
        scale = (hi - lo) / 255
        let z = (-128 - lo / scale)
        zp = z.isNaN ? 0 : min(max(z, -128), 127).rounded(.toNearestOrEven)
        zps?[b] = Int8(zp)
      }
      if scale == 0 { scale = Float.ulpOfOne }
      scales[b] = scale
      for i in range {
        let v = w[i] / scale + zp
        q[i] = v.isNaN ? 0 : Int8(min(max(v, -128), 127).rounded(.toNearestOrEven))
      }
    }
    return Quantized(q: q, scales: scales, zeroPoints: zps)
  }

  // MARK: - pack-quantized bytes

  /// `weight_packed`: (rows, ceil(cols/4)) I32 little-endian, byte j of word c of row r holding
  /// q[r, 4c + j] + 128 (padding bytes 0).
  public static func packColumns(_ q: [Int8], rows: Int, cols: Int) -> [UInt8] {
    let words = (cols + 3) / 4
    var out = [UInt8](repeating: 0, count: rows * words * 4)
    for r in 0..<rows {
      for c in 0..<cols { out[r * words * 4 + c] = UInt8(bitPattern: q[r * cols + c]) ^ 0x80 }
    }
    return out
  }

  /// The inverse of `packColumns`.
  public static func unpackColumns(_ bytes: UnsafeRawBufferPointer, rows: Int, cols: Int) -> [Int8] {
    let words = (cols + 3) / 4
    var q = [Int8](repeating: 0, count: rows * cols)
    for r in 0..<rows {
      for c in 0..<cols { q[r * cols + c] = Int8(bitPattern: bytes[r * words * 4 + c] ^ 0x80) }
    }
    return q
  }

  /// Channel / group `weight_zero_point`: (ceil(rows/4), cols) I32, byte j of word (i, c)
  /// holding z[4i + j, c] + 128 (padding bytes 0).
  public static func packRows(_ z: [Int8], rows: Int, cols: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: (rows + 3) / 4 * cols * 4)
    for r in 0..<rows {
      for c in 0..<cols { out[((r / 4) * cols + c) * 4 + r % 4] = UInt8(bitPattern: z[r * cols + c]) ^ 0x80 }
    }
    return out
  }

  /// The inverse of `packRows`.
  public static func unpackRows(_ bytes: UnsafeRawBufferPointer, rows: Int, cols: Int) -> [Int8] {
    var z = [Int8](repeating: 0, count: rows * cols)
    for r in 0..<rows {
      for c in 0..<cols { z[r * cols + c] = Int8(bitPattern: bytes[((r / 4) * cols + c) * 4 + r % 4] ^ 0x80) }
    }
    return z
  }

  // MARK: - config.json

  /// `quantization_config` as compressed-tensors writes it (format pack-quantized, targets
  /// Linear, lm_head ignored).
  public static func quantizationConfig(_ s: Scheme) -> [String: Any] {
    let groupSize: Any
    if case .group(let g) = s.strategy { groupSize = g } else { groupSize = NSNull() }
    let weights: [String: Any] = [
      "dynamic": false, "group_size": groupSize, "num_bits": 8, "observer": "memoryless_minmax",
      "strategy": s.strategy.name, "symmetric": s.symmetric, "type": "int",
    ]
    return [
      "config_groups": ["group_0": ["format": "pack-quantized", "input_activations": NSNull(),
                                    "output_activations": NSNull(), "targets": ["Linear"], "weights": weights]],
      "format": "pack-quantized", "global_compression_ratio": NSNull(), "ignore": ["lm_head"],
      "kv_cache_scheme": NSNull(), "moe_sparsity_config": NSNull(), "quant_method": "compressed-tensors",
      "quantization_status": "compressed", "sparsity_config": [String: Any](), "transform_config": [String: Any](),
      "version": "0.20.1",
    ]
  }

  /// The int8 weight-only scheme of a config.json's `quantization_config`, nil when it has none;
  /// anything else compressed-tensors can describe (4-bit, activations, sparsity) is refused.
  public static func scheme(config: [String: Any], path: String) throws -> (scheme: Scheme, format: String)? {
    guard let qc = config["quantization_config"] as? [String: Any] else { return nil }
    guard qc["quant_method"] as? String == "compressed-tensors" else {
      throw ModelFileError(path, "quantization_config.quant_method \(qc["quant_method"] ?? "(missing)") is not "
        + "supported (compressed-tensors int8 weights are)")
    }
    let format = (qc["format"] as? String) ?? "pack-quantized"
    guard ["pack-quantized", "naive-quantized", "int-quantized"].contains(format) else {
      throw ModelFileError(path, "compressed-tensors format \(format) is not supported (pack-quantized and naive-quantized int8 are)")
    }
    guard let groups = qc["config_groups"] as? [String: Any], groups.count == 1,
          let group = groups.values.first as? [String: Any], let w = group["weights"] as? [String: Any] else {
      throw ModelFileError(path, "quantization_config needs exactly one config group with weights")
    }
    guard w["num_bits"] as? Int == 8, (w["type"] as? String ?? "int") == "int", group["input_activations"] is NSNull
            || group["input_activations"] == nil else {
      throw ModelFileError(path, "only 8-bit integer weight-only compressed-tensors checkpoints load here")
    }
    let strategy: Strategy
    switch w["strategy"] as? String {
    case "tensor"?: strategy = .tensor
    case "channel"?: strategy = .channel
    case "group"?:
      guard let g = w["group_size"] as? Int, g > 0 else { throw ModelFileError(path, "group strategy without a group_size") }
      strategy = .group(g)
    case let other: throw ModelFileError(path, "weight strategy \(other ?? "(missing)") is not supported")
    }
    return (Scheme(symmetric: (w["symmetric"] as? Bool) ?? true, strategy: strategy), format)
  }
}

/// A source whose frozen projections come as ready bases (an int8 checkpoint): the loader takes
/// `linearBase` instead of reading and uploading the dense weight.
public protocol QuantizedBaseSource: WeightSource {
  /// The base for weight `name` ("….q_proj.weight"), or nil when it is stored dense.
  func linearBase(_ name: String, backend: Backend) throws -> LinearWeight?
}

/// A compressed-tensors int8 checkpoint seen as a plain one: each packed projection appears as
/// its `….weight` (shape from `weight_shape`, values dequantised on request), everything else as
/// stored; the loader gets the projections as int8 bases.
public final class CompressedTensorsSource: QuantizedBaseSource, @unchecked Sendable {
  public let inner: SafetensorsSource
  public let scheme: CompressedTensors.Scheme
  public let format: String
  public let tensorNames: [String]
  /// "….weight" → its module prefix, for the quantised projections.
  private let quantized: [String: String]
  public var weightsPath: String { inner.weightsPath }

  public init(_ inner: SafetensorsSource, scheme: CompressedTensors.Scheme, format: String) throws {
    self.inner = inner; self.scheme = scheme; self.format = format
    let names = Set(inner.tensorNames)
    var q = [String: String]()
    let marker = format == "pack-quantized" ? ".weight_packed" : ".weight_scale"
    for name in names where name.hasSuffix(marker) {
      let module = String(name.dropLast(marker.count))
      q[module + ".weight"] = module
    }
    quantized = q
    let parts = [".weight_packed", ".weight_scale", ".weight_zero_point", ".weight_shape", ".weight_g_idx"]
    tensorNames = names.filter { n in !parts.contains { n.hasSuffix($0) } }.union(q.keys).sorted()
  }

  public func shape(of name: String) throws -> [Int] {
    guard let module = quantized[name] else { return try inner.shape(of: name) }
    if format != "pack-quantized" { return try inner.shape(of: name) }
    let raw = try inner.rawTensor(module + ".weight_shape")
    guard raw.dtype == .i64 || raw.dtype == .i32, raw.bytes.count == 2 * raw.dtype.itemSize else {
      throw ModelFileError(weightsPath, "\(module).weight_shape must hold two integers")
    }
    return (0..<2).map { i in
      raw.dtype == .i64 ? Int(raw.bytes.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
        : Int(raw.bytes.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))
    }
  }

  public func storedType(of name: String) throws -> String {
    quantized[name] != nil ? "I8" : try inner.storedType(of: name)
  }

  /// The int8 values, scales and zero points of projection weight `name`.
  public func parts(_ name: String) throws -> (q: [Int8], scales: [Float], zeroPoints: [Float]?, rows: Int, cols: Int, blockSize: Int)? {
    guard let module = quantized[name] else { return nil }
    let dims = try shape(of: name)
    let (rows, cols) = (dims[0], dims[1])
    let path = weightsPath
    let q: [Int8]
    if format == "pack-quantized" {
      let raw = try inner.rawTensor(module + ".weight_packed")
      guard raw.dtype == .i32, raw.shape == [rows, (cols + 3) / 4] else {
        throw ModelFileError(path, "\(module).weight_packed is \(raw.dtype.rawValue) \(raw.shape), expected I32 [\(rows), \((cols + 3) / 4)]")
      }
      q = CompressedTensors.unpackColumns(raw.bytes, rows: rows, cols: cols)
    } else {
      let raw = try inner.rawTensor(name)
      guard raw.dtype == .i8, raw.shape == [rows, cols] else {
        throw ModelFileError(path, "\(name) is \(raw.dtype.rawValue) \(raw.shape), expected I8 [\(rows), \(cols)]")
      }
      q = raw.bytes.map { Int8(bitPattern: $0) }
    }
    let block = scheme.strategy.blockSize(rows: rows, cols: cols)
    let blocks = (rows * cols + block - 1) / block
    let scales = try inner.floats(module + ".weight_scale")
    guard scales.count == blocks else {
      throw ModelFileError(path, "\(module).weight_scale holds \(scales.count) scales; \(scheme.strategy.name) needs \(blocks)")
    }
    var zps: [Float]?
    if !scheme.symmetric {
      let raw = try inner.rawTensor(module + ".weight_zero_point")
      let perRow = blocks / max(rows, 1)
      let z: [Int8]
      if format == "pack-quantized", case .tensor = scheme.strategy {
        z = raw.bytes.map { Int8(bitPattern: $0) }
      } else if format == "pack-quantized" {
        guard raw.dtype == .i32, raw.shape == [(rows + 3) / 4, perRow] else {
          throw ModelFileError(path, "\(module).weight_zero_point is \(raw.dtype.rawValue) \(raw.shape), expected I32 [\((rows + 3) / 4), \(perRow)]")
        }
        z = CompressedTensors.unpackRows(raw.bytes, rows: rows, cols: perRow)
      } else {
        z = raw.bytes.map { Int8(bitPattern: $0) }
      }
      guard z.count == blocks else { throw ModelFileError(path, "\(module).weight_zero_point holds \(z.count) values, expected \(blocks)") }
      zps = z.map { Float($0) }
    }
    return (q, scales, zps, rows, cols, block)
  }

  public func floats(_ name: String) throws -> [Float] {
    guard let p = try parts(name) else { return try inner.floats(name) }
    var out = [Float](repeating: 0, count: p.q.count)
    p.q.withUnsafeBytes { q in
      p.scales.withUnsafeBufferPointer { s in
        out.withUnsafeMutableBufferPointer { o in
          if let z = p.zeroPoints {
            z.withUnsafeBufferPointer { zb in
              Int8Weight.dequantize(q.baseAddress!.assumingMemoryBound(to: UInt8.self), scales: s.baseAddress!,
                                    zeroPoints: zb.baseAddress!, blockSize: p.blockSize, elements: 0..<p.q.count, into: o.baseAddress!)
            }
          } else {
            Int8Weight.dequantize(q.baseAddress!.assumingMemoryBound(to: UInt8.self), scales: s.baseAddress!,
                                  zeroPoints: nil, blockSize: p.blockSize, elements: 0..<p.q.count, into: o.baseAddress!)
          }
        }
      }
    }
    return out
  }

  public func linearBase(_ name: String, backend: Backend) throws -> LinearWeight? {
    guard let p = try parts(name) else { return nil }
    return .int8(try Int8Weight.uploading(p.q, scales: p.scales, zeroPoints: p.zeroPoints, rows: p.rows, cols: p.cols,
                                          blockSize: p.blockSize, on: backend))
  }
}
