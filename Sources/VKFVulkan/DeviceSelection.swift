import CVulkan
import Foundation
import VKFCore

/// One Vulkan device as the CLI's `devices` command lists it.
public struct VulkanDeviceInfo: Sendable, Equatable {
  /// Position in the driver's enumeration order (what `VKF_DEVICE=<index>` selects).
  public var index: Int
  public var name: String
  /// "discrete", "integrated", "virtual", "cpu" or "other".
  public var type: String
  /// Sum of the device-local memory heaps.
  public var deviceLocalMemoryBytes: Int
  /// VK_EXT_memory_budget's budget over those heaps (nil without the extension).
  public var deviceLocalBudgetBytes: Int? = nil
  public var supportsFloat16Arithmetic: Bool
  public var supportsStorage16Bit: Bool
  public var supportsStorage8Bit: Bool
  public var subgroupSize: Int
  /// Supported subgroup operation classes ("basic", "arithmetic", "shuffle", …).
  public var subgroupOperations: [String]
  /// VK_KHR_cooperative_matrix (or the NV variant) is exposed.
  public var supportsCooperativeMatrix: Bool
  /// What f16 × f16 products run on: the chosen cooperative-matrix shape, or why none.
  public var cooperativeMatrixKernel: String = ""
  public var maxStorageBufferRange: Int
  public var driverName: String
  /// The driver's own version string (e.g. "Mesa 22.3.6"), or the raw number.
  public var driverVersion: String
  /// "major.minor.patch" of the Vulkan API the device implements.
  public var apiVersion: String
  /// True for the device `VulkanBackend()` would pick.
  public var isSelected: Bool
}

/// What the backend learns about a physical device before creating it.
struct PhysicalDeviceProbe {
  let handle: VkPhysicalDevice
  let index: Int
  let properties: VkPhysicalDeviceProperties
  let driverName: String
  let driverInfo: String
  let subgroupSize: Int
  let subgroupOperations: UInt32
  let minSubgroupSize: Int
  let maxSubgroupSize: Int
  let features: VkPhysicalDeviceFeatures
  let features11: VkPhysicalDeviceVulkan11Features
  let features12: VkPhysicalDeviceVulkan12Features
  let subgroupSizeControl: Bool
  let computeFullSubgroups: Bool
  let extensions: Set<String>
  /// The cooperative-matrix shapes offered and the one matmul_coopmat.comp would use.
  let coopmat: CooperativeMatrixSupport
  let memory: VkPhysicalDeviceMemoryProperties
  /// VK_EXT_memory_budget's budget for this process over the device-local heaps (what it may
  /// allocate there now, other processes' use taken off), when the driver has the extension.
  let deviceLocalBudget: Int?
  let computeQueueFamily: UInt32?

  var name: String { cString(properties.deviceName) }

  var typeName: String {
    switch properties.deviceType {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete"
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated"
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual"
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu"
    default: return "other"
    }
  }

  /// Lower is better: discrete > integrated > virtual > CPU > other.
  var typeRank: Int {
    ["discrete": 0, "integrated": 1, "virtual": 2, "cpu": 3][typeName] ?? 4
  }

  var apiAtLeast12: Bool { properties.apiVersion >= vkAPIVersion12 }

  var deviceLocalBytes: Int {
    var total = 0
    withUnsafeBytes(of: memory.memoryHeaps) { raw in
      let heaps = raw.bindMemory(to: VkMemoryHeap.self)
      for i in 0..<Int(memory.memoryHeapCount)
      where heaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT.rawValue != 0 {
        total += Int(heaps[i].size)
      }
    }
    return total
  }

  /// Σ heapBudget over the device-local heaps (VK_EXT_memory_budget).
  private static func deviceLocalBudget(_ handle: VkPhysicalDevice, _ mem: VkPhysicalDeviceMemoryProperties) -> Int? {
    var budget = VkPhysicalDeviceMemoryBudgetPropertiesEXT()
    budget.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT
    var props = VkPhysicalDeviceMemoryProperties2()
    props.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2
    withUnsafeMutablePointer(to: &budget) { b in
      props.pNext = UnsafeMutableRawPointer(b)
      vkGetPhysicalDeviceMemoryProperties2(handle, &props)
    }
    var total = 0
    withUnsafeBytes(of: mem.memoryHeaps) { heapsRaw in
      withUnsafeBytes(of: budget.heapBudget) { budgetRaw in
        let heaps = heapsRaw.bindMemory(to: VkMemoryHeap.self), budgets = budgetRaw.bindMemory(to: VkDeviceSize.self)
        for i in 0..<Int(mem.memoryHeapCount) where heaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT.rawValue != 0 {
          total += Int(budgets[i])
        }
      }
    }
    return total > 0 ? total : nil
  }

  var cooperativeMatrix: Bool {
    extensions.contains("VK_KHR_cooperative_matrix") || extensions.contains("VK_NV_cooperative_matrix")
  }

  var subgroupOperationNames: [String] {
    let names: [(VkSubgroupFeatureFlagBits, String)] = [
      (VK_SUBGROUP_FEATURE_BASIC_BIT, "basic"), (VK_SUBGROUP_FEATURE_VOTE_BIT, "vote"),
      (VK_SUBGROUP_FEATURE_ARITHMETIC_BIT, "arithmetic"), (VK_SUBGROUP_FEATURE_BALLOT_BIT, "ballot"),
      (VK_SUBGROUP_FEATURE_SHUFFLE_BIT, "shuffle"),
      (VK_SUBGROUP_FEATURE_SHUFFLE_RELATIVE_BIT, "shuffle_relative"),
      (VK_SUBGROUP_FEATURE_CLUSTERED_BIT, "clustered"), (VK_SUBGROUP_FEATURE_QUAD_BIT, "quad"),
    ]
    return names.filter { subgroupOperations & $0.0.rawValue != 0 }.map(\.1)
  }

  var apiVersionString: String {
    let v = properties.apiVersion
    return "\((v >> 22) & 0x7F).\((v >> 12) & 0x3FF).\(v & 0xFFF)"
  }

  func info(selected: Bool) -> VulkanDeviceInfo {
    VulkanDeviceInfo(
      index: index, name: name, type: typeName, deviceLocalMemoryBytes: deviceLocalBytes,
      deviceLocalBudgetBytes: deviceLocalBudget,
      supportsFloat16Arithmetic: features12.shaderFloat16 != 0,
      supportsStorage16Bit: features11.storageBuffer16BitAccess != 0,
      supportsStorage8Bit: features12.storageBuffer8BitAccess != 0,
      subgroupSize: subgroupSize, subgroupOperations: subgroupOperationNames,
      supportsCooperativeMatrix: cooperativeMatrix,
      cooperativeMatrixKernel: coopmat.chosen.map { "cooperative matrix \($0)" }
        ?? "no cooperative matrix: \(coopmat.note)",
      maxStorageBufferRange: Int(properties.limits.maxStorageBufferRange),
      driverName: driverName,
      driverVersion: driverInfo.isEmpty ? String(properties.driverVersion) : driverInfo,
      apiVersion: apiVersionString, isSelected: selected)
  }

  // MARK: - Probing

  init(_ handle: VkPhysicalDevice, index: Int, instance: VkInstance) {
    self.handle = handle
    self.index = index
    var props = VkPhysicalDeviceProperties()
    vkGetPhysicalDeviceProperties(handle, &props)
    properties = props
    let is12 = props.apiVersion >= vkAPIVersion12

    var exts = Set<String>()
    var n: UInt32 = 0
    if vkEnumerateDeviceExtensionProperties(handle, nil, &n, nil) == VK_SUCCESS, n > 0 {
      var list = [VkExtensionProperties](repeating: VkExtensionProperties(), count: Int(n))
      if vkEnumerateDeviceExtensionProperties(handle, nil, &n, &list) == VK_SUCCESS {
        exts = Set(list.prefix(Int(n)).map { cString($0.extensionName) })
      }
    }
    extensions = exts
    // The instance uses API 1.2, where subgroup size control is an extension even on 1.3
    // devices.
    let sizeControl = exts.contains("VK_EXT_subgroup_size_control")

    // Properties: driver (1.2) → subgroup (1.1) → subgroup size control.
    var driver = VkPhysicalDeviceDriverProperties()
    driver.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES
    var subgroup = VkPhysicalDeviceSubgroupProperties()
    subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES
    var sizeProps = VkPhysicalDeviceSubgroupSizeControlPropertiesEXT()
    sizeProps.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES_EXT
    withUnsafeMutablePointer(to: &sizeProps) { sp in
      withUnsafeMutablePointer(to: &subgroup) { sg in
        withUnsafeMutablePointer(to: &driver) { dr in
          if sizeControl { sg.pointee.pNext = UnsafeMutableRawPointer(sp) }
          dr.pointee.pNext = UnsafeMutableRawPointer(sg)
          var p2 = VkPhysicalDeviceProperties2()
          p2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2
          p2.pNext = is12 ? UnsafeMutableRawPointer(dr) : UnsafeMutableRawPointer(sg)
          vkGetPhysicalDeviceProperties2(handle, &p2)
        }
      }
    }
    driverName = is12 ? cString(driver.driverName) : ""
    driverInfo = is12 ? cString(driver.driverInfo) : ""
    subgroupSize = Int(subgroup.subgroupSize)
    subgroupOperations = subgroup.supportedOperations
    minSubgroupSize = sizeControl ? Int(sizeProps.minSubgroupSize) : Int(subgroup.subgroupSize)
    maxSubgroupSize = sizeControl ? Int(sizeProps.maxSubgroupSize) : Int(subgroup.subgroupSize)

    // Features: 1.1 → 1.2 → subgroup size control.
    var f11 = VkPhysicalDeviceVulkan11Features()
    f11.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES
    var f12 = VkPhysicalDeviceVulkan12Features()
    f12.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES
    var fsc = VkPhysicalDeviceSubgroupSizeControlFeaturesEXT()
    fsc.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT
    var f2 = VkPhysicalDeviceFeatures2()
    f2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2
    if is12 {
      withUnsafeMutablePointer(to: &fsc) { sc in
        withUnsafeMutablePointer(to: &f12) { p12 in
          withUnsafeMutablePointer(to: &f11) { p11 in
            if sizeControl { p12.pointee.pNext = UnsafeMutableRawPointer(sc) }
            p11.pointee.pNext = UnsafeMutableRawPointer(p12)
            f2.pNext = UnsafeMutableRawPointer(p11)
            vkGetPhysicalDeviceFeatures2(handle, &f2)
          }
        }
      }
      f11.pNext = nil; f12.pNext = nil
    } else {
      vkGetPhysicalDeviceFeatures(handle, &f2.features)
    }
    features = f2.features
    features11 = f11
    features12 = f12
    subgroupSizeControl = sizeControl && fsc.subgroupSizeControl != 0
    computeFullSubgroups = sizeControl && fsc.computeFullSubgroups != 0
    coopmat = CooperativeMatrixProbe.probe(
      instance: instance, physical: handle, extensions: exts, float16: f12.shaderFloat16 != 0,
      fixedSubgroup: !sizeControl || sizeProps.minSubgroupSize == sizeProps.maxSubgroupSize)

    var mem = VkPhysicalDeviceMemoryProperties()
    vkGetPhysicalDeviceMemoryProperties(handle, &mem)
    memory = mem
    deviceLocalBudget = exts.contains("VK_EXT_memory_budget") && properties.apiVersion >= vkAPIVersion12
      ? Self.deviceLocalBudget(handle, mem) : nil

    var qn: UInt32 = 0
    vkGetPhysicalDeviceQueueFamilyProperties(handle, &qn, nil)
    var families = [VkQueueFamilyProperties](repeating: VkQueueFamilyProperties(), count: Int(qn))
    vkGetPhysicalDeviceQueueFamilyProperties(handle, &qn, &families)
    // Prefer a compute queue family without graphics (async compute), else any compute one.
    let compute = families.prefix(Int(qn)).enumerated().filter {
      $0.element.queueFlags & VK_QUEUE_COMPUTE_BIT.rawValue != 0 && $0.element.queueCount > 0
    }
    let dedicated = compute.first { $0.element.queueFlags & VK_QUEUE_GRAPHICS_BIT.rawValue == 0 }
    computeQueueFamily = (dedicated ?? compute.first).map { UInt32($0.offset) }
  }
}

// MARK: - Enumeration and selection

enum DeviceSelection {
  /// Every physical device of `instance`, in enumeration order.
  static func probeAll(_ instance: VkInstance) throws -> [PhysicalDeviceProbe] {
    var n: UInt32 = 0
    try vkCheck(vkEnumeratePhysicalDevices(instance, &n, nil), "vkEnumeratePhysicalDevices")
    var handles = [VkPhysicalDevice?](repeating: nil, count: Int(n))
    try vkCheck(vkEnumeratePhysicalDevices(instance, &n, &handles), "vkEnumeratePhysicalDevices")
    return handles.prefix(Int(n)).enumerated().compactMap { i, h in
      h.map { PhysicalDeviceProbe($0, index: i, instance: instance) }
    }
  }

  /// The device to use: `VKF_DEVICE` (index or case-insensitive name substring) when set,
  /// else the best-ranked device with a compute queue.
  static func select(_ probes: [PhysicalDeviceProbe],
                     override: String? = ProcessInfo.processInfo.environment["VKF_DEVICE"])
    throws -> PhysicalDeviceProbe
  {
    let usable = probes.filter { $0.computeQueueFamily != nil }
    guard !usable.isEmpty else {
      throw VKFError.device(detail: probes.isEmpty
        ? "no Vulkan device found; check the driver installation, or use --cpu"
        : "no Vulkan device with a compute queue; use --cpu")
    }
    if let want = override?.trimmingCharacters(in: .whitespaces), !want.isEmpty {
      let match = Int(want).flatMap { i in usable.first { $0.index == i } }
        ?? usable.first { $0.name.lowercased().contains(want.lowercased()) }
      guard let match else {
        let names = usable.map { "\($0.index): \($0.name)" }.joined(separator: ", ")
        throw VKFError.device(detail: "VKF_DEVICE=\(want) matches no device (have \(names)); "
          + "fix VKF_DEVICE or use --cpu")
      }
      return match
    }
    return usable.min { ($0.typeRank, $0.index) < ($1.typeRank, $1.index) } ?? usable[0]
  }
}

extension VulkanBackend {
  /// Every Vulkan device the driver exposes, for the CLI's `devices` command.
  public static func listDevices() throws -> [VulkanDeviceInfo] {
    try withCPUHint {
      let instance = try VulkanInstance(validation: false)
      let probes = try DeviceSelection.probeAll(instance.handle)
      let selected = try DeviceSelection.select(probes)
      return probes.map { $0.info(selected: $0.index == selected.index) }
    }
  }
}

/// Runs device setup, making every device error end with the way out: "use --cpu".
func withCPUHint<T>(_ body: () throws -> T) throws -> T {
  do {
    return try body()
  } catch VKFError.device(let detail) where !detail.hasSuffix("use --cpu") {
    throw VKFError.device(detail: "\(detail); use --cpu")
  }
}

// Short names the CLI's `devices` command uses.
extension VulkanDeviceInfo {
  /// Same as `type`.
  public var typeName: String { type }
  /// Same as `deviceLocalMemoryBytes`.
  public var deviceLocalBytes: Int { deviceLocalMemoryBytes }
  /// Same as `supportsFloat16Arithmetic`.
  public var float16: Bool { supportsFloat16Arithmetic }
  /// Same as `supportsCooperativeMatrix`.
  public var cooperativeMatrix: Bool { supportsCooperativeMatrix }
  /// "driverName driverVersion", e.g. "llvmpipe Mesa 22.3.6".
  public var driver: String { driverName.isEmpty ? driverVersion : "\(driverName) \(driverVersion)" }
}
