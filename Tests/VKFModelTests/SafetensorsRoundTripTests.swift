import Foundation
import VKFCore
import XCTest
@testable import VKFModel

/// Writer → reader round trips.
final class SafetensorsRoundTripTests: XCTestCase {
  /// F16 keeps 11 significant bits: relative rounding error ≤ 2^-11 for normal values.
  static let f16RelativeTolerance: Float = 1.0 / 2048
  /// BF16 keeps 8 significant bits: relative rounding error ≤ 2^-8.
  static let bf16RelativeTolerance: Float = 1.0 / 256

  private var dir: SafetensorsTestDirectory!

  override func setUpWithError() throws { dir = try SafetensorsTestDirectory() }
  override func tearDown() { dir = nil }

  /// Deterministic values in [-2, 2) with a few awkward ones (zero, negative zero, tiny).
  private func values(_ count: Int, seed: Int) -> [Float] {
    (0..<count).map { i in
      switch (i + seed) % 7 {
      case 0: return 0
      case 1: return -0.0
      case 2: return 1e-3 * Float(i + 1)
      default: return Float((i * 7919 + seed * 104_729) % 4000) / 1000 - 2
      }
    }
  }

  func test_f32_roundTripsExactlyWithMetadataOddShapesAndScalar() throws {
    let url = dir.file("f32.safetensors")
    let tensors: [String: ([Int], [Float])] = [
      "odd": ([3, 5, 7], values(105, seed: 1)),
      "row": ([1, 13], values(13, seed: 2)),
      "scalar": ([], [42.5]),
      "empty": ([0, 4], []),
    ]
    let meta = ["format": "pt", "note": "quote \" slash / newline \n unicode é"]
    try SafetensorsWriter.write(floats: tensors, metadata: meta, to: url)
    let f = try SafetensorsFile(contentsOf: url)
    XCTAssertEqual(f.metadata, meta)
    XCTAssertEqual(f.tensorNames, ["empty", "odd", "row", "scalar"])
    for (name, (shape, data)) in tensors {
      XCTAssertEqual(try f.shape(of: name), shape, name)
      XCTAssertEqual(try f.storedType(of: name), "F32")
      XCTAssertEqual(try f.floats(name).map(\.bitPattern), data.map(\.bitPattern), name)
    }
    XCTAssertEqual(try dir.contents(), ["f32.safetensors"], "no temporary file left behind")
  }

  func test_f16_roundTripsWithinHalfPrecision() throws {
    let url = dir.file("f16.safetensors")
    let data = values(60, seed: 3) + [65504, 6.1e-5, 1e-8]
    try SafetensorsWriter.write(floats: ["w": ([3, 21], data)], as: .f16, to: url)
    let f = try SafetensorsFile(contentsOf: url)
    XCTAssertEqual(f.metadata, [:])
    XCTAssertEqual(try f.storedType(of: "w"), "F16")
    let back = try f.floats("w")
    for (a, b) in zip(data, back) {
      XCTAssertEqual(b, Float(Float16(a)), "matches Float16 rounding")
      XCTAssertLessThanOrEqual(abs(a - b), abs(a) * Self.f16RelativeTolerance + 6e-8)
    }
  }

  func test_bf16_roundTripsWithinBFloat16Precision() throws {
    let url = dir.file("bf16.safetensors")
    let data = values(33, seed: 4) + [3e38, -1e-30]
    try SafetensorsWriter.write(floats: ["b": ([35], data), "s": ([], [1.0])], as: .bf16,
                                metadata: ["k": "v"], to: url)
    let f = try SafetensorsFile(contentsOf: url)
    XCTAssertEqual(f.metadata, ["k": "v"])
    let back = try f.floats("b")
    for (a, b) in zip(data, back) {
      XCTAssertEqual(b, BFloat16.toFloat(BFloat16.fromFloat(a)))
      XCTAssertLessThanOrEqual(abs(a - b), abs(a) * Self.bf16RelativeTolerance)
    }
    XCTAssertEqual(try f.floats("s"), [1.0])
  }

  func test_layout_matchesReferenceOrderAndAlignment() throws {
    // Widest dtype first, then by name; header padded so data starts at a multiple of 8.
    let tensors = [
      SafetensorsWriter.Tensor(name: "a_u8", shape: [3], dtype: .u8, data: [1, 2, 3]),
      try SafetensorsWriter.Tensor(name: "b_f16", shape: [1], floats: [1], as: .f16),
      SafetensorsWriter.Tensor(name: "c_i64", shape: [1], dtype: .i64, data: [9, 0, 0, 0, 0, 0, 0, 0]),
      try SafetensorsWriter.Tensor(name: "a_f32", shape: [1], floats: [2]),
    ]
    let bytes = try SafetensorsWriter.serialize(tensors: tensors)
    let n = Int(bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * $1.offset) })
    XCTAssertEqual(n % 8, 0)
    let header = String(decoding: bytes[8..<(8 + n)], as: UTF8.self)
    XCTAssertEqual(header.trimmingCharacters(in: .whitespaces),
                   #"{"c_i64":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"#
                   + #""a_f32":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"#
                   + #""b_f16":{"dtype":"F16","shape":[1],"data_offsets":[12,14]},"#
                   + #""a_u8":{"dtype":"U8","shape":[3],"data_offsets":[14,17]}}"#)
    XCTAssertEqual(bytes.count, 8 + n + 17)
  }

  func test_writer_rejectsBadInputWithoutCreatingAFile() throws {
    let url = dir.file("bad.safetensors")
    let cases: [(SafetensorsWriter.Tensor, String)] = [
      (SafetensorsWriter.Tensor(name: "x", shape: [2, 2], dtype: .f32, data: [0, 0, 0, 0]), "do not match"),
      (SafetensorsWriter.Tensor(name: "x", shape: [-1], dtype: .f32, data: []), "negative"),
      (SafetensorsWriter.Tensor(name: "__metadata__", shape: [], dtype: .u8, data: [0]), "__metadata__"),
    ]
    for (tensor, keyword) in cases {
      XCTAssertThrowsError(try SafetensorsWriter.write(tensors: [tensor], to: url)) { error in
        XCTAssertTrue("\(error)".contains(keyword), "\(error)")
      }
    }
    let twice = SafetensorsWriter.Tensor(name: "x", shape: [], dtype: .u8, data: [0])
    XCTAssertThrowsError(try SafetensorsWriter.write(tensors: [twice, twice], to: url)) { error in
      XCTAssertTrue("\(error)".contains("twice"), "\(error)")
    }
    XCTAssertThrowsError(try SafetensorsWriter.write(floats: ["x": ([1], [1])], as: .i32, to: url))
    XCTAssertEqual(try dir.contents(), [])
  }

  func test_emptyCheckpoint_roundTrips() throws {
    let url = dir.file("empty.safetensors")
    try SafetensorsWriter.write(tensors: [], to: url)
    XCTAssertEqual(Array(try Data(contentsOf: url)), [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8),
                   "same bytes as the Python library's save({})")
    let f = try SafetensorsFile(contentsOf: url)
    XCTAssertEqual(f.tensorNames, [])
    XCTAssertThrowsError(try f.floats("missing")) { XCTAssertTrue("\($0)".contains("no tensor named")) }
  }

  /// Writes a file for tools/make_safetensors_fixtures.py --check when VKF_SAFETENSORS_OUT is set
  /// (the once-by-hand check that Python reads our output).
  func test_writeFileForPythonCheck_whenRequested() throws {
    guard let out = ProcessInfo.processInfo.environment["VKF_SAFETENSORS_OUT"] else {
      throw XCTSkip("set VKF_SAFETENSORS_OUT=path to write a file for the Python check")
    }
    let tensors = [
      try SafetensorsWriter.Tensor(name: "f32", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6]),
      try SafetensorsWriter.Tensor(name: "f16", shape: [3], floats: [0.1, -1, 65504], as: .f16),
      try SafetensorsWriter.Tensor(name: "bf16", shape: [2], floats: [0.1, -3.14159], as: .bf16),
      try SafetensorsWriter.Tensor(name: "scalar", shape: [], floats: [7]),
      SafetensorsWriter.Tensor(name: "ids", shape: [2], dtype: .i64, data: [1, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255]),
    ]
    try SafetensorsWriter.write(tensors: tensors, metadata: ["format": "pt", "b": "2"],
                                to: URL(fileURLWithPath: out))
  }
}
