import VKFCore
import VKFTestSupport
import XCTest

@testable import VKFCPU

/// Bad calls throw `VKFError` and leave the process alive.
final class CPURejectionTests: XCTestCase {
  func test_matmul_wrongShapesAndDTypes_throw() throws {
    let a = try T.zeros([3, 4]), b = try T.zeros([5, 6]), c = try T.zeros([3, 6])
    XCTAssertThrowsError(try T.cpu.matmul(a, b, into: c))
    let h = try T.cpu.allocate([3, 6], .f16), ints = try T.cpu.allocate([4, 6], .i32)
    XCTAssertThrowsError(try T.cpu.matmul(a, try T.zeros([4, 6]), into: h))  // 16-bit C
    XCTAssertThrowsError(try T.cpu.matmul(a, ints, into: c))  // integer B
    XCTAssertThrowsError(try T.cpu.matmul(a, try T.zeros([4, 6]), into: a))  // C shape
    let b3 = try T.zeros([2, 4, 6]), c3 = try T.zeros([3, 3, 6])
    XCTAssertThrowsError(try T.cpu.matmul(a, b3, into: c3))  // batch 2 vs 3
  }

  func test_tensorFromAnotherCPUBackend_throwsWrongBackend() throws {
    let other = CPUBackend()
    let foreign = try other.tensor([1, 2, 3] as [Float], shape: [3])
    let mine = try T.zeros([3])
    XCTAssertThrowsError(try T.cpu.add(mine, foreign, alpha: 1, into: mine)) { e in
      guard case VKFError.wrongBackend = e else { return XCTFail("\(e)") }
    }
    XCTAssertThrowsError(try T.cpu.copy(foreign, to: mine))
    XCTAssertThrowsError(try T.cpu.floats(foreign))
  }

  func test_viewPastStorage_throws() throws {
    let t = try T.zeros([4])
    let bogus = Tensor(storage: t.storage, shape: [8], dtype: .f32)
    XCTAssertThrowsError(try T.cpu.scale(bogus, by: 2, into: bogus))
  }

  func test_embedding_outOfRangeIds_throw() throws {
    let table = try T.zeros([5, 2]), out = try T.zeros([2, 2])
    for bad: Int32 in [5, -1] {
      XCTAssertThrowsError(try T.cpu.embedding(ids: try T.i32([0, bad], [2]), table: table, into: out)) { e in
        guard case VKFError.outOfRange = e else { return XCTFail("\(e)") }
      }
      XCTAssertThrowsError(try T.cpu.embeddingBackward(ids: try T.i32([bad, 0], [2]), dOut: out, dTable: table))
    }
    XCTAssertThrowsError(try T.cpu.embedding(ids: try T.zeros([2]), table: table, into: out))  // f32 ids
  }

  func test_crossEntropy_badTargetsAndShapes_throw() throws {
    let logits = try T.zeros([2, 4]), losses = try T.zeros([2])
    for bad: Int32 in [4, -2] {
      XCTAssertThrowsError(try T.cpu.crossEntropy(logits: logits, targets: try T.i32([0, bad], [2]),
                                                  ignoreIndex: -100, normalizer: nil, losses: losses,
                                                  dLogits: nil)) { e in
        guard case VKFError.outOfRange = e else { return XCTFail("\(e)") }
      }
    }
    XCTAssertThrowsError(try T.cpu.crossEntropy(logits: logits, targets: try T.i32([0], [1]),
                                                ignoreIndex: -100, normalizer: nil, losses: losses,
                                                dLogits: nil))
    XCTAssertThrowsError(try T.cpu.crossEntropy(logits: logits, targets: try T.i32([0, 1], [2]),
                                                ignoreIndex: -100, normalizer: 0, losses: losses,
                                                dLogits: nil))
  }

  func test_blockOps_wrongShapes_throw() throws {
    let x = try T.zeros([3, 8]), w = try T.zeros([7]), rstd = try T.zeros([3])
    XCTAssertThrowsError(try T.cpu.rmsNorm(x, weight: w, eps: 1e-5, into: x, rstd: rstd))
    let x3 = try T.zeros([2, 2, 7])  // odd head size
    XCTAssertThrowsError(try T.cpu.rope(x3, positions: try T.i32([0, 1], [2]),
                                        invFreq: try T.zeros([3]), into: x3))
    XCTAssertThrowsError(try T.cpu.causalSoftmax(try T.zeros([5, 3]), scale: 1, into: try T.zeros([5, 3])))
    XCTAssertThrowsError(try T.cpu.swiglu(gate: x, up: try T.zeros([3, 7]), into: x))
    XCTAssertThrowsError(try T.cpu.add(x, try T.zeros([5]), alpha: 1, into: x))
    XCTAssertThrowsError(try T.cpu.adamW(param: x, grad: x, m: x, v: try T.zeros([2]),
                                         hyper: try T.zeros([16]), gradSumOfSquares: nil))
  }

  func test_nf4_badGeometry_throws() throws {
    let q = try NF4Weight.quantizing(TestData.uniform(64, seed: 99), rows: 8, cols: 8, on: T.cpu)
    var wrong = q
    wrong.rows = 16
    XCTAssertThrowsError(try T.cpu.dequantizeNF4(wrong, into: try T.zeros([16, 8])))
    XCTAssertThrowsError(try T.cpu.matmulNF4(try T.zeros([2, 7]), q, into: try T.zeros([2, 8]),
                                             transposeB: true, alpha: 1, beta: 0))
  }
}
