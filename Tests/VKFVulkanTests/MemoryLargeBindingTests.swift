import XCTest
import VKFCore
import VKFTestSupport
@testable import VKFVulkan

/// Tensors deep inside buffers larger than maxStorageBufferRange (128 MiB on lavapipe) are
/// bound at an aligned offset near the tensor, not at the buffer start.
final class MemoryLargeBindingTests: InfraTestCase {
  static let mib = 1 << 20

  /// fill, copy (both paths) and cast on views starting past 130 MiB of one storage.
  private func exercise(_ big: Tensor, at byteOffset: Int) throws {
    let n = 4099
    let f32View = Tensor(storage: big.storage, shape: [n], dtype: .f32, byteOffset: byteOffset)
    let bf16View = Tensor(storage: big.storage, shape: [n], dtype: .bf16,
                          byteOffset: byteOffset + 64 * 1024)
    try vk.fill(f32View, value: 1.5)
    XCTAssertEqual(try vk.floats(f32View), [Float](repeating: 1.5, count: n))
    vk.fillWithShader = true
    try vk.fill(f32View, value: -2.5)
    vk.fillWithShader = false
    XCTAssertEqual(try vk.floats(f32View), [Float](repeating: -2.5, count: n))

    let values = TestData.uniform(n, seed: 11)
    let src = try vk.tensor(values, shape: [n])
    try vk.copy(src, to: f32View)
    XCTAssertEqual(try vk.floats(f32View), values)
    vk.copyWithShader = true
    defer { vk.copyWithShader = false }
    try vk.fill(f32View, value: 0)
    try vk.copy(src, to: f32View)
    XCTAssertEqual(try vk.floats(f32View), values)

    try vk.cast(f32View, to: bf16View)
    XCTAssertEqual(try vk.download(bf16View, as: UInt16.self), values.map(BFloat16.fromFloat))
  }

  func testDedicatedBuffer_viewPast130MiB() throws {
    let big = try vk.allocate([210 * Self.mib], .u8)
    XCTAssertTrue((big.storage as? VulkanStorage)?.block.dedicated ?? false)
    try exercise(big, at: 130 * Self.mib + 4 * 1000)
  }

  func testPoolBlock_tensorPast130MiBInsideTheBlock() throws {
    // Two 100 MiB tensors share a 256 MiB block of a pool made with such blocks (the
    // backend's own pool uses 64 MiB blocks); the second starts ≥ 100 MiB in.
    let pool = BufferPool(device: vk.device, kind: .device, blockSize: 256 * Self.mib)
    func allocate() throws -> Tensor {
      let storage = try VulkanStorage(owner: ObjectIdentifier(vk), byteCount: 100 * Self.mib, memory: .device,
                                      pool: pool)
      return Tensor(storage: storage, shape: [100 * Self.mib], dtype: .u8)
    }
    let a = try allocate(), b = try allocate()
    let sa = try XCTUnwrap(a.storage as? VulkanStorage), sb = try XCTUnwrap(b.storage as? VulkanStorage)
    XCTAssertTrue(sa.block === sb.block && !sb.block.dedicated, "the two tensors share one pool block")
    let inBlock = 131 * Self.mib - sb.offset
    XCTAssertGreaterThan(inBlock, 0)
    try exercise(b, at: alignUp(inBlock, 4))
  }

  func testDispatch_tensorLargerThanMaxRange_throwsClearly() throws {
    let maxRange = vk.capabilities.maxStorageBufferRange
    guard maxRange < 1 << 30 else { throw XCTSkip("maxStorageBufferRange is large") }
    let big = try vk.allocate([maxRange + 1024], .u8)
    let view = Tensor(storage: big.storage, shape: [maxRange / 4 + 16], dtype: .f32)
    XCTAssertThrowsError(try vk.dispatch("fill", specialization: [256, 1, 1], bindings: [view],
                                         push: FillPush(words: 1, pattern: 0, firstMask: .max, lastMask: .max),
                                         groups: (1, 1, 1))) { e in
      XCTAssertTrue("\(e)".contains("maxStorageBufferRange"), "\(e)")
    }
    // The memory ops split such tensors into chunks instead.
    vk.fillWithShader = true
    defer { vk.fillWithShader = false }
    try vk.fill(view, value: 2)
    let tail = Tensor(storage: big.storage, shape: [4], dtype: .f32, byteOffset: (maxRange / 4 + 12) * 4)
    XCTAssertEqual(try vk.floats(tail), [2, 2, 2, 2])
    let head = Tensor(storage: big.storage, shape: [4], dtype: .f32)
    XCTAssertEqual(try vk.floats(head), [2, 2, 2, 2])
  }
}
