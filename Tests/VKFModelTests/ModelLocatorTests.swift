import Foundation
import XCTest
@testable import VKFModel

/// `--model` resolution: local directories, .gguf files and the Hugging Face cache.
final class ModelLocatorTests: XCTestCase {
  private static let cacheVariables = ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"]
  private var dir: SafetensorsTestDirectory!
  private var savedEnvironment: [String: String?] = [:]

  override func setUpWithError() throws {
    dir = try SafetensorsTestDirectory()
    for key in Self.cacheVariables {
      savedEnvironment[key] = getenv(key).map { String(cString: $0) }
      unsetenv(key)
    }
  }

  override func tearDown() {
    for (key, value) in savedEnvironment {
      if let value { setenv(key, value, 1) } else { unsetenv(key) }
    }
    dir = nil
  }

  /// A model directory with config.json and a tiny model.safetensors.
  @discardableResult
  private func makeModelDirectory(_ url: URL) throws -> URL {
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    try Data("{}".utf8).write(to: url.appendingPathComponent("config.json"))
    try SafetensorsWriter.write(floats: ["w": ([1], [1])], to: url.appendingPathComponent("model.safetensors"))
    return url
  }

  /// `<cache>/models--org--name/snapshots/<revision>` holding a model, with the given mtime.
  @discardableResult
  private func makeSnapshot(cache: URL, revision: String, age: TimeInterval) throws -> URL {
    let snap = cache.appendingPathComponent("models--org--name/snapshots/\(revision)")
    try makeModelDirectory(snap)
    try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -age)],
                                          ofItemAtPath: snap.path)
    return snap
  }

  private func assertError(_ argument: String, contains keywords: [String],
                           file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try ModelLocator.resolve(argument), file: file, line: line) { error in
      XCTAssertTrue(error is ModelFileError, file: file, line: line)
      for k in keywords {
        XCTAssertTrue("\(error)".contains(k), "\"\(error)\" lacks \"\(k)\"", file: file, line: line)
      }
    }
  }

  func test_localDirectoryWithConfigAndWeights_isHuggingFaceDirectory() throws {
    let model = try makeModelDirectory(dir.file("model"))
    XCTAssertEqual(try ModelLocator.resolve(model.path), .huggingFaceDirectory(model))
  }

  func test_ggufFileAndDirectoryWithOneGGUF_resolveToTheFile() throws {
    let gguf = dir.file("tiny.Q4_0.gguf")
    try Data([0x47, 0x47, 0x55, 0x46]).write(to: gguf)
    XCTAssertEqual(try ModelLocator.resolve(gguf.path), .gguf(gguf))
    XCTAssertEqual(try ModelLocator.resolve(dir.url.path), .gguf(gguf))
    try Data().write(to: dir.file("other.gguf"))
    assertError(dir.url.path, contains: ["several .gguf files", "other.gguf", "tiny.Q4_0.gguf"])
  }

  func test_directoryWithoutConfigOrWeights_isRejected() throws {
    let empty = dir.file("empty")
    try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: false)
    assertError(empty.path, contains: ["no config.json"])
    try Data("{}".utf8).write(to: empty.appendingPathComponent("config.json"))
    assertError(empty.path, contains: ["no weights", "model.safetensors.index.json"])
    let other = dir.file("weights.npz")
    try Data([0]).write(to: other)
    assertError(other.path, contains: ["model directory"])
  }

  /// PyTorch pickles can execute code on load: never read, refused with the way to safetensors,
  /// whether named directly or the only weights of a directory (single file, shards, .pt/.pth).
  func test_pickleCheckpoints_areRefusedWithTheSafetensorsRoute() throws {
    for names in [["pytorch_model.bin"], ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"],
                  ["model.pt"], ["consolidated.00.pth"]] {
      let model = dir.file("pickled-\(names[0])")
      try FileManager.default.createDirectory(at: model, withIntermediateDirectories: false)
      try Data("{}".utf8).write(to: model.appendingPathComponent("config.json"))
      // The pickle's bytes: a real one would run code from this opcode stream if unpickled.
      for n in names { try Data([0x80, 0x02, 0x63]).write(to: model.appendingPathComponent(n)) }
      assertError(model.path, contains: ["pickle weights", names[0], "run arbitrary code", "safe_serialization=True"])
      assertError(model.appendingPathComponent(names[0]).path, contains: ["pickle files can run arbitrary code"])
    }
    // Beside safetensors weights a pickle is simply not read.
    let both = try makeModelDirectory(dir.file("both"))
    try Data([0x80]).write(to: both.appendingPathComponent("pytorch_model.bin"))
    XCTAssertEqual(try ModelLocator.resolve(both.path), .huggingFaceDirectory(both))
  }

  func test_hubCache_usesRevisionNamedInRefsMain() throws {
    let cache = dir.file("hub")
    setenv("HF_HUB_CACHE", cache.path, 1)
    setenv("HF_HOME", dir.file("elsewhere").path, 1)  // HF_HUB_CACHE wins
    let named = try makeSnapshot(cache: cache, revision: "aaa111", age: 1000)
    try makeSnapshot(cache: cache, revision: "bbb222", age: 10)
    let refs = cache.appendingPathComponent("models--org--name/refs")
    try FileManager.default.createDirectory(at: refs, withIntermediateDirectories: true)
    try Data("aaa111\n".utf8).write(to: refs.appendingPathComponent("main"))
    XCTAssertEqual(try ModelLocator.resolve("org/name"), .huggingFaceDirectory(named))
  }

  /// refs/main holds a commit hash; one that is a path ("../../elsewhere") does not lead out
  /// of snapshots/: the newest snapshot is used as when refs/main is missing.
  func test_refsMainNamingAPath_staysInsideSnapshots() throws {
    let cache = dir.file("hub")
    setenv("HF_HUB_CACHE", cache.path, 1)
    let only = try makeSnapshot(cache: cache, revision: "abc123", age: 10)
    try FileManager.default.createDirectory(at: dir.file("hub/elsewhere"), withIntermediateDirectories: true)
    let refs = cache.appendingPathComponent("models--org--name/refs")
    try FileManager.default.createDirectory(at: refs, withIntermediateDirectories: true)
    for revision in ["../../elsewhere", "..", "abc123/../../../elsewhere"] {
      try Data(revision.utf8).write(to: refs.appendingPathComponent("main"))
      XCTAssertEqual(try ModelLocator.resolve("org/name"), .huggingFaceDirectory(only), revision)
    }
  }

  func test_hfHome_withoutRefs_usesNewestSnapshot() throws {
    let home = dir.file("hf-home")
    setenv("HF_HOME", home.path, 1)
    let cache = home.appendingPathComponent("hub")
    try makeSnapshot(cache: cache, revision: "old", age: 5000)
    let newest = try makeSnapshot(cache: cache, revision: "new", age: 5)
    XCTAssertEqual(try ModelLocator.resolve("org/name"), .huggingFaceDirectory(newest))
  }

  func test_explicitEnvironment_fallsBackToXDGAndHome() throws {
    let cache = dir.file("xdg/huggingface/hub")
    let snap = try makeSnapshot(cache: cache, revision: "r", age: 0)
    let env = ["XDG_CACHE_HOME": dir.file("xdg").path]
    XCTAssertEqual(try ModelLocator.resolve("org/name", environment: env), .huggingFaceDirectory(snap))
    let home = ["HOME": dir.file("home").path]
    let snap2 = try makeSnapshot(cache: dir.file("home/.cache/huggingface/hub"), revision: "r", age: 0)
    XCTAssertEqual(try ModelLocator.resolve("org/name", environment: home), .huggingFaceDirectory(snap2))
  }

  func test_missingRepo_errorListsEveryPathTried() throws {
    let cache = dir.file("hub")
    setenv("HF_HUB_CACHE", cache.path, 1)
    let repo = cache.appendingPathComponent("models--org--missing").path
    assertError("org/missing", contains: [
      "org/missing", repo + "/refs/main", repo + "/snapshots/*", "huggingface-cli download org/missing",
    ])
  }

  func test_missingPath_isRejectedWithThePath() throws {
    let path = dir.file("nope/deeper/model").path
    assertError(path, contains: ["no such file or directory", path])
  }

  func test_repoID_acceptsOnlyRepoShapedArguments() {
    XCTAssertEqual(ModelLocator.repoID("HuggingFaceTB/SmolLM2-135M"), "HuggingFaceTB/SmolLM2-135M")
    XCTAssertEqual(ModelLocator.repoID("gpt2"), "gpt2")
    XCTAssertNil(ModelLocator.repoID("./model"))
    XCTAssertNil(ModelLocator.repoID("/abs/path"))
    XCTAssertNil(ModelLocator.repoID("a/b/c"))
    XCTAssertNil(ModelLocator.repoID("../x"))
    XCTAssertNil(ModelLocator.repoID("model.gguf"))
  }
}
