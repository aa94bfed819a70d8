import Foundation
import XCTest

/// End-to-end: the `vkfinetune` binary, its output and exit status. Bad input must give one
/// clear line and a non-zero exit, never a trap.
final class CLITests: XCTestCase {
  /// The binary SwiftPM built next to this test bundle.
  static var binary: URL {
    var dir = Bundle(for: CLITests.self).bundleURL.deletingLastPathComponent()
    if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("vkfinetune").path) {
      dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }
    return dir.appendingPathComponent("vkfinetune")
  }

  struct Run { var status: Int32; var stdout: String; var stderr: String }

  /// A cache home for every run of this test process.
  static let cacheHome: URL = {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-cli-cache-\(ProcessInfo.processInfo.processIdentifier)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
  }()

  static func run(_ args: [String], env: [String: String] = [:]) throws -> Run {
    let p = Process()
    p.executableURL = Self.binary
    p.arguments = args
    var e = ProcessInfo.processInfo.environment
    e["VKF_NO_REEXEC"] = "1"
    e["XDG_CACHE_HOME"] = cacheHome.path  // QLoRA's NF4 cache stays out of the user's ~/.cache
    for (k, v) in env { e[k] = v }
    p.environment = e
    let out = Pipe(), err = Pipe()
    p.standardOutput = out; p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), r = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
               stderr: String(decoding: r, as: UTF8.self))
  }

  func test_devices_listsAndMarksThePickedDevice() throws {
    let r = try Self.run(["devices"])
    guard r.status == 0 else {
      if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" { return XCTFail(r.stdout + r.stderr) }
      throw XCTSkip("no Vulkan device: \(r.stdout)")
    }
    XCTAssertTrue(r.stdout.contains("* [0]"), r.stdout)
    XCTAssertTrue(r.stdout.contains("subgroup"), r.stdout)
    // Which kernel f16 × f16 products get, or why no cooperative matrix.
    XCTAssertTrue(r.stdout.contains("f16·f16 matmul: "), r.stdout)
  }

  /// `devices --verify` runs every case (matmul variants, NF4 with 16-bit x, fused attention
  /// causal, windowed and soft-capped) on the device and the CPU and prints one verdict each; all
  /// agree here (the kernels are the ones the shader tests check).
  func test_devices_verify_everyProductAgreesWithTheCPU() throws {
    let r = try Self.run(["devices", "--verify"])
    guard r.status == 0 || r.stdout.contains("verify on") else {
      if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" { return XCTFail(r.stdout + r.stderr) }
      throw XCTSkip("no Vulkan device: \(r.stdout)")
    }
    XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    let verdicts = r.stdout.split(separator: "\n").filter { $0.hasPrefix("ok ") || $0.hasPrefix("FAIL") }
    XCTAssertEqual(verdicts.count, 12, r.stdout)  // 8 matmuls, NF4 with bf16 x, attention ×3
    XCTAssertTrue(verdicts.allSatisfy { $0.hasPrefix("ok ") }, r.stdout)
  }

  func test_devices_withoutDriver_saysUseCPUAndExitsNonZero() throws {
    let r = try Self.run(["devices"], env: ["VK_ICD_FILENAMES": "/nonexistent/icd.json",
                                       "VK_DRIVER_FILES": "/nonexistent/icd.json"])
    XCTAssertNotEqual(r.status, 0)
    XCTAssertTrue(r.stdout.contains("--cpu"), r.stdout)
  }

  func test_benchOps_cpu_writesJSONAtomically() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-cli-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let json = dir.appendingPathComponent("ops.json")
    let r = try Self.run(["bench", "ops", "--cpu", "--filter", "rmsNorm", "--tokens", "256",
                     "--seconds", "0.01", "--json", json.path])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.contains("rmsNorm"), r.stdout)
    let report = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any]
    let results = report?["results"] as? [[String: Any]] ?? []
    XCTAssertEqual(results.map { $0["op"] as? String }, ["rmsNorm", "rmsNormBackward"])
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["ops.json"],
                   "no temporary file is left behind")
  }

  func test_badFlagsAndUnwritablePaths_failWithOneLine() throws {
    for args in [["bench", "ops", "--cpu", "--tokens", "100"],
                 ["bench", "ops", "--cpu", "--seconds", "-1"],
                 ["bench", "ops", "--cpu", "--filter", "rmsNorm", "--tokens", "256", "--seconds", "0.01",
                  "--json", "/nonexistent-dir/ops.json"]] {
      let r = try Self.run(args)
      XCTAssertNotEqual(r.status, 0, "\(args)")
      XCTAssertTrue(r.stderr.contains("Error:"), "\(args): \(r.stderr)")
      XCTAssertFalse(r.stderr.contains("Fatal error"), "\(args) trapped: \(r.stderr)")
    }
  }
}

/// `generate` and `bench model` refuse bad input before loading anything heavy.
final class CLIModelCommandTests: XCTestCase {
  func test_generateAndBenchModel_rejectBadInputWithOneLine() throws {
    for args in [["generate", "--cpu", "--model", "/nonexistent/model", "--prompt", "hi"],
                 ["generate", "--cpu", "--model", "/nonexistent/model", "--prompt", "hi", "--temperature=-1"],
                 ["generate", "--cpu", "--model", "/nonexistent/model", "--prompt", "hi", "--top-p", "1.5"],
                 ["bench", "model", "--cpu", "--model", "/nonexistent/model"],
                 ["bench", "model", "--cpu", "--model", "/nonexistent/model", "--batch", "0"]] {
      let r = try CLITests.run(args)
      XCTAssertNotEqual(r.status, 0, "\(args)")
      XCTAssertTrue(r.stderr.contains("Error:"), "\(args): \(r.stderr)")
      XCTAssertFalse(r.stderr.contains("Fatal error"), "\(args) trapped: \(r.stderr)")
      XCTAssertLessThanOrEqual(r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }.count, 1, "\(args)")
    }
  }
}
