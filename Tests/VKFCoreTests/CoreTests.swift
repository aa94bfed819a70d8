import XCTest
import VKFCore

/// A storage that is never read: enough to test views and shape rules without a backend.
final class DummyStorage: TensorStorage {
  let owner = ObjectIdentifier(DummyStorage.self)
  let byteCount: Int
  let memory = MemoryKind.device
  init(bytes: Int) { byteCount = bytes }
}

func dummy(_ shape: [Int], _ dtype: DType = .f32) -> Tensor {
  Tensor(storage: DummyStorage(bytes: shape.reduce(1, *) * dtype.size), shape: shape, dtype: dtype)
}

final class TensorTests: XCTestCase {
  func test_view_offsetsAndBoundsAreChecked() throws {
    let t = dummy([4, 8])
    let r = try t.rows(1..<3)
    XCTAssertEqual(r.shape, [2, 8])
    XCTAssertEqual(r.byteOffset, 8 * 4)
    XCTAssertThrowsError(try t.rows(3..<5))
    XCTAssertThrowsError(try t.view(offset: 30, shape: [3]))
    XCTAssertThrowsError(try t.reshaped([5, 7]))
    XCTAssertEqual(try t.reshaped([32]).shape, [32])
  }

  func test_overlaps_detectsSharedRanges() throws {
    let t = dummy([10])
    XCTAssertTrue(try t.view(offset: 0, shape: [5]).overlaps(t.view(offset: 4, shape: [2])))
    XCTAssertFalse(try t.view(offset: 0, shape: [5]).overlaps(t.view(offset: 5, shape: [5])))
    XCTAssertFalse(dummy([10]).overlaps(t))
  }
}

final class ShapeCheckTests: XCTestCase {
  func test_matmul_derivesBatchStridesAndBroadcast() throws {
    let g = try ShapeCheck.matmul(dummy([3, 5, 7]), dummy([7, 2]), dummy([3, 5, 2]),
                                  transposeA: false, transposeB: false)
    XCTAssertEqual(g, GemmShape(batch: 3, m: 5, n: 2, k: 7, strideA: 35, strideB: 0, strideC: 10,
                                lda: 7, ldb: 2))
    let t = try ShapeCheck.matmul(dummy([7, 5]), dummy([2, 7]), dummy([5, 2]),
                                  transposeA: true, transposeB: true)
    XCTAssertEqual(t.m, 5); XCTAssertEqual(t.k, 7); XCTAssertEqual(t.n, 2)
  }

  func test_matmul_rejectsMismatchedShapesAndDtypes() {
    XCTAssertThrowsError(try ShapeCheck.matmul(dummy([5, 7]), dummy([6, 2]), dummy([5, 2]),
                                               transposeA: false, transposeB: false))
    XCTAssertThrowsError(try ShapeCheck.matmul(dummy([2, 5, 7]), dummy([3, 7, 2]), dummy([2, 5, 2]),
                                               transposeA: false, transposeB: false))
    // 16-bit A and B are widened (mixed precision); C is f32 and operands are floats.
    XCTAssertNoThrow(try ShapeCheck.matmul(dummy([5, 7], .f16), dummy([7, 2], .bf16), dummy([5, 2]),
                                           transposeA: false, transposeB: false))
    XCTAssertThrowsError(try ShapeCheck.matmul(dummy([5, 7]), dummy([7, 2]), dummy([5, 2], .bf16),
                                               transposeA: false, transposeB: false)) { e in
      guard case VKFError.dtypeMismatch = e else { return XCTFail("\(e)") }
    }
    XCTAssertThrowsError(try ShapeCheck.matmul(dummy([5, 7], .i32), dummy([7, 2]), dummy([5, 2]),
                                               transposeA: false, transposeB: false)) { e in
      guard case VKFError.dtypeMismatch = e else { return XCTFail("\(e)") }
    }
    let c = dummy([5, 7])
    XCTAssertThrowsError(try ShapeCheck.matmul(c, dummy([7, 7]), c, transposeA: false, transposeB: false),
                         "output aliasing an input")
  }

  func test_causalSoftmax_rejectsMoreQueriesThanKeys() {
    XCTAssertThrowsError(try ShapeCheck.causalSoftmax(.causalSoftmax, dummy([4, 3]), dummy([4, 3])))
    XCTAssertNoThrow(try ShapeCheck.causalSoftmax(.causalSoftmax, dummy([2, 3, 5]), dummy([2, 3, 5])))
  }

  func test_rope_requiresEvenHeadDimAndMatchingTables() {
    XCTAssertThrowsError(try ShapeCheck.rope(.rope, dummy([2, 3, 5]), dummy([2], .i32), dummy([2]), dummy([2, 3, 5])))
    XCTAssertThrowsError(try ShapeCheck.rope(.rope, dummy([2, 3, 4]), dummy([2]), dummy([2]), dummy([2, 3, 4])))
    XCTAssertNoThrow(try ShapeCheck.rope(.rope, dummy([2, 3, 4]), dummy([2], .i32), dummy([2]), dummy([2, 3, 4])))
  }

  func test_broadcast_requiresRepeatingOperand() {
    XCTAssertNoThrow(try ShapeCheck.broadcast(.add, dummy([4, 6]), dummy([6]), dummy([4, 6])))
    XCTAssertThrowsError(try ShapeCheck.broadcast(.add, dummy([4, 6]), dummy([5]), dummy([4, 6])))
  }
}

final class HyperParameterTests: XCTestCase {
  func test_adamWPacked_holdsBiasCorrectionsOfStep() {
    let h = AdamWHyperParameters(lr: 1e-3, beta1: 0.9, beta2: 0.99, step: 3, maxGradNorm: 1)
    let p = h.packed
    XCTAssertEqual(p.count, AdamWHyperParameters.count)
    XCTAssertEqual(p[5], 1 - 0.9 * 0.9 * 0.9, accuracy: 1e-6)
    XCTAssertEqual(p[6], 1 - 0.99 * 0.99 * 0.99, accuracy: 1e-6)
    XCTAssertEqual(p[8], 1)
  }

  func test_clipFactor_matchesClipGradNorm() {
    XCTAssertEqual(AdamWHyperParameters.clipFactor(sumOfSquares: 16, maxGradNorm: 1), 1 / (4 + 1e-6), accuracy: 1e-7)
    XCTAssertEqual(AdamWHyperParameters.clipFactor(sumOfSquares: 0.25, maxGradNorm: 1), 1)
    XCTAssertEqual(AdamWHyperParameters.clipFactor(sumOfSquares: 100, maxGradNorm: 0), 1)
    // The norm is of the scaled gradient: Σg² = 16 at gradScale 0.5 is a norm of 2.
    XCTAssertEqual(AdamWHyperParameters.clipFactor(sumOfSquares: 16, gradScale: 0.5, maxGradNorm: 1),
                   1 / (2 + 1e-6), accuracy: 1e-7)
  }

  func test_bf16_roundsToNearestEven() {
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: goes to the even mantissa (1).
    XCTAssertEqual(BFloat16.fromFloat(1 + 1.0 / 256), BFloat16.fromFloat(1))
    XCTAssertEqual(BFloat16.toFloat(BFloat16.fromFloat(1 + 3.0 / 256)), 1 + 4.0 / 256)
    XCTAssertTrue(BFloat16.toFloat(BFloat16.fromFloat(.nan)).isNaN)
  }

  func test_ropeInverseFrequencies_matchTransformers() {
    let inv = RoPE.inverseFrequencies(headDim: 8, theta: 10000)
    XCTAssertEqual(inv.count, 4)
    XCTAssertEqual(inv[0], 1)
    XCTAssertEqual(inv[1], 0.1, accuracy: 1e-7)
    XCTAssertEqual(inv[3], 0.001, accuracy: 1e-9)
    // llama3 scaling leaves high frequencies alone and divides low ones by the factor.
    let s = RoPE.Llama3Scaling(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)
    let scaled = RoPE.inverseFrequencies(headDim: 128, theta: 500000, llama3: s)
    let plain = RoPE.inverseFrequencies(headDim: 128, theta: 500000)
    XCTAssertEqual(scaled[0], plain[0])
    XCTAssertEqual(scaled[63], plain[63] / 8, accuracy: 1e-12)
  }
}

final class MetricsTests: XCTestCase {
  func test_mismatch_findsTheOneBadElement() {
    let e: [Float] = (0..<100).map { Float($0) }
    var a = e
    XCTAssertNil(Metrics.mismatch(e, a, nmse: 0, maxAbs: 0))
    a[42] += 0.5
    let why = Metrics.mismatch(e, a, nmse: 1, maxAbs: 0.1)
    XCTAssertNotNil(why)
    XCTAssertTrue(why?.contains("[42]") ?? false, why ?? "")
  }

  func test_nanIsNeverClose() {
    XCTAssertEqual(Metrics.nmse([1, 2], [1, .nan]), .infinity)
    XCTAssertEqual(Metrics.maxAbs([1, 2], [1, .nan]), .infinity)
    XCTAssertNotNil(Metrics.mismatch([1, 2], [1, .nan], nmse: 1, maxAbs: 1))
  }

  func test_nmse_isScaleFree() {
    let e: [Float] = [1, 2, 3], a: [Float] = [1.1, 2, 3]
    XCTAssertEqual(Metrics.nmse(e, a), Metrics.nmse(e.map { $0 * 1000 }, a.map { $0 * 1000 }), accuracy: 1e-9)
  }
}

final class MetricsInfinityTests: XCTestCase {
  func test_equalInfinitiesMatch_differentOnesDoNot() {
    XCTAssertNil(Metrics.mismatch([.infinity, 1], [.infinity, 1], nmse: 0, maxAbs: 0))
    XCTAssertNotNil(Metrics.mismatch([.infinity, 1], [-.infinity, 1], nmse: 1, maxAbs: 1))
    XCTAssertNotNil(Metrics.mismatch([.infinity, 1], [3, 1], nmse: 1, maxAbs: 1))
  }
}

/// `BoundedFile`: the size cap is checked by stat before reading (a sparse 1 TiB file costs
/// nothing to refuse), and files within it read as `Data(contentsOf:)` does.
final class BoundedFileTests: XCTestCase {
  func test_capCheckedBeforeReading_smallFilesRead() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-bounded-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let small = dir.appendingPathComponent("small.json"), huge = dir.appendingPathComponent("huge.json")
    try Data("{}".utf8).write(to: small)
    XCTAssertEqual(try BoundedFile.read(small, BoundedFile.settings), Data("{}".utf8))
    FileManager.default.createFile(atPath: huge.path, contents: nil)
    let handle = try FileHandle(forWritingTo: huge)
    try handle.truncate(atOffset: 1 << 40)
    try handle.close()
    XCTAssertThrowsError(try BoundedFile.read(huge, BoundedFile.tokenizer)) { error in
      XCTAssertEqual(error.localizedDescription,
                     "it is 1024.0 GiB, over the 1.0 GiB a tokenizer.json may be; it is not one, or it is corrupt")
    }
    XCTAssertThrowsError(try BoundedFile.read(dir.appendingPathComponent("absent"), BoundedFile.settings)) { error in
      XCTAssertFalse(error is FileTooLargeError, "a missing file is Foundation's error")
    }
  }
}
