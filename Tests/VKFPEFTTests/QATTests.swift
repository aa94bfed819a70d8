// QAT: the fake quantisers equal the exports they stand for (int8 = `quantize`'s channel scheme
// dequantised, Q4_0 = `export --outtype q4_0` read back), and the straight-through estimator:
// a model training under fake quantisation has the loss and every gradient of the plain model
// whose projection weights are the fake-quantised ones (dL/dW := dL/dŴ).
import Foundation
import XCTest
import VKFCore
@testable import VKFModel
import VKFTestSupport
@testable import VKFPEFT

final class QATTests: XCTestCase {
  func test_fakeQuantisers_equalTheExports() throws {
    let (rows, cols) = (6, 64)
    var w = TestData.uniform(rows * cols, seed: 41, -0.3, 0.3)
    for j in 0..<cols { w[cols + j] = 0 }  // an all-zero row
    var int8 = [Float](repeating: 0, count: w.count), q4 = int8
    w.withUnsafeBufferPointer { src in
      int8.withUnsafeMutableBufferPointer {
        FakeQuant.int8Channel.apply(src.baseAddress!, into: $0.baseAddress!, cols: cols, blocks: 0..<rows)
      }
      q4.withUnsafeMutableBufferPointer {
        FakeQuant.q4_0.apply(src.baseAddress!, into: $0.baseAddress!, cols: cols, blocks: 0..<(rows * cols / 32))
      }
    }
    let c = try CompressedTensors.quantize(w, rows: rows, cols: cols, scheme: .init(symmetric: true, strategy: .channel))
    let exported = w.indices.map { Float(c.q[$0]) * c.scales[$0 / cols] }
    // Equal values (a value rounding to zero from below is −0 here, +0 as the stored int 0).
    if let i = w.indices.first(where: { int8[$0] != exported[$0] }) {
      XCTFail("int8 ≠ quantize's channel scheme at \(i): w \(w[i]) → \(int8[i]) vs \(exported[i]) (q \(c.q[i]), scale \(c.scales[i / cols]))")
    }
    let bytes = GGUFQuantize.quantize(w, as: .q4_0)
    var back = [Float](repeating: 0, count: w.count)
    _ = bytes.withUnsafeBytes { raw in
      back.withUnsafeMutableBufferPointer { GGUFDequantizer.dequantize(.q4_0, raw.baseAddress!, count: w.count, into: $0.baseAddress!) }
    }
    XCTAssertEqual(q4.map(\.bitPattern), back.map(\.bitPattern), "int4 = the Q4_0 export read back")
    XCTAssertNotEqual(int8, w)
  }

  /// Loss and gradients of (W under fake quantisation) vs (Ŵ as the weights), on `backend`.
  func checkStraightThrough(_ kind: FakeQuant, on backend: Backend) throws {
    let source = try SafetensorsFile(contentsOf: GGUFExportTests.golden.appendingPathComponent("llama_untied.weights.safetensors"))
    let shape = GGUFModelExportTests.shape
    let qat = try DecoderWeights(from: source, shape: shape, backend: backend, trainable: .all)
    XCTAssertEqual(try FakeQuantAdapter.attach(to: qat, kind: kind), 14)
    // The reference: the same model with every projection weight replaced by its fake quantisation.
    let plain = try DecoderWeights(from: source, shape: shape, backend: backend, trainable: .all)
    try plain.updateProjections { _, linear in
      let w = try XCTUnwrap(linear.denseWeight)
      try backend.fakeQuantize(w, kind: kind, into: w)
    }
    let ids: [Int32] = [5, 17, 42, 9, 33, 61, 2, 80], targets: [Int32] = [17, 42, 9, 33, 61, 2, 80, 11]
    var results: [(Float, [String: [Float]])] = []
    for weights in [qat, plain] {
      let model = try DecoderModel(weights: weights)
      try model.zeroGradients()
      try model.forward(ids: ids, targets: targets, batch: 2, computeGradients: true)
      let loss = try model.loss()
      try model.backward()
      results.append((loss, try weights.gradients.mapValues { try backend.floats($0) }))
    }
    XCTAssertEqual(results[0].0, results[1].0, "\(kind): loss")
    XCTAssertEqual(Set(results[0].1.keys), Set(results[1].1.keys))
    for (name, g) in results[1].1 {
      XCTAssertEqual(results[0].1[name], g, "\(kind): gradient of \(name)")
    }
    // The master weights themselves are untouched by the forward.
    try qat.updateProjections { module, linear in
      XCTAssertEqual(try backend.floats(try XCTUnwrap(linear.denseWeight)),
                     try source.floats(module + ".weight"), module)
    }
  }

  func test_straightThrough_cpu() throws {
    for kind in FakeQuant.allCases { try checkStraightThrough(kind, on: TestBackends.cpu) }
  }

  func test_straightThrough_vulkan() throws {
    let vk = try LoRATiny.vulkanOrSkip()
    for kind in FakeQuant.allCases { try checkStraightThrough(kind, on: vk) }
  }
}
