/// What the selected device offers; kernels choose variants (defines, tile sizes) by it.
public struct VulkanCapabilities: Sendable {
  /// Default subgroup size of compute shaders.
  public var subgroupSize: Int = 32
  /// With subgroup size control, the range a pipeline may request.
  public var minSubgroupSize: Int = 32
  public var maxSubgroupSize: Int = 32
  /// Supported subgroup operation classes ("basic", "arithmetic", "shuffle", …).
  public var subgroupOperations: [String] = []
  /// VK_EXT_subgroup_size_control (or 1.3) feature `subgroupSizeControl`, enabled.
  public var supportsSubgroupSizeControl = false
  /// shaderFloat16, enabled when true.
  public var supportsFloat16Arithmetic = false
  /// storageBuffer16BitAccess, enabled when true.
  public var supportsStorage16Bit = false
  /// storageBuffer8BitAccess, enabled when true.
  public var supportsStorage8Bit = false
  /// shaderInt8, enabled when true.
  public var supportsInt8Arithmetic = false
  /// shaderInt16, enabled when true.
  public var supportsInt16Arithmetic = false
  /// VK_KHR_cooperative_matrix or VK_NV_cooperative_matrix is exposed.
  public var supportsCooperativeMatrix = false
  /// The shapes offered and the one f16 × f16 products run on (enabled at device creation).
  public var cooperativeMatrix = CooperativeMatrixSupport()
  /// Largest range one storage-buffer binding may cover (lavapipe: 128 MiB).
  public var maxStorageBufferRange: Int = 128 << 20
  /// Binding offsets are multiples of this.
  public var minStorageBufferOffsetAlignment: Int = 256
  public var maxWorkgroupCount: (Int, Int, Int) = (65535, 65535, 65535)
  public var maxWorkgroupSize: (Int, Int, Int) = (1024, 1024, 64)
  public var maxWorkgroupInvocations: Int = 256
  public var maxSharedMemoryBytes: Int = 16384
  public var maxPushConstantsSize: Int = 128
  public var deviceLocalMemoryBytes: Int = 0
  /// VK_EXT_memory_budget's budget over the device-local heaps when the device was opened
  /// (the heaps less what other processes hold); nil without the extension.
  public var deviceLocalBudgetBytes: Int?
  public var deviceName: String = ""
  /// "discrete", "integrated", "virtual", "cpu" or "other".
  public var deviceType: String = ""
  public var driverName: String = ""
  /// Largest reduction length one matmul dispatch may loop over, or nil for no limit.
  /// llvmpipe (lavapipe) stops every shader invocation's loops after 65535 iterations in
  /// all (gallivm's loop limiter, against hangs) and then carries on silently: a product
  /// whose K loop runs longer returns partial sums (found as an LM-head gradient, k = the
  /// vocabulary, that was zero in 7/8 of its outputs). 4096 keeps a tile's loops near a
  /// quarter of the limit; longer products are dispatched as K slices accumulated with β.
  public var matmulMaxK: Int? {
    driverName.lowercased().contains("llvmpipe") || deviceName.lowercased().contains("llvmpipe") ? 4096 : nil
  }
  public init() {}
}
