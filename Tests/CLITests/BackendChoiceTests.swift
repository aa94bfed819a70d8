import Foundation
import XCTest

/// Without --cpu the CLI takes the best Vulkan device, except that a CPU driver (lavapipe)
/// as the best device means the OpenBLAS backend, with a note; VKF_DEVICE forces the driver.
final class BackendChoiceTests: XCTestCase {
  func test_cpuDriverAsBestDevice_usesOpenBLAS_unlessVKFDeviceAsksForIt() throws {
    let devices = try CLITests.run(["devices"])
    guard devices.status == 0,
          let picked = devices.stdout.split(separator: "\n").first(where: { $0.hasPrefix("* [") }) else {
      throw XCTSkip("no Vulkan device here (`devices` exited \(devices.status))")
    }
    let args = ["bench", "ops", "--filter", "rmsNorm", "--tokens", "256", "--seconds", "0.01"]
    let run = try CLITests.run(args)
    XCTAssertEqual(run.status, 0, run.stderr)
    if picked.hasSuffix("(cpu)") {
      XCTAssertTrue(run.stdout.hasPrefix("backend: cpu"), run.stdout)
      XCTAssertTrue(run.stderr.contains("note: the only Vulkan device is a CPU driver"), run.stderr)
    } else {
      XCTAssertTrue(run.stdout.hasPrefix("backend: vulkan"), run.stdout)
      XCTAssertFalse(run.stderr.contains("note:"), run.stderr)
    }
    let index = picked.dropFirst(3).prefix { $0 != "]" }
    let forced = try CLITests.run(args, env: ["VKF_DEVICE": String(index)])
    XCTAssertEqual(forced.status, 0, forced.stderr)
    XCTAssertTrue(forced.stdout.hasPrefix("backend: vulkan"), forced.stdout)
  }
}
