import Foundation
import XCTest
import VKFCore
import VKFTestSupport
@testable import VKFVulkan

/// Base class of the infrastructure tests: provides the shared Vulkan backend (skipping
/// when there is none, failing under VKF_REQUIRE_VULKAN=1) and fails any test after which
/// the validation layer reported a warning or an error.
class InfraTestCase: XCTestCase {
  /// The Vulkan backend under test (set in setUp).
  var vk: VulkanBackend!

  override func setUpWithError() throws {
    guard let b = TestBackends.vulkan else {
      if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
        XCTFail("Vulkan required (VKF_REQUIRE_VULKAN=1) but unavailable")
      }
      throw XCTSkip("Vulkan backend unavailable")
    }
    vk = b
    b.clearValidationMessages()
  }

  override func tearDownWithError() throws {
    if let vk {
      try vk.synchronize()
      XCTAssertEqual(vk.validationMessages, [], "validation layer messages")
      vk.clearValidationMessages()
    }
  }

  /// Downloads raw bytes of any tensor.
  func bytes(_ t: Tensor) throws -> [UInt8] { try vk.download(t, as: UInt8.self) }

  /// Deterministic bytes 0…255 pattern of `count` bytes from `seed`.
  func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SeededRNG(seed: seed)
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
  }
}
