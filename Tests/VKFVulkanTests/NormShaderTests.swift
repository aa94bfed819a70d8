import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of rms_norm.comp and rms_norm_back.comp against the CPU backend.

final class NormShaderTests: XCTestCase {
  /// cols = 1: dx = r·w·dy·(1 − r²x²) with r²x² = x²/(x² + eps) ≈ 1, a cancellation that
  /// leaves ~1e-5 of rounding noise (rstd in Double on the CPU, f32 here); only the
  /// absolute guard is meaningful, so the relative bound is loose.
  static let singleColumnDxNMSE = 1e-1

  func testPushStructs_matchShaderBlocks() {
    XCTAssertEqual(MemoryLayout<RMSNormPush>.size, 4 * 4)      // rows, cols, eps, weightOffset
    XCTAssertEqual(MemoryLayout<RMSNormBackPush>.size, 6 * 4)  // rows, cols, rowsPerBlock, blocks, direct, weightOffset
  }

  private func forward(rows: Int, cols: Int, seed: UInt64,
                       file: StaticString = #filePath, line: UInt = #line) throws {
    let x = TestData.uniform(rows * cols, seed: seed, -2, 2)
    let w = TestData.uniform(cols, seed: seed + 1, 0.5, 1.5)
    let r = try BlockCheck.both(file: file, line: line) { be in
      let xt = try be.tensor(x, shape: [rows, cols]), wt = try be.tensor(w, shape: [cols])
      let out = try be.allocate([rows, cols]), rstd = try be.allocate([rows])
      try be.rmsNorm(xt, weight: wt, eps: 1e-5, into: out, rstd: rstd)
      return [try be.floats(out), try be.floats(rstd)]
    }
    BlockCheck.assertClose(r, nmse: BlockCheck.reductionNMSE, maxAbs: BlockCheck.reductionMaxAbs,
                           "rmsNorm \(rows)×\(cols)", file: file, line: line)
  }

  func testRMSNorm_oddShapes_matchesCPU() throws {
    for rows in [1, 3, 67] {
      for cols in [1, 7, 67, 257, 1000] {
        try forward(rows: rows, cols: cols, seed: UInt64(rows * 1000 + cols))
      }
    }
  }

  /// More rows than maxComputeWorkGroupCount.x: the grid spreads over y.
  func testRMSNorm_rowsBeyondGridLimitX_matchesCPU() throws {
    try forward(rows: 65_537 + 3, cols: 2, seed: 11)
  }

  private func backward(rows: Int, cols: Int, seed: UInt64, withWeightGrad: Bool = true,
                        dxAliasesDOut: Bool = false, weightOffset: Float = 0,
                        file: StaticString = #filePath, line: UInt = #line) throws {
    let x = TestData.uniform(rows * cols, seed: seed, -2, 2)
    let w = TestData.uniform(cols, seed: seed + 1, 0.5, 1.5)
    let dy = TestData.uniform(rows * cols, seed: seed + 2)
    let dw0 = TestData.uniform(cols, seed: seed + 3)  // pre-filled: dWeight accumulates
    let r = try BlockCheck.both(file: file, line: line) { be in
      let xt = try be.tensor(x, shape: [rows, cols]), wt = try be.tensor(w, shape: [cols])
      let out = try be.allocate([rows, cols]), rstd = try be.allocate([rows])
      try be.rmsNorm(xt, weight: wt, weightOffset: weightOffset, eps: 1e-6, into: out, rstd: rstd)
      let dyt = try be.tensor(dy, shape: [rows, cols])
      let dx = dxAliasesDOut ? dyt : try be.allocate([rows, cols])
      let dw = withWeightGrad ? try be.tensor(dw0, shape: [cols]) : nil
      try be.rmsNormBackward(dyt, x: xt, weight: wt, weightOffset: weightOffset, rstd: rstd, dx: dx, dWeight: dw)
      return [try be.floats(dx), try be.floats(out)] + (try dw.map { [try be.floats($0)] } ?? [])
    }
    // dWeight sums `rows` products: allow the reduction tolerance per √rows.
    let maxAbs = BlockCheck.reductionMaxAbs * Double(rows).squareRoot()
    BlockCheck.assertClose((cpu: [r.cpu[1]], vk: [r.vk[1]]), nmse: BlockCheck.reductionNMSE,
                           maxAbs: BlockCheck.reductionMaxAbs, "rmsNorm out \(rows)×\(cols)", file: file, line: line)
    BlockCheck.assertClose((cpu: [r.cpu[0]], vk: [r.vk[0]]),
                           nmse: cols == 1 ? Self.singleColumnDxNMSE : BlockCheck.reductionNMSE,
                           maxAbs: maxAbs, "rmsNormBackward dx \(rows)×\(cols)", file: file, line: line)
    BlockCheck.assertClose((cpu: Array(r.cpu.dropFirst(2)), vk: Array(r.vk.dropFirst(2))),
                           nmse: BlockCheck.reductionNMSE, maxAbs: maxAbs,
                           "rmsNormBackward dWeight \(rows)×\(cols)", file: file, line: line)
  }

  func testRMSNormBackward_oddShapes_matchesCPUAndAccumulatesDWeight() throws {
    for rows in [1, 3, 67] {
      for cols in [1, 7, 67, 257, 1000] {
        try backward(rows: rows, cols: cols, seed: UInt64(rows * 1000 + cols))
      }
    }
  }

  /// 300 rows: several row blocks, so dWeight goes through scratch partials and a reduce pass.
  func testRMSNormBackward_manyRowBlocks_matchesCPU() throws {
    try backward(rows: 300, cols: 67, seed: 5)
  }

  func testRMSNormBackward_withoutWeightGrad_matchesCPU() throws {
    try backward(rows: 3, cols: 257, seed: 6, withWeightGrad: false)
  }

  /// Gemma's (1 + w): the offset in the forward and in pass 0's dx.
  func testRMSNorm_weightOffset_matchesCPU() throws {
    try backward(rows: 67, cols: 257, seed: 8, weightOffset: 1)
  }

  /// dx may alias dOut: dWeight must still see the original dOut.
  func testRMSNormBackward_dxAliasesDOut_matchesCPU() throws {
    try backward(rows: 130, cols: 67, seed: 7, dxAliasesDOut: true)
  }

  // MARK: - LayerNorm

  func testLayerNormPushStructs_matchShaderBlocks() {
    XCTAssertEqual(MemoryLayout<LayerNormPush>.size, 3 * 4)      // rows, cols, eps
    XCTAssertEqual(MemoryLayout<LayerNormBackPush>.size, 6 * 4)  // rows, cols, rowsPerBlock, blocks, hasWeight, hasBias
  }

  /// Forward and backward at odd shapes, more rows than one partial block (two-level column
  /// sums), dx over dOut, and each of dWeight / dBias alone (the other's binding unused).
  func testLayerNorm_forwardAndBackward_matchCPU() throws {
    for (rows, cols, grads, alias) in [(1, 7, (true, true), false), (3, 1000, (true, true), true),
                                       (67, 257, (true, false), false), (200, 67, (false, true), true),
                                       (5, 384, (false, false), false)] {
      let seed = UInt64(rows * 1000 + cols)
      let x = TestData.uniform(rows * cols, seed: seed, -2, 2).map { $0 + 3 }  // mean ≠ 0
      let w = TestData.uniform(cols, seed: seed + 1, 0.5, 1.5), b = TestData.uniform(cols, seed: seed + 2)
      let dy = TestData.uniform(rows * cols, seed: seed + 3)
      let r = try BlockCheck.both { be in
        let xt = try be.tensor(x, shape: [rows, cols]), wt = try be.tensor(w, shape: [cols])
        let out = try be.allocate([rows, cols]), mean = try be.allocate([rows]), rstd = try be.allocate([rows])
        try be.layerNorm(xt, weight: wt, bias: try be.tensor(b, shape: [cols]), eps: 1e-12, into: out, mean: mean,
                         rstd: rstd)
        let dyt = try be.tensor(dy, shape: [rows, cols])
        let dx = alias ? dyt : try be.allocate([rows, cols])
        let dw = grads.0 ? try be.tensor(b, shape: [cols]) : nil, db = grads.1 ? try be.tensor(w, shape: [cols]) : nil
        try be.layerNormBackward(dyt, x: xt, weight: wt, mean: mean, rstd: rstd, dx: dx, dWeight: dw, dBias: db)
        return try [out, mean, rstd, dx].map { try be.floats($0) } + (try [dw, db].compactMap { $0 }.map { try be.floats($0) })
      }
      // The parameter gradients sum `rows` products: the reduction tolerance per √rows.
      BlockCheck.assertClose(r, nmse: BlockCheck.reductionNMSE,
                             maxAbs: BlockCheck.reductionMaxAbs * Double(rows).squareRoot(),
                             "layerNorm \(rows)×\(cols) grads \(grads) alias \(alias)")
    }
  }
}
