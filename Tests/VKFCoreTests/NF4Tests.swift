import XCTest
import VKFCore

final class NF4Tests: XCTestCase {
  /// The 4-bit quantiser's worst case is half the widest gap between codes (−1 … −0.696).
  static let roundTripLimit: Float = (1.0 - 0.6961928009986877) / 2 + 1e-6

  func test_nearestCode_picksExactCodesAndMidpointsGoDown() {
    for (i, c) in NF4.codebook.enumerated() {
      XCTAssertEqual(NF4.nearestCode(c), UInt8(i), "code \(c)")
    }
    // Just above a midpoint goes to the upper code, at or below to the lower one.
    let mid = (NF4.codebook[7] + NF4.codebook[8]) / 2
    XCTAssertEqual(NF4.nearestCode(mid.nextUp), 8)
    XCTAssertEqual(NF4.nearestCode(mid.nextDown), 7)
  }

  func test_quantize_packsFirstElementInHighNibble() {
    // Block absmax 1: -1 → code 0, 1 → code 15.
    let (packed, absmax) = NF4.quantize([-1, 1, 1, -1], blockSize: 64)
    XCTAssertEqual(packed, [0x0F, 0xF0])
    XCTAssertEqual(absmax, [1])
  }

  func test_quantize_roundTripErrorIsBoundedByCodeGaps() {
    var rng = SystemRandomNumberGenerator()
    let values = (0..<1000).map { _ in Float.random(in: -3...3, using: &rng) }
    let (packed, absmax) = NF4.quantize(values)
    XCTAssertEqual(absmax.count, (1000 + 63) / 64)
    let back = NF4.dequantize(packed: packed, absmax: absmax, count: values.count)
    for i in values.indices {
      let scale = absmax[i / 64]
      XCTAssertLessThanOrEqual(abs(back[i] - values[i]) / scale, Self.roundTripLimit, "element \(i)")
    }
  }

  func test_quantize_zeroBlockStaysZero() {
    let (packed, absmax) = NF4.quantize([Float](repeating: 0, count: 64))
    XCTAssertEqual(absmax, [0])
    XCTAssertEqual(NF4.dequantize(packed: packed, absmax: absmax, count: 64), [Float](repeating: 0, count: 64))
  }

  /// The shader include is the GPU copy of the codebook: both must agree value for value.
  func test_shaderCodebook_matchesSwiftCodebook() throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../Shaders/common/nf4.glsl")
    let text = try String(contentsOf: url, encoding: .utf8)
    guard let open = text.range(of: "float[16]("), let close = text.range(of: ");", range: open.upperBound..<text.endIndex) else {
      return XCTFail("NF4_CODE array not found in nf4.glsl")
    }
    let values = text[open.upperBound..<close.lowerBound]
      .split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    XCTAssertEqual(values.compactMap { $0 }, NF4.codebook)
  }

  /// The shader's dynamic map (f32 bit patterns) is NF4DoubleQuant.dynamicMap bit for bit.
  func test_shaderDynamicMap_matchesSwiftMap() throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../Shaders/common/nf4.glsl")
    let text = try String(contentsOf: url, encoding: .utf8)
    guard let open = text.range(of: "uint[256]("), let close = text.range(of: ");", range: open.upperBound..<text.endIndex) else {
      return XCTFail("NF4_DQ_MAP array not found in nf4.glsl")
    }
    let bits = text[open.upperBound..<close.lowerBound].split(separator: ",").map {
      UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines).dropFirst(2).dropLast(), radix: 16)
    }
    XCTAssertEqual(bits.compactMap { $0 }.map(Float.init(bitPattern:)), NF4DoubleQuant.dynamicMap)
  }

  /// decode is map[code]·scale + offset with one nested scale per 256 codes.
  func test_doubleQuant_decodeUsesNestedBlocks() {
    let absmax = (0..<600).map { Float($0 % 97) * 0.01 + 0.05 }
    let e = NF4DoubleQuant.encode(absmax)
    XCTAssertEqual(e.scales.count, 3)
    let decoded = e.decoded
    for i in [0, 255, 256, 511, 512, 599] {
      XCTAssertEqual(decoded[i], NF4DoubleQuant.dynamicMap[Int(e.codes[i])] * e.scales[i / 256] + e.offset)
      // 8-bit codes of values within [0.05, 1.01]: within 1 % of the range.
      XCTAssertEqual(decoded[i], absmax[i], accuracy: 0.01)
    }
  }
}
