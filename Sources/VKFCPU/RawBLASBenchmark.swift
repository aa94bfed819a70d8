import COpenBLAS
import Foundation

extension OpenBLASCore {
  /// Seconds per call of a bare `cblas_sgemm` on n×n matrices (no backend in between),
  /// repeated for about `seconds` after one warm-up call: the ceiling `bench ops` compares
  /// the CPU backend's matmul against.
  public static func timeRawSgemm(n: Int, seconds: Double) -> Double {
    var a = [Float](repeating: 0, count: n * n), b = a, c = a
    for i in 0..<(n * n) { a[i] = Float(i % 7) * 0.1; b[i] = Float(i % 5) * 0.2 }
    let dim = Int32(n)
    func call() {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dim, dim, dim, 1, a, dim, b, dim, 0, &c, dim)
    }
    call()
    let t0 = Date(); call()
    let once = max(Date().timeIntervalSince(t0), 1e-6)
    let runs = max(1, min(1000, Int(seconds / once)))
    let t1 = Date()
    for _ in 0..<runs { call() }
    return Date().timeIntervalSince(t1) / Double(runs)
  }
}
