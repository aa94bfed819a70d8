import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport

final class CPUPermuteTests: XCTestCase {
  let cpu = TestBackends.cpu

  /// out[i] for every output multi-index, computed from the definition.
  func naive(_ x: [Float], _ shape: [Int], _ dims: [Int]) -> [Float] {
    let outShape = dims.map { shape[$0] }
    var strides = [Int](repeating: 1, count: shape.count)
    for i in stride(from: shape.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * shape[i + 1] }
    return (0..<x.count).map { flat in
      var rem = flat, src = 0
      for j in stride(from: outShape.count - 1, through: 0, by: -1) {
        src += (rem % outShape[j]) * strides[dims[j]]; rem /= outShape[j]
      }
      return x[src]
    }
  }

  func test_permute_matchesDefinitionForEveryOrderOfRank3And4() throws {
    for shape in [[3, 4, 5], [2, 3, 4, 5]] {
      let values = TestData.uniform(shape.reduce(1, *), seed: 7)
      let x = try cpu.tensor(values, shape: shape)
      for dims in permutations(Array(0..<shape.count)) {
        let out = try cpu.allocate(dims.map { shape[$0] })
        try cpu.permute(x, dims: dims, into: out)
        XCTAssertEqual(try cpu.floats(out), naive(values, shape, dims), "\(shape) by \(dims)")
      }
    }
  }

  func test_permute_inverseRestoresTheInput() throws {
    let values = TestData.uniform(2 * 5 * 3 * 4, seed: 8)
    let x = try cpu.tensor(values, shape: [2, 5, 3, 4])
    let t = try cpu.allocate([2, 3, 5, 4]), back = try cpu.allocate([2, 5, 3, 4])
    try cpu.permute(x, dims: [0, 2, 1, 3], into: t)
    try cpu.permute(t, dims: [0, 2, 1, 3], into: back)
    XCTAssertEqual(try cpu.floats(back), values)
  }

  func test_permute_rejectsNonPermutationsAndWrongOutputShapes() throws {
    let x = try cpu.allocate([2, 3])
    XCTAssertThrowsError(try cpu.permute(x, dims: [0, 0], into: try cpu.allocate([2, 2])))
    XCTAssertThrowsError(try cpu.permute(x, dims: [1, 0], into: try cpu.allocate([2, 3])))
    XCTAssertThrowsError(try cpu.permute(try cpu.allocate([1, 1, 1, 1, 1]), dims: [0, 1, 2, 3, 4],
                                         into: try cpu.allocate([1, 1, 1, 1, 1])))
    XCTAssertThrowsError(try cpu.permute(x, dims: [1, 0], into: x), "in place")
  }

  func permutations(_ a: [Int]) -> [[Int]] {
    guard a.count > 1 else { return [a] }
    return a.indices.flatMap { i -> [[Int]] in
      var rest = a; let head = rest.remove(at: i)
      return permutations(rest).map { [head] + $0 }
    }
  }
}
