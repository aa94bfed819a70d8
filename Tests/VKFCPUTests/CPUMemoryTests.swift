import VKFCore
import VKFTestSupport
import XCTest

@testable import VKFCPU

final class CPUMemoryTests: XCTestCase {
  func test_allocate_isAlignedAndRecordsMemoryKind() throws {
    let t = try T.cpu.allocate([3, 5], .f32, memory: .hostVisible)
    let s = try XCTUnwrap(t.storage as? CPUStorage)
    XCTAssertEqual(Int(bitPattern: s.base) % 64, 0)
    XCTAssertEqual(s.memory, .hostVisible)
    XCTAssertEqual(s.byteCount, 60)
    XCTAssertTrue(T.cpu.owns(t))
  }

  func test_uploadDownload_roundTripsThroughViews() throws {
    let t = try T.f32((0..<12).map(Float.init), [4, 3])
    let v = try t.rows(1..<3)
    XCTAssertEqual(try T.read(v), [3, 4, 5, 6, 7, 8])
    try T.cpu.upload([Float](repeating: -1, count: 6), to: v)
    XCTAssertEqual(try T.read(t), [0, 1, 2, -1, -1, -1, -1, -1, -1, 9, 10, 11])
  }

  func test_fill_convertsToEveryDType() throws {
    let f = try T.cpu.allocate([5], .f32), h = try T.cpu.allocate([5], .f16)
    let b = try T.cpu.allocate([5], .bf16), i = try T.cpu.allocate([5], .i32)
    let u = try T.cpu.allocate([5], .u8)
    try T.cpu.fill(f, value: 1.5); try T.cpu.fill(h, value: 1.5); try T.cpu.fill(b, value: 1.5)
    try T.cpu.fill(i, value: -2.7); try T.cpu.fill(u, value: 200.9)
    XCTAssertEqual(try T.read(f), [Float](repeating: 1.5, count: 5))
    XCTAssertEqual(try T.read(h), [Float](repeating: 1.5, count: 5))
    XCTAssertEqual(try T.read(b), [Float](repeating: 1.5, count: 5))
    XCTAssertEqual(try T.cpu.download(i, as: Int32.self), [Int32](repeating: -2, count: 5))
    XCTAssertEqual(try T.cpu.download(u, as: UInt8.self), [UInt8](repeating: 200, count: 5))
  }

  func test_fill_bigTensorUsesEveryChunk() throws {
    let n = 300_001  // above CPUParallel.minWork, odd so chunks are uneven
    let t = try T.cpu.allocate([n], .f32)
    try T.cpu.fill(t, value: 3)
    XCTAssertTrue(try T.read(t).allSatisfy { $0 == 3 })
  }

  func test_fill_unrepresentableIntegerThrows() throws {
    let i = try T.cpu.allocate([2], .i32), u = try T.cpu.allocate([2], .u8)
    XCTAssertThrowsError(try T.cpu.fill(i, value: .nan))
    XCTAssertThrowsError(try T.cpu.fill(i, value: 3e9))
    XCTAssertThrowsError(try T.cpu.fill(u, value: -1))
    XCTAssertThrowsError(try T.cpu.fill(u, value: 256))
  }

  func test_copy_copiesBytesAndRejectsDTypeChange() throws {
    let a = try T.f32([1, 2, 3, 4], [4]), b = try T.zeros([2, 2])
    try T.cpu.copy(a, to: b)
    XCTAssertEqual(try T.read(b), [1, 2, 3, 4])
    let h = try T.cpu.allocate([4], .f16)
    XCTAssertThrowsError(try T.cpu.copy(a, to: h))
  }

  // MARK: - Cast

  /// Values around the f16 and bf16 rounding points: exact halves between neighbours
  /// (ties to even both ways), just above/below them, subnormals, overflow, ±0, ±∞.
  static let castProbes: [Float] = {
    var v: [Float] = [0, -0.0, 1, -1, 65504, 65520, 70000, -70000, 6e-8, 3e-8, 1e-5,
                      .infinity, -.infinity, 3.14159265, .leastNormalMagnitude / 8, 1e30, -2.5e-3]
    // f16 has 10 mantissa bits: 1 + k·2⁻¹¹ sits halfway between f16 neighbours of 1.
    for k in 1...7 { v.append(1 + Float(k) * 0x1p-11); v.append(1 + Float(k) * 0x1p-11 + 0x1p-20) }
    // bf16 has 7: 1 + k·2⁻⁸ is halfway, ±one f32 ulp decides the direction.
    for k in 1...7 {
      let half = 1 + Float(k) * 0x1p-8
      v += [half, half.nextUp, half.nextDown, -half]
    }
    return v + TestData.uniform(200, seed: 11, -100, 100)
  }()

  func test_cast_f32ToF16AndBack_matchesFloat16() throws {
    let x = Self.castProbes
    let src = try T.f32(x, [x.count]), h = try T.cpu.allocate([x.count], .f16)
    let back = try T.zeros([x.count])
    try T.cpu.cast(src, to: h)
    try T.cpu.cast(h, to: back)
    let bits = try T.cpu.download(h, as: UInt16.self)
    XCTAssertEqual(bits, x.map { Float16($0).bitPattern })
    XCTAssertEqual(try T.read(back), x.map { Float(Float16($0)) })
    // Ties to even: 1 + 2⁻¹¹ → 1 (even), 1 + 3·2⁻¹¹ → 1 + 2·2⁻¹⁰ (even mantissa).
    XCTAssertEqual(Float(Float16(bitPattern: bits[x.firstIndex(of: 1 + 0x1p-11)!])), 1)
    XCTAssertEqual(Float(Float16(bitPattern: bits[x.firstIndex(of: 1 + 3 * 0x1p-11)!])), 1 + 0x1p-9)
  }

  func test_cast_f32ToBF16AndBack_matchesBFloat16() throws {
    let x = Self.castProbes + [.nan]
    let src = try T.f32(x, [x.count]), b = try T.cpu.allocate([x.count], .bf16)
    let back = try T.zeros([x.count])
    try T.cpu.cast(src, to: b)
    try T.cpu.cast(b, to: back)
    let bits = try T.cpu.download(b, as: UInt16.self)
    XCTAssertEqual(bits, x.map(BFloat16.fromFloat))
    let r = try T.read(back)
    XCTAssertTrue(r.last!.isNaN)
    XCTAssertEqual(Array(r.dropLast()), x.dropLast().map { BFloat16.toFloat(BFloat16.fromFloat($0)) })
    // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties to even → 1; one ulp above → up.
    XCTAssertEqual(BFloat16.toFloat(bits[x.firstIndex(of: 1 + 0x1p-8)!]), 1)
    XCTAssertEqual(BFloat16.toFloat(bits[x.firstIndex(of: (1 + 0x1p-8).nextUp)!]), 1 + 0x1p-7)
  }

  func test_cast_betweenHalfTypes_roundsOnceThroughF32() throws {
    let x = TestData.uniform(64, seed: 12, -10, 10)
    let src = try T.f32(x, [64]), h = try T.cpu.allocate([64], .f16)
    let b = try T.cpu.allocate([64], .bf16), h2 = try T.cpu.allocate([64], .f16)
    try T.cpu.cast(src, to: h)
    try T.cpu.cast(h, to: b)
    try T.cpu.cast(b, to: h2)
    let hb = try T.cpu.download(h, as: UInt16.self)
    let expectedB = hb.map { BFloat16.fromFloat(Float(Float16(bitPattern: $0))) }
    XCTAssertEqual(try T.cpu.download(b, as: UInt16.self), expectedB)
    XCTAssertEqual(try T.cpu.download(h2, as: UInt16.self),
                   expectedB.map { Float16(BFloat16.toFloat($0)).bitPattern })
  }

  func test_cast_largeTensorParallelPathMatchesScalar() throws {
    let x = TestData.uniform(100_003, seed: 13, -1000, 1000)
    let src = try T.f32(x, [x.count]), h = try T.cpu.allocate([x.count], .f16)
    try T.cpu.cast(src, to: h)
    XCTAssertEqual(try T.cpu.download(h, as: UInt16.self), x.map { Float16($0).bitPattern })
  }

  func test_supports_f32EverywhereAndCastOnFloats() {
    for op in Op.allCases { XCTAssertTrue(T.cpu.supports(op, .f32), "\(op)") }
    XCTAssertTrue(T.cpu.supports(.cast, .bf16))
    XCTAssertFalse(T.cpu.supports(.cast, .i32))
    XCTAssertTrue(T.cpu.supports(.copy, .u8))
    XCTAssertTrue(T.cpu.supports(.matmul, .f16))
    XCTAssertFalse(T.cpu.supports(.rmsNorm, .f16))
  }

  func test_name_mentionsOpenBLASCore() {
    XCTAssertTrue(T.cpu.name.hasPrefix("cpu (OpenBLAS "), T.cpu.name)
    XCTAssertFalse(OpenBLASCore.coreName.isEmpty)
    XCTAssertGreaterThanOrEqual(OpenBLASCore.threadCount, 1)
  }
}
