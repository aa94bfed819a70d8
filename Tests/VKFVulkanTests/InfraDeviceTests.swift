import Foundation
import XCTest
import CVulkan
import VKFCore
import VKFTestSupport
@testable import VKFVulkan

/// Device discovery, capabilities, validation plumbing and the dispatch contract.
final class InfraDeviceTests: InfraTestCase {
  func testListDevices_marksExactlyTheBackendsDevice() throws {
    let devices = try VulkanBackend.listDevices()
    XCTAssertFalse(devices.isEmpty)
    let selected = devices.filter(\.isSelected)
    XCTAssertEqual(selected.count, 1)
    XCTAssertEqual(selected.first?.name, vk.deviceInfo.name)
    XCTAssertTrue(vk.name.hasPrefix("vulkan ("), vk.name)
    XCTAssertTrue(vk.name.contains(vk.deviceInfo.name), vk.name)
    for d in devices {
      XCTAssertGreaterThan(d.maxStorageBufferRange, 0)
      XCTAssertGreaterThan(d.subgroupSize, 0)
      XCTAssertTrue(["discrete", "integrated", "virtual", "cpu", "other"].contains(d.type))
    }
  }

  /// With no driver the backend throws a device error that points at --cpu (no trap).
  func testInit_withoutDriver_throwsDeviceErrorSuggestingCPU() throws {
    let keys = ["VK_ICD_FILENAMES", "VK_DRIVER_FILES"]
    let saved = keys.map { getenv($0).map { String(cString: $0) } }
    defer {
      for (k, v) in zip(keys, saved) { if let v { setenv(k, v, 1) } else { unsetenv(k) } }
    }
    for k in keys { setenv(k, "/nonexistent/vkf_no_icd.json", 1) }
    XCTAssertThrowsError(try VulkanBackend()) { e in
      guard case VKFError.device(let detail) = e else { return XCTFail("\(e)") }
      XCTAssertTrue(detail.hasSuffix("use --cpu"), detail)
    }
  }

  func testCapabilities_areFilledFromTheDevice() {
    let c = vk.capabilities
    XCTAssertEqual(c.deviceName, vk.deviceInfo.name)
    XCTAssertGreaterThan(c.maxStorageBufferRange, 0)
    XCTAssertEqual(c.minStorageBufferOffsetAlignment & (c.minStorageBufferOffsetAlignment - 1), 0)
    XCTAssertGreaterThanOrEqual(c.maxWorkgroupInvocations, 128)
    XCTAssertGreaterThanOrEqual(c.maxPushConstantsSize, 128)
    XCTAssertFalse(c.subgroupOperations.isEmpty)
  }

  func testDeviceOverride_unknownName_throwsWithCPUHint() throws {
    let instance = try VulkanInstance(validation: false)
    let probes = try DeviceSelection.probeAll(instance.handle)
    XCTAssertThrowsError(try DeviceSelection.select(probes, override: "no-such-gpu-xyz")) { e in
      XCTAssertTrue("\(e)".hasSuffix("use --cpu"), "\(e)")
    }
    let byIndex = try DeviceSelection.select(probes, override: "\(probes[0].index)")
    XCTAssertEqual(byIndex.index, probes[0].index)
    let byName = try DeviceSelection.select(probes, override: probes[0].name.uppercased())
    XCTAssertEqual(byName.name, probes[0].name)
    XCTAssertThrowsError(try DeviceSelection.select([], override: nil)) { e in
      XCTAssertTrue("\(e)".hasSuffix("use --cpu"), "\(e)")
    }
  }

  /// Proves the collector is wired: an invalid call (a zero-size buffer) must be reported.
  func testValidationCollector_capturesAnInvalidCall() throws {
    guard vk.validationEnabled else { throw XCTSkip("VK_LAYER_KHRONOS_validation not installed") }
    var info = VkBufferCreateInfo()
    info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
    info.size = 0
    info.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue
    info.sharingMode = VK_SHARING_MODE_EXCLUSIVE
    var b: VkBuffer?
    _ = vkCreateBuffer(vk.device.handle, &info, nil, &b)
    if let b { vkDestroyBuffer(vk.device.handle, b, nil) }
    XCTAssertFalse(vk.validationMessages.isEmpty, "the layer should flag size 0")
    vk.clearValidationMessages()
  }

  func testSupports_listsTheMemoryOps() {
    for d in DType.allCases {
      XCTAssertTrue(vk.supports(.fill, d))
      XCTAssertTrue(vk.supports(.copy, d))
    }
    XCTAssertTrue(vk.supports(.cast, .bf16))
    XCTAssertFalse(vk.supports(.cast, .i32))
  }

  func testManyDispatches_areBatchedIntoOneSubmit() throws {
    let t = try vk.allocate([64], .f32)
    try vk.synchronize()
    vk.fillWithShader = true
    defer { vk.fillWithShader = false }
    let before = vk.statistics
    // More dispatches than one descriptor pool holds, so pools must grow.
    let n = CommandList.setsPerPool * 2 + 10
    for i in 0..<n { try vk.fill(t, value: Float(i)) }
    XCTAssertEqual(vk.statistics.submits, before.submits, "fill must not submit")
    try vk.synchronize()
    let cost = vk.statistics - before
    XCTAssertEqual(cost.submits, 1)
    XCTAssertEqual(cost.hostWaits, 1)
    XCTAssertEqual(cost.dispatches, n)
    XCTAssertEqual(cost.descriptorSetAllocations, n)
    // Each fill overwrites the previous one: a chain, one barrier per link (plus the host's).
    XCTAssertEqual(cost.barriers, n + 1)
    XCTAssertEqual(try vk.floats(t), [Float](repeating: Float(n - 1), count: 64), "dispatch order")
    // A second large batch reuses the pools after their reset.
    for i in 0..<n { try vk.fill(t, value: Float(-i)) }
    XCTAssertEqual(try vk.floats(t), [Float](repeating: Float(1 - n), count: 64))
  }

  func testDispatch_rejectsOversizedPushAndForeignTensors() throws {
    struct Big { var a: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) }
    let t = try vk.allocate([4], .f32)
    let big = Big(a: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    XCTAssertThrowsError(try vk.dispatch("fill", specialization: [256, 1, 1], bindings: [t], push: big,
                                         groups: (1, 1, 1)))
    let cpuT = try TestBackends.cpu.allocate([4], .f32)
    XCTAssertThrowsError(try vk.dispatch("fill", specialization: [256, 1, 1], bindings: [cpuT],
                                         push: FillPush(words: 4, pattern: 0, firstMask: .max, lastMask: .max),
                                         groups: (1, 1, 1))) { e in
      guard case VKFError.wrongBackend = e else { return XCTFail("\(e)") }
    }
  }

  func testScratch_growsAndIsReused() throws {
    let a = try vk.scratch(count: 100)
    XCTAssertEqual(a.count, 100)
    XCTAssertEqual(a.dtype, .f32)
    let b = try vk.scratch(count: 10)
    XCTAssertTrue(a.storage === b.storage)
    XCTAssertFalse(a.overlaps(b), "each request of one batch gets its own scratch")
    let c = try vk.scratch(count: 1 << 20)
    XCTAssertGreaterThanOrEqual(c.storage.byteCount, 4 << 20)
    try vk.fill(c, value: 1)
    XCTAssertEqual(try vk.floats(try c.view(shape: [3])), [1, 1, 1])
  }
}
