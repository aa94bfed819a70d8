import Foundation
import XCTest
@testable import VKFModel

/// `model.safetensors.index.json` + shards, and `SafetensorsCheckpoint.open(directory:)`.
final class SafetensorsShardedTests: XCTestCase {
  private var dir: SafetensorsTestDirectory!

  override func setUpWithError() throws { dir = try SafetensorsTestDirectory() }
  override func tearDown() { dir = nil }

  private let shard1 = "model-00001-of-00002.safetensors"
  private let shard2 = "model-00002-of-00002.safetensors"

  /// Two shards: a, b in the first; c in the second.
  private func writeShards() throws {
    try SafetensorsWriter.write(floats: ["a": ([2], [1, 2]), "b": ([1], [3])], to: dir.file(shard1))
    try SafetensorsWriter.write(floats: ["c": ([2, 2], [4, 5, 6, 7])], as: .bf16, to: dir.file(shard2))
  }

  private func writeIndex(_ map: [String: String]) throws -> URL {
    let object: [String: Any] = ["metadata": ["total_size": 20, "format": "pt"], "weight_map": map]
    let url = dir.file(SafetensorsCheckpoint.indexFileName)
    try JSONSerialization.data(withJSONObject: object).write(to: url)
    return url
  }

  private func assertError(_ body: @autoclosure () throws -> Any, _ keyword: String,
                           file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
      XCTAssertTrue(error is ModelFileError, "\(error)", file: file, line: line)
      XCTAssertTrue("\(error)".contains(keyword), "\"\(error)\" lacks \"\(keyword)\"", file: file, line: line)
    }
  }

  func test_index_readsTensorsFromTheirShards() throws {
    try writeShards()
    let index = try writeIndex(["a": shard1, "b": shard1, "c": shard2])
    let ckpt = try ShardedCheckpoint(index: index)
    XCTAssertEqual(ckpt.shards.count, 2)
    XCTAssertEqual(ckpt.tensorNames, ["a", "b", "c"])
    XCTAssertEqual(ckpt.metadata, ["total_size": "20", "format": "pt"])
    XCTAssertEqual(try ckpt.floats("a"), [1, 2])
    XCTAssertEqual(try ckpt.floats("c"), [4, 5, 6, 7])
    XCTAssertEqual(try ckpt.shape(of: "c"), [2, 2])
    XCTAssertEqual(try ckpt.storedType(of: "c"), "BF16")
    XCTAssertEqual(try ckpt.rawTensor("b").bytes.count, 4)
    assertError(try ckpt.floats("zzz"), "no tensor named \"zzz\"")

    let opened = try SafetensorsCheckpoint.open(directory: dir.url)
    XCTAssertTrue(opened is ShardedCheckpoint)
    XCTAssertEqual(opened.tensorNames, ["a", "b", "c"])
  }

  func test_index_missingShard_isRejected() throws {
    try SafetensorsWriter.write(floats: ["a": ([2], [1, 2]), "b": ([1], [3])], to: dir.file(shard1))
    let index = try writeIndex(["a": shard1, "b": shard1, "c": shard2])
    assertError(try ShardedCheckpoint(index: index), "shard \"\(shard2)\"")
    assertError(try ShardedCheckpoint(index: index), "missing")
  }

  func test_index_tensorInWrongShard_isRejected() throws {
    try writeShards()
    let index = try writeIndex(["a": shard1, "b": shard2, "c": shard2])
    assertError(try ShardedCheckpoint(index: index), "does not hold it (it is in \(shard1))")
  }

  func test_duplicateTensorAcrossShards_isRejected() throws {
    try writeShards()
    try SafetensorsWriter.write(floats: ["c": ([1], [9]), "d": ([1], [8])], to: dir.file("extra.safetensors"))
    let index = try writeIndex(["a": shard1, "b": shard1, "c": shard2, "d": "extra.safetensors"])
    assertError(try ShardedCheckpoint(index: index), "appears in two shards")
    try FileManager.default.removeItem(at: index)
    assertError(try SafetensorsCheckpoint.open(directory: dir.url), "appears in two shards")
  }

  func test_badIndex_isRejected() throws {
    let url = dir.file(SafetensorsCheckpoint.indexFileName)
    try Data("{\"metadata\":{}}".utf8).write(to: url)
    assertError(try ShardedCheckpoint(index: url), "weight_map")
    try Data("garbage".utf8).write(to: url)
    assertError(try ShardedCheckpoint(index: url), "not a JSON object")
    // Shard names are plain file names beside the index: none reaches outside its directory.
    for name in ["../outside.safetensors", "sub/../../x.safetensors", "..", "a\\..\\b.safetensors", "/etc/passwd"] {
      let index: [String: Any] = ["weight_map": ["a": name]]
      try JSONSerialization.data(withJSONObject: index).write(to: url)
      assertError(try ShardedCheckpoint(index: url), "weight_map entry for \"a\"")
    }
  }

  func test_openDirectory_prefersSingleFileThenFallsBackToAllFiles() throws {
    try writeShards()
    let all = try SafetensorsCheckpoint.open(directory: dir.url)
    XCTAssertEqual(all.tensorNames, ["a", "b", "c"], "no index: every *.safetensors file")
    try SafetensorsWriter.write(floats: ["only": ([1], [1])], to: dir.file(SafetensorsCheckpoint.singleFileName))
    let single = try SafetensorsCheckpoint.open(directory: dir.url)
    XCTAssertTrue(single is SafetensorsFile)
    XCTAssertEqual(single.tensorNames, ["only"])
  }

  func test_openDirectory_withoutWeights_listsWhatWasLookedFor() throws {
    assertError(try SafetensorsCheckpoint.open(directory: dir.url),
                "looked for model.safetensors, model.safetensors.index.json and any *.safetensors")
  }
}
