#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CVulkan
import VKFCore

/// Push constants of fill.comp (after `boff[8]`).
struct FillPush {
  var words: UInt32
  var pattern: UInt32
  var firstMask: UInt32
  var lastMask: UInt32
}

/// Push constants of copy.comp.
struct CopyPush { var words: UInt32 }

/// Push constants of cast.comp.
struct CastPush { var n: UInt32 }

/// cast.comp's SRC_TYPE / DST_TYPE codes.
let castTypeCodes: [DType: String] = [.f32: "0", .f16: "1", .bf16: "2"]

/// Workgroup size of the infrastructure shaders (spec constants 0, 1, 2).
private let workgroup: [UInt32] = [256, 1, 1]

extension VulkanBackend {
  // MARK: - Allocation

  public func allocate(_ shape: [Int], _ dtype: DType, memory: MemoryKind) throws -> Tensor {
    let bytes = try ShapeCheck.allocation(shape, dtype)
    let storage = try VulkanStorage(owner: ObjectIdentifier(self), byteCount: bytes, memory: memory,
                                    pool: memory == .device ? devicePool : hostPool)
    return Tensor(storage: storage, shape: shape, dtype: dtype)
  }

  // MARK: - Upload / download

  /// Copies `bytes` into `t`, never waiting. Mapped memory that no queued work uses: memcpy.
  /// Otherwise (unmapped memory, or queued work — an eager op or a replay — still uses the
  /// storage, and a host write cannot be ordered inside a command buffer): the bytes go
  /// through a staging buffer and a recorded copy, which orders after that work.
  public func upload(_ bytes: UnsafeRawBufferPointer, to t: Tensor) throws {
    let s = try vulkanStorage(t, op: "upload")
    try ShapeCheck.transfer("upload", bytes: bytes.count, t)
    try checkNotCapturing("upload")
    guard t.byteCount > 0, let src = bytes.baseAddress else { return }
    device.statistics.update { $0.bytesUploaded += t.byteCount }
    if let dst = s.mapped, !stagingTransfers, !recorder.references(s) {
      (dst + t.byteOffset).copyMemory(from: src, byteCount: t.byteCount)
      let lo = s.offset + t.byteOffset
      try s.block.flush(lo..<(lo + t.byteCount))
    } else {
      let staging = try VulkanStorage(owner: ObjectIdentifier(self), byteCount: t.byteCount,
                                      memory: .hostVisible, pool: hostPool)
      guard let p = staging.mapped else {
        throw VKFError.device(detail: "upload: host-visible staging memory could not be mapped")
      }
      p.copyMemory(from: src, byteCount: t.byteCount)
      try staging.block.flush(staging.offset..<(staging.offset + t.byteCount))
      try recordCopy(from: staging, 0, to: s, t.byteOffset, bytes: t.byteCount)
    }
  }

  /// Waits for the work that uses `t` (only that: a later submission may still run), then
  /// copies `t` out (memcpy from mapped memory, else through a staging buffer).
  public func download(_ t: Tensor, into bytes: UnsafeMutableRawBufferPointer) throws {
    let s = try vulkanStorage(t, op: "download")
    try ShapeCheck.transfer("download", bytes: bytes.count, t)
    try checkNotCapturing("download")
    guard t.byteCount > 0, let dst = bytes.baseAddress else {
      try recorder.wait(for: s)
      return
    }
    device.statistics.update { $0.bytesDownloaded += t.byteCount }
    if let src = s.mapped, !stagingTransfers {
      try recorder.wait(for: s)
      let lo = s.offset + t.byteOffset
      try s.block.invalidate(lo..<(lo + t.byteCount))
      dst.copyMemory(from: src + t.byteOffset, byteCount: t.byteCount)
    } else {
      let staging = try VulkanStorage(owner: ObjectIdentifier(self), byteCount: t.byteCount,
                                      memory: .hostVisible, pool: hostPool)
      guard let p = staging.mapped else {
        throw VKFError.device(detail: "download: host-visible staging memory could not be mapped")
      }
      try recordCopy(from: s, t.byteOffset, to: staging, 0, bytes: t.byteCount)
      try recorder.wait(for: staging)
      try staging.block.invalidate(staging.offset..<(staging.offset + t.byteCount))
      dst.copyMemory(from: p, byteCount: t.byteCount)
    }
  }

  /// Transfers cannot be ordered inside a recording: its body may only queue ops.
  private func checkNotCapturing(_ what: String) throws {
    guard !recorder.isCapturing else {
      throw VKFError.other("\(what) inside a recorded body: a recording may only queue ops "
        + "(fill its input tensors before replaying it)")
    }
  }

  // MARK: - Fill

  public func fill(_ t: Tensor, value: Float) throws {
    try checkOwnership(.fill, t)
    let s = try vulkanStorage(t, op: "fill")
    let pattern = try Self.fillPattern(value, t.dtype)
    guard t.byteCount > 0 else { return }
    // Word-aligned byte range covering the tensor, in buffer coordinates.
    let start = s.offset + t.byteOffset, end = start + t.byteCount
    let wordStart = alignDown(start, 4), wordEnd = alignUp(end, 4)
    let headBytes = start - wordStart, tailBytes = end % 4
    let firstMask = UInt32.max << UInt32(8 * headBytes)
    let lastMask = tailBytes == 0 ? UInt32.max : (UInt32(1) << UInt32(8 * tailBytes)) - 1
    if headBytes == 0 && tailBytes == 0 && !fillWithShader {
      // Whole words: the transfer engine's fill needs no pipeline and no range limit.
      let buffer = s.buffer
      recorder.record(.init(accesses: [BufferAccess(buffer, start..<end, writes: true)], isDispatch: false) { cb in
        vkCmdFillBuffer(cb, buffer, VkDeviceSize(start), VkDeviceSize(end - start), pattern)
      }, retaining: [s])
      return
    }
    var chunkStart = wordStart
    while chunkStart < wordEnd {
      let chunkEnd = min(chunkStart + chunkBytes, wordEnd)
      let binding = try bufferBinding(s, byteOffset: chunkStart - s.offset,
                                      byteCount: chunkEnd - chunkStart, op: "fill", what: "\(t)")
      let words = (chunkEnd - chunkStart) / 4
      let push = FillPush(words: UInt32(words), pattern: pattern,
                          firstMask: chunkStart == wordStart ? firstMask : .max,
                          lastMask: chunkEnd == wordEnd ? lastMask : .max)
      try dispatch("fill", specialization: workgroup, ranges: [binding], push: push,
                   groups: grid1D(words))
      chunkStart = chunkEnd
    }
  }

  /// `value` in `dtype`, replicated over a 32-bit word; i32/u8 truncate toward zero and
  /// throw outside their range (as CPUBackend.fill does).
  static func fillPattern(_ value: Float, _ dtype: DType) throws -> UInt32 {
    try ShapeCheck.fillValue(value, dtype)
    switch dtype {
    case .f32: return value.bitPattern
    case .f16:
      let h = UInt32(Float16(value).bitPattern)
      return h | h << 16
    case .bf16:
      let h = UInt32(BFloat16.fromFloat(value))
      return h | h << 16
    case .i32:
      return UInt32(bitPattern: Int32(value))
    case .u8:
      return UInt32(UInt8(value)) &* 0x0101_0101
    }
  }

  // MARK: - Copy

  public func copy(_ src: Tensor, to dst: Tensor) throws {
    try checkOwnership(.copy, src, dst)
    try ShapeCheck.copy(src, dst)
    let s = try vulkanStorage(src, op: "copy"), d = try vulkanStorage(dst, op: "copy")
    guard src.byteCount > 0, !(s === d && src.byteOffset == dst.byteOffset) else { return }
    if src.overlaps(dst) {
      // vkCmdCopyBuffer forbids overlapping regions; go through a temporary (memmove).
      let tmp = try allocate([src.byteCount], .u8, memory: .device)
      let ts = try vulkanStorage(tmp, op: "copy")
      try recordCopy(from: s, src.byteOffset, to: ts, 0, bytes: src.byteCount)
      try recordCopy(from: ts, 0, to: d, dst.byteOffset, bytes: src.byteCount)
      return
    }
    if copyWithShader { return try shaderCopy(s, src.byteOffset, d, dst.byteOffset, bytes: src.byteCount) }
    try recordCopy(from: s, src.byteOffset, to: d, dst.byteOffset, bytes: src.byteCount)
  }

  /// copy.comp over 4-byte aligned ranges (the compute-only path).
  func shaderCopy(_ s: VulkanStorage, _ srcOffset: Int, _ d: VulkanStorage, _ dstOffset: Int,
                  bytes: Int) throws {
    guard bytes % 4 == 0 else {
      throw VKFError.unsupported(op: "copy", detail: "copy.comp copies whole words; \(bytes) bytes")
    }
    var done = 0
    while done < bytes {
      let n = min(chunkBytes, bytes - done)
      let a = try bufferBinding(s, byteOffset: srcOffset + done, byteCount: n, op: "copy", what: "source")
      let b = try bufferBinding(d, byteOffset: dstOffset + done, byteCount: n, op: "copy", what: "destination")
      try dispatch("copy", specialization: workgroup, ranges: [a, b],
                   push: CopyPush(words: UInt32(n / 4)), groups: grid1D(n / 4))
      done += n
    }
  }

  // MARK: - Cast

  public func cast(_ src: Tensor, to dst: Tensor) throws {
    try checkOwnership(.cast, src, dst)
    try ShapeCheck.cast(src, dst)
    if src.dtype == dst.dtype { return try copy(src, to: dst) }
    guard let srcCode = castTypeCodes[src.dtype], let dstCode = castTypeCodes[dst.dtype] else {
      throw VKFError.dtypeMismatch(op: "cast", detail: "\(src) → \(dst)")
    }
    let s = try vulkanStorage(src, op: "cast"), d = try vulkanStorage(dst, op: "cast")
    let n = src.count
    guard n > 0 else { return }
    // Chunks of an even element count keep 16-bit halves word-aligned.
    let chunk = alignDown(chunkBytes / 4, 2)
    var e0 = 0
    while e0 < n {
      let m = min(chunk, n - e0)
      let a = try bufferBinding(s, byteOffset: src.byteOffset + e0 * src.dtype.size,
                                byteCount: m * src.dtype.size, op: "cast", what: "\(src)")
      let b = try bufferBinding(d, byteOffset: dst.byteOffset + e0 * dst.dtype.size,
                                byteCount: m * dst.dtype.size, op: "cast", what: "\(dst)")
      try dispatch("cast", defines: ["SRC_TYPE": srcCode, "DST_TYPE": dstCode],
                   specialization: workgroup, ranges: [a, b], push: CastPush(n: UInt32(m)),
                   groups: grid1D((m + 1) / 2))
      e0 += m
    }
  }
}
