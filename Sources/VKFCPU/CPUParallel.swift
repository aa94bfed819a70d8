import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Splits row-wise work over the cores. Small tensors run inline: a dispatch costs a few
/// microseconds, more than a 64K-element elementwise op takes on one core.
enum CPUParallel {
  /// Work (≈ elements touched) below which an op stays on the calling thread.
  static let minWork = 1 << 16
  /// Number of worker chunks for big ops (the machine's online cores, at most 16).
  static let workers: Int = max(1, min(16, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))

  /// Calls `body` on disjoint, contiguous, in-order ranges covering `0..<count`; each unit
  /// costs about `cost` elements of work. Chunk boundaries depend only on `count`, `cost`
  /// and the core count, so reductions that combine chunks in order are deterministic.
  @inline(__always)
  static func forRanges(_ count: Int, cost: Int = 1, _ body: (Range<Int>) -> Void) {
    forChunks(count, cost: cost) { _, r in body(r) }
  }

  /// `forRanges` that also passes the chunk index in `0..<chunkCount(count, cost:)`.
  @inline(__always)
  static func forChunks(_ count: Int, cost: Int = 1, _ body: (Int, Range<Int>) -> Void) {
    let chunks = chunkCount(count, cost: cost)
    if chunks <= 1 {
      if count > 0 { body(0, 0..<count) }
      return
    }
    withoutActuallyEscaping(body) { body in
      let box = UncheckedSendable(body)
      DispatchQueue.concurrentPerform(iterations: chunks) { c in
        box.value(c, range(c, of: chunks, count))
      }
    }
  }

  /// Number of chunks `forRanges` uses (callers size per-chunk partial buffers with it).
  static func chunkCount(_ count: Int, cost: Int = 1) -> Int {
    let work = count.multipliedReportingOverflow(by: max(cost, 1))
    if work.overflow { return min(workers, count) }
    guard work.partialValue >= minWork, workers > 1 else { return 1 }
    return max(1, min(workers, count))
  }

  /// The `c`-th of `chunks` near-equal contiguous ranges of `0..<count`.
  static func range(_ c: Int, of chunks: Int, _ count: Int) -> Range<Int> {
    (c * count / chunks)..<((c + 1) * count / chunks)
  }
}

/// Moves a value into a `@Sendable` closure; used only for pointers and closures whose
/// concurrent use touches disjoint memory (the chunks of `CPUParallel.forRanges`).
struct UncheckedSendable<T>: @unchecked Sendable {
  let value: T
  init(_ value: T) { self.value = value }
}
