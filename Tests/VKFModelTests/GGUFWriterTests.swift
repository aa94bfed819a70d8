import Foundation
import XCTest
@testable import VKFModel
import VKFCore

final class GGUFWriterTests: XCTestCase {
  private func temporaryPath(_ name: String = #function) -> String {
    FileManager.default.temporaryDirectory
      .appendingPathComponent("vkf-gguf-writer-\(ProcessInfo.processInfo.processIdentifier)-\(name.filter(\.isLetter)).gguf").path
  }

  func testWriter_roundTripsMetadataAndTensors() throws {
    var writer = GGUFWriter(architecture: "qwen2", alignment: 64)
    let metadata: [(String, GGUFValue)] = [
      ("a.u8", .uint8(7)), ("a.i64", .int64(-5)), ("a.f64", .float64(2.5)), ("a.bool", .bool(false)),
      ("a.str", .string("ok")),
      ("a.nested", .array(elementType: .array, [.array(elementType: .string, [.string("x")])])),
      ("a.empty", .array(elementType: .float32, [])),
    ]
    for (key, value) in metadata { writer.set(key, value) }
    let values: [Float] = [1, -2, 0.5, 3.25, 1e-3, 65504]
    try writer.addTensor("blk.0.attn_q.weight", shape: [2, 3], values: values)
    try writer.addTensor("h", shape: [6], values: values, as: .f16)
    try writer.addTensor("b", shape: [3, 2], values: values, as: .bf16)
    try writer.addTensor("q", dimensions: [32], type: .q4_0, bytes: [0x00, 0x3C] + [UInt8](repeating: 0x9A, count: 16))
    let path = temporaryPath()
    defer { try? FileManager.default.removeItem(atPath: path) }
    try writer.write(to: path)

    let file = try GGUFFile(path: path)
    XCTAssertEqual(file.architecture, "qwen2")
    XCTAssertEqual(file.alignment, 64)
    for (key, value) in metadata { XCTAssertEqual(file.metadata[key], value, key) }
    for info in file.tensors { XCTAssertEqual(info.offset % 64, 0, info.name) }
    let source = try GGUFWeightSource(file: file)
    XCTAssertEqual(try source.shape(of: "model.layers.0.self_attn.q_proj.weight"), [2, 3])
    XCTAssertEqual(try source.floats("model.layers.0.self_attn.q_proj.weight"), values,
                   "qwen2 q_proj is stored unpermuted")
    let half = try XCTUnwrap(file.tensor(named: "h"))
    XCTAssertEqual(try GGUFWeightSource.dequantize(half, in: file), values.map { Float(Float16($0)) })
    let bf = try XCTUnwrap(file.tensor(named: "b"))
    XCTAssertEqual(bf.dimensions, [2, 3])
    XCTAssertEqual(try GGUFWeightSource.dequantize(bf, in: file), values.map { BFloat16.toFloat(BFloat16.fromFloat($0)) })
    // d = 1.0 (f16 0x3C00), byte 0x9A: low nibble 10 → 2, high nibble 9 → 1.
    let q = try XCTUnwrap(file.tensor(named: "q"))
    XCTAssertEqual(try GGUFWeightSource.dequantize(q, in: file),
                   [Float](repeating: 2, count: 16) + [Float](repeating: 1, count: 16))
  }

  func testWriter_rejectsMismatchedBytesAndMixedArrays() throws {
    var writer = GGUFWriter(architecture: "llama")
    XCTAssertThrowsError(try writer.addTensor("x", dimensions: [32], type: .q8_0, bytes: [0]))
    XCTAssertThrowsError(try writer.addTensor("x", shape: [2], values: [1]))
    writer.set("bad", .array(elementType: .int32, [.int32(1), .string("2")]))
    XCTAssertThrowsError(try writer.headerBytes())
  }
}
