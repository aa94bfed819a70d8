import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFVulkan
import VKFTestSupport

/// Every op on every backend rejects a wrong shape, a wrong dtype and a tensor owned by
/// another backend with a thrown `VKFError` — never a trap, never a silent write.
final class RejectionTests: XCTestCase {
  /// One bad call: `good` builds valid operands on `b`; the case returns the call to make
  /// with one operand replaced by `bad`.
  struct BadCall {
    let op: Op
    /// Shape of the operand the call replaces when it is valid (f32, seeded values).
    var good: [Int] = [4, 8]
    /// The operand's valid dtype (f32 operands hold seeded values, i32 ones zeros).
    var dtype: DType = .f32
    let run: (_ b: Backend, _ operand: Tensor) throws -> Void
  }

  /// Calls with one operand replaced: each op's first input, where shape/dtype/owner break.
  static func calls(_ b: Backend) throws -> [BadCall] {
    let x = try b.random([4, 8], seed: 1), y = try b.allocate([4, 8]), w8 = try b.random([8], seed: 2)
    let r4 = try b.allocate([4]), ids = try b.ints([0, 1, 2, 3]), one = try b.zeros([1])
    let q = try NF4Weight.quantizing(TestData.uniform(64, seed: 3), rows: 8, cols: 8, on: b)
    let q8 = try TestData.int8Weight(rows: 8, cols: 8, blockSize: 8, zeroPoints: true, seed: 3, on: b)
    let inv = try b.tensor([Float](repeating: 1, count: 4), shape: [4])
    let hyper = try b.tensor(AdamWHyperParameters(lr: 1e-3).packed, shape: [AdamWHyperParameters.count])
    let heads = try x.reshaped([4, 1, 8]), outHeads = try y.reshaped([4, 1, 8])
    return [
      BadCall(op: .copy) { b, bad in try b.copy(bad, to: y) },
      BadCall(op: .permute) { b, bad in try b.permute(bad, dims: [1, 0], into: try b.allocate([8, 4])) },
      BadCall(op: .cast) { b, bad in try b.cast(bad, to: try b.allocate([4, 8], .f16)) },
      BadCall(op: .matmul) { b, bad in try b.matmul(bad, w8.reshaped([8, 1]), into: r4.reshaped([4, 1])) },
      BadCall(op: .dequantizeNF4, good: [8, 8]) { b, bad in try b.dequantizeNF4(q, into: bad) },
      BadCall(op: .matmulNF4) { b, bad in try b.matmulNF4(bad, q, into: y, transposeB: true, alpha: 1, beta: 0) },
      BadCall(op: .dequantizeInt8, good: [8, 8]) { b, bad in try b.dequantizeInt8(q8, into: bad) },
      BadCall(op: .fakeQuantize, good: [4, 8]) { b, bad in try b.fakeQuantize(bad, kind: .int8Channel, into: y) },
      BadCall(op: .matmulInt8) { b, bad in try b.matmulInt8(bad, q8, into: y, transposeB: true, alpha: 1, beta: 0) },
      BadCall(op: .loraForward) { b, bad in
        try b.loraForward(bad, loraX: nil, base: .nf4(q), a: x, b: try b.allocate([8, 4]), scale: 1,
                          into: y, xa: try b.allocate([4, 4]))
      },
      BadCall(op: .rmsNorm) { b, bad in try b.rmsNorm(bad, weight: w8, eps: 1e-5, into: y, rstd: r4) },
      BadCall(op: .rmsNormBackward) { b, bad in
        try b.rmsNormBackward(bad, x: x, weight: w8, rstd: r4, dx: y, dWeight: nil)
      },
      BadCall(op: .activation) { b, bad in try b.activation(.gelu, bad, into: y) },
      BadCall(op: .activationBackward) { b, bad in try b.activationBackward(.gelu, bad, x: x, into: y) },
      BadCall(op: .layerNorm) { b, bad in
        try b.layerNorm(bad, weight: w8, bias: w8, eps: 1e-5, into: y, mean: r4, rstd: try b.allocate([4]))
      },
      BadCall(op: .layerNormBackward) { b, bad in
        try b.layerNormBackward(bad, x: x, weight: w8, mean: r4, rstd: try b.allocate([4]), dx: y, dWeight: nil, dBias: nil)
      },
      BadCall(op: .rope, good: [4, 1, 8]) { b, bad in try b.rope(bad, positions: ids, invFreq: inv, into: outHeads) },
      BadCall(op: .ropeBackward, good: [4]) { b, bad in try b.ropeBackward(heads, positions: ids, invFreq: bad, into: outHeads) },
      BadCall(op: .causalSoftmax, good: [8, 8]) { b, bad in try b.causalSoftmax(bad, scale: 1, into: try b.allocate([8, 8])) },
      BadCall(op: .causalSoftmaxBackward, good: [8, 8]) { b, bad in
        let sq = try b.allocate([8, 8]); try b.causalSoftmaxBackward(bad, out: sq, scale: 1, into: try b.allocate([8, 8]))
      },
      // q (1, 2, 4, 8) over one kv head; the bad operand replaces q, then dOut.
      BadCall(op: .attention, good: [1, 2, 4, 8]) { b, bad in
        try b.attention(q: bad, k: try b.allocate([1, 1, 4, 8]), v: try b.allocate([1, 1, 4, 8]), scale: 1,
                        into: try b.allocate([1, 2, 4, 8]), lse: try b.allocate([1, 2, 4]))
      },
      BadCall(op: .attentionBackward, good: [1, 2, 4, 8]) { b, bad in
        let kv = try b.allocate([1, 1, 4, 8])
        try b.attentionBackward(bad, q: try b.allocate([1, 2, 4, 8]), k: kv, v: kv, out: try b.allocate([1, 2, 4, 8]),
                                lse: try b.allocate([1, 2, 4]), scale: 1, delta: try b.allocate([1, 2, 4]),
                                dq: try b.allocate([1, 2, 4, 8]), dk: try b.allocate([1, 1, 4, 8]),
                                dv: try b.allocate([1, 1, 4, 8]))
      },
      BadCall(op: .swiglu) { b, bad in try b.swiglu(gate: bad, up: x, into: y) },
      BadCall(op: .swigluBackward) { b, bad in
        try b.swigluBackward(bad, gate: x, up: x, dGate: y, dUp: try b.allocate([4, 8]))
      },
      BadCall(op: .embedding) { b, bad in try b.embedding(ids: ids, table: bad, into: y) },
      // Mixture of experts: 4 tokens, 8 experts, top-2, 8 expert rows (alignment 1).
      BadCall(op: .moeRoute) { b, bad in
        try b.moeRoute(logits: bad, topK: 2, normalize: true, probs: try b.allocate([4, 8]), weights: try b.allocate([4, 2]),
                       experts: try b.allocate([4, 2], .i32))
      },
      BadCall(op: .moeDispatch, good: [4, 2], dtype: .i32) { b, bad in
        try b.moeDispatch(experts: bad, expertCount: 8, alignment: 1, offsets: try b.allocate([9], .i32),
                          slots: try b.allocate([4, 2], .i32), sources: try b.allocate([8], .i32))
      },
      BadCall(op: .moeGather) { b, bad in
        try b.moeGather(bad, sources: try b.zeros([8], .i32), topK: 2, weights: nil, into: try b.allocate([8, 8]))
      },
      BadCall(op: .moeCombine, good: [8, 8]) { b, bad in
        try b.moeCombine(bad, slots: try b.zeros([4, 2], .i32), weights: nil, into: y, accumulate: false)
      },
      BadCall(op: .moeCombineBackward) { b, bad in
        try b.moeCombineBackward(bad, rows: try b.allocate([8, 8]), slots: try b.zeros([4, 2], .i32),
                                 dWeights: try b.allocate([4, 2]))
      },
      BadCall(op: .groupedMatmul, good: [8, 8]) { b, bad in
        try b.groupedMatmul(bad, try b.random([2, 4, 8], seed: 4), into: try b.allocate([8, 4]), offsets: try b.zeros([3], .i32),
                            transposeA: false, transposeB: true, beta: 0)
      },
      // q as 2 experts of 4 rows: a (8, 8)·W_eᵀ into c (8, 4).
      BadCall(op: .groupedMatmulNF4, good: [8, 8]) { b, bad in
        try b.groupedMatmulNF4(bad, q, experts: 2, into: try b.allocate([8, 4]), offsets: try b.zeros([3], .i32),
                               transposeB: true, beta: 0)
      },
      BadCall(op: .moeRouterStatistics) { b, bad in
        try b.moeRouterStatistics(probs: bad, experts: try b.zeros([4, 2], .i32), tokenMask: nil, into: try b.zeros([17]))
      },
      BadCall(op: .moeAuxLoss, good: [17]) { b, bad in
        try b.moeAuxLoss(stats: bad, coefficient: 0.5, weight: nil, lossSum: try b.zeros([1]), gradient: try b.allocate([8]))
      },
      BadCall(op: .moeRouteBackward, good: [4, 2]) { b, bad in
        try b.moeRouteBackward(dWeights: bad, probs: try b.random([4, 8], seed: 5), weights: try b.random([4, 2], seed: 6),
                               experts: try b.zeros([4, 2], .i32), normalize: true, auxGradient: nil, tokenMask: nil,
                               into: try b.allocate([4, 8]))
      },
      BadCall(op: .embeddingBackward) { b, bad in try b.embeddingBackward(ids: ids, dOut: bad, dTable: y) },
      BadCall(op: .crossEntropy) { b, bad in
        try b.crossEntropy(logits: bad, targets: ids, ignoreIndex: -100, normalizer: nil, losses: r4, dLogits: nil)
      },
      BadCall(op: .preferenceLoss, good: [4]) { b, bad in
        try b.preferenceLoss(policy: bad, reference: inv, answerTokens: inv, pairsInStep: one,
                             parameters: PreferenceLossParameters(kind: .sigmoid, beta: 0.1),
                             tokenWeights: y, lossSum: try b.zeros([1]),
                             metrics: try b.zeros([PreferenceLossParameters.metricCount]))
      },
      BadCall(op: .add) { b, bad in try b.add(bad, w8, alpha: 1, into: y) },
      BadCall(op: .mul) { b, bad in try b.mul(bad, x, into: y) },
      BadCall(op: .scale) { b, bad in try b.scale(bad, by: 2, into: y) },
      BadCall(op: .scaleRows) { b, bad in try b.scaleRows(bad, weights: inv, into: y) },
      BadCall(op: .sumOfSquares, good: [1]) { b, bad in try b.sumOfSquares(x, into: bad) },
      BadCall(op: .dropoutMask, good: [2], dtype: .i32) { b, bad in
        try b.dropoutMask(seed: bad, stream: 0, p: 0.1, into: y)
      },
      BadCall(op: .sampleTokens) { b, bad in
        try b.sampleTokens(logits: bad, presence: nil, parameters: SamplingParameters(temperature: 1), into: ids)
      },
      BadCall(op: .adamW) { b, bad in
        try b.adamW(param: bad, grad: x, m: y, v: try b.zeros([4, 8]), hyper: hyper, gradSumOfSquares: one)
      },
    ]
  }

  func test_everyOp_rejectsBadShapeDtypeAndForeignTensors() throws {
    var backends: [Backend] = [TestBackends.cpu]
    if let vk = TestBackends.vulkan { backends.append(vk) } else if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      XCTFail("VKF_REQUIRE_VULKAN=1 but no Vulkan backend")
    }
    let foreignCPU = CPUBackend()
    for b in backends {
      let calls = try Self.calls(b)
      XCTAssertEqual(Set(calls.map(\.op)), Set(Op.allCases).subtracting([.fill]), "every op but fill has a bad call")
      for call in calls {
        // The valid call goes through — so the throws below are about the one bad operand.
        func valid(_ on: Backend) throws -> Tensor {
          call.dtype == .i32 ? try on.zeros(call.good, .i32) : try on.random(call.good, seed: 9)
        }
        XCTAssertNoThrow(try call.run(b, try valid(b)), "\(b.name): valid \(call.op)")
        // Then a wrong shape, a wrong dtype, and the right shape on another backend.
        let wrongShape = try b.allocate([3, 5], call.dtype)
        let wrongType = try b.allocate(call.good, call.dtype == .i32 ? .f32 : .i32)
        let foreign = try valid(foreignCPU)
        for (what, bad) in [("shape", wrongShape), ("dtype", wrongType), ("owner", foreign)] {
          XCTAssertThrowsError(try call.run(b, bad), "\(b.name): \(call.op) accepted a bad \(what)") { e in
            XCTAssertTrue(e is VKFError, "\(call.op) threw \(e)")
          }
        }
      }
      XCTAssertThrowsError(try b.fill(try b.allocate([2], .u8), value: 300), "\(b.name): fill u8 with 300")
      if let vk = b as? VulkanBackend { XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages() }
    }
  }
}
