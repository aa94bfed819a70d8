import XCTest
import VKFCore
import VKFTestSupport
@testable import VKFVulkan

/// fill, copy and cast against the CPU backend, bit for bit.
final class MemoryOpsTests: InfraTestCase {
  /// Runs `body` on both backends and compares the raw bytes of the tensor it returns.
  private func same(_ what: String, _ body: (any Backend) throws -> Tensor,
                    file: StaticString = #filePath, line: UInt = #line) throws {
    let cpu = TestBackends.cpu
    let c = try body(cpu), v = try body(vk)
    XCTAssertEqual(try vk.download(v, as: UInt8.self), try cpu.download(c, as: UInt8.self),
                   what, file: file, line: line)
  }

  func testFill_everyDType_matchesCPU() throws {
    try fillEveryDType()
    vk.fillWithShader = true
    defer { vk.fillWithShader = false }
    try fillEveryDType()
  }

  private func fillEveryDType() throws {
    let values: [DType: [Float]] = [
      .f32: [0, -1.5, .infinity, 3.14159], .f16: [0, 1.0009765625, -65504, 1e-6, 70000],
      .bf16: [1.00390625, -3.3, 1e30], .i32: [0, -7.9, 123456], .u8: [0, 200.7, 255],
    ]
    for (dtype, vs) in values {
      for v in vs {
        for n in [1, 2, 3, 5, 1000] {
          try same("fill \(dtype) \(v) n=\(n) shader=\(vk.fillWithShader)") { b in
            let t = try b.allocate([n], dtype)
            try b.fill(t, value: v)
            return t
          }
        }
      }
    }
  }

  /// Views starting and ending inside a 32-bit word must leave the neighbours untouched.
  func testFill_viewsWithPartialWords_keepNeighbours() throws {
    for dtype in [DType.u8, .f16, .bf16, .f32, .i32] {
      for offset in 0..<5 {
        for n in [1, 2, 3, 6] {
          try same("fill view \(dtype) @\(offset) n=\(n)") { b in
            let whole = try b.allocate([16], dtype)
            try b.upload(pattern(16 * dtype.size, seed: 3), to: whole)
            try b.fill(try whole.view(offset: offset, shape: [n]), value: 2)
            return whole
          }
        }
      }
    }
  }

  func testFill_outOfRangeInteger_throws() throws {
    let i = try vk.allocate([2], .i32), u = try vk.allocate([2], .u8)
    XCTAssertThrowsError(try vk.fill(i, value: 3e9))
    XCTAssertThrowsError(try vk.fill(i, value: .nan))
    XCTAssertThrowsError(try vk.fill(u, value: 256))
    XCTAssertThrowsError(try vk.fill(u, value: -1))
  }

  func testCopy_everyDType_views_andOverlap() throws {
    for dtype in DType.allCases {
      try same("copy \(dtype)") { b in
        let src = try b.allocate([33], dtype), dst = try b.allocate([40], dtype)
        try b.upload(pattern(33 * dtype.size, seed: 4), to: src)
        try b.fill(dst, value: 1)
        try b.copy(try src.view(offset: 1, shape: [31]), to: try dst.view(offset: 3, shape: [31]))
        return dst
      }
      // Overlapping views of one storage copy like memmove.
      try same("copy overlap \(dtype)") { b in
        let t = try b.allocate([40], dtype)
        try b.upload(pattern(40 * dtype.size, seed: 5), to: t)
        try b.copy(try t.view(offset: 0, shape: [30]), to: try t.view(offset: 7, shape: [30]))
        return t
      }
    }
    let a = try vk.allocate([4], .f32), b = try vk.allocate([4], .i32)
    XCTAssertThrowsError(try vk.copy(a, to: b))
  }

  func testCopy_shaderPath_matchesTransferPath() throws {
    vk.copyWithShader = true
    defer { vk.copyWithShader = false }
    let src = try vk.tensor(TestData.uniform(1001, seed: 6), shape: [1001])
    let dst = try vk.allocate([1001], .f32)
    try vk.copy(src, to: dst)
    XCTAssertEqual(try vk.floats(dst), try vk.floats(src))
  }

  /// Values that exercise rounding: ties to even in f16 and bf16, f16 subnormals and
  /// overflow, infinities, NaN, signed zero.
  static let castValues: [Float] = {
    var v: [Float] = [0, -0.0, 1, -1, 0.1, 3.14159, 65504, 65519, 65520, 1e5, -1e5, 6e-8, 3e-8,
                      2.9802322e-8, 5.96e-8, 1e-5, 6.1e-5, 1e30, -1e-30, .infinity, -.infinity,
                      .nan, .leastNonzeroMagnitude, .greatestFiniteMagnitude]
    // f16 ties: 1 + k·2⁻¹¹ sits halfway between two f16 values for odd k.
    for k in [1, 3, 5, 7] { v.append(1 + Float(k) * 0x1p-11); v.append(-(1 + Float(k) * 0x1p-11)) }
    // bf16 ties: 1 + k·2⁻⁸.
    for k in [1, 3, 5] { v.append(1 + Float(k) * 0x1p-8); v.append(2 + Float(k) * 0x1p-7) }
    // f16 subnormal ties: (2m+1)·2⁻²⁵.
    for m in [0, 1, 2, 5] { v.append(Float(2 * m + 1) * 0x1p-25) }
    return v + TestData.uniform(1001, seed: 7, -100, 100)
  }()

  func testCast_allPairs_matchCPUBitForBit() throws {
    let floats: [DType] = [.f32, .f16, .bf16]
    for from in floats {
      for to in floats {
        for n in [Self.castValues.count, Self.castValues.count - 1, 1, 2] {
          try same("cast \(from)→\(to) n=\(n)") { b in
            let f = try b.tensor(Array(Self.castValues.prefix(n)), shape: [n])
            let src = try b.allocate([n], from)
            try b.cast(f, to: src)
            let dst = try b.allocate([n + 1], to)
            try b.fill(dst, value: 42)       // the odd tail must keep its neighbour
            try b.cast(src, to: try dst.view(shape: [n]))
            return dst
          }
        }
      }
    }
  }

  func testCast_f16RoundingTies_matchSwiftFloat16() throws {
    let xs: [Float] = [1 + 0x1p-11, 1 + 3 * 0x1p-11, 0x1p-25, 3 * 0x1p-25, 65520, 65519.99]
    let t = try vk.tensor(xs, shape: [xs.count])
    let h = try vk.allocate([xs.count], .f16)
    try vk.cast(t, to: h)
    XCTAssertEqual(try vk.download(h, as: UInt16.self), xs.map { Float16($0).bitPattern })
    let bf = try vk.allocate([xs.count], .bf16)
    try vk.cast(t, to: bf)
    XCTAssertEqual(try vk.download(bf, as: UInt16.self), xs.map(BFloat16.fromFloat))
  }

  func testCast_16BitViewAtOddElement_throws() throws {
    let h = try vk.allocate([8], .f16), f = try vk.allocate([8], .f32)
    XCTAssertThrowsError(try vk.cast(try h.view(offset: 1, shape: [3]), to: try f.view(shape: [3]))) { e in
      guard case VKFError.unsupported = e else { return XCTFail("\(e)") }
    }
    XCTAssertThrowsError(try vk.cast(f, to: try vk.allocate([8], .i32)))
  }
}
