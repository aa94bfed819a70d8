import CVulkan
import Foundation
import VKFCore

/// Commands waiting to be encoded into a command buffer, with everything they need alive:
/// the eager batch between two waits, or the body of a recording. Commands are encoded
/// grouped by `DependencyLevels`, with one memory barrier between levels.
final class CommandList {
  /// One recorded command (a dispatch, copy or fill) and the memory it touches.
  struct Command {
    let accesses: [BufferAccess]
    let isDispatch: Bool
    let encode: (VkCommandBuffer) -> Void
  }

  let device: VulkanDevice
  private(set) var commands: [Command] = []
  private var levels = DependencyLevels()
  private var levelOf: [Int] = []
  private var keepAlive: [AnyObject] = []
  private var referenced = Set<ObjectIdentifier>()
  /// Descriptor pools this list allocated its sets from (reset or destroyed with it).
  private var descriptorPools: [VkDescriptorPool] = []
  /// Pools handed out since the last reset; the last one is the current one.
  private var usedPools = 0
  private var setsLeftInPool = 0
  /// Scratch handed out to this list's commands (see `scratch`).
  private var scratchChunks: [Tensor] = []
  private var scratchUsed = 0

  /// Sets per descriptor pool; a pool holds 8 storage buffers per set (the most a dispatch
  /// binds), so sets run out first and a new pool is added then.
  static let setsPerPool = 512

  init(device: VulkanDevice) { self.device = device }

  deinit {
    for p in descriptorPools { vkDestroyDescriptorPool(device.handle, p, nil) }
  }

  var isEmpty: Bool { commands.isEmpty }
  var dispatchCount: Int { commands.reduce(0) { $0 + ($1.isDispatch ? 1 : 0) } }

  /// True when a command of this list uses `object` (a storage).
  func references(_ object: AnyObject) -> Bool { referenced.contains(ObjectIdentifier(object)) }

  /// Keeps `object` alive as long as the list (until its work completes or the recording goes).
  func retain(_ object: AnyObject) {
    if referenced.insert(ObjectIdentifier(object)).inserted { keepAlive.append(object) }
  }

  /// `VKF_FULL_BARRIERS=1`: a barrier before every command (the engine before dependency
  /// tracking; for measuring it, and for ruling the tracker out when results look wrong).
  static let defaultMode: DependencyLevels.Mode =
    ProcessInfo.processInfo.environment["VKF_FULL_BARRIERS"] == "1" ? .serial : .tracked

  /// How commands are placed in levels (tests switch it).
  var mode = CommandList.defaultMode

  /// Appends a command; its level follows from its accesses.
  func append(_ command: Command) {
    levelOf.append(levels.place(command.accesses, mode: mode))
    commands.append(command)
  }

  /// A descriptor set of `layout` that lives as long as the list; counted in `stats`.
  func allocateSet(_ layout: VkDescriptorSetLayout, stats: StatisticsCounter) throws -> VkDescriptorSet {
    if setsLeftInPool == 0 {
      if usedPools == descriptorPools.count { try addDescriptorPool() }
      usedPools += 1
      setsLeftInPool = Self.setsPerPool
    }
    var layouts: [VkDescriptorSetLayout?] = [layout]
    var set: VkDescriptorSet?
    let r = layouts.withUnsafeMutableBufferPointer { lp in
      var info = VkDescriptorSetAllocateInfo()
      info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO
      info.descriptorPool = descriptorPools[usedPools - 1]
      info.descriptorSetCount = 1
      info.pSetLayouts = UnsafePointer(lp.baseAddress)
      return vkAllocateDescriptorSets(device.handle, &info, &set)
    }
    try vkCheck(r, "vkAllocateDescriptorSets")
    guard let set else { throw VKFError.device(detail: "vkAllocateDescriptorSets returned no set") }
    setsLeftInPool -= 1
    stats.update { $0.descriptorSetAllocations += 1 }
    return set
  }

  private func addDescriptorPool() throws {
    var size = VkDescriptorPoolSize(type: VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                    descriptorCount: UInt32(Self.setsPerPool * 8))
    var info = VkDescriptorPoolCreateInfo()
    info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO
    info.maxSets = UInt32(Self.setsPerPool)
    info.poolSizeCount = 1
    var pool: VkDescriptorPool?
    try withUnsafePointer(to: &size) { sp in
      info.pPoolSizes = sp
      try vkCheck(vkCreateDescriptorPool(device.handle, &info, nil, &pool), "vkCreateDescriptorPool")
    }
    guard let pool else { throw VKFError.device(detail: "vkCreateDescriptorPool returned no pool") }
    descriptorPools.append(pool)
  }

  /// Empties the list after its work completed, keeping its descriptor pools and its largest
  /// scratch chunk for the next batch (an eager batch list is reused; a recording never is).
  func reset() {
    for p in descriptorPools.prefix(usedPools) { vkResetDescriptorPool(device.handle, p, 0) }
    usedPools = 0
    setsLeftInPool = 0
    commands.removeAll(keepingCapacity: true)
    levelOf.removeAll(keepingCapacity: true)
    levels = DependencyLevels()
    keepAlive.removeAll(keepingCapacity: true)
    referenced.removeAll(keepingCapacity: true)
    if let largest = scratchChunks.last { scratchChunks = [largest] }
    scratchUsed = 0
  }

  /// `count` f32 elements of scratch no other command of this list uses, so reductions that
  /// need partial sums never create false dependencies between unrelated commands.
  /// `allocate` makes a new chunk (≥ 64 Ki elements, doubling) when the current one is full.
  func scratch(count: Int, allocate: (Int) throws -> Tensor) throws -> Tensor {
    let need = (count + 63) / 64 * 64  // keeps every view 256-byte aligned
    if let last = scratchChunks.last, scratchUsed + need <= last.count {
      defer { scratchUsed += need }
      return try last.view(offset: scratchUsed, shape: [count])
    }
    let size = max(need, 2 * (scratchChunks.last?.count ?? 0), 1 << 16)
    let chunk = try allocate(size)
    scratchChunks.append(chunk)
    scratchUsed = need
    return try chunk.view(shape: [count])
  }

  /// Records the commands into `cb` (already begun): a leading barrier orders them after
  /// earlier work on the queue, then level by level with a barrier between levels. Returns
  /// the dispatches and barriers encoded.
  func encode(into cb: VkCommandBuffer) -> (dispatches: Int, barriers: Int) {
    guard !commands.isEmpty else { return (0, 0) }
    var byLevel = [[Int]](repeating: [], count: levels.levelCount)
    for (i, l) in levelOf.enumerated() { byLevel[l].append(i) }
    var barriers = 0
    for level in byLevel where !level.isEmpty {
      Self.barrier(cb, dstStage: Self.workStages, dstAccess: Self.workAccess)
      barriers += 1
      for i in level { commands[i].encode(cb) }
    }
    return (dispatchCount, barriers)
  }

  static let workStages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT.rawValue
    | VK_PIPELINE_STAGE_TRANSFER_BIT.rawValue
  static let workAccess = VK_ACCESS_SHADER_READ_BIT.rawValue | VK_ACCESS_SHADER_WRITE_BIT.rawValue
    | VK_ACCESS_TRANSFER_READ_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue

  /// Compute/transfer work (and host writes) → `dstAccess` in `dstStage`.
  static func barrier(_ cb: VkCommandBuffer, dstStage: UInt32, dstAccess: UInt32) {
    var mb = VkMemoryBarrier()
    mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue
    mb.dstAccessMask = dstAccess
    vkCmdPipelineBarrier(cb, workStages, dstStage, 0, 1, &mb, 0, nil, 0, nil)
  }
}
