import Foundation
import XCTest
import VKFCore
import VKFCPU
@testable import VKFVulkan
import VKFTestSupport

/// Backend parity: every case of `ParityTable` runs on every available backend with the same
/// seeded inputs and must match the CPU backend (the ground truth) within the case's
/// tolerance. Vulkan runs with the validation layer on; any message fails the test.
final class BackendParityTests: XCTestCase {
  /// The backends compared against the CPU. Missing Vulkan skips, unless VKF_REQUIRE_VULKAN=1
  /// (tools/test, CI) makes it a failure.
  func otherBackends() throws -> [Backend] {
    if let vk = TestBackends.vulkan { return [vk] }
    if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      XCTFail("VKF_REQUIRE_VULKAN=1 but no Vulkan backend: \(TestBackends.vulkanResult)")
      return []
    }
    throw XCTSkip("no Vulkan device; parity ran against nothing")
  }

  func test_everyOp_hasAParityCase() {
    let covered = Set(ParityTable.all.map(\.op))
    for op in Op.allCases { XCTAssertTrue(covered.contains(op), "no parity case for \(op)") }
  }

  func test_everyOp_isSupportedByEveryBackend() throws {
    var missing: [String] = []
    for backend in [TestBackends.cpu as Backend] + (try otherBackends()) {
      for op in Op.allCases where !backend.supports(op, .f32) { missing.append("\(backend.name): \(op)") }
    }
    XCTAssertEqual(missing, [], "ops missing:\n" + missing.joined(separator: "\n"))
  }

  func test_everyCase_matchesCPU() throws {
    try checkTable(on: try otherBackends())
  }

  /// The reductions' other variant: subgroup arithmetic where the device has it (the default)
  /// and the shared-memory tree (devices without it) must both match the CPU.
  func test_everyCase_matchesCPU_withTheOtherReductionVariant() throws {
    for case let vk as VulkanBackend in try otherBackends() {
      let original = vk.useSubgroupReductions
      defer { vk.useSubgroupReductions = original }
      if !original && !vk.capabilities.subgroupOperations.contains("arithmetic") {
        throw XCTSkip("\(vk.name) has no subgroup arithmetic: only the shared-memory path exists")
      }
      vk.useSubgroupReductions = !original
      try checkTable(on: [vk])
    }
  }

  func checkTable(on others: [Backend]) throws {
    for c in ParityTable.all {
      let expected: [[Float]]
      do { expected = try c.run(TestBackends.cpu) } catch {
        XCTFail("\(c.op) [\(c.name)] on CPU threw \(error)"); continue
      }
      for backend in others {
        do {
          let actual = try c.run(backend)
          XCTAssertEqual(actual.count, expected.count)
          for (i, (e, a)) in zip(expected, actual).enumerated() {
            if let why = Compare.check(e, a, nmse: c.tolerance.nmse, maxAbs: c.tolerance.maxAbs) {
              XCTFail("\(c.op) [\(c.name)] output \(i) on \(backend.name): \(why)")
            }
          }
        } catch {
          XCTFail("\(c.op) [\(c.name)] on \(backend.name) threw \(error)")
        }
        if let vk = backend as? VulkanBackend {
          XCTAssertEqual(vk.validationMessages, [], "\(c.op) [\(c.name)] validation messages")
          vk.clearValidationMessages()
        }
      }
    }
  }

  /// VKF_CHECK_RESULTS replays ops on the CPU; over a correct backend it checks every op
  /// without a mismatch.
  func test_checkingBackend_replaysEveryCaseWithoutMismatch() throws {
    for backend in try otherBackends() {
      let checking = CheckingBackend(primary: backend, reference: TestBackends.cpu)
      for c in ParityTable.all {
        XCTAssertNoThrow(try c.run(checking), "\(c.op) [\(c.name)]")
      }
      XCTAssertGreaterThanOrEqual(checking.checkedOps, ParityTable.all.count)
    }
  }

  /// A divergence beyond the limits is reported as `resultMismatch` naming the op and
  /// shapes (limits below zero make any result diverge; `Metrics` is tested on its own).
  func test_checkingBackend_reportsDivergenceWithOpAndShapes() throws {
    let checking = CheckingBackend(primary: TestBackends.cpu, reference: CPUBackend(),
                                   maxNMSE: -1, maxAbsRelative: -1)
    let x = try TestBackends.cpu.tensor([Float](repeating: 2, count: 4), shape: [4])
    XCTAssertThrowsError(try checking.scale(x, by: 2, into: x)) { error in
      guard case VKFError.resultMismatch(let op, let detail) = error else { return XCTFail("\(error)") }
      XCTAssertEqual(op, "scale")
      XCTAssertTrue(detail.contains("[4]"), detail)
    }
  }
}
