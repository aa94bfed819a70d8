import Foundation
import XCTest
import VKFCore
import VKFTestSupport
@testable import VKFVulkan

/// Runtime shader compilation: includes, defines, errors and the SPIR-V disk cache.
final class InfraShaderTests: InfraTestCase {
  private var tmp: URL!

  override func setUpWithError() throws {
    try super.setUpWithError()
    tmp = FileManager.default.temporaryDirectory
      .appendingPathComponent("vkf-spirv-test-\(UUID().uuidString)")
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(at: tmp)
    try super.tearDownWithError()
  }

  func testPreprocess_resolvesIncludesOnceAndInsertsDefinesAfterVersion() throws {
    let src = try ShaderCompiler.preprocess("cast.comp", defines: ["SRC_TYPE": "2", "DST_TYPE": "0"])
    let lines = src.split(separator: "\n", omittingEmptySubsequences: false)
    XCTAssertTrue(lines[0].hasPrefix("#version"))
    XCTAssertEqual(lines[1], "#define DST_TYPE 0")
    XCTAssertEqual(lines[2], "#define SRC_TYPE 2")
    XCTAssertFalse(src.contains("#include"))
    XCTAssertEqual(src.components(separatedBy: "#define PUSH_BEGIN").count, 2)
  }

  func testCompileError_surfacesAsShaderCompileWithLog() {
    let bad = "#version 450\nlayout(local_size_x = 1) in;\nvoid main() { undefined_function_xyz(); }\n"
    XCTAssertThrowsError(try ShaderCompiler.compile(bad, name: "bad.comp")) { e in
      guard case VKFError.shaderCompile(let name, let log) = e else { return XCTFail("\(e)") }
      XCTAssertEqual(name, "bad.comp")
      XCTAssertTrue(log.contains("undefined_function_xyz"), log)
    }
    XCTAssertThrowsError(try ShaderCompiler.preprocess("no_such_shader.comp", defines: [:])) { e in
      guard case VKFError.shaderCompile = e else { return XCTFail("\(e)") }
    }
  }

  func testSPIRVCache_secondCompileReadsDisk() throws {
    let source = try ShaderCompiler.preprocess("fill.comp", defines: [:])
    let first = SPIRVCache(directory: tmp)
    let a = try first.spirv(source: source, driverIdentity: "test") {
      try ShaderCompiler.compile(source, name: "fill.comp")
    }
    XCTAssertEqual(first.compiles, 1)
    XCTAssertEqual(first.hits, 0)
    // A fresh cache object (a new process) finds the file.
    let second = SPIRVCache(directory: tmp)
    let b = try second.spirv(source: source, driverIdentity: "test") {
      XCTFail("must not compile"); return []
    }
    XCTAssertEqual(a, b)
    XCTAssertEqual(second.hits, 1)
    XCTAssertEqual(second.compiles, 0)
    // Another driver identity is another key.
    _ = try second.spirv(source: source, driverIdentity: "other") {
      try ShaderCompiler.compile(source, name: "fill.comp")
    }
    XCTAssertEqual(second.compiles, 1)
  }

  func testSPIRVCache_corruptEntryIsRecompiled() throws {
    let source = try ShaderCompiler.preprocess("copy.comp", defines: [:])
    let cache = SPIRVCache(directory: tmp)
    let good = try cache.spirv(source: source, driverIdentity: "d") {
      try ShaderCompiler.compile(source, name: "copy.comp")
    }
    let file = tmp.appendingPathComponent(SPIRVCache.key(source: source, driverIdentity: "d") + ".spv")
    try Data([1, 2, 3, 4, 5, 6, 7]).write(to: file)
    let again = try cache.spirv(source: source, driverIdentity: "d") {
      try ShaderCompiler.compile(source, name: "copy.comp")
    }
    XCTAssertEqual(again, good)
    XCTAssertEqual(cache.compiles, 2)
    XCTAssertEqual(SPIRVCache.read(file), good, "the bad entry was replaced")
  }

  func testSPIRVCache_unwritableDirectoryIsNotFatal() throws {
    let source = try ShaderCompiler.preprocess("copy.comp", defines: [:])
    let cache = SPIRVCache(directory: URL(fileURLWithPath: "/proc/vkf-no-such-dir"))
    let words = try cache.spirv(source: source, driverIdentity: "d") {
      try ShaderCompiler.compile(source, name: "copy.comp")
    }
    XCTAssertEqual(words.first, 0x0723_0203)
  }

  func testSPIRVCache_directoryFromEnvironment() {
    XCTAssertNil(SPIRVCache.defaultDirectory(environment: ["VKF_SHADER_CACHE": "off", "HOME": "/h"]))
    XCTAssertEqual(SPIRVCache.defaultDirectory(environment: ["VKF_SHADER_CACHE": "/c"])?.path, "/c")
    XCTAssertEqual(SPIRVCache.defaultDirectory(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/h"])?.path,
                   "/x/vkfinetune/spirv")
    XCTAssertEqual(SPIRVCache.defaultDirectory(environment: ["HOME": "/h"])?.path,
                   "/h/.cache/vkfinetune/spirv")
  }

  func testPipelineCache_reusesPipelinesPerVariant() throws {
    let t = try vk.allocate([8], .f32)
    try vk.fill(t, value: 1)
    let count = vk.pipelines.count
    try vk.fill(t, value: 2)
    XCTAssertEqual(vk.pipelines.count, count)
    XCTAssertEqual(try vk.floats(t), [Float](repeating: 2, count: 8))
  }
}
