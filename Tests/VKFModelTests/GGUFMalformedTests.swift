import Foundation
import XCTest
@testable import VKFModel
import VKFTestSupport

/// Little-endian GGUF bytes assembled by hand, so each test can lie in exactly one place.
struct GGUFBytes {
  var bytes: [UInt8] = []

  mutating func u32(_ v: UInt32) { bytes += withUnsafeBytes(of: v.littleEndian, Array.init) }
  mutating func u64(_ v: UInt64) { bytes += withUnsafeBytes(of: v.littleEndian, Array.init) }
  mutating func string(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }
  mutating func pad(to alignment: Int) {
    while bytes.count % alignment != 0 { bytes.append(0) }
  }

  /// A header: magic, version, counts.
  static func header(magic: String = "GGUF", version: UInt32 = 3, tensors: UInt64, kvs: UInt64) -> GGUFBytes {
    var b = GGUFBytes()
    b.bytes = Array(magic.utf8)
    b.u32(version)
    b.u64(tensors)
    b.u64(kvs)
    return b
  }

  /// One tensor info.
  mutating func tensor(_ name: String, dims: [UInt64], type: UInt32, offset: UInt64 = 0) {
    string(name)
    u32(UInt32(dims.count))
    for d in dims { u64(d) }
    u32(type)
    u64(offset)
  }

  /// Writes the bytes to a fresh temporary file and returns its path.
  func write(_ name: String = #function) throws -> String {
    let url = FileManager.default.temporaryDirectory
      .appendingPathComponent("vkf-gguf-\(ProcessInfo.processInfo.processIdentifier)-\(name.filter(\.isLetter)).gguf")
    try Data(bytes).write(to: url)
    return url.path
  }
}

final class GGUFMalformedTests: XCTestCase {
  /// Opens `bytes` and asserts a `ModelFileError` whose detail contains `fragment`.
  private func assertRejects(_ bytes: GGUFBytes, _ fragment: String, line: UInt = #line, name: String = #function) throws {
    let path = try bytes.write(name + "\(line)")
    defer { try? FileManager.default.removeItem(atPath: path) }
    do {
      _ = try GGUFFile(path: path)
      XCTFail("opened a malformed file; expected an error containing \"\(fragment)\"", line: line)
    } catch {
      XCTAssertEqual(error.path, path, line: line)
      XCTAssertTrue(error.detail.contains(fragment), "\(error.detail)", line: line)
    }
  }

  func testOpen_rejectsEmptyTruncatedAndWrongMagic() throws {
    try assertRejects(GGUFBytes(), "truncated")
    var short = GGUFBytes.header(tensors: 0, kvs: 0)
    short.bytes.removeLast(5)
    try assertRejects(short, "truncated")
    try assertRejects(.header(magic: "GGML", tensors: 0, kvs: 0), "not a GGUF file")
  }

  func testOpen_rejectsUnsupportedVersionsAndBigEndian() throws {
    try assertRejects(.header(version: 1, tensors: 0, kvs: 0), "unsupported GGUF version 1")
    try assertRejects(.header(version: 4, tensors: 0, kvs: 0), "unsupported GGUF version 4")
    try assertRejects(.header(version: UInt32(3).byteSwapped, tensors: 0, kvs: 0), "big-endian")
  }

  func testOpen_acceptsVersion2() throws {
    let path = try GGUFBytes.header(version: 2, tensors: 0, kvs: 0).write()
    defer { try? FileManager.default.removeItem(atPath: path) }
    XCTAssertEqual(try GGUFFile(path: path).version, 2)
  }

  func testOpen_rejectsLyingCounts() throws {
    try assertRejects(.header(tensors: 1 << 40, kvs: 0), "tensor count")
    try assertRejects(.header(tensors: 0, kvs: UInt64.max), "metadata count")
    var array = GGUFBytes.header(tensors: 0, kvs: 1)
    array.string("k")
    array.u32(GGUFValueType.array.rawValue)
    array.u32(GGUFValueType.uint64.rawValue)
    array.u64(1 << 50)
    try assertRejects(array, "element count of k")
  }

  func testOpen_rejectsStringLengthPastEOF() throws {
    var key = GGUFBytes.header(tensors: 0, kvs: 1)
    key.u64(1_000_000)
    key.bytes += [UInt8](repeating: 0x61, count: 40)
    try assertRejects(key, "runs past the end")
    var value = GGUFBytes.header(tensors: 0, kvs: 1)
    value.string("general.name")
    value.u32(GGUFValueType.string.rawValue)
    value.u64(UInt64.max)
    try assertRejects(value, "string length")
  }

  func testOpen_rejectsUnknownValueAndTensorTypes() throws {
    var kv = GGUFBytes.header(tensors: 0, kvs: 1)
    kv.string("k")
    kv.u32(77)
    try assertRejects(kv, "unknown metadata value type 77")
    var tensor = GGUFBytes.header(tensors: 1, kvs: 0)
    tensor.tensor("w", dims: [32], type: 99)
    try assertRejects(tensor, "unknown ggml type 99")
  }

  func testOpen_rejectsBadTensorInfos() throws {
    var data = GGUFBytes.header(tensors: 1, kvs: 0)
    data.tensor("w", dims: [4, 4], type: GGMLType.f32.rawValue)
    data.pad(to: 32)
    data.bytes += [UInt8](repeating: 0, count: 63)  // needs 64
    try assertRejects(data, "runs past the end of the file")
    var rank = GGUFBytes.header(tensors: 1, kvs: 0)
    rank.tensor("w", dims: [1, 1, 1, 1, 1], type: 0)
    try assertRejects(rank, "at most 4")
    var overflow = GGUFBytes.header(tensors: 1, kvs: 0)
    overflow.tensor("w", dims: [1 << 40, 1 << 40], type: 0)
    try assertRejects(overflow, "impossible dimension")
    var block = GGUFBytes.header(tensors: 1, kvs: 0)
    block.tensor("w", dims: [33], type: GGMLType.q4_0.rawValue)
    try assertRejects(block, "not a multiple of the block size 32")
    var misaligned = GGUFBytes.header(tensors: 1, kvs: 0)
    misaligned.tensor("w", dims: [1], type: 0, offset: 3)
    try assertRejects(misaligned, "not a multiple of the alignment")
    var duplicate = GGUFBytes.header(tensors: 2, kvs: 0)
    duplicate.tensor("w", dims: [1], type: 0)
    duplicate.tensor("w", dims: [1], type: 0, offset: 32)
    try assertRejects(duplicate, "duplicate tensor name w")
  }

  func testDequantize_unsupportedTypeNamesTypeAndTensor() throws {
    var b = GGUFBytes.header(tensors: 1, kvs: 0)
    b.tensor("blk.0.ffn_up.weight", dims: [32, 1], type: GGMLType.iq4_NL.rawValue)
    b.pad(to: 32)
    b.bytes += [UInt8](repeating: 0, count: 18)
    let path = try b.write()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let source = try GGUFWeightSource(path: path)
    XCTAssertThrowsError(try source.floats("model.layers.0.mlp.up_proj.weight")) { error in
      let detail = (error as? ModelFileError)?.detail ?? ""
      XCTAssertTrue(detail.contains("IQ4_NL") && detail.contains("blk.0.ffn_up.weight"), detail)
    }
  }

  /// Every prefix of a valid file and seeded byte corruptions either open or throw
  /// `ModelFileError`, and whatever opens dequantises without trapping.
  func testOpen_truncationsAndCorruptionsNeverTrap() throws {
    let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: GGUFFixtures.synthetic)))
    func probe(_ bytes: [UInt8]) throws {
      guard let file = try? GGUFFile(bytes: bytes, path: "probe") else { return }
      for info in file.tensors where info.type.canDequantize {
        XCTAssertEqual(try GGUFWeightSource.dequantize(info, in: file).count, info.elementCount)
      }
    }
    // Every header prefix (the data section starts at byte 1408), the tensor data coarsely.
    let dataStart = 1408
    for length in 0 ..< dataStart { try probe(Array(original[..<length])) }
    for length in stride(from: dataStart, to: original.count, by: 97) { try probe(Array(original[..<length])) }
    var rng = SeededRNG(seed: 42)
    for _ in 0 ..< 1000 {
      var corrupt = original
      for _ in 0 ..< 3 {
        corrupt[Int(rng.next() % UInt64(dataStart))] = UInt8(truncatingIfNeeded: rng.next())
      }
      try probe(corrupt)
    }
  }
}
