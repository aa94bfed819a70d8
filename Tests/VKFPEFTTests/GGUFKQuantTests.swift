// The block quantisers llama-quantize uses (Q4_K, Q5_K, Q6_K and the Q5_0 / Q5_1 / Q8_0 fallbacks)
// byte for byte against ggml's own reference code (tools/make_gguf_kquant_golden.py calls
// libggml-base's ggml_quantize_chunk), and the reader's new Q5_0 / Q5_1 dequantisers against
// gguf-py's.
import Foundation
import XCTest
@testable import VKFModel

final class GGUFKQuantTests: XCTestCase {
  struct Multirow: Decodable {
    var rows: Int, columns: Int, inputs: [Float]
    var q4_K: String, q5_K: String, q6_K: String, q5_0: String, q5_1: String, q8_0: String, q4_0: String
  }

  struct Golden: Decodable {
    var labels: [String]
    var inputs: [[Float]]
    var q4_K: [String], q5_K: [String], q6_K: [String], q5_0: [String], q5_1: [String], q8_0: [String], q4_0: [String]
    var multirow: Multirow
    var dequantized: [String: [[Float]]]
  }

  static func golden() throws -> Golden {
    try JSONDecoder().decode(Golden.self, from: Data(contentsOf: GGUFExportTests.fixtures.appendingPathComponent("kquant_golden.json")))
  }

  static func bytes(_ hex: String) -> [UInt8] {
    var out = [UInt8](), chars = Array(hex.utf8)
    for i in stride(from: 0, to: chars.count, by: 2) { out.append(UInt8(String(decoding: chars[i..<(i + 2)], as: UTF8.self), radix: 16)!) }
    return out
  }

  static var cases: [(GGMLType, KeyPath<Golden, [String]>, KeyPath<Multirow, String>)] { [
    (.q4_K, \.q4_K, \.q4_K), (.q5_K, \.q5_K, \.q5_K), (.q6_K, \.q6_K, \.q6_K),
    (.q5_0, \.q5_0, \.q5_0), (.q5_1, \.q5_1, \.q5_1), (.q8_0, \.q8_0, \.q8_0), (.q4_0, \.q4_0, \.q4_0),
  ] }

  /// Every row of 256 (zeros, constants, subnormals, outliers, mixed magnitudes, ties) and a
  /// 3 × 512 matrix quantised as one tensor: the bytes ggml writes.
  func test_quantisers_equalGGMLReference() throws {
    let g = try Self.golden()
    XCTAssertEqual(g.inputs.count, g.labels.count)
    XCTAssertGreaterThanOrEqual(g.inputs.count, 10)
    for (type, rows, multi) in Self.cases {
      for (i, row) in g.inputs.enumerated() {
        XCTAssertEqual(GGUFExportTests.hex(GGUFQuantize.quantize(row, as: type)), g[keyPath: rows][i], "\(type.name) \(g.labels[i])")
      }
      XCTAssertEqual(g.multirow.inputs.count, g.multirow.rows * g.multirow.columns)
      XCTAssertEqual(GGUFExportTests.hex(GGUFQuantize.quantize(g.multirow.inputs, as: type)), g.multirow[keyPath: multi],
                     "\(type.name) 3 × 512")
    }
  }

  /// A tensor big enough to be split over the workers gives the bytes of quantising its rows
  /// one by one.
  func test_parallelChunks_equalRowByRow() {
    var state: UInt64 = 0x9e37_79b9_7f4a_7c15
    let values = (0..<(64 * 1024)).map { _ -> Float in
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return Float(Int64(state >> 40) - (1 << 23)) / Float(1 << 23)
    }
    for type in [GGMLType.q4_K, .q6_K, .q5_0] {
      let whole = GGUFQuantize.quantize(values, as: type)
      var rows = [UInt8]()
      for r in stride(from: 0, to: values.count, by: 1024) { rows += GGUFQuantize.quantize(Array(values[r..<(r + 1024)]), as: type) }
      XCTAssertTrue(whole == rows, type.name)
    }
  }

  /// The reader dequantises Q5_0 / Q5_1 as gguf-py does (bit for bit).
  func test_q5Dequantisers_equalGGUFPy() throws {
    let g = try Self.golden()
    for (type, rows) in [(GGMLType.q5_0, g.q5_0), (.q5_1, g.q5_1)] {
      let want = try XCTUnwrap(g.dequantized[type == .q5_0 ? "q5_0" : "q5_1"])
      XCTAssertEqual(want.count, rows.count)
      for (i, hex) in rows.enumerated() {
        let raw = Self.bytes(hex)
        var got = [Float](repeating: .nan, count: 256)
        let ok = raw.withUnsafeBytes { src in
          got.withUnsafeMutableBufferPointer { GGUFDequantizer.dequantize(type, src.baseAddress!, count: 256, into: $0.baseAddress!) }
        }
        XCTAssertTrue(ok)
        XCTAssertEqual(got.map(\.bitPattern), want[i].map(\.bitPattern), "\(type.name) \(g.labels[i])")
      }
    }
  }
}
