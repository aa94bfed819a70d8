import CVulkan
import Foundation
import VKFCore

/// Vulkan compute backend: one device, a buffer pool, cached pipelines, and one command
/// buffer of recorded dispatches per batch (submitted at `synchronize`/`download`, and at
/// `upload` into memory the batch uses).
///
/// Environment: `VKF_DEVICE` (index or name substring) picks the device, `VKF_VALIDATION=1`
/// enables the validation layer and collects its messages, `VKF_SHADER_CACHE` sets the
/// SPIR-V cache directory (`off` disables it), `VKF_SHADER_DIR` reads shaders from disk.
public final class VulkanBackend: Backend {
  public let name: String
  let device: VulkanDevice
  let devicePool: BufferPool
  let hostPool: BufferPool
  let pipelines: PipelineCache
  let recorder: CommandRecorder
  /// Copies through copy.comp instead of vkCmdCopyBuffer (tests exercise the shader path).
  var copyWithShader = false
  /// Fills through fill.comp even for whole-word ranges (tests exercise the shader path).
  var fillWithShader = false
  /// Uploads and downloads through staging buffers even when memory is mapped, as on
  /// discrete GPUs (tests exercise that path on lavapipe, where everything is mapped).
  var stagingTransfers = false
  /// Row reductions use subgroup arithmetic (common/reduce.glsl's USE_SUBGROUP) when the
  /// device has it and `VKF_DISABLE_SUBGROUPS` is not 1; tests switch it off to cover the
  /// shared-memory path too.
  var useSubgroupReductions = false

  public init() throws {
    device = try withCPUHint {
      let instance = try VulkanInstance()
      let probes = try DeviceSelection.probeAll(instance.handle)
      return try VulkanDevice(instance: instance, probe: try DeviceSelection.select(probes))
    }
    let probe = device.probe
    devicePool = BufferPool(device: device, kind: .device)
    hostPool = BufferPool(device: device, kind: .hostVisible)
    pipelines = PipelineCache(device: device,
                              spirvCache: SPIRVCache(directory: SPIRVCache.defaultDirectory()))
    recorder = try CommandRecorder(device: device)
    useSubgroupReductions = device.capabilities.subgroupOperations.contains("arithmetic")
      && ProcessInfo.processInfo.environment["VKF_DISABLE_SUBGROUPS"] != "1"
    let kind = ["discrete": "discrete GPU", "integrated": "integrated GPU",
                "virtual": "virtual GPU", "cpu": "CPU"][probe.typeName] ?? "other"
    name = "vulkan (\(probe.name), \(kind))"
  }

  deinit {
    // Nothing may still run when the pools and pipelines go away.
    recorder.abortCapture()
    try? recorder.submitAndWait()
  }

  public func supports(_ op: Op, _ dtype: DType) -> Bool { VulkanSupport.supports(op, dtype) }

  /// Device limits and features kernels choose variants by.
  var capabilities: VulkanCapabilities {
    guard let limit = bindingLimitForTesting else { return device.capabilities }
    var c = device.capabilities
    c.maxStorageBufferRange = min(c.maxStorageBufferRange, limit)
    return c
  }

  /// Tests lower the binding limit (as a device with a small maxStorageBufferRange would
  /// have) so the ops that split oversized tensors run on small inputs; nil in production.
  var bindingLimitForTesting: Int?

  /// Warnings and errors from the validation layer (`VKF_VALIDATION=1`) since the last clear.
  public var validationMessages: [String] { device.instance.log.all }

  /// Forgets collected validation messages.
  public func clearValidationMessages() { device.instance.log.clear() }

  /// True when the validation layer is active.
  public var validationEnabled: Bool { device.instance.validationEnabled }

  /// The selected device's description as `listDevices` reports it.
  public var deviceInfo: VulkanDeviceInfo { device.probe.info(selected: true) }

  // MARK: - Kernel contract

  /// Records one compute dispatch into the current batch; a full compute→compute memory
  /// barrier separates it from the previous dispatch.
  /// - shader: file name in Shaders/ without `.comp` (e.g. "matmul").
  /// - defines: `#define NAME VALUE` lines inserted after `#version` (a pipeline variant).
  /// - specialization: constant IDs 0, 1, 2 are the workgroup size; 3… are kernel tunables.
  /// - bindings: tensor i → set 0 binding i; its word offset goes into push `boff[i]`.
  /// - push: the kernel's own push-constant struct (32-bit fields only, ≤ 96 bytes); it is
  ///   copied after the 8 binding offsets.
  /// - groups: workgroup counts (x, y, z).
  func dispatch<P>(_ shader: String, defines: [String: String] = [:],
                   specialization: [UInt32], bindings: [Tensor], push: P,
                   groups: (x: Int, y: Int, z: Int)) throws {
    let ranges = try bindings.map { t in
      try bufferBinding(try vulkanStorage(t, op: shader), byteOffset: t.byteOffset,
                        byteCount: t.byteCount, op: shader, what: "\(t)")
    }
    try dispatch(shader, defines: defines, specialization: specialization, ranges: ranges,
                 push: push, groups: groups)
  }

  /// `count` f32 elements of device scratch that no other command of the current batch (or
  /// recording) uses, valid while that work runs (kernels keep partial reductions there).
  func scratch(count: Int) throws -> Tensor {
    guard count >= 0 else {
      throw VKFError.outOfRange(op: "scratch", detail: "count \(count) < 0")
    }
    return try recorder.target.scratch(count: count) { try allocate([$0], .f32, memory: .device) }
  }

  // MARK: - Synchronisation

  /// Submits the recorded batch and waits for it.
  public func synchronize() throws { try recorder.submitAndWait() }

  /// Submits the queued work (one vkQueueSubmit) without waiting.
  public func flush() throws { try recorder.submit() }

  // MARK: - Recorded work

  /// Captures `body`'s ops into one reusable command buffer (body runs now, once).
  public func record(_ body: @escaping () throws -> Void) throws -> Recording {
    try recorder.beginCapture()
    do { try body() } catch {
      recorder.abortCapture()
      throw error
    }
    return try recorder.endCapture(owner: ObjectIdentifier(self))
  }

  public func replay(_ recordings: [Recording]) throws {
    let own = try recordings.map { r -> VulkanRecording in
      guard let v = r as? VulkanRecording, v.owner == ObjectIdentifier(self) else {
        throw VKFError.wrongBackend(op: "replay", detail: "a recording made by another backend")
      }
      return v
    }
    try recorder.enqueue(own)
  }

  // MARK: - Costs

  public var statistics: ExecutionStatistics { device.statistics.snapshot }
  /// VK_EXT_memory_budget's budget when the driver has it (other processes' use taken off),
  /// else the device-local heaps' size.
  /// A replay submits the recorded command buffer: no descriptor set, barrier or command
  /// is made again.
  public var recordingSavesWork: Bool { true }

  public var memoryCapacity: Int? {
    let c = device.capabilities
    return StatisticsCounter.capacity(c.deviceLocalBudgetBytes ?? (c.deviceLocalMemoryBytes > 0 ? c.deviceLocalMemoryBytes : nil))
  }
  public func resetMemoryPeak() { device.statistics.resetPeak() }
}
