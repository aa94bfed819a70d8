import CVulkan
import VKFCore

/// Records the current batch: one command buffer that collects every dispatch and copy
/// until `submitAndWait` (called by `synchronize`, `download`, and `upload` when needed).
/// A full memory barrier separates consecutive commands, so ops see each other's results
/// in call order. Everything the batch references stays alive until its fence signals.
final class CommandRecorder {
  let device: VulkanDevice
  private let commandPool: VkCommandPool
  private let commandBuffer: VkCommandBuffer
  private let fence: VkFence
  private var descriptorPools: [VkDescriptorPool] = []
  /// Pools handed out in this batch; the last one is the current one.
  private var usedPools = 0
  private var setsLeftInPool = 0
  private var recording = false
  private var keepAlive: [AnyObject] = []
  private var referenced = Set<ObjectIdentifier>()

  /// Commands recorded in the current batch.
  private(set) var commandCount = 0
  /// Batches submitted so far (tests check that dispatches are batched).
  private(set) var submitCount = 0

  /// Sets per descriptor pool; a pool holds 8 storage buffers per set (the most a
  /// dispatch binds), so sets run out first and a new pool is added then.
  static let setsPerPool = 512

  init(device: VulkanDevice) throws {
    self.device = device
    let dev = device.handle
    var poolInfo = VkCommandPoolCreateInfo()
    poolInfo.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO
    poolInfo.flags = VK_COMMAND_POOL_CREATE_TRANSIENT_BIT.rawValue
    poolInfo.queueFamilyIndex = device.queueFamily
    var cp: VkCommandPool?
    try vkCheck(vkCreateCommandPool(dev, &poolInfo, nil, &cp), "vkCreateCommandPool")
    guard let cp else { throw VKFError.device(detail: "vkCreateCommandPool returned no pool") }
    var alloc = VkCommandBufferAllocateInfo()
    alloc.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO
    alloc.commandPool = cp
    alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY
    alloc.commandBufferCount = 1
    var cb: VkCommandBuffer?
    let r = vkAllocateCommandBuffers(dev, &alloc, &cb)
    guard r == VK_SUCCESS, let cb else {
      vkDestroyCommandPool(dev, cp, nil)
      throw vkError(r, "vkAllocateCommandBuffers")
    }
    var fenceInfo = VkFenceCreateInfo()
    fenceInfo.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO
    var f: VkFence?
    let fr = vkCreateFence(dev, &fenceInfo, nil, &f)
    guard fr == VK_SUCCESS, let f else {
      vkDestroyCommandPool(dev, cp, nil)
      throw vkError(fr, "vkCreateFence")
    }
    commandPool = cp
    commandBuffer = cb
    fence = f
  }

  deinit {
    if recording { vkEndCommandBuffer(commandBuffer) }
    vkDeviceWaitIdle(device.handle)
    for p in descriptorPools { vkDestroyDescriptorPool(device.handle, p, nil) }
    vkDestroyFence(device.handle, fence, nil)
    vkDestroyCommandPool(device.handle, commandPool, nil)
  }

  /// True when the batch holds commands not yet submitted.
  var hasPendingWork: Bool { commandCount > 0 }

  /// True when the pending batch references `object` (a storage).
  func references(_ object: AnyObject) -> Bool { referenced.contains(ObjectIdentifier(object)) }

  /// Keeps `object` alive until the batch completes.
  func retain(_ object: AnyObject) {
    if referenced.insert(ObjectIdentifier(object)).inserted { keepAlive.append(object) }
  }

  /// Records one command after a barrier that orders it after everything recorded before.
  func record(_ body: (VkCommandBuffer) throws -> Void) throws {
    if !recording {
      var begin = VkCommandBufferBeginInfo()
      begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
      begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT.rawValue
      try vkCheck(vkBeginCommandBuffer(commandBuffer, &begin), "vkBeginCommandBuffer")
      recording = true
    }
    if commandCount > 0 { barrier(dstStage: Self.workStages, dstAccess: Self.workAccess) }
    try body(commandBuffer)
    commandCount += 1
  }

  private static let workStages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT.rawValue
    | VK_PIPELINE_STAGE_TRANSFER_BIT.rawValue
  private static let workAccess = VK_ACCESS_SHADER_READ_BIT.rawValue | VK_ACCESS_SHADER_WRITE_BIT.rawValue
    | VK_ACCESS_TRANSFER_READ_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue

  /// Compute/transfer writes → `dstAccess` in `dstStage`.
  private func barrier(dstStage: UInt32, dstAccess: UInt32) {
    var mb = VkMemoryBarrier()
    mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue
    mb.dstAccessMask = dstAccess
    vkCmdPipelineBarrier(commandBuffer, Self.workStages, dstStage, 0, 1, &mb, 0, nil, 0, nil)
  }

  /// A descriptor set of `layout` valid until the batch completes.
  func allocateSet(_ layout: VkDescriptorSetLayout) throws -> VkDescriptorSet {
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

  /// Submits the batch and waits for it; then resets pools and releases what it kept alive.
  /// Does nothing when the batch is empty.
  func submitAndWait() throws {
    guard recording else { return }
    // Make the batch's writes visible to host reads of mapped memory.
    barrier(dstStage: VK_PIPELINE_STAGE_HOST_BIT.rawValue, dstAccess: VK_ACCESS_HOST_READ_BIT.rawValue)
    recording = false
    var completed = false
    defer { reset(waitIdle: !completed) }
    try vkCheck(vkEndCommandBuffer(commandBuffer), "vkEndCommandBuffer")
    var cb: VkCommandBuffer? = commandBuffer
    var submit = VkSubmitInfo()
    submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO
    submit.commandBufferCount = 1
    try withUnsafePointer(to: &cb) { cbp in
      submit.pCommandBuffers = cbp
      try vkCheck(vkQueueSubmit(device.queue, 1, &submit, fence), "vkQueueSubmit")
    }
    submitCount += 1
    var f: VkFence? = fence
    try vkCheck(vkWaitForFences(device.handle, 1, &f, VkBool32(VK_TRUE), UInt64.max), "vkWaitForFences")
    completed = true
  }

  private func reset(waitIdle: Bool) {
    // After a failed submit the fence may never signal; wait for the device instead.
    if waitIdle { vkDeviceWaitIdle(device.handle) }
    var f: VkFence? = fence
    vkResetFences(device.handle, 1, &f)
    vkResetCommandPool(device.handle, commandPool, 0)
    for p in descriptorPools.prefix(usedPools) { vkResetDescriptorPool(device.handle, p, 0) }
    usedPools = 0
    setsLeftInPool = 0
    commandCount = 0
    referenced.removeAll(keepingCapacity: true)
    keepAlive.removeAll(keepingCapacity: true)
  }
}
