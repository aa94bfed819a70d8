import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import COpenBLAS
import VKFCore

/// The CPU backend: OpenBLAS for matrix products, vectorised loops split over the cores
/// for everything else. It is the numerical ground truth the Vulkan backend is tested
/// against and the `--cpu` training fallback. Ops run synchronously on the caller's
/// thread; one instance must not be used from two threads at once (it owns scratch memory).
public final class CPUBackend: Backend {
  /// Reused dequantisation / partial-sum buffer (see `CPUScratch`).
  let scratch = CPUScratch()
  /// Elements of an NF4 weight dequantised per sgemm panel (8 MiB of f32): big enough for
  /// sgemm to run at full speed, small enough to stay in L3 while sgemm reads it back.
  /// Tests lower it to exercise the panel seams on small weights.
  var nf4PanelElements = 1 << 21
  /// Elements of a 16-bit matmul operand widened to f32 per sgemm panel (8 MiB of f32, as
  /// for NF4); tests lower it to exercise the panel seams.
  var widenPanelElements = 1 << 21
  /// Ops run, bytes moved and tensor memory (`statistics`).
  let counter = StatisticsCounter()
  /// True while a recording replays: its body must not upload or download (as on a GPU).
  private var replaying = false

  /// Creates the backend; OpenBLAS initialises itself when the library loads.
  public init() {}

  /// e.g. "cpu (OpenBLAS SKYLAKEX, 2 threads)".
  public var name: String {
    "cpu (OpenBLAS \(OpenBLASCore.coreName), \(OpenBLASCore.threadCount) threads)"
  }

  /// Every op on f32; fill and copy on every dtype; cast between the float types.
  public func supports(_ op: Op, _ dtype: DType) -> Bool {
    switch op {
    case .fill, .copy: return true
    case .cast: return dtype.isFloat
    // 16-bit operands (frozen weights) are widened per panel (CPUWideningMatmul) or row
    // (embedding); outputs are f32.
    case .matmul, .loraForward, .embedding, .groupedMatmul: return dtype.isFloat
    default: return dtype == .f32
    }
  }

  // MARK: - Memory

  public func allocate(_ shape: [Int], _ dtype: DType, memory: MemoryKind) throws -> Tensor {
    let bytes = try ShapeCheck.allocation(shape, dtype)
    let s = try CPUStorage(owner: ObjectIdentifier(self), byteCount: bytes, memory: memory, stats: counter)
    return Tensor(storage: s, shape: shape, dtype: dtype)
  }

  public func upload(_ bytes: UnsafeRawBufferPointer, to t: Tensor) throws {
    try validateTensors(.copy, [t])
    try ShapeCheck.transfer("upload", bytes: bytes.count, t)
    try checkNotReplaying("upload")
    counter.update { $0.bytesUploaded += bytes.count }
    if let src = bytes.baseAddress, !bytes.isEmpty { raw(t).copyMemory(from: src, byteCount: bytes.count) }
  }

  public func download(_ t: Tensor, into bytes: UnsafeMutableRawBufferPointer) throws {
    try validateTensors(.copy, [t])
    try ShapeCheck.transfer("download", bytes: bytes.count, t)
    try checkNotReplaying("download")
    counter.update { $0.bytesDownloaded += bytes.count }
    if let dst = bytes.baseAddress, !bytes.isEmpty { dst.copyMemory(from: raw(t), byteCount: bytes.count) }
  }

  /// Nothing to wait for: every op has finished when it returns.
  public func synchronize() throws { try checkNotReplaying("synchronize") }
  /// Ops run when queued: nothing to start.
  public func flush() throws { try checkNotReplaying("flush") }

  // MARK: - Recorded work

  /// The body itself: ops run when they are called, so a replay calls it again.
  public func record(_ body: @escaping () throws -> Void) throws -> Recording {
    ClosureRecording(owner: ObjectIdentifier(self), body: body)
  }

  public func replay(_ recordings: [Recording]) throws {
    try checkNotReplaying("replay")
    for r in recordings {
      guard let c = r as? ClosureRecording, c.owner == ObjectIdentifier(self) else {
        throw VKFError.wrongBackend(op: "replay", detail: "a recording made by another backend")
      }
      replaying = true
      defer { replaying = false }
      try c.body()
    }
  }

  private func checkNotReplaying(_ what: String) throws {
    guard !replaying else {
      throw VKFError.other("\(what) inside a recorded body: a recording may only queue ops "
        + "(fill its input tensors before replaying it)")
    }
  }

  // MARK: - Costs

  public var statistics: ExecutionStatistics { counter.snapshot }
  /// A CPU recording is its body, run again at every replay.
  public var recordingSavesWork: Bool { false }
  public var memoryCapacity: Int? { StatisticsCounter.capacity(Int(ProcessInfo.processInfo.physicalMemory)) }
  public func resetMemoryPeak() { counter.resetPeak() }

  public func fill(_ t: Tensor, value: Float) throws {
    try validate(.fill, t)
    try ShapeCheck.fillValue(value, t.dtype)
    let n = t.count
    switch t.dtype {
    case .f32: fillPattern(f32(t), n, value)
    case .f16: fillPattern(u16(t), n, Float16(value).bitPattern)
    case .bf16: fillPattern(u16(t), n, BFloat16.fromFloat(value))
    case .i32:
      // Int32(Float) traps outside its range: ShapeCheck.fillValue threw before.
      fillPattern(i32(t), n, Int32(value))
    case .u8:
      raw(t).initializeMemory(as: UInt8.self, repeating: UInt8(value), count: n)
    }
  }

  private func fillPattern<T>(_ p: UnsafeMutablePointer<T>, _ n: Int, _ v: T) {
    let box = UncheckedSendable(p)
    CPUParallel.forRanges(n) { r in (box.value + r.lowerBound).update(repeating: v, count: r.count) }
  }

  public func copy(_ src: Tensor, to dst: Tensor) throws {
    try validate(.copy, src, dst)
    try ShapeCheck.copy(src, dst)
    // memmove: overlapping views of one storage are legal for a copy.
    if src.byteCount > 0 { memmove(raw(dst), raw(src), src.byteCount) }
  }

  public func cast(_ src: Tensor, to dst: Tensor) throws {
    try validate(.cast, src, dst)
    try ShapeCheck.cast(src, dst)
    let n = src.count
    switch (src.dtype, dst.dtype) {
    case (let a, let b) where a == b: if n > 0 { memmove(raw(dst), raw(src), src.byteCount) }
    case (.f32, .f16): CPUCast.f32ToF16(f32(src), u16(dst), n)
    case (.f32, .bf16): CPUCast.f32ToBF16(f32(src), u16(dst), n)
    case (.f16, .f32): CPUCast.f16ToF32(u16(src), f32(dst), n)
    case (.bf16, .f32): CPUCast.bf16ToF32(u16(src), f32(dst), n)
    // Through f32, which holds f16 and bf16 exactly, so the result is rounded once.
    case (.f16, .bf16): CPUCast.f16ToBF16(u16(src), u16(dst), n)
    case (.bf16, .f16): CPUCast.bf16ToF16(u16(src), u16(dst), n)
    default:
      throw VKFError.unsupported(op: "cast", detail: "\(src.dtype) → \(dst.dtype)")
    }
  }
}
