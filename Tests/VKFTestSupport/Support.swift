import Foundation
import VKFCore
import VKFCPU
import VKFVulkan

/// Seeded test inputs: VKFCore's SplitMix64 started one increment past `seed` (the stream the
/// committed tolerances were tuned on).
public struct SeededRNG: RandomNumberGenerator {
  private var base: SplitMix64
  public init(seed: UInt64) { base = SplitMix64(seed: seed &+ 0x9E37_79B9_7F4A_7C15) }
  public mutating func next() -> UInt64 { base.next() }
}

/// Seeded test data.
public enum TestData {
  /// `count` floats uniform in [lo, hi).
  public static func uniform(_ count: Int, seed: UInt64, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
    var rng = SeededRNG(seed: seed)
    return (0..<count).map { _ in Float.random(in: lo..<hi, using: &rng) }
  }

  /// `values` rounded to `dtype` (f16 or bf16, round to nearest even): the bit patterns a
  /// 16-bit tensor holds and the exact f32 values they stand for.
  public static func half(_ values: [Float], _ dtype: DType) -> (bits: [UInt16], values: [Float]) {
    let bits = values.map { dtype == .bf16 ? BFloat16.fromFloat($0) : Float16($0).bitPattern }
    let exact = bits.map { dtype == .bf16 ? BFloat16.toFloat($0) : Float(Float16(bitPattern: $0)) }
    return (bits, exact)
  }

  /// A seeded int8 weight: values over the whole int8 range (−128 included), scales in
  /// [0.001, 0.1), integer zero points in [−20, 20] when asked.
  public static func int8Weight(rows: Int, cols: Int, blockSize: Int, zeroPoints: Bool, seed: UInt64,
                                on backend: Backend) throws -> Int8Weight {
    var rng = SeededRNG(seed: seed)
    let q = (0..<(rows * cols)).map { _ in Int8.random(in: .min ... .max, using: &rng) }
    let blocks = (rows * cols + blockSize - 1) / blockSize
    let scales = (0..<blocks).map { _ in Float.random(in: 0.001..<0.1, using: &rng) }
    let zps = zeroPoints ? (0..<blocks).map { _ in Float(Int.random(in: -20...20, using: &rng)) } : nil
    return try Int8Weight.uploading(q, scales: scales, zeroPoints: zps, rows: rows, cols: cols, blockSize: blockSize,
                                    on: backend)
  }

  /// `count` int32 values in [0, upper).
  public static func ints(_ count: Int, seed: UInt64, upper: Int32) -> [Int32] {
    var rng = SeededRNG(seed: seed)
    return (0..<count).map { _ in Int32.random(in: 0..<upper, using: &rng) }
  }
}

/// Comparison used by every numeric test (the metrics live in VKFCore's `Metrics`).
public enum Compare {
  public static func nmse(_ e: [Float], _ a: [Float]) -> Double { Metrics.nmse(e, a) }
  public static func maxAbs(_ e: [Float], _ a: [Float]) -> Double { Metrics.maxAbs(e, a) }
  /// nil when `actual` matches `expected` within both bounds, else a message naming the worst element.
  public static func check(_ expected: [Float], _ actual: [Float], nmse maxNMSE: Double,
                           maxAbs maxAbsErr: Double) -> String? {
    Metrics.mismatch(expected, actual, nmse: maxNMSE, maxAbs: maxAbsErr)
  }
}

/// Backends under test.
public enum TestBackends {
  /// One shared CPU backend (OpenBLAS is process-global anyway).
  nonisolated(unsafe) public static let cpu = CPUBackend()

  /// The Vulkan backend with validation on, or the reason it is unavailable. Created once per
  /// test process: instance and device creation cost ~100 ms on lavapipe. The validation
  /// layer's synchronization checks are on too: a barrier the dependency tracker misses
  /// (a kernel reading what an unordered one writes) fails the test that recorded it.
  nonisolated(unsafe) public static let vulkanResult: Result<VulkanBackend, Error> = {
    setenv("VKF_VALIDATION", "1", 0)
    setenv("VK_LAYER_ENABLES", "VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT", 0)
    return Result { try VulkanBackend() }
  }()

  /// The Vulkan backend, or nil with the reason printed once.
  public static var vulkan: VulkanBackend? {
    switch vulkanResult {
    case .success(let b): return b
    case .failure(let e):
      reportOnce("Vulkan backend unavailable: \(e)")
      return nil
    }
  }

  nonisolated(unsafe) private static var reported = Set<String>()
  private static func reportOnce(_ s: String) {
    if reported.insert(s).inserted { print("note: \(s)") }
  }
}
