import Foundation
import XCTest
@testable import VKFModel

/// A fresh temporary directory per test, removed afterwards (read-only bits reset first).
final class SafetensorsTestDirectory {
  let url: URL

  init() throws {
    url = FileManager.default.temporaryDirectory
      .appendingPathComponent("vkf-st-\(getpid())-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  }

  /// `name` inside the directory.
  func file(_ name: String) -> URL { url.appendingPathComponent(name) }

  /// Every entry in the directory, sorted (hidden temporaries included).
  func contents() throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: url.path).sorted()
  }

  /// Writes a hand-made file: `length` (default: the header's byte count) as the 8-byte
  /// prefix, then `header`, then `data`.
  @discardableResult
  func rawFile(_ name: String, header: String, data: [UInt8] = [], length: UInt64? = nil) throws -> URL {
    let json = Array(header.utf8)
    var bytes = withUnsafeBytes(of: (length ?? UInt64(json.count)).littleEndian) { Array($0) }
    bytes += json + data
    let url = file(name)
    try Data(bytes).write(to: url)
    return url
  }

  deinit {
    chmod(url.path, 0o755)
    try? FileManager.default.removeItem(at: url)
  }
}

/// URL of `Fixtures/safetensors/<name>` in the test bundle.
func safetensorsFixture(_ name: String) throws -> URL {
  let url = try XCTUnwrap(Bundle.module.resourceURL).appendingPathComponent("Fixtures/safetensors/\(name)")
  guard FileManager.default.fileExists(atPath: url.path) else {
    throw XCTSkip("fixture \(name) missing; run tools/make_safetensors_fixtures.py")
  }
  return url
}

/// Reads the file written by the Python `safetensors` library (tools/make_safetensors_fixtures.py).
final class SafetensorsFixtureTests: XCTestCase {
  func test_pythonFile_readsExactValues() throws {
    let f = try SafetensorsFile(contentsOf: safetensorsFixture("python_small.safetensors"))
    XCTAssertEqual(f.metadata, ["format": "pt"])
    XCTAssertEqual(f.tensorNames, ["bytes.u8", "ids.i32", "ids.i64", "model.bf16", "model.embed.weight",
                                   "model.norm.f16", "scalar", "wide.f64"])
    XCTAssertEqual(try f.shape(of: "model.embed.weight"), [2, 3])
    XCTAssertEqual(try f.storedType(of: "model.embed.weight"), "F32")
    XCTAssertEqual(try f.floats("model.embed.weight"), [1.5, -2.25, 2.9999999242136255e-05, 10000000000.0, -0.0, 65504.0])
    XCTAssertEqual(try f.storedType(of: "model.norm.f16"), "F16")
    XCTAssertEqual(try f.floats("model.norm.f16"), [0.0999755859375, -1.0, 6.097555160522461e-05, 65504.0])
    XCTAssertEqual(try f.storedType(of: "model.bf16"), "BF16")
    XCTAssertEqual(try f.floats("model.bf16"), [0.10009765625, -3.140625, 1.0005576689441423e-20, 300.0])
    XCTAssertEqual(try f.shape(of: "scalar"), [])
    XCTAssertEqual(try f.floats("scalar"), [0.5])
    XCTAssertEqual(try f.shape(of: "ids.i64"), [2, 2])
    XCTAssertEqual(try f.floats("ids.i64"), [0, -1, 1_099_511_627_776, 7])
    XCTAssertEqual(try f.floats("ids.i32"), [5, -6, 1_073_741_824])
    XCTAssertEqual(try f.floats("bytes.u8"), [0, 255, 7])
    XCTAssertEqual(try f.floats("wide.f64"), [0.3333333432674408])
    XCTAssertEqual(try f.floats("model.embed.weight")[4].sign, .minus, "-0.0 keeps its sign")
  }

  func test_pythonFile_rawTensorPointsAtLittleEndianBytes() throws {
    let f = try SafetensorsFile(contentsOf: safetensorsFixture("python_small.safetensors"))
    let raw = try f.rawTensor("ids.i64")
    XCTAssertEqual(raw.dtype, .i64)
    XCTAssertEqual(raw.shape, [2, 2])
    XCTAssertEqual(raw.bytes.count, 32)
    XCTAssertEqual(raw.bytes.loadUnaligned(fromByteOffset: 16, as: Int64.self), 1 << 40)
    let count = try f.withRawTensor("bytes.u8") { Array($0.bytes) }
    XCTAssertEqual(count, [0, 255, 7])
  }

  /// Re-writing the Python file's tensors with our writer gives the same bytes: same
  /// tensor order, offsets, header JSON and padding as the reference library.
  func test_writer_reproducesPythonFileByteForByte() throws {
    let url = try safetensorsFixture("python_small.safetensors")
    let f = try SafetensorsFile(contentsOf: url)
    let tensors = try f.tensorNames.reversed().map { name in
      let raw = try f.rawTensor(name)
      return SafetensorsWriter.Tensor(name: name, shape: raw.shape, dtype: raw.dtype, data: Array(raw.bytes))
    }
    let ours = try SafetensorsWriter.serialize(tensors: tensors, metadata: f.metadata)
    XCTAssertEqual(ours, Array(try Data(contentsOf: url)))
  }

  func test_jsonString_escapesLikeSerdeJSON() {
    XCTAssertEqual(SafetensorsWriter.jsonString("a/b\"c\\d\n\t\u{01}\u{7f}é"),
                   "\"a/b\\\"c\\\\d\\n\\t\\u0001\u{7f}é\"")
  }
}
