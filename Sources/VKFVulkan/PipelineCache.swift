import CVulkan
import VKFCore

/// A compute pipeline with its layouts. Set 0 holds `bindingCount` storage buffers; one
/// 128-byte push-constant range covers `boff[8]` plus the kernel's own fields.
final class ComputePipeline {
  let device: VulkanDevice
  let name: String
  let bindingCount: Int
  let setLayout: VkDescriptorSetLayout
  let layout: VkPipelineLayout
  let pipeline: VkPipeline
  /// Bindings the shader may write (from its SPIR-V): the others are declared `readonly`.
  let writableBindings: Set<Int>

  /// Bytes of the push-constant range every pipeline layout declares.
  static let pushConstantBytes = 128
  /// Bytes of `boff[8]` at the start of every push block.
  static let bindingOffsetBytes = 32

  init(device: VulkanDevice, name: String, spirv: [UInt32], specialization: [UInt32],
       bindingCount: Int, cache: VkPipelineCache?) throws {
    self.device = device
    self.name = name
    self.bindingCount = bindingCount
    writableBindings = SPIRVReflection.writableBindings(spirv, fallbackCount: bindingCount)
    let dev = device.handle

    // Descriptor set layout: bindings 0..<n, storage buffers, compute stage.
    var bindings = (0..<bindingCount).map { i -> VkDescriptorSetLayoutBinding in
      var b = VkDescriptorSetLayoutBinding()
      b.binding = UInt32(i)
      b.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
      b.descriptorCount = 1
      b.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT.rawValue
      return b
    }
    var setInfo = VkDescriptorSetLayoutCreateInfo()
    setInfo.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO
    setInfo.bindingCount = UInt32(bindingCount)
    var sl: VkDescriptorSetLayout?
    try bindings.withUnsafeMutableBufferPointer { bp in
      setInfo.pBindings = UnsafePointer(bp.baseAddress)
      try vkCheck(vkCreateDescriptorSetLayout(dev, &setInfo, nil, &sl), "vkCreateDescriptorSetLayout(\(name))")
    }
    guard let sl else { throw VKFError.device(detail: "no descriptor set layout for \(name)") }

    var range = VkPushConstantRange()
    range.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT.rawValue
    range.offset = 0
    range.size = UInt32(Self.pushConstantBytes)
    var setLayouts: [VkDescriptorSetLayout?] = [sl]
    var pl: VkPipelineLayout?
    let plResult = setLayouts.withUnsafeMutableBufferPointer { sp in
      withUnsafePointer(to: &range) { rp in
        var info = VkPipelineLayoutCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO
        info.setLayoutCount = 1
        info.pSetLayouts = UnsafePointer(sp.baseAddress)
        info.pushConstantRangeCount = 1
        info.pPushConstantRanges = rp
        return vkCreatePipelineLayout(dev, &info, nil, &pl)
      }
    }
    guard plResult == VK_SUCCESS, let pl else {
      vkDestroyDescriptorSetLayout(dev, sl, nil)
      throw vkError(plResult, "vkCreatePipelineLayout(\(name))")
    }

    // Shader module, then the pipeline (the module can go right after).
    var module: VkShaderModule?
    let modResult = spirv.withUnsafeBufferPointer { wp in
      var info = VkShaderModuleCreateInfo()
      info.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO
      info.codeSize = wp.count * 4
      info.pCode = wp.baseAddress
      return vkCreateShaderModule(dev, &info, nil, &module)
    }
    guard modResult == VK_SUCCESS, let module else {
      vkDestroyPipelineLayout(dev, pl, nil); vkDestroyDescriptorSetLayout(dev, sl, nil)
      throw vkError(modResult, "vkCreateShaderModule(\(name))")
    }
    defer { vkDestroyShaderModule(dev, module, nil) }

    var entries = specialization.indices.map { i -> VkSpecializationMapEntry in
      VkSpecializationMapEntry(constantID: UInt32(i), offset: UInt32(i * 4), size: 4)
    }
    var values = specialization
    var p: VkPipeline?
    let pResult: VkResult = "main".withCString { entry in
      entries.withUnsafeMutableBufferPointer { ep in
        values.withUnsafeMutableBytes { vp in
          var spec = VkSpecializationInfo()
          spec.mapEntryCount = UInt32(ep.count)
          spec.pMapEntries = UnsafePointer(ep.baseAddress)
          spec.dataSize = vp.count
          spec.pData = UnsafeRawPointer(vp.baseAddress)
          return withUnsafePointer(to: &spec) { specPtr in
            var stage = VkPipelineShaderStageCreateInfo()
            stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO
            stage.stage = VK_SHADER_STAGE_COMPUTE_BIT
            stage.module = module
            stage.pName = entry
            stage.pSpecializationInfo = specialization.isEmpty ? nil : specPtr
            var info = VkComputePipelineCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO
            info.stage = stage
            info.layout = pl
            return vkCreateComputePipelines(dev, cache, 1, &info, nil, &p)
          }
        }
      }
    }
    guard pResult == VK_SUCCESS, let p else {
      vkDestroyPipelineLayout(dev, pl, nil); vkDestroyDescriptorSetLayout(dev, sl, nil)
      throw vkError(pResult, "vkCreateComputePipelines(\(name))")
    }
    setLayout = sl
    layout = pl
    pipeline = p
  }

  deinit {
    vkDestroyPipeline(device.handle, pipeline, nil)
    vkDestroyPipelineLayout(device.handle, layout, nil)
    vkDestroyDescriptorSetLayout(device.handle, setLayout, nil)
  }
}

/// Pipelines by (shader, defines, specialization constants), compiled on first use.
final class PipelineCache {
  let device: VulkanDevice
  let spirvCache: SPIRVCache
  private var pipelines: [String: ComputePipeline] = [:]
  private var vkCache: VkPipelineCache?

  init(device: VulkanDevice, spirvCache: SPIRVCache) {
    self.device = device
    self.spirvCache = spirvCache
    var info = VkPipelineCacheCreateInfo()
    info.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO
    var c: VkPipelineCache?
    // A pipeline cache only saves time: run without one if the driver refuses.
    if vkCreatePipelineCache(device.handle, &info, nil, &c) == VK_SUCCESS { vkCache = c }
  }

  deinit {
    pipelines.removeAll()
    if let vkCache { vkDestroyPipelineCache(device.handle, vkCache, nil) }
  }

  /// What makes compiled SPIR-V specific to this driver (part of the disk-cache key).
  var driverIdentity: String {
    let p = device.probe.properties
    let uuid = withUnsafeBytes(of: p.pipelineCacheUUID) { $0.map { String($0, radix: 16) }.joined() }
    return "\(p.vendorID):\(p.deviceID):\(p.driverVersion):\(uuid):glslang"
  }

  /// Number of distinct pipelines built so far.
  var count: Int { pipelines.count }

  func pipeline(_ shader: String, defines: [String: String], specialization: [UInt32],
                bindingCount: Int) throws -> ComputePipeline {
    let defs = defines.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    let key = "\(shader)|\(defs)|\(specialization.map(String.init).joined(separator: ","))"
    if let p = pipelines[key] {
      guard p.bindingCount == bindingCount else {
        throw VKFError.shapeMismatch(op: shader, detail: "dispatched with \(bindingCount) bindings; "
          + "its pipeline was built with \(p.bindingCount)")
      }
      return p
    }
    let file = shader.hasSuffix(".comp") ? shader : shader + ".comp"
    let source = try ShaderCompiler.preprocess(file, defines: defines)
    let words = try spirvCache.spirv(source: source, driverIdentity: driverIdentity) {
      try ShaderCompiler.compile(source, name: file)
    }
    let p = try ComputePipeline(device: device, name: shader, spirv: words,
                                specialization: specialization, bindingCount: bindingCount,
                                cache: vkCache)
    pipelines[key] = p
    device.statistics.update { $0.pipelineCreations += 1 }
    return p
  }
}
