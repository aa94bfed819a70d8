#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CVulkan
import Foundation
import VKFCore

/// One VkBuffer with its own memory, persistently mapped when the memory is host-visible.
/// Pool blocks are sub-allocated; a dedicated block holds one large tensor.
final class BufferBlock {
  let device: VulkanDevice
  let buffer: VkBuffer
  let memory: VkDeviceMemory
  let size: Int
  /// Host address of byte 0, when the memory is host-visible.
  let mapped: UnsafeMutableRawPointer?
  let coherent: Bool
  let dedicated: Bool
  /// Device-local blocks count towards `ExecutionStatistics.deviceMemoryBytes`.
  private let countsAsDeviceMemory: Bool
  /// Free ranges sorted by offset (pool blocks only; guarded by the pool's lock).
  var free: [Range<Int>]

  init(device: VulkanDevice, size: Int, kind: MemoryKind, dedicated: Bool) throws {
    self.device = device
    self.size = size
    self.dedicated = dedicated
    var info = VkBufferCreateInfo()
    info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
    info.size = VkDeviceSize(size)
    info.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue | VK_BUFFER_USAGE_TRANSFER_SRC_BIT.rawValue
      | VK_BUFFER_USAGE_TRANSFER_DST_BIT.rawValue
    info.sharingMode = VK_SHARING_MODE_EXCLUSIVE
    var b: VkBuffer?
    try vkCheck(vkCreateBuffer(device.handle, &info, nil, &b), "vkCreateBuffer(\(size) bytes)")
    guard let b else { throw VKFError.device(detail: "vkCreateBuffer returned no buffer") }
    var req = VkMemoryRequirements()
    vkGetBufferMemoryRequirements(device.handle, b, &req)

    let local = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT.rawValue
    let visible = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue
    let coherentBit = VK_MEMORY_PROPERTY_HOST_COHERENT_BIT.rawValue
    let cached = VK_MEMORY_PROPERTY_HOST_CACHED_BIT.rawValue
    let choice: (index: UInt32, flags: UInt32)?
    switch kind {
    case .device:
      choice = device.memoryType(typeBits: req.memoryTypeBits, required: local)
        ?? device.memoryType(typeBits: req.memoryTypeBits, required: 0)
    case .hostVisible:
      choice = device.memoryType(typeBits: req.memoryTypeBits, required: visible | coherentBit,
                                 preferred: cached)
        ?? device.memoryType(typeBits: req.memoryTypeBits, required: visible)
    }
    guard let choice else {
      vkDestroyBuffer(device.handle, b, nil)
      throw VKFError.device(detail: "no memory type for \(kind) buffers")
    }
    if kind == .device {
      do { try device.statistics.checkLimit(adding: Int(req.size), what: "allocating \(size) bytes of device memory") } catch {
        vkDestroyBuffer(device.handle, b, nil)
        throw error
      }
    }
    var alloc = VkMemoryAllocateInfo()
    alloc.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
    alloc.allocationSize = req.size
    alloc.memoryTypeIndex = choice.index
    var m: VkDeviceMemory?
    let r = vkAllocateMemory(device.handle, &alloc, nil, &m)
    guard r == VK_SUCCESS, let m else {
      vkDestroyBuffer(device.handle, b, nil)
      throw VKFError.outOfMemory(detail: "allocating \(size) bytes of \(kind) memory: \(vkResultName(r))")
    }
    let bindResult = vkBindBufferMemory(device.handle, b, m, 0)
    guard bindResult == VK_SUCCESS else {
      vkFreeMemory(device.handle, m, nil); vkDestroyBuffer(device.handle, b, nil)
      throw vkError(bindResult, "vkBindBufferMemory")
    }
    var ptr: UnsafeMutableRawPointer?
    if choice.flags & visible != 0 {
      let mr = vkMapMemory(device.handle, m, 0, UInt64.max /* VK_WHOLE_SIZE */, 0, &ptr)
      if mr != VK_SUCCESS { ptr = nil }  // Fall back to staging copies.
    }
    buffer = b
    memory = m
    mapped = ptr
    coherent = choice.flags & coherentBit != 0
    free = dedicated ? [] : [0..<size]
    countsAsDeviceMemory = kind == .device
    if countsAsDeviceMemory { device.statistics.memory(Int(req.size)) }
    allocationSize = Int(req.size)
  }

  /// Bytes the driver allocated for this block.
  let allocationSize: Int

  deinit {
    if countsAsDeviceMemory { device.statistics.memory(-allocationSize) }
    if mapped != nil { vkUnmapMemory(device.handle, memory) }
    vkDestroyBuffer(device.handle, buffer, nil)
    vkFreeMemory(device.handle, memory, nil)
  }

  /// Makes host writes to `range` visible to the device (no-op on coherent memory).
  func flush(_ range: Range<Int>) throws {
    guard !coherent, mapped != nil, !range.isEmpty else { return }
    var r = atomRange(range)
    try vkCheck(vkFlushMappedMemoryRanges(device.handle, 1, &r), "vkFlushMappedMemoryRanges")
  }

  /// Makes device writes to `range` visible to the host (no-op on coherent memory).
  func invalidate(_ range: Range<Int>) throws {
    guard !coherent, mapped != nil, !range.isEmpty else { return }
    var r = atomRange(range)
    try vkCheck(vkInvalidateMappedMemoryRanges(device.handle, 1, &r), "vkInvalidateMappedMemoryRanges")
  }

  private func atomRange(_ range: Range<Int>) -> VkMappedMemoryRange {
    let atom = max(Int(device.limits.nonCoherentAtomSize), 1)
    let lo = alignDown(range.lowerBound, atom)
    let hi = min(alignUp(range.upperBound, atom), size)
    var r = VkMappedMemoryRange()
    r.sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE
    r.memory = memory
    r.offset = VkDeviceSize(lo)
    r.size = hi == size ? UInt64.max : VkDeviceSize(hi - lo)
    return r
  }
}

/// Sub-allocates large blocks of one memory kind: first fit, coalescing on release.
final class BufferPool: @unchecked Sendable {
  let device: VulkanDevice
  let kind: MemoryKind
  /// Every allocation starts and ends on this boundary, so binding offsets are legal.
  let alignment: Int
  /// Bytes per pooled block; a request over half of it gets a block of its own. 64 MiB
  /// bounds the free space of a run's last, partly used block (the allocated peak beyond
  /// the tensors' peak: SmolLM2 LoRA 700.7 MiB allocated for 669.8 MiB of tensors; 256 MiB
  /// blocks allocated 768 MiB), at one allocation per 64 MiB of small tensors.
  let blockSize: Int
  private let lock = NSLock()
  private var blocks: [BufferBlock] = []

  init(device: VulkanDevice, kind: MemoryKind, blockSize: Int = 64 << 20) {
    self.device = device
    self.kind = kind
    alignment = max(Int(device.limits.minStorageBufferOffsetAlignment), 256)
    self.blockSize = blockSize
  }

  /// Bytes reserved for a request: aligned, plus slack so a zero-size view at the end of
  /// the tensor still lies inside the buffer.
  func reservedSize(_ bytes: Int) -> Int { alignUp(bytes + 4, alignment) }

  /// A range of at least `bytes` bytes.
  func allocate(_ bytes: Int) throws -> (block: BufferBlock, range: Range<Int>) {
    let size = reservedSize(bytes)
    if size > blockSize / 2 {
      let block = try BufferBlock(device: device, size: size, kind: kind, dedicated: true)
      return (block, 0..<size)
    }
    lock.lock(); defer { lock.unlock() }
    for block in blocks {
      if let r = take(size, from: block) { return (block, r) }
    }
    let block = try BufferBlock(device: device, size: blockSize, kind: kind, dedicated: false)
    blocks.append(block)
    guard let r = take(size, from: block) else {
      throw VKFError.device(detail: "buffer pool: fresh block cannot hold \(size) bytes")
    }
    return (block, r)
  }

  private func take(_ size: Int, from block: BufferBlock) -> Range<Int>? {
    guard let i = block.free.firstIndex(where: { $0.count >= size }) else { return nil }
    let r = block.free[i]
    let out = r.lowerBound..<(r.lowerBound + size)
    if r.count == size { block.free.remove(at: i) } else { block.free[i] = out.upperBound..<r.upperBound }
    return out
  }

  /// Returns a range; the caller guarantees no queued work still uses it.
  func release(_ block: BufferBlock, _ range: Range<Int>) {
    guard !block.dedicated else { return }  // Freed with the block itself.
    lock.lock(); defer { lock.unlock() }
    var free = block.free
    let i = free.firstIndex { $0.lowerBound > range.lowerBound } ?? free.count
    free.insert(range, at: i)
    // Coalesce with the right, then the left neighbour.
    if i + 1 < free.count, free[i].upperBound == free[i + 1].lowerBound {
      free[i] = free[i].lowerBound..<free[i + 1].upperBound
      free.remove(at: i + 1)
    }
    if i > 0, free[i - 1].upperBound == free[i].lowerBound {
      free[i - 1] = free[i - 1].lowerBound..<free[i].upperBound
      free.remove(at: i)
    }
    block.free = free
    // Give an empty block back to the driver unless it is the last one of this kind.
    if free.count == 1, free[0] == 0..<block.size, blocks.count > 1,
       let j = blocks.firstIndex(where: { $0 === block }) {
      blocks.remove(at: j)
    }
  }

  /// Bytes held in blocks / free in them (for tests and memory reports).
  var statistics: (blocks: Int, reserved: Int, free: Int) {
    lock.lock(); defer { lock.unlock() }
    return (blocks.count, blocks.reduce(0) { $0 + $1.size },
            blocks.reduce(0) { $0 + $1.free.reduce(0) { $0 + $1.count } })
  }
}

/// A tensor allocation: a range of a block. Releasing it (deinit) returns the range to
/// the pool; queued work keeps its storages alive until its fence signals, so a range is
/// never reused while the device may still touch it.
final class VulkanStorage: TensorStorage {
  let owner: ObjectIdentifier
  let byteCount: Int
  let memory: MemoryKind
  let block: BufferBlock
  /// Bytes of the block this storage owns (≥ byteCount).
  let range: Range<Int>
  private let pool: BufferPool

  init(owner: ObjectIdentifier, byteCount: Int, memory: MemoryKind, pool: BufferPool) throws {
    let (block, range) = try pool.allocate(byteCount)
    self.owner = owner
    self.byteCount = byteCount
    self.memory = memory
    self.block = block
    self.range = range
    self.pool = pool
    if pool.kind == .device { pool.device.statistics.tensorMemory(range.count) }
  }

  deinit {
    if pool.kind == .device { pool.device.statistics.tensorMemory(-range.count) }
    pool.release(block, range)
  }

  /// Offset of this storage's byte 0 within its buffer.
  var offset: Int { range.lowerBound }
  var buffer: VkBuffer { block.buffer }
  /// Host address of this storage's byte 0, when mapped.
  var mapped: UnsafeMutableRawPointer? { block.mapped.map { $0 + offset } }
}
