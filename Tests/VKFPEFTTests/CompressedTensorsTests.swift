// Post-training int8 against compressed-tensors 0.20.1 itself (tools/make_int8_golden.py: its
// calculate_qparams / quantize / ModelCompressor with llm-compressor's min-max observer, and
// transformers loading the result): the tiny llama quantised in six settings gives its files
// tensor for tensor; 17 edge rows give its q, scale, zero point and dequantised values bit for
// bit; its packing; and the written directory loads back here to transformers' logits.
import Foundation
import XCTest
import VKFCore
@testable import VKFModel
import VKFTestSupport
@testable import VKFPEFT

final class CompressedTensorsTests: XCTestCase {
  /// Our forward vs transformers' (eager attention) on the same dequantised weights: the two
  /// f32 implementations differ in summation order only (the repository's golden logits bound).
  static let logitsMaxAbs: Float = 1e-4

  static let fixtures = GGUFExportTests.fixtures.deletingLastPathComponent().appendingPathComponent("int8")
  static let golden = GGUFExportTests.golden

  struct TensorEntry: Decodable { var name: String, dtype: String, shape: [Int], fnv1a64: String, hex: String? }
  struct Setting: Decodable {
    var name: String, symmetric: Bool, strategy: String, group_size: Int?, format: String
    var tensors: [TensorEntry]
  }
  struct EdgeResult: Decodable { var q: String, scale: String, zero_point: String, deq: String }
  struct Edge: Decodable { var columns: Int, labels: [String], inputs: [[Float]], results: [String: [EdgeResult]] }
  struct Logits: Decodable { var setting: String, shape: [Int], values: [Float] }
  struct Packing: Decodable { var q: [[Int8]], packed_dim1: String, packed_dim0: String }
  struct Model: Decodable { var ids: [[Int32]] }
  struct Golden: Decodable { var settings: [Setting], edge: Edge, logits: Logits, packing: Packing, model: Model }

  static func load() throws -> Golden {
    try JSONDecoder().decode(Golden.self, from: Data(contentsOf: fixtures.appendingPathComponent("int8_golden.json")))
  }

  static func scheme(_ s: Setting) -> CompressedTensors.Scheme {
    let strategy: CompressedTensors.Strategy = s.strategy == "tensor" ? .tensor : s.strategy == "channel" ? .channel
      : .group(s.group_size ?? 0)
    return .init(symmetric: s.symmetric, strategy: strategy)
  }

  static func hex(_ bytes: [UInt8]) -> String { GGUFExportTests.hex(bytes) }
  static func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

  func weights() throws -> DecoderWeights {
    let source = try SafetensorsFile(contentsOf: Self.golden.appendingPathComponent("llama_untied.weights.safetensors"))
    return try DecoderWeights(from: source, shape: GGUFModelExportTests.shape, backend: TestBackends.cpu, trainable: .none)
  }

  func test_edgeRows_equalCompressedTensors() throws {
    let g = try Self.load()
    XCTAssertEqual(g.edge.inputs.count, g.edge.labels.count)
    for setting in g.settings where setting.format == "pack-quantized" {
      let scheme = Self.scheme(setting)
      let results = try XCTUnwrap(g.edge.results[setting.name], setting.name)
      for (i, row) in g.edge.inputs.enumerated() {
        let q = try CompressedTensors.quantize(row, rows: 1, cols: g.edge.columns, scheme: scheme)
        let want = results[i], label = "\(setting.name) \(g.edge.labels[i])"
        XCTAssertEqual(Self.hex(Self.bytes(q.q)), want.q, "\(label) q")
        XCTAssertEqual(Self.hex(Self.bytes(q.scales)), want.scale, "\(label) scale")
        XCTAssertEqual(Self.hex(Self.bytes(q.zeroPoints ?? [Int8](repeating: 0, count: q.scales.count))), want.zero_point,
                       "\(label) zero point")
        let block = scheme.strategy.blockSize(rows: 1, cols: g.edge.columns)
        let deq = row.indices.map { j in (Float(q.q[j]) - Float(q.zeroPoints?[j / block] ?? 0)) * q.scales[j / block] }
        XCTAssertEqual(Self.hex(Self.bytes(deq)), want.deq, "\(label) dequantised")
      }
    }
  }

  func test_packing_equalsCompressedTensors() throws {
    let p = try Self.load().packing
    let rows = p.q.count, cols = p.q[0].count, flat = p.q.flatMap { $0 }
    XCTAssertEqual(Self.hex(CompressedTensors.packColumns(flat, rows: rows, cols: cols)), p.packed_dim1)
    XCTAssertEqual(Self.hex(CompressedTensors.packRows(flat, rows: rows, cols: cols)), p.packed_dim0)
    let packed = CompressedTensors.packColumns(flat, rows: rows, cols: cols)
    XCTAssertEqual(packed.withUnsafeBytes { CompressedTensors.unpackColumns($0, rows: rows, cols: cols) }, flat)
    let byRows = CompressedTensors.packRows(flat, rows: rows, cols: cols)
    XCTAssertEqual(byRows.withUnsafeBytes { CompressedTensors.unpackRows($0, rows: rows, cols: cols) }, flat)
  }

  /// Each pack-quantized setting written here has compressed-tensors' tensors (names, dtypes,
  /// shapes, bytes) and loads back to the weights it quantised.
  func test_writtenModel_equalsCompressedTensorsFiles_andLoadsBack() throws {
    let g = try Self.load()
    let config = try DecoderConfig.load(from: Self.golden.appendingPathComponent("llama_untied.config.json"))
    for setting in g.settings where setting.format == "pack-quantized" {
      let scheme = Self.scheme(setting)
      let w = try weights()
      let (report, parts) = try Int8ModelWriter.quantize(w, scheme: scheme)
      XCTAssertEqual(report.projections, 14)
      let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-int8-\(UUID())")
      defer { try? FileManager.default.removeItem(at: dir) }
      try Int8ModelWriter.write(w, parts: parts, scheme: scheme, config: config, tokenizerSource: nil, to: dir, overwrite: false)
      let file = try SafetensorsFile(contentsOf: dir.appendingPathComponent("model.safetensors"))
      XCTAssertEqual(Set(file.tensorNames), Set(setting.tensors.map(\.name)), setting.name)
      for t in setting.tensors {
        try file.withRawTensor(t.name) { raw in
          XCTAssertEqual(raw.dtype.rawValue, t.dtype, "\(setting.name) \(t.name)")
          XCTAssertEqual(raw.shape, t.shape, "\(setting.name) \(t.name)")
          XCTAssertEqual(GGUFHFExportTests.fnv1a64(raw.bytes), t.fnv1a64, "\(setting.name) \(t.name) bytes")
          if let hex = t.hex { XCTAssertEqual(Self.hex(Array(raw.bytes)), hex, "\(setting.name) \(t.name)") }
        }
      }
      let raw = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("config.json"))) as? [String: Any])
      let (readScheme, format) = try XCTUnwrap(try CompressedTensors.scheme(config: raw, path: dir.path))
      XCTAssertEqual(readScheme, scheme)
      XCTAssertEqual(format, "pack-quantized")
      // The directory read back: its projections are int8 bases equal to what was quantised.
      let source = try CompressedTensorsSource(file, scheme: readScheme, format: format)
      let back = try DecoderWeights(from: source, shape: GGUFModelExportTests.shape, backend: TestBackends.cpu, trainable: .none)
      try Int8ModelWriter.useQuantized(w, parts: parts, scheme: scheme)
      let ids = g.model.ids.flatMap { $0 }
      let model = try DecoderModel(weights: back), reference = try DecoderModel(weights: w)
      try model.forward(ids: ids, batch: g.model.ids.count)
      try reference.forward(ids: ids, batch: g.model.ids.count)
      let got = try TestBackends.cpu.floats(try XCTUnwrap(model.logits))
      XCTAssertEqual(got, try TestBackends.cpu.floats(try XCTUnwrap(reference.logits)), setting.name)
      try back.updateProjections { module, linear in
        guard case .int8 = linear.base else { return XCTFail("\(setting.name) \(module) loaded as \(linear.base)") }
      }
      if setting.name == g.logits.setting {
        XCTAssertEqual(got.count, g.logits.values.count)
        XCTAssertLessThanOrEqual(zip(got, g.logits.values).map { abs($0 - $1) }.max() ?? 1, Self.logitsMaxAbs,
                                 "logits vs transformers on compressed-tensors' own checkpoint")
      }
    }
  }
}
