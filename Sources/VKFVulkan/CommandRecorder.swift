import CVulkan
import VKFCore

/// Collects commands and submits them: eager ops go into the current batch list; between
/// `beginCapture` and `endCapture` they go into a recording instead. `replay` queues
/// recordings behind the eager work recorded before them; `submitAndWait` encodes the
/// queued lists and submits everything queued as one vkQueueSubmit, then waits once.
/// Everything queued work references stays alive until its fence signals.
final class CommandRecorder {
  let device: VulkanDevice
  var stats: StatisticsCounter { device.statistics }
  /// Eager command buffers, reset together after each wait.
  private let transientPool: VkCommandPool
  /// Recordings' command buffers, freed one by one when a recording goes away.
  let recordingPool: VkCommandPool
  private var eagerBuffers: [VkCommandBuffer] = []
  private let fence: VkFence
  /// The list eager commands go into now.
  private var batch: CommandList
  /// Emptied eager lists, kept for their descriptor pools and scratch.
  private var spareLists: [CommandList] = []
  /// The list of the recording being captured, if any.
  private var capturing: CommandList?
  /// Work for the next submission, in order.
  private var queued: [Queued] = []

  private enum Queued {
    case eager(CommandList)
    case recording(VulkanRecording)
  }

  init(device: VulkanDevice) throws {
    self.device = device
    transientPool = try Self.makeCommandPool(device, flags: VK_COMMAND_POOL_CREATE_TRANSIENT_BIT.rawValue)
    do {
      recordingPool = try Self.makeCommandPool(device, flags: 0)
    } catch {
      vkDestroyCommandPool(device.handle, transientPool, nil)
      throw error
    }
    var fenceInfo = VkFenceCreateInfo()
    fenceInfo.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO
    var f: VkFence?
    let fr = vkCreateFence(device.handle, &fenceInfo, nil, &f)
    guard fr == VK_SUCCESS, let f else {
      vkDestroyCommandPool(device.handle, transientPool, nil)
      vkDestroyCommandPool(device.handle, recordingPool, nil)
      throw vkError(fr, "vkCreateFence")
    }
    fence = f
    batch = CommandList(device: device)
  }

  deinit {
    vkDeviceWaitIdle(device.handle)
    queued.removeAll()
    vkDestroyFence(device.handle, fence, nil)
    vkDestroyCommandPool(device.handle, transientPool, nil)
    // Recordings still alive hold the device; their buffers go with the pool.
    vkDestroyCommandPool(device.handle, recordingPool, nil)
  }

  private static func makeCommandPool(_ device: VulkanDevice, flags: UInt32) throws -> VkCommandPool {
    var info = VkCommandPoolCreateInfo()
    info.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO
    info.flags = flags
    info.queueFamilyIndex = device.queueFamily
    var cp: VkCommandPool?
    try vkCheck(vkCreateCommandPool(device.handle, &info, nil, &cp), "vkCreateCommandPool")
    guard let cp else { throw VKFError.device(detail: "vkCreateCommandPool returned no pool") }
    return cp
  }

  /// Where the next command goes: the recording being captured, else the eager batch.
  var target: CommandList { capturing ?? batch }

  /// True while a recording is being captured.
  var isCapturing: Bool { capturing != nil }

  /// True when work not yet submitted uses `object` (a storage).
  func references(_ object: AnyObject) -> Bool {
    if batch.references(object) { return true }
    for q in queued {
      switch q {
      case .eager(let l): if l.references(object) { return true }
      case .recording(let r): if r.list.references(object) { return true }
      }
    }
    return false
  }

  /// How new commands are placed (tests switch it; see `DependencyLevels.Mode`).
  var dependencyMode = CommandList.defaultMode

  /// Appends a command to the current target, keeping `retained` alive with it.
  func record(_ command: CommandList.Command, retaining retained: [AnyObject]) {
    let list = target
    list.mode = dependencyMode
    for object in retained { list.retain(object) }
    list.append(command)
  }

  // MARK: - Recordings

  /// Sends every following command into a new recording until `endCapture`.
  func beginCapture() throws {
    guard capturing == nil else {
      throw VKFError.other("Backend.record: recordings do not nest; finish the current one first")
    }
    capturing = CommandList(device: device)
  }

  /// Drops the recording being captured (its body threw).
  func abortCapture() { capturing = nil }

  /// Encodes the captured commands into a reusable command buffer.
  func endCapture(owner: ObjectIdentifier) throws -> VulkanRecording {
    guard let list = capturing else { throw VKFError.other("Backend.record: no recording in progress") }
    capturing = nil
    let cb = try allocateCommandBuffer(from: recordingPool)
    let recording = VulkanRecording(owner: owner, recorder: self, commandBuffer: cb, list: list)
    // Simultaneous use: the same recording may appear twice in one submission.
    let counts = try encode(list, into: cb, flags: VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT.rawValue)
    recording.dispatches = counts.dispatches
    recording.barriers = counts.barriers
    return recording
  }

  /// Queues recordings behind the eager work recorded so far.
  func enqueue(_ recordings: [VulkanRecording]) throws {
    guard capturing == nil else {
      throw VKFError.other("Backend.replay inside Backend.record: replay recordings one after another instead")
    }
    if !batch.isEmpty {
      queued.append(.eager(batch))
      batch = spareLists.popLast() ?? CommandList(device: device)
    }
    queued += recordings.map { .recording($0) }
  }

  // MARK: - Submission

  /// Begins `cb`, encodes `list` (leading barrier, levels) and a final barrier that makes
  /// the writes visible to host reads of mapped memory, and ends it.
  private func encode(_ list: CommandList, into cb: VkCommandBuffer, flags: UInt32)
    throws -> (dispatches: Int, barriers: Int) {
    var begin = VkCommandBufferBeginInfo()
    begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
    begin.flags = flags
    try vkCheck(vkBeginCommandBuffer(cb, &begin), "vkBeginCommandBuffer")
    let counts = list.encode(into: cb)
    CommandList.barrier(cb, dstStage: VK_PIPELINE_STAGE_HOST_BIT.rawValue, dstAccess: VK_ACCESS_HOST_READ_BIT.rawValue)
    try vkCheck(vkEndCommandBuffer(cb), "vkEndCommandBuffer")
    return (counts.dispatches, counts.barriers + 1)
  }

  /// An eager command buffer for this submission (allocated once, reset with the pool).
  private func eagerBuffer(_ index: Int) throws -> VkCommandBuffer {
    if index < eagerBuffers.count { return eagerBuffers[index] }
    let cb = try allocateCommandBuffer(from: transientPool)
    eagerBuffers.append(cb)
    return cb
  }

  /// One primary command buffer from `pool`.
  private func allocateCommandBuffer(from pool: VkCommandPool) throws -> VkCommandBuffer {
    var alloc = VkCommandBufferAllocateInfo()
    alloc.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO
    alloc.commandPool = pool
    alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY
    alloc.commandBufferCount = 1
    var cb: VkCommandBuffer?
    try vkCheck(vkAllocateCommandBuffers(device.handle, &alloc, &cb), "vkAllocateCommandBuffers")
    guard let cb else { throw VKFError.device(detail: "vkAllocateCommandBuffers returned no buffer") }
    return cb
  }

  /// Submits everything queued (eager batches and replays, in order) as one submission and
  /// waits for it; then recycles the eager lists. Does nothing when nothing is queued.
  func submitAndWait() throws {
    guard capturing == nil else {
      throw VKFError.other("a wait (synchronize, download, upload of busy memory) inside Backend.record: "
        + "a recorded body may only queue ops")
    }
    if !batch.isEmpty {
      queued.append(.eager(batch))
      batch = spareLists.popLast() ?? CommandList(device: device)
    }
    guard !queued.isEmpty else { return }
    var completed = false
    defer { finish(waitIdle: !completed) }
    var buffers: [VkCommandBuffer?] = []
    var dispatches = 0, barriers = 0, eagerUsed = 0
    for q in queued {
      switch q {
      case .eager(let list):
        let cb = try eagerBuffer(eagerUsed)
        eagerUsed += 1
        let counts = try encode(list, into: cb, flags: VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT.rawValue)
        buffers.append(cb)
        dispatches += counts.dispatches; barriers += counts.barriers
      case .recording(let r):
        buffers.append(r.commandBuffer)
        dispatches += r.dispatches; barriers += r.barriers
      }
    }
    var submit = VkSubmitInfo()
    submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO
    submit.commandBufferCount = UInt32(buffers.count)
    try buffers.withUnsafeBufferPointer { bp in
      submit.pCommandBuffers = bp.baseAddress
      try vkCheck(vkQueueSubmit(device.queue, 1, &submit, fence), "vkQueueSubmit")
    }
    stats.update {
      $0.submits += 1
      $0.dispatches += dispatches
      $0.barriers += barriers
    }
    var f: VkFence? = fence
    stats.update { $0.hostWaits += 1 }
    try vkCheck(vkWaitForFences(device.handle, 1, &f, VkBool32(VK_TRUE), UInt64.max), "vkWaitForFences")
    completed = true
  }

  private func finish(waitIdle: Bool) {
    // After a failed submit the fence may never signal; wait for the device instead.
    if waitIdle { vkDeviceWaitIdle(device.handle) }
    var f: VkFence? = fence
    vkResetFences(device.handle, 1, &f)
    vkResetCommandPool(device.handle, transientPool, 0)
    for q in queued {
      if case .eager(let list) = q {
        list.reset()
        spareLists.append(list)
      }
    }
    queued.removeAll()
  }
}

/// Commands captured once by `Backend.record` and submitted again by each `replay`.
final class VulkanRecording: Recording {
  /// The backend that made it (replaying elsewhere throws).
  let owner: ObjectIdentifier
  let commandBuffer: VkCommandBuffer
  /// The commands' descriptor sets, scratch and kept-alive storages.
  let list: CommandList
  /// Dispatches and barriers one replay executes.
  var dispatches = 0, barriers = 0
  private let recorder: CommandRecorder

  init(owner: ObjectIdentifier, recorder: CommandRecorder, commandBuffer: VkCommandBuffer, list: CommandList) {
    self.owner = owner
    self.recorder = recorder
    self.commandBuffer = commandBuffer
    self.list = list
  }

  deinit {
    // Queued or running work holds its recordings, so none of this is in use here.
    var cb: VkCommandBuffer? = commandBuffer
    vkFreeCommandBuffers(recorder.device.handle, recorder.recordingPool, 1, &cb)
  }
}
