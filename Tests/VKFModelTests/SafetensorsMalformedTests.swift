import Foundation
import XCTest
@testable import VKFModel

/// Every malformed file throws a `ModelFileError` saying what is wrong; none crashes.
final class SafetensorsMalformedTests: XCTestCase {
  private var dir: SafetensorsTestDirectory!

  override func setUpWithError() throws { dir = try SafetensorsTestDirectory() }
  override func tearDown() { dir = nil }

  /// Opens `url` and asserts a `ModelFileError` naming the file and containing `keyword`.
  private func assertRejects(_ url: URL, _ keyword: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try SafetensorsFile(contentsOf: url), file: file, line: line) { error in
      guard let e = error as? ModelFileError else {
        return XCTFail("expected ModelFileError, got \(error)", file: file, line: line)
      }
      XCTAssertEqual(e.path, url.path, file: file, line: line)
      XCTAssertTrue(e.detail.contains(keyword), "\"\(e.detail)\" lacks \"\(keyword)\"", file: file, line: line)
    }
  }

  private func entry(_ name: String = "t", dtype: String = "F32", shape: String = "[2]",
                     offsets: String = "[0,8]") -> String {
    #""\#(name)":{"dtype":"\#(dtype)","shape":\#(shape),"data_offsets":\#(offsets)}"#
  }

  func test_fileShorterThanLengthPrefix_isRejected() throws {
    let url = dir.file("short.safetensors")
    try Data([1, 2, 3]).write(to: url)
    assertRejects(url, "shorter than the 8-byte")
    try Data().write(to: url)
    assertRejects(url, "0 bytes")
  }

  func test_headerLengthPastEndOfFile_isRejected() throws {
    assertRejects(try dir.rawFile("a", header: "{}", length: 1000), "past the end of the file")
    assertRejects(try dir.rawFile("b", header: "{}", length: UInt64.max), "100 MB")
    assertRejects(try dir.rawFile("c", header: "{}", length: 200_000_000), "100 MB")
  }

  func test_lyingHeaderLength_isRejected() throws {
    // The length stops mid-JSON: the rest of the header is taken for data.
    let header = "{\(entry())}"
    assertRejects(try dir.rawFile("lie", header: header, data: [UInt8](repeating: 0, count: 8),
                                  length: UInt64(header.utf8.count - 5)), "not valid JSON")
  }

  func test_nonJSONOrNonObjectHeader_isRejected() throws {
    assertRejects(try dir.rawFile("a", header: "not json at all"), "not valid JSON")
    assertRejects(try dir.rawFile("b", header: "[1,2,3]"), "not an object")
    assertRejects(try dir.rawFile("c", header: #"{"t":[1]}"#), "not an object")
    assertRejects(try dir.rawFile("d", header: "\u{FF}\u{FE}"), "not valid JSON")
  }

  func test_missingFields_areRejected() throws {
    let data = [UInt8](repeating: 0, count: 8)
    assertRejects(try dir.rawFile("a", header: #"{"t":{"shape":[2],"data_offsets":[0,8]}}"#, data: data), "dtype")
    assertRejects(try dir.rawFile("b", header: #"{"t":{"dtype":"F32","data_offsets":[0,8]}}"#, data: data), "shape")
    assertRejects(try dir.rawFile("c", header: #"{"t":{"dtype":"F32","shape":[2]}}"#, data: data), "data_offsets")
    assertRejects(try dir.rawFile("d", header: "{\(entry(offsets: "[0]"))}", data: data), "data_offsets")
    assertRejects(try dir.rawFile("e", header: "{\(entry(shape: "[2.5]"))}", data: data), "non-integer")
  }

  func test_offsetsPastEnd_areRejected() throws {
    assertRejects(try dir.rawFile("a", header: "{\(entry())}", data: [0, 0, 0, 0]), "past the end of the data")
    assertRejects(try dir.rawFile("b", header: "{\(entry(offsets: "[8,0]"))}", data: [UInt8](repeating: 0, count: 8)),
                  "begin > end")
    assertRejects(try dir.rawFile("c", header: "{\(entry(offsets: "[0,18446744073709551615]"))}"), "data_offsets")
  }

  func test_overlappingTensors_areRejected() throws {
    let header = "{\(entry("a", offsets: "[0,8]")),\(entry("b", offsets: "[4,12]"))}"
    assertRejects(try dir.rawFile("o", header: header, data: [UInt8](repeating: 0, count: 12)), "overlap")
  }

  func test_sizeNotMatchingShape_isRejected() throws {
    assertRejects(try dir.rawFile("s", header: "{\(entry(shape: "[3]"))}", data: [UInt8](repeating: 0, count: 8)),
                  "does not match shape")
  }

  func test_unknownDtype_isRejected() throws {
    assertRejects(try dir.rawFile("d", header: "{\(entry(dtype: "F12"))}", data: [UInt8](repeating: 0, count: 8)),
                  "unknown dtype \"F12\"")
  }

  func test_negativeShape_isRejected() throws {
    assertRejects(try dir.rawFile("n", header: "{\(entry(shape: "[-2]"))}", data: [UInt8](repeating: 0, count: 8)),
                  "negative")
  }

  func test_shapeWhoseProductOverflows_isRejected() throws {
    // 2^32 · 2^32 wraps to 0 in 64 bits; a naive product would accept offsets [0, 0].
    let big = "[4294967296,4294967296]"
    assertRejects(try dir.rawFile("o", header: "{\(entry(shape: big, offsets: "[0,0]"))}"), "64 bits")
    // Element count fits, byte count (× 4) does not.
    let wide = "[4611686018427387904]"
    assertRejects(try dir.rawFile("w", header: "{\(entry(shape: wide, offsets: "[0,0]"))}"), "64 bits")
  }

  func test_badMetadata_isRejected() throws {
    assertRejects(try dir.rawFile("m", header: #"{"__metadata__":{"a":1}}"#), "not a string")
    assertRejects(try dir.rawFile("n", header: #"{"__metadata__":["a"]}"#), "__metadata__")
  }

  func test_fp8_readsRawButFloatsThrowsClearly() throws {
    let url = try dir.rawFile("f8", header: "{\(entry(dtype: "F8_E4M3", shape: "[2]", offsets: "[0,2]"))}", data: [1, 2])
    let f = try SafetensorsFile(contentsOf: url)
    XCTAssertEqual(Array(try f.rawTensor("t").bytes), [1, 2])
    XCTAssertThrowsError(try f.floats("t")) { XCTAssertTrue("\($0)".contains("F8_E4M3")) }
  }

  func test_directoryOrMissingFile_isRejected() throws {
    assertRejects(dir.url, "not a regular file")
    assertRejects(dir.file("nope.safetensors"), "cannot open")
  }
}
