import XCTest
import VKFCore
import VKFTestSupport
@testable import VKFVulkan

/// The dependency tracker that places barriers (pure logic), the SPIR-V reading that tells it
/// which bindings a kernel writes, and the barriers it leads to on a device.
final class DependencyLevelTests: XCTestCase {
  private let bufA = UnsafeMutableRawPointer(bitPattern: 0x1000)!
  private let bufB = UnsafeMutableRawPointer(bitPattern: 0x2000)!

  private func access(_ buffer: UnsafeMutableRawPointer, _ r: Range<Int>, writes: Bool) -> BufferAccess {
    BufferAccess(OpaquePointer(buffer), r, writes: writes)
  }

  func testIndependentCommands_shareLevelZero() {
    var d = DependencyLevels()
    XCTAssertEqual(d.place([access(bufA, 0..<16, writes: false), access(bufA, 16..<32, writes: true)]), 0)
    XCTAssertEqual(d.place([access(bufA, 0..<16, writes: false), access(bufA, 32..<48, writes: true)]), 0,
                   "reading what another reads needs no barrier")
    XCTAssertEqual(d.place([access(bufB, 0..<16, writes: true)]), 0, "another buffer")
    XCTAssertEqual(d.levelCount, 1)
  }

  func testReadAfterWrite_writeAfterRead_writeAfterWrite_eachStartALevel() {
    var d = DependencyLevels()
    XCTAssertEqual(d.place([access(bufA, 0..<16, writes: true)]), 0)
    XCTAssertEqual(d.place([access(bufA, 8..<12, writes: false), access(bufB, 0..<4, writes: true)]), 1, "RAW")
    XCTAssertEqual(d.place([access(bufA, 0..<4, writes: true)]), 1, "WAW after level 0 only")
    XCTAssertEqual(d.place([access(bufB, 0..<4, writes: true)]), 2, "WAW after level 1")
    XCTAssertEqual(d.place([access(bufA, 8..<12, writes: true)]), 2, "WAR: after its reader at level 1")
    XCTAssertEqual(d.place([access(bufA, 12..<16, writes: false)]), 1, "read of bytes only level 0 wrote")
    XCTAssertEqual(d.levelCount, 3)
  }

  func testPartialOverlaps_areFoundAndAdjacentRangesAreNot() {
    var d = DependencyLevels()
    XCTAssertEqual(d.place([access(bufA, 100..<200, writes: true)]), 0)
    XCTAssertEqual(d.place([access(bufA, 200..<300, writes: false)]), 0, "adjacent, not overlapping")
    XCTAssertEqual(d.place([access(bufA, 0..<100, writes: false)]), 0)
    XCTAssertEqual(d.place([access(bufA, 196..<204, writes: false)]), 1, "straddles the written range's end")
    XCTAssertEqual(d.place([access(bufA, 50..<101, writes: false)]), 1, "straddles its start")
    XCTAssertEqual(d.place([access(bufA, 0..<400, writes: true)]), 2, "covers readers at level 1")
  }

  func testLaterUnrelatedCommand_isHoistedToLevelZero() {
    var d = DependencyLevels()
    for i in 0..<5 { XCTAssertEqual(d.place([access(bufA, 0..<4, writes: true)]), i) }
    XCTAssertEqual(d.place([access(bufB, 0..<4, writes: true)]), 0)
  }

  func testModes_serialAndUnsynchronized() {
    var d = DependencyLevels()
    XCTAssertEqual(d.place([access(bufA, 0..<4, writes: true)], mode: .serial), 0)
    XCTAssertEqual(d.place([access(bufB, 0..<4, writes: true)], mode: .serial), 1)
    XCTAssertEqual(d.place([access(bufA, 0..<4, writes: true)], mode: .unsynchronized), 0)
  }
}

final class DependencyDeviceTests: InfraTestCase {
  func testSPIRV_readonlyBindingsAreReadOnly() throws {
    let adam = try vk.pipelines.pipeline("adam_w", defines: [:], specialization: vk.blockSpecialization,
                                         bindingCount: 6)
    XCTAssertEqual(adam.writableBindings, [3, 4, 5], "grad, hyper, sumSq are readonly; param, m, v written")
    let fill = try vk.pipelines.pipeline("fill", defines: [:], specialization: [256, 1, 1], bindingCount: 1)
    XCTAssertEqual(fill.writableBindings, [0])
  }

  func testSPIRV_malformed_treatsEveryBindingAsWritten() {
    XCTAssertEqual(SPIRVReflection.writableBindings([1, 2, 3], fallbackCount: 3), [0, 1, 2])
  }

  /// x → y = 2x → z = 3y → w = z + x: each link reads what the previous one wrote.
  private func chain(_ x: Tensor) throws -> (Tensor, Tensor, Tensor) {
    let y = try vk.allocate([256]), z = try vk.allocate([256]), w = try vk.allocate([256])
    try vk.scale(x, by: 2, into: y)
    try vk.scale(y, by: 3, into: z)
    try vk.add(z, x, into: w)
    return (y, z, w)
  }

  func testDependentChain_getsOneBarrierPerLink_andReadsFreshData() throws {
    let values = TestData.uniform(256, seed: 1)
    let x = try vk.tensor(values, shape: [256])
    try vk.synchronize()
    let before = vk.statistics
    let (_, _, w) = try chain(x)
    try vk.synchronize()
    let cost = vk.statistics - before
    XCTAssertEqual(cost.dispatches, 3)
    XCTAssertEqual(cost.barriers, 3 + 1, "one before each dependent level, one for the host")
    XCTAssertEqual(try vk.floats(w), values.map { $0 * 2 * 3 + $0 })
  }

  func testIndependentKernels_runBetweenTheSameBarriers() throws {
    let x = try vk.tensor(TestData.uniform(256, seed: 2), shape: [256])
    let outs = try (0..<8).map { _ in try vk.allocate([256]) }
    try vk.synchronize()
    let before = vk.statistics
    for (i, o) in outs.enumerated() { try vk.scale(x, by: Float(i), into: o) }
    try vk.synchronize()
    let cost = vk.statistics - before
    XCTAssertEqual(cost.dispatches, 8)
    XCTAssertEqual(cost.barriers, 2, "one level of eight kernels, plus the host barrier")
  }

  /// The validation layer's synchronization checks (on in every Vulkan test) see a missing
  /// barrier: with the tracker switched off the chain reports read-after-write hazards, so
  /// a tracker that missed one would fail the test that recorded it.
  func testMissingBarrier_isReportedBySynchronizationValidation() throws {
    guard vk.validationEnabled else { throw XCTSkip("the validation layer is not installed") }
    let x = try vk.tensor(TestData.uniform(256, seed: 3), shape: [256])
    try vk.synchronize()
    vk.recorder.dependencyMode = .unsynchronized
    defer { vk.recorder.dependencyMode = .tracked }
    _ = try chain(x)
    try vk.synchronize()
    let hazards = vk.validationMessages.filter { $0.contains("SYNC-HAZARD-READ-AFTER-WRITE") }
    vk.clearValidationMessages()
    if hazards.isEmpty {
      throw XCTSkip("this validation layer has no synchronization validation")
    }
  }
}
