import XCTest
import VKFCore
import VKFTestSupport
@testable import VKFVulkan

/// allocate / upload / download: every dtype, odd sizes, both memory kinds, views, ordering
/// against queued work, and the errors they throw.
final class MemoryTransferTests: InfraTestCase {
  static let oddCounts = [0, 1, 3, 7, 257, 1001]

  func testRoundTrip_everyDTypeAndOddSize_deviceAndHostVisible() throws {
    for memory in [MemoryKind.device, .hostVisible] {
      for dtype in DType.allCases {
        for n in Self.oddCounts {
          let t = try vk.allocate([n], dtype, memory: memory)
          XCTAssertEqual(t.storage.memory, memory)
          if memory == .hostVisible {
            XCTAssertNotNil((t.storage as? VulkanStorage)?.mapped, "host-visible memory is mapped")
          }
          let data = pattern(n * dtype.size, seed: UInt64(n))
          try vk.upload(data, to: t)
          XCTAssertEqual(try bytes(t), data, "\(dtype) \(n) \(memory)")
        }
      }
    }
  }

  func testRoundTrip_throughStagingBuffers() throws {
    vk.stagingTransfers = true
    defer { vk.stagingTransfers = false }
    try testRoundTrip_everyDTypeAndOddSize_deviceAndHostVisible()
    try testViewAtOffset_uploadTouchesOnlyTheView()
    // A staged upload is a recorded copy: ordered after earlier work, before later work.
    let t = try vk.allocate([8], .f32), u = try vk.allocate([8], .f32)
    try vk.fill(t, value: 1)
    try vk.upload([Float](repeating: 5, count: 8), to: t)
    try vk.copy(t, to: u)
    XCTAssertEqual(try vk.floats(u), [Float](repeating: 5, count: 8))
  }

  func testViewAtOffset_uploadTouchesOnlyTheView() throws {
    for dtype in DType.allCases {
      let whole = try vk.allocate([37], dtype)
      let base = pattern(37 * dtype.size, seed: 9)
      try vk.upload(base, to: whole)
      let view = try whole.view(offset: 5, shape: [3, 3])
      let patch = pattern(9 * dtype.size, seed: 10)
      try vk.upload(patch, to: view)
      var expected = base
      expected.replaceSubrange((5 * dtype.size)..<(14 * dtype.size), with: patch)
      XCTAssertEqual(try bytes(whole), expected, "\(dtype)")
      XCTAssertEqual(try bytes(view), patch)
    }
  }

  func testUpload_isOrderedAfterQueuedWorkOnTheSameTensor() throws {
    let t = try vk.allocate([16], .f32)
    try vk.fill(t, value: 1)              // queued, not yet run
    try vk.upload([Float](repeating: 7, count: 16), to: t)
    XCTAssertEqual(try vk.floats(t), [Float](repeating: 7, count: 16))
    // And work queued after the upload sees the uploaded values.
    let u = try vk.allocate([16], .f32)
    try vk.upload([Float](repeating: 3, count: 16), to: u)
    try vk.copy(u, to: t)
    try vk.upload([Float](repeating: 4, count: 16), to: u)   // must not overtake the copy
    XCTAssertEqual(try vk.floats(t), [Float](repeating: 3, count: 16))
    XCTAssertEqual(try vk.floats(u), [Float](repeating: 4, count: 16))
  }

  func testUpload_intoUnrelatedTensor_doesNotSubmit() throws {
    let a = try vk.allocate([16], .f32), b = try vk.allocate([16], .f32)
    try vk.synchronize()
    let before = vk.statistics.submits
    try vk.fill(a, value: 1)
    try vk.upload([Float](repeating: 2, count: 16), to: b)
    XCTAssertEqual(vk.statistics.submits, before)
    XCTAssertEqual(try vk.floats(a), [Float](repeating: 1, count: 16))
    XCTAssertEqual(try vk.floats(b), [Float](repeating: 2, count: 16))
  }

  func testWrongByteCounts_throw() throws {
    let t = try vk.allocate([5], .f32)
    XCTAssertThrowsError(try [UInt8](repeating: 0, count: 19).withUnsafeBytes { try vk.upload($0, to: t) })
    var out = [UInt8](repeating: 0, count: 21)
    XCTAssertThrowsError(try out.withUnsafeMutableBytes { try vk.download(t, into: $0) })
  }

  func testForeignTensors_throwWrongBackend() throws {
    let c = try TestBackends.cpu.allocate([4], .f32)
    let v = try vk.allocate([4], .f32)
    func expectWrong(_ body: () throws -> Void, _ what: String) {
      XCTAssertThrowsError(try body(), what) { e in
        guard case VKFError.wrongBackend = e else { return XCTFail("\(what): \(e)") }
      }
    }
    expectWrong({ try vk.upload([Float](repeating: 0, count: 4), to: c) }, "upload")
    expectWrong({ _ = try vk.floats(c) }, "download")
    expectWrong({ try vk.fill(c, value: 1) }, "fill")
    expectWrong({ try vk.copy(c, to: v) }, "copy")
    expectWrong({ try vk.copy(v, to: c) }, "copy")
    expectWrong({ try vk.cast(c, to: v) }, "cast")
  }

  func testAllocate_negativeShapeThrows_zeroSizeWorks() throws {
    XCTAssertThrowsError(try vk.allocate([2, -1], .f32))
    let z = try vk.allocate([0, 5], .f16)
    try vk.fill(z, value: 1)
    try vk.upload([UInt8](), to: z)
    XCTAssertEqual(try bytes(z), [])
    let s = try vk.allocate([], .f32)       // a scalar
    try vk.fill(s, value: 3)
    XCTAssertEqual(try vk.floats(s), [3])
  }

  func testFreedStorage_isReusedAfterTheBatchCompletes() throws {
    // Storages dropped while their work is queued stay alive until the fence signals.
    for i in 0..<50 {
      let t = try vk.allocate([1024], .f32)
      try vk.fill(t, value: Float(i))
    }
    try vk.synchronize()
    let stats = vk.devicePool.statistics
    let keep = try vk.allocate([1024], .f32)
    try vk.fill(keep, value: 5)
    XCTAssertEqual(try vk.floats(keep).first, 5)
    XCTAssertEqual(vk.devicePool.statistics.blocks, stats.blocks, "no new block for a small tensor")
  }

  func testBufferPool_coalescesFreedRanges() throws {
    let pool = vk.devicePool
    let before = pool.statistics.free
    do {
      let a = try vk.allocate([1000], .f32), b = try vk.allocate([3000], .f32)
      let c = try vk.allocate([500], .u8)
      _ = (a, b, c)
      try vk.synchronize()
      XCTAssertLessThan(pool.statistics.free, before)
    }
    XCTAssertEqual(pool.statistics.free, before)
  }
}
