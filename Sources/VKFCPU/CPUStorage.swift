#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VKFCore

/// Host memory of one `CPUBackend` allocation: 64-byte aligned (a cache line, and the
/// widest vector load) so SIMD loads and OpenBLAS packing never straddle lines at row 0.
final class CPUStorage: TensorStorage {
  /// Alignment of every allocation in bytes.
  static let alignment = 64

  let owner: ObjectIdentifier
  let byteCount: Int
  /// Recorded only: on the CPU device and host-visible memory are the same thing.
  let memory: MemoryKind
  /// Start of the allocation.
  let base: UnsafeMutableRawPointer
  /// The backend's counters: every tensor is "device" memory on the CPU.
  private let stats: StatisticsCounter

  init(owner: ObjectIdentifier, byteCount: Int, memory: MemoryKind, stats: StatisticsCounter) throws {
    try stats.checkLimit(adding: byteCount, what: "allocating a tensor")
    var p: UnsafeMutableRawPointer? = nil
    // posix_memalign with size 0 may return NULL legitimately; always ask for one line.
    let rc = posix_memalign(&p, Self.alignment, max(byteCount, Self.alignment))
    guard rc == 0, let p else {
      throw VKFError.outOfMemory(detail: "posix_memalign(\(byteCount) bytes) failed with \(rc); "
        + "use a smaller batch or sequence length")
    }
    self.owner = owner
    self.byteCount = byteCount
    self.memory = memory
    self.base = p
    self.stats = stats
    stats.memory(byteCount)
    stats.tensorMemory(byteCount)
  }

  deinit {
    stats.memory(-byteCount)
    stats.tensorMemory(-byteCount)
    free(base)
  }
}

/// A growable 64-byte aligned f32 buffer the backend keeps between calls. It only grows:
/// memory handed back to the OS costs ~3 s/GB to fault in again on the target VMs.
final class CPUScratch {
  private(set) var capacity = 0
  private var storage: UnsafeMutableRawPointer? = nil

  /// At least `count` floats, contents undefined; valid until the next call.
  func floats(_ count: Int) throws -> UnsafeMutablePointer<Float> {
    if count > capacity || storage == nil {
      var p: UnsafeMutableRawPointer? = nil
      let bytes = max(count, 16) * MemoryLayout<Float>.stride
      let rc = posix_memalign(&p, CPUStorage.alignment, bytes)
      guard rc == 0, let p else {
        throw VKFError.outOfMemory(detail: "scratch of \(bytes) bytes failed with \(rc)")
      }
      free(storage)
      storage = p
      capacity = max(count, 16)
    }
    // storage is non-nil here by construction.
    return storage.unsafelyUnwrapped.assumingMemoryBound(to: Float.self)
  }

  deinit { free(storage) }
}

// MARK: - Tensor pointers

extension CPUBackend {
  /// Throws unless every tensor belongs to this backend and lies inside its storage
  /// (`Tensor.init` is public, so a hand-made view could point past the allocation).
  func validate(_ op: Op, _ tensors: Tensor?...) throws {
    counter.update { $0.dispatches += 1 }
    try validateTensors(op, tensors)
  }

  /// `validate` without counting an op (uploads and downloads).
  func validateTensors(_ op: Op, _ tensors: [Tensor?]) throws {
    for case let t? in tensors {
      try checkOwnership(op, t)
      guard t.byteOffset >= 0, t.byteOffset + t.byteCount <= t.storage.byteCount else {
        throw VKFError.outOfRange(op: op.rawValue,
          detail: "\(t) at byte \(t.byteOffset) exceeds its storage of \(t.storage.byteCount) bytes")
      }
    }
  }

  /// Raw start of a validated tensor.
  @inline(__always)
  func raw(_ t: Tensor) -> UnsafeMutableRawPointer {
    // `validate` established that this backend allocated the storage, so it is a CPUStorage.
    unsafeDowncast(t.storage, to: CPUStorage.self).base + t.byteOffset
  }

  /// f32 elements of a validated tensor.
  @inline(__always)
  func f32(_ t: Tensor) -> UnsafeMutablePointer<Float> {
    raw(t).assumingMemoryBound(to: Float.self)
  }

  /// i32 elements of a validated tensor.
  @inline(__always)
  func i32(_ t: Tensor) -> UnsafeMutablePointer<Int32> {
    raw(t).assumingMemoryBound(to: Int32.self)
  }

  /// u8 elements of a validated tensor.
  @inline(__always)
  func u8(_ t: Tensor) -> UnsafeMutablePointer<UInt8> {
    raw(t).assumingMemoryBound(to: UInt8.self)
  }

  /// 16-bit patterns (f16/bf16) of a validated tensor.
  @inline(__always)
  func u16(_ t: Tensor) -> UnsafeMutablePointer<UInt16> {
    raw(t).assumingMemoryBound(to: UInt16.self)
  }
}
