import Foundation
import Synchronization

/// What a backend has paid for so far: the costs a GPU charges beyond the arithmetic.
/// Every counter only grows; the difference of two snapshots (`-`) is what the work in
/// between cost. They count the same on any device, so driving them down on lavapipe
/// drives them down on a real GPU.
///
/// Executed counts (`dispatches`, `barriers`) count each time recorded work runs: a
/// recording replayed ten times counts its dispatches ten times. Creation counts
/// (`descriptorSetAllocations`, `pipelineCreations`) count once, when the object is made.
public struct ExecutionStatistics: Equatable, Sendable {
  /// Queue submissions (vkQueueSubmit); 0 on the CPU.
  public var submits = 0
  /// Times the host blocked on the device (fence waits, device-idle waits); 0 on the CPU.
  public var hostWaits = 0
  /// Kernels executed: compute dispatches, or ops on the CPU.
  public var dispatches = 0
  /// Pipeline barriers executed between commands; 0 on the CPU.
  public var barriers = 0
  /// Descriptor sets allocated; 0 on the CPU.
  public var descriptorSetAllocations = 0
  /// Compute pipelines created; 0 on the CPU.
  public var pipelineCreations = 0
  /// Bytes copied from the host into tensors (`upload`).
  public var bytesUploaded = 0
  /// Bytes copied from tensors to the host (`download`).
  public var bytesDownloaded = 0
  /// Device memory allocated from the driver now (all of host memory's tensors on the CPU).
  public var deviceMemoryBytes = 0
  /// The high-water mark of `deviceMemoryBytes` since the backend was made (or
  /// `resetPeak`); a difference keeps the later snapshot's value.
  public var deviceMemoryPeakBytes = 0
  /// Of `deviceMemoryBytes`, the bytes tensors hold now (their ranges of the pool's blocks,
  /// and blocks dedicated to one tensor); the rest is free space in pool blocks.
  public var tensorMemoryBytes = 0
  /// The high-water mark of `tensorMemoryBytes` (reset with `deviceMemoryPeakBytes`): what
  /// `MemoryEstimate` predicts, without the allocator's block granularity.
  public var tensorMemoryPeakBytes = 0

  public init() {}

  /// Counters of `a` since `b` (memory figures are `a`'s).
  public static func - (a: ExecutionStatistics, b: ExecutionStatistics) -> ExecutionStatistics {
    var d = ExecutionStatistics()
    d.submits = a.submits - b.submits
    d.hostWaits = a.hostWaits - b.hostWaits
    d.dispatches = a.dispatches - b.dispatches
    d.barriers = a.barriers - b.barriers
    d.descriptorSetAllocations = a.descriptorSetAllocations - b.descriptorSetAllocations
    d.pipelineCreations = a.pipelineCreations - b.pipelineCreations
    d.bytesUploaded = a.bytesUploaded - b.bytesUploaded
    d.bytesDownloaded = a.bytesDownloaded - b.bytesDownloaded
    d.deviceMemoryBytes = a.deviceMemoryBytes
    d.deviceMemoryPeakBytes = a.deviceMemoryPeakBytes
    d.tensorMemoryBytes = a.tensorMemoryBytes
    d.tensorMemoryPeakBytes = a.tensorMemoryPeakBytes
    return d
  }

  /// The counters (not the memory figures) divided by `n`, e.g. per optimizer step.
  public func per(_ n: Int) -> ExecutionCosts {
    let d = Double(max(n, 1))
    return ExecutionCosts(
      submits: Double(submits) / d, hostWaits: Double(hostWaits) / d, dispatches: Double(dispatches) / d,
      barriers: Double(barriers) / d, descriptorSetAllocations: Double(descriptorSetAllocations) / d,
      pipelineCreations: Double(pipelineCreations) / d, bytesUploaded: Double(bytesUploaded) / d,
      bytesDownloaded: Double(bytesDownloaded) / d)
  }
}

/// `ExecutionStatistics` counters per unit of work (`bench train --json`'s "per_step").
public struct ExecutionCosts: Codable, Equatable, Sendable {
  public var submits, hostWaits, dispatches, barriers: Double
  public var descriptorSetAllocations, pipelineCreations: Double
  public var bytesUploaded, bytesDownloaded: Double

  enum CodingKeys: String, CodingKey {
    case submits, hostWaits = "host_waits", dispatches, barriers
    case descriptorSetAllocations = "descriptor_set_allocations", pipelineCreations = "pipeline_creations"
    case bytesUploaded = "bytes_uploaded", bytesDownloaded = "bytes_downloaded"
  }

  /// One line for people: "1 submit, 1 wait, 2130 dispatches, 1021 barriers (0.48/dispatch), …".
  public var summary: String {
    func n(_ v: Double) -> String { v == v.rounded() ? String(Int(v)) : String(Double(Int(v * 10)) / 10) }
    let ratio = dispatches > 0 ? Double(Int(barriers / dispatches * 100)) / 100 : 0
    return "\(n(submits)) submits, \(n(hostWaits)) host waits, \(n(dispatches)) dispatches, "
      + "\(n(barriers)) barriers (\(ratio)/dispatch), \(n(descriptorSetAllocations)) descriptor sets, "
      + "\(n(pipelineCreations)) pipelines, \(n(bytesUploaded)) B up, \(n(bytesDownloaded)) B down"
  }
}

/// Thread-safe accumulation of `ExecutionStatistics` inside a backend.
public final class StatisticsCounter: Sendable {
  private let value = Mutex(ExecutionStatistics())

  public init() {}

  /// A snapshot.
  public var snapshot: ExecutionStatistics { value.withLock { $0 } }

  /// Applies `change` under the lock.
  public func update(_ change: (inout ExecutionStatistics) -> Void) { value.withLock { change(&$0) } }

  /// Adds `bytes` (negative: frees) to the memory in use, raising the peak.
  public func memory(_ bytes: Int) {
    value.withLock {
      $0.deviceMemoryBytes += bytes
      $0.deviceMemoryPeakBytes = max($0.deviceMemoryPeakBytes, $0.deviceMemoryBytes)
    }
  }

  /// Adds `bytes` (negative: frees) to the memory tensors hold, raising its peak.
  public func tensorMemory(_ bytes: Int) {
    value.withLock {
      $0.tensorMemoryBytes += bytes
      $0.tensorMemoryPeakBytes = max($0.tensorMemoryPeakBytes, $0.tensorMemoryBytes)
    }
  }

  /// Device memory the process may hold, from `VKF_DEVICE_MEMORY_LIMIT` (bytes): a device
  /// smaller than the real one, so the out-of-memory path can be exercised on any machine.
  public static let memoryLimit: Int? = ProcessInfo.processInfo.environment["VKF_DEVICE_MEMORY_LIMIT"].flatMap { Int($0) }

  /// `bytes` (a device's own capacity, nil when unknown) capped by `memoryLimit`.
  public static func capacity(_ bytes: Int?) -> Int? {
    guard let limit = memoryLimit else { return bytes }
    return min(bytes ?? limit, limit)
  }

  /// Throws `VKFError.outOfMemory` when `bytes` more would pass `memoryLimit`: the error a
  /// driver gives when the device is full, raised before asking it.
  public func checkLimit(adding bytes: Int, what: String) throws {
    guard let limit = Self.memoryLimit else { return }
    let inUse = value.withLock { $0.deviceMemoryBytes }
    guard inUse + bytes <= limit else {
      throw VKFError.outOfMemory(detail: "\(what): \(bytes) bytes more than the \(limit) of VKF_DEVICE_MEMORY_LIMIT "
        + "(\(inUse) in use)")
    }
  }

  /// Starts a new high-water mark at the memory in use now.
  public func resetPeak() {
    value.withLock {
      $0.deviceMemoryPeakBytes = $0.deviceMemoryBytes
      $0.tensorMemoryPeakBytes = $0.tensorMemoryBytes
    }
  }
}
