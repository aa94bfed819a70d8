import CVulkan
import VKFCore

/// The logical device, its compute queue and what it offers. Everything created on the
/// device holds a strong reference to this object, so the device outlives its buffers.
final class VulkanDevice {
  let instance: VulkanInstance
  let probe: PhysicalDeviceProbe
  let handle: VkDevice
  let queue: VkQueue
  let queueFamily: UInt32
  let capabilities: VulkanCapabilities
  /// What the backend on this device has paid so far (`Backend.statistics`).
  let statistics = StatisticsCounter()

  var physical: VkPhysicalDevice { probe.handle }
  var limits: VkPhysicalDeviceLimits { probe.properties.limits }

  /// Creates the device with every optional feature kernels may use that it has.
  init(instance: VulkanInstance, probe: PhysicalDeviceProbe) throws {
    guard let family = probe.computeQueueFamily else {
      throw VKFError.device(detail: "\(probe.name) has no compute queue; use --cpu")
    }
    guard probe.apiAtLeast12 else {
      throw VKFError.device(detail: "\(probe.name) implements Vulkan \(probe.apiVersionString); "
        + "Vulkan 1.2 is required; update the driver or use --cpu")
    }
    self.instance = instance
    self.probe = probe
    queueFamily = family

    // Enable exactly the optional features present (all off otherwise).
    var features = VkPhysicalDeviceFeatures()
    features.shaderInt16 = probe.features.shaderInt16
    features.shaderInt64 = probe.features.shaderInt64
    var f11 = VkPhysicalDeviceVulkan11Features()
    f11.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES
    f11.storageBuffer16BitAccess = probe.features11.storageBuffer16BitAccess
    f11.uniformAndStorageBuffer16BitAccess = probe.features11.uniformAndStorageBuffer16BitAccess
    var f12 = VkPhysicalDeviceVulkan12Features()
    f12.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES
    f12.shaderFloat16 = probe.features12.shaderFloat16
    f12.shaderInt8 = probe.features12.shaderInt8
    f12.storageBuffer8BitAccess = probe.features12.storageBuffer8BitAccess
    f12.uniformAndStorageBuffer8BitAccess = probe.features12.uniformAndStorageBuffer8BitAccess
    var fsc = VkPhysicalDeviceSubgroupSizeControlFeaturesEXT()
    fsc.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT
    fsc.subgroupSizeControl = probe.subgroupSizeControl ? 1 : 0
    fsc.computeFullSubgroups = probe.computeFullSubgroups ? 1 : 0
    // The instance asks for Vulkan 1.2, so even on a 1.3 device subgroup size control
    // comes from its extension (probe only reports it when the extension is listed).
    var extensions: [String] = []
    if probe.subgroupSizeControl { extensions.append("VK_EXT_subgroup_size_control") }
    // The cooperative-matrix flavour matmul_coopmat.comp was compiled for, when one was chosen.
    let coopmat = probe.coopmat.chosen?.flavour
    if let coopmat, coopmat != .emulated { extensions.append(coopmat.rawValue) }
    var fnv = VkPhysicalDeviceCooperativeMatrixFeaturesNV()
    fnv.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV
    fnv.cooperativeMatrix = 1
    var fkhr = VkfPhysicalDeviceCooperativeMatrixFeaturesKHR()
    fkhr.sType = VkStructureType(rawValue: UInt32(VKF_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR))
    fkhr.cooperativeMatrix = 1

    // The feature structs, copied to the heap for the call and linked in order:
    // 1.1 → 1.2 → [subgroup size control] → [cooperative matrix].
    func heap<T>(_ value: T) -> UnsafeMutableRawPointer {
      let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
      p.initialize(to: value)
      return UnsafeMutableRawPointer(p)
    }
    var chain = [heap(f11), heap(f12)]
    if probe.subgroupSizeControl { chain.append(heap(fsc)) }
    switch coopmat {
    case .khr?: chain.append(heap(fkhr))
    case .nv?: chain.append(heap(fnv))
    case .emulated?, nil: break
    }
    defer { chain.forEach { $0.deallocate() } }
    for (a, b) in zip(chain, chain.dropFirst()) {
      a.assumingMemoryBound(to: VkBaseOutStructure.self).pointee.pNext = b.assumingMemoryBound(to: VkBaseOutStructure.self)
    }

    var device: VkDevice?
    var priority: Float = 1
    let result: VkResult = withUnsafePointer(to: &features) { pf in
      withUnsafePointer(to: &priority) { prio in
        withCStrings(extensions) { extPtrs in
          var q = VkDeviceQueueCreateInfo()
          q.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO
          q.queueFamilyIndex = family
          q.queueCount = 1
          q.pQueuePriorities = prio
          return withUnsafePointer(to: &q) { qp in
            var info = VkDeviceCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO
            info.pNext = UnsafeRawPointer(chain[0])
            info.queueCreateInfoCount = 1
            info.pQueueCreateInfos = qp
            info.pEnabledFeatures = pf
            info.enabledExtensionCount = UInt32(extensions.count)
            info.ppEnabledExtensionNames = extPtrs
            return vkCreateDevice(probe.handle, &info, nil, &device)
          }
        }
      }
    }
    try vkCheck(result, "vkCreateDevice(\(probe.name))")
    guard let device else { throw VKFError.device(detail: "vkCreateDevice returned no device") }
    handle = device
    var q: VkQueue?
    vkGetDeviceQueue(device, family, 0, &q)
    guard let q else {
      vkDestroyDevice(device, nil)
      throw VKFError.device(detail: "vkGetDeviceQueue returned no queue")
    }
    queue = q
    capabilities = VulkanCapabilities(probe: probe)
  }

  deinit {
    vkDeviceWaitIdle(handle)
    vkDestroyDevice(handle, nil)
  }

  /// A memory type allowed by `typeBits` with all `required` flags, preferring `preferred`.
  func memoryType(typeBits: UInt32, required: UInt32, preferred: UInt32 = 0) -> (index: UInt32, flags: UInt32)? {
    var fallback: (UInt32, UInt32)?
    let mem = probe.memory
    return withUnsafeBytes(of: mem.memoryTypes) { raw -> (UInt32, UInt32)? in
      let types = raw.bindMemory(to: VkMemoryType.self)
      for i in 0..<Int(mem.memoryTypeCount) where typeBits & (1 << UInt32(i)) != 0 {
        let flags = types[i].propertyFlags
        guard flags & required == required else { continue }
        if flags & preferred == preferred { return (UInt32(i), flags) }
        if fallback == nil { fallback = (UInt32(i), flags) }
      }
      return fallback
    }
  }
}

extension VulkanCapabilities {
  init(probe p: PhysicalDeviceProbe) {
    self.init()
    let l = p.properties.limits
    deviceName = p.name
    deviceType = p.typeName
    driverName = p.driverName
    subgroupSize = p.subgroupSize
    minSubgroupSize = p.minSubgroupSize
    maxSubgroupSize = p.maxSubgroupSize
    subgroupOperations = p.subgroupOperationNames
    supportsSubgroupSizeControl = p.subgroupSizeControl
    supportsFloat16Arithmetic = p.features12.shaderFloat16 != 0
    supportsStorage16Bit = p.features11.storageBuffer16BitAccess != 0
    supportsStorage8Bit = p.features12.storageBuffer8BitAccess != 0
    supportsInt8Arithmetic = p.features12.shaderInt8 != 0
    supportsInt16Arithmetic = p.features.shaderInt16 != 0
    supportsCooperativeMatrix = p.cooperativeMatrix
    cooperativeMatrix = p.coopmat
    maxStorageBufferRange = Int(l.maxStorageBufferRange)
    minStorageBufferOffsetAlignment = Int(l.minStorageBufferOffsetAlignment)
    maxWorkgroupCount = (Int(l.maxComputeWorkGroupCount.0), Int(l.maxComputeWorkGroupCount.1),
                         Int(l.maxComputeWorkGroupCount.2))
    maxWorkgroupSize = (Int(l.maxComputeWorkGroupSize.0), Int(l.maxComputeWorkGroupSize.1),
                        Int(l.maxComputeWorkGroupSize.2))
    maxWorkgroupInvocations = Int(l.maxComputeWorkGroupInvocations)
    maxSharedMemoryBytes = Int(l.maxComputeSharedMemorySize)
    maxPushConstantsSize = Int(l.maxPushConstantsSize)
    deviceLocalMemoryBytes = p.deviceLocalBytes
    deviceLocalBudgetBytes = p.deviceLocalBudget
  }
}
