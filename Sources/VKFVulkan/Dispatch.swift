import CVulkan
import VKFCore

/// One storage buffer binding: the range bound to the descriptor and the word offset of
/// the tensor inside it (`boff[i]`).
struct BufferBinding {
  let storage: VulkanStorage
  /// Byte offset of the bound range within the VkBuffer.
  let offset: Int
  /// Bytes bound.
  let range: Int
  /// (tensor start − offset) / 4.
  let wordOffset: UInt32
  /// Bytes the kernel touches, in buffer coordinates (the tensor's words; the bound range
  /// may be far larger). Dependencies between commands are tracked on these.
  let touched: Range<Int>
}

extension VulkanBackend {
  // MARK: - Ownership and bindings

  /// `t`'s storage, or `wrongBackend` when another backend (or another Vulkan backend)
  /// allocated it.
  func vulkanStorage(_ t: Tensor, op: String) throws -> VulkanStorage {
    guard t.storage.owner == ObjectIdentifier(self), let s = t.storage as? VulkanStorage else {
      throw VKFError.wrongBackend(op: op, detail: "\(t) is not owned by \(name)")
    }
    return s
  }

  /// Binds bytes [byteOffset, byteOffset + byteCount) of `storage`: the bound range starts
  /// at the tensor's start aligned down to minStorageBufferOffsetAlignment and ends at the
  /// tensor's last word, so a tensor deep inside a large buffer can be bound although the
  /// buffer is bigger than the largest range a descriptor may cover. Binding no more than
  /// the tensor keeps the validation layer's synchronization checks exact (it assumes a
  /// kernel touches its whole bound range) and makes a kernel's stray access past its
  /// tensor an error where robust buffer access is on.
  func bufferBinding(_ storage: VulkanStorage, byteOffset: Int, byteCount: Int, op: String,
                     what: @autoclosure () -> String) throws -> BufferBinding {
    let start = storage.offset + byteOffset
    guard start % 4 == 0 else {
      throw VKFError.unsupported(op: op, detail: "\(what()) starts at byte \(byteOffset) of its "
        + "storage; shaders need 4-byte aligned tensors (use an even element offset for 16-bit "
        + "and a multiple of 4 for 8-bit dtypes)")
    }
    let align = max(capabilities.minStorageBufferOffsetAlignment, 4)
    let bound = alignDown(start, align)
    let end = alignUp(start + byteCount, 4)
    // A zero-size tensor still binds one word (the pool reserves that slack).
    let range = min(max(end - bound, 4), storage.block.size - bound)
    guard range <= capabilities.maxStorageBufferRange else {
      throw VKFError.unsupported(op: op, detail: "\(what()) spans \(byteCount) bytes; the device "
        + "binds at most \(capabilities.maxStorageBufferRange) bytes (maxStorageBufferRange) per "
        + "tensor; split the tensor")
    }
    return BufferBinding(storage: storage, offset: bound, range: range,
                         wordOffset: UInt32((start - bound) / 4), touched: alignDown(start, 4)..<end)
  }

  // MARK: - Recording

  /// Records a dispatch over prepared bindings (see the tensor-based `dispatch`).
  func dispatch<P>(_ shader: String, defines: [String: String] = [:], specialization: [UInt32],
                   ranges: [BufferBinding], push: P, groups: (x: Int, y: Int, z: Int)) throws {
    let pushBytes = MemoryLayout<P>.size
    let maxPush = ComputePipeline.pushConstantBytes - ComputePipeline.bindingOffsetBytes
    guard pushBytes <= maxPush, pushBytes % 4 == 0 else {
      throw VKFError.other("\(shader): push struct \(P.self) is \(pushBytes) bytes; "
        + "it must be 32-bit fields totalling ≤ \(maxPush) bytes")
    }
    guard (1...8).contains(ranges.count) else {
      throw VKFError.other("\(shader): \(ranges.count) bindings (1…8 supported)")
    }
    let limit = capabilities.maxWorkgroupCount
    guard groups.x >= 0, groups.y >= 0, groups.z >= 0,
          groups.x <= limit.0, groups.y <= limit.1, groups.z <= limit.2 else {
      throw VKFError.outOfRange(op: shader, detail: "workgroup count \(groups) exceeds the "
        + "device limit \(limit)")
    }
    let pipeline = try pipelines.pipeline(shader, defines: defines, specialization: specialization,
                                          bindingCount: ranges.count)
    // An empty grid records nothing (zero-size tensors).
    guard groups.x > 0, groups.y > 0, groups.z > 0 else { return }

    // boff[8] followed by the kernel's fields.
    var block = [UInt8](repeating: 0, count: ComputePipeline.bindingOffsetBytes + pushBytes)
    block.withUnsafeMutableBytes { raw in
      for (i, r) in ranges.enumerated() {
        raw.storeBytes(of: r.wordOffset, toByteOffset: i * 4, as: UInt32.self)
      }
      withUnsafeBytes(of: push) { p in
        if pushBytes > 0 {
          UnsafeMutableRawBufferPointer(rebasing: raw[ComputePipeline.bindingOffsetBytes...])
            .copyMemory(from: UnsafeRawBufferPointer(rebasing: p[0..<pushBytes]))
        }
      }
    }

    let pushBlock = block
    let list = recorder.target
    let set = try list.allocateSet(pipeline.setLayout, stats: recorder.stats)
    var infos = ranges.map { r in
      VkDescriptorBufferInfo(buffer: r.storage.buffer, offset: VkDeviceSize(r.offset),
                             range: VkDeviceSize(r.range))
    }
    infos.withUnsafeMutableBufferPointer { ip in
      var writes = (0..<ranges.count).map { i -> VkWriteDescriptorSet in
        var w = VkWriteDescriptorSet()
        w.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET
        w.dstSet = set
        w.dstBinding = UInt32(i)
        w.descriptorCount = 1
        w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
        w.pBufferInfo = UnsafePointer(ip.baseAddress.map { $0 + i })
        return w
      }
      vkUpdateDescriptorSets(device.handle, UInt32(writes.count), &writes, 0, nil)
    }
    let accesses = ranges.enumerated().map { i, r in
      BufferAccess(r.storage.buffer, r.touched, writes: pipeline.writableBindings.contains(i))
    }
    let vkPipeline = pipeline.pipeline, layout = pipeline.layout
    recorder.record(.init(accesses: accesses, isDispatch: true) { cb in
      vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, vkPipeline)
      var sets: [VkDescriptorSet?] = [set]
      vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &sets, 0, nil)
      pushBlock.withUnsafeBytes { b in
        vkCmdPushConstants(cb, layout, VK_SHADER_STAGE_COMPUTE_BIT.rawValue, 0, UInt32(b.count), b.baseAddress)
      }
      vkCmdDispatch(cb, UInt32(groups.x), UInt32(groups.y), UInt32(groups.z))
    }, retaining: ranges.map(\.storage) + [pipeline])
  }

  /// Records vkCmdCopyBuffer of `bytes` bytes (ordered after earlier work on either range).
  func recordCopy(from src: VulkanStorage, _ srcOffset: Int, to dst: VulkanStorage,
                  _ dstOffset: Int, bytes: Int) throws {
    guard bytes > 0 else { return }
    let s0 = src.offset + srcOffset, d0 = dst.offset + dstOffset
    let accesses = [BufferAccess(src.buffer, alignDown(s0, 4)..<alignUp(s0 + bytes, 4), writes: false),
                    BufferAccess(dst.buffer, alignDown(d0, 4)..<alignUp(d0 + bytes, 4), writes: true)]
    let srcBuffer = src.buffer, dstBuffer = dst.buffer
    recorder.record(.init(accesses: accesses, isDispatch: false) { cb in
      var region = VkBufferCopy(srcOffset: VkDeviceSize(s0), dstOffset: VkDeviceSize(d0), size: VkDeviceSize(bytes))
      vkCmdCopyBuffer(cb, srcBuffer, dstBuffer, 1, &region)
    }, retaining: [src, dst])
  }

  /// Workgroups (x, y) of `size` invocations covering `count` items in one dimension,
  /// folded into y above the device's x limit (shaders index gid.x + gid.y·numGroups.x·size).
  func grid1D(_ count: Int, workgroupSize: Int = 256) -> (x: Int, y: Int, z: Int) {
    let g = (count + workgroupSize - 1) / workgroupSize
    guard g > 0 else { return (0, 1, 1) }
    let x = min(g, capabilities.maxWorkgroupCount.0)
    return (x, (g + x - 1) / x, 1)
  }

  /// Largest chunk (bytes) an elementwise infrastructure op binds at once, so every binding
  /// fits maxStorageBufferRange with room for the alignment slack.
  var chunkBytes: Int {
    let cap = capabilities.maxStorageBufferRange - 2 * max(capabilities.minStorageBufferOffsetAlignment, 256)
    return max(alignDown(min(cap, 64 << 20), 256), 256)
  }
}
