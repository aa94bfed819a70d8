import CVulkan
import VKFCore

/// Collects commands and submits them: eager ops go into the current batch list; between
/// `beginCapture` and `endCapture` they go into a recording instead. `replay` queues
/// recordings behind the eager work recorded before them; `submit` encodes the queued lists
/// and submits everything queued as one vkQueueSubmit without waiting, so the host can
/// prepare the next submission while this one runs; `wait(for:)` waits only for the
/// submissions that use a storage, `submitAndWait` for everything. Everything submitted work
/// references stays alive until its fence signals.
final class CommandRecorder {
  let device: VulkanDevice
  var stats: StatisticsCounter { device.statistics }
  /// Eager command buffers (each reset when it is begun again).
  private let transientPool: VkCommandPool
  /// Recordings' command buffers, freed one by one when a recording goes away.
  let recordingPool: VkCommandPool
  /// Eager command buffers no submission uses.
  private var freeEagerBuffers: [VkCommandBuffer] = []
  /// Unsignalled fences no submission uses.
  private var freeFences: [VkFence] = []
  /// Submitted work not yet known complete, oldest first.
  private var inFlight: [Submission] = []

  /// One vkQueueSubmit: its fence, what it ran (kept alive) and its eager command buffers.
  private struct Submission {
    let fence: VkFence
    let items: [Queued]
    let eagerBuffers: [VkCommandBuffer]

    func references(_ object: AnyObject) -> Bool {
      items.contains { $0.references(object) }
    }
  }
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

    func references(_ object: AnyObject) -> Bool {
      switch self {
      case .eager(let l): return l.references(object)
      case .recording(let r): return r.list.references(object)
      }
    }
  }

  init(device: VulkanDevice) throws {
    self.device = device
    transientPool = try Self.makeCommandPool(device, flags: VK_COMMAND_POOL_CREATE_TRANSIENT_BIT.rawValue
                                               | VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT.rawValue)
    do {
      recordingPool = try Self.makeCommandPool(device, flags: 0)
    } catch {
      vkDestroyCommandPool(device.handle, transientPool, nil)
      throw error
    }
    batch = CommandList(device: device)
  }

  deinit {
    vkDeviceWaitIdle(device.handle)
    queued.removeAll()
    for f in freeFences + inFlight.map(\.fence) { vkDestroyFence(device.handle, f, nil) }
    inFlight.removeAll()
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

  /// True when work not yet known complete (queued or submitted) uses `object` (a storage).
  func references(_ object: AnyObject) -> Bool {
    referencesUnsubmitted(object) || inFlight.contains { $0.references(object) }
  }

  private func referencesUnsubmitted(_ object: AnyObject) -> Bool {
    batch.references(object) || queued.contains { $0.references(object) }
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

  /// An eager command buffer no submission uses.
  private func eagerBuffer() throws -> VkCommandBuffer {
    if let cb = freeEagerBuffers.popLast() { return cb }
    return try allocateCommandBuffer(from: transientPool)
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

  /// An unsignalled fence no submission uses.
  private func takeFence() throws -> VkFence {
    if let f = freeFences.popLast() { return f }
    var info = VkFenceCreateInfo()
    info.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO
    var f: VkFence?
    try vkCheck(vkCreateFence(device.handle, &info, nil, &f), "vkCreateFence")
    guard let f else { throw VKFError.device(detail: "vkCreateFence returned no fence") }
    return f
  }

  /// Submits everything queued (eager batches and replays, in order) as one submission,
  /// without waiting. Does nothing when nothing is queued.
  func submit() throws {
    guard capturing == nil else {
      throw VKFError.other("a wait (synchronize, download, upload of busy memory) inside Backend.record: "
        + "a recorded body may only queue ops")
    }
    if !batch.isEmpty {
      queued.append(.eager(batch))
      batch = spareLists.popLast() ?? CommandList(device: device)
    }
    guard !queued.isEmpty else { return }
    let items = queued
    queued.removeAll()
    var buffers: [VkCommandBuffer?] = [], eagerUsed: [VkCommandBuffer] = []
    var dispatches = 0, barriers = 0
    do {
      for q in items {
        switch q {
        case .eager(let list):
          let cb = try eagerBuffer()
          eagerUsed.append(cb)
          let counts = try encode(list, into: cb, flags: VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT.rawValue)
          buffers.append(cb)
          dispatches += counts.dispatches; barriers += counts.barriers
        case .recording(let r):
          buffers.append(r.commandBuffer)
          dispatches += r.dispatches; barriers += r.barriers
        }
      }
      let fence = try takeFence()
      var submit = VkSubmitInfo()
      submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO
      submit.commandBufferCount = UInt32(buffers.count)
      let result = buffers.withUnsafeBufferPointer { bp in
        submit.pCommandBuffers = bp.baseAddress
        return vkQueueSubmit(device.queue, 1, &submit, fence)
      }
      guard result == VK_SUCCESS else {
        freeFences.append(fence)
        throw vkError(result, "vkQueueSubmit")
      }
      inFlight.append(Submission(fence: fence, items: items, eagerBuffers: eagerUsed))
    } catch {
      // Nothing of this submission runs; make sure nothing earlier does either, then recycle.
      vkDeviceWaitIdle(device.handle)
      recycle(items, eagerUsed)
      throw error
    }
    stats.update {
      $0.submits += 1
      $0.dispatches += dispatches
      $0.barriers += barriers
    }
  }

  /// Submits what is queued and waits for every submission.
  func submitAndWait() throws {
    try submit()
    if !inFlight.isEmpty { try wait(through: inFlight.count - 1) }
  }

  /// Waits until no work uses `object`: submits queued work that does, then waits for the
  /// last submission that does (and so every earlier one). No wait when none uses it.
  func wait(for object: AnyObject) throws {
    if referencesUnsubmitted(object) { try submit() }
    if let i = inFlight.lastIndex(where: { $0.references(object) }) { try wait(through: i) }
  }

  /// Waits for submission `index` (a queue completes in order, so for all before it too) and
  /// retires them.
  private func wait(through index: Int) throws {
    var f: VkFence? = inFlight[index].fence
    stats.update { $0.hostWaits += 1 }
    let r = vkWaitForFences(device.handle, 1, &f, VkBool32(VK_TRUE), UInt64.max)
    if r != VK_SUCCESS { vkDeviceWaitIdle(device.handle) }
    let done = inFlight[0...index]
    inFlight.removeFirst(index + 1)
    for s in done {
      var fence: VkFence? = s.fence
      vkResetFences(device.handle, 1, &fence)
      freeFences.append(s.fence)
      recycle(s.items, s.eagerBuffers)
    }
    try vkCheck(r, "vkWaitForFences")
  }

  /// Returns finished work's eager lists and command buffers for reuse.
  private func recycle(_ items: [Queued], _ eagerBuffers: [VkCommandBuffer]) {
    freeEagerBuffers += eagerBuffers
    for q in items {
      if case .eager(let list) = q {
        list.reset()
        spareLists.append(list)
      }
    }
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
