import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
import VKFVulkan

/// A whole training step composed only of Backend ops — embedding, RMSNorm, LoRA q
/// projection, RoPE, causal single-head attention, SwiGLU MLP, tied LM head, fused
/// cross-entropy, the full backward pass, global-norm clipping and AdamW — run on every
/// backend and compared with the CPU. It checks what single-op cases cannot: hundreds of
/// dependent dispatches recorded into one batch with the right barriers, views, in-place
/// updates and accumulation across ops.
final class TrainingStepParityTests: XCTestCase {
  /// Loss and gradients after one step: many dependent f32 reductions in another order;
  /// each op alone is within 1e-10, a chain of ~20 stays within 1e-8.
  static let gradientTolerance = Tolerance(nmse: 1e-8, maxAbs: 1e-4)
  /// Parameters after two AdamW steps at lr 1e-3: update noise is lr × gradient noise
  /// (~1e-8); one wrongly signed update would differ by 2e-3.
  static let parameterTolerance = Tolerance(nmse: 1e-10, maxAbs: 1e-4)

  func test_attentionMLPStep_matchesCPU() throws {
    let others: [Backend]
    if let vk = TestBackends.vulkan { others = [vk] } else if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      return XCTFail("VKF_REQUIRE_VULKAN=1 but no Vulkan backend: \(TestBackends.vulkanResult)")
    } else { throw XCTSkip("no Vulkan device") }

    let expected = try MiniBlock.train(on: TestBackends.cpu, steps: 2)
    XCTAssertTrue(expected.losses.allSatisfy { $0.isFinite && $0 > 0 }, "\(expected.losses)")
    XCTAssertLessThan(expected.losses[1], expected.losses[0], "two AdamW steps lower the loss")
    for backend in others {
      let actual = try MiniBlock.train(on: backend, steps: 2)
      let pairs: [(String, [Float], [Float], Tolerance)] = [
        ("losses", expected.losses, actual.losses, Self.gradientTolerance),
      ] + zip(expected.firstGradients, actual.firstGradients).enumerated().map {
        ("gradient of \(MiniBlock.trainedNames[$0.offset])", $0.element.0, $0.element.1, Self.gradientTolerance)
      } + zip(expected.parameters, actual.parameters).enumerated().map {
        ("\(MiniBlock.trainedNames[$0.offset]) after 2 steps", $0.element.0, $0.element.1, Self.parameterTolerance)
      }
      for (name, e, a, tol) in pairs {
        if let why = Compare.check(e, a, nmse: tol.nmse, maxAbs: tol.maxAbs) {
          XCTFail("\(name) on \(backend.name): \(why)")
        }
      }
      if let vk = backend as? VulkanBackend {
        XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages()
      }
    }
  }
}

/// Recording a step once and replaying it gives the eager results bit for bit, on every
/// backend, and a replay pays no descriptor sets or pipelines and one submit and wait.
final class ReplayedStepTests: XCTestCase {
  func test_replayedStep_equalsEagerStep_bitForBit() throws {
    var backends: [Backend] = [TestBackends.cpu]
    if let vk = TestBackends.vulkan { backends.append(vk) } else if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      return XCTFail("VKF_REQUIRE_VULKAN=1 but no Vulkan backend: \(TestBackends.vulkanResult)")
    }
    for b in backends {
      let eager = try MiniBlock.train(on: b, steps: 3)
      var replayCosts: [ExecutionStatistics] = []
      let replayed = try MiniBlock.train(on: b, steps: 3, replayed: true) { replayCosts.append($0) }
      XCTAssertEqual(replayed.losses, eager.losses, b.name)
      XCTAssertEqual(replayed.firstGradients, eager.firstGradients, b.name)
      XCTAssertEqual(replayed.parameters, eager.parameters, b.name)
      guard let vk = b as? VulkanBackend else { continue }
      XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages()
      for c in replayCosts {
        XCTAssertEqual(c.submits, 1, "the replay and the loss read go in one submission")
        XCTAssertEqual(c.hostWaits, 1)
        XCTAssertEqual(c.descriptorSetAllocations, 0, "sets were made when the step was recorded")
        XCTAssertEqual(c.pipelineCreations, 0)
        XCTAssertEqual(c.bytesDownloaded, MiniBlock.N * 4, "the per-token losses, nothing else")
        XCTAssertGreaterThan(c.dispatches, 50)
        XCTAssertLessThan(Double(c.barriers), 0.8 * Double(c.dispatches))
      }
    }
  }

  func test_recordedBody_mayNotTransferOrWait() throws {
    var backends: [Backend] = [TestBackends.cpu]
    if let vk = TestBackends.vulkan { backends.append(vk) }
    for b in backends {
      let t = try b.allocate([4])
      // Vulkan refuses while recording (record throws); the CPU when the body replays.
      func refused(_ body: @escaping () throws -> Void) -> Bool {
        do {
          try b.replay([try b.record(body)])
          try b.synchronize()
          return false
        } catch { return true }
      }
      XCTAssertTrue(refused { try b.upload([Float](repeating: 1, count: 4), to: t) }, b.name)
      XCTAssertTrue(refused { _ = try b.floats(t) }, b.name)
      XCTAssertTrue(refused { try b.synchronize() }, b.name)
      XCTAssertFalse(refused { try b.fill(t, value: 2) }, b.name)
      XCTAssertEqual(try b.floats(t), [2, 2, 2, 2])
    }
  }

  func test_replay_ofAnotherBackendsRecording_throws() throws {
    let other = CPUBackend()
    let r = try other.record {}
    XCTAssertThrowsError(try TestBackends.cpu.replay([r])) { e in
      guard case VKFError.wrongBackend = e else { return XCTFail("\(e)") }
    }
  }
}

/// One pre-norm transformer block with a single attention head (so (B·T, C) activations are
/// already head-major), LoRA on q, and an LM head tied to the embedding.
/// Legend: B batch, T tokens per row, N = B·T, C model width (= head size), F MLP width,
/// V vocabulary, R LoRA rank.
enum MiniBlock {
  static let (B, T, C, F, V, R) = (2, 5, 16, 24, 29, 4)
  static var N: Int { B * T }
  static let loraScale: Float = 2
  static let trainedNames = ["embedding (tied)", "post-attention norm", "lora_A", "lora_B"]

  struct Result { var losses: [Float]; var firstGradients: [[Float]]; var parameters: [[Float]] }

  /// Trains `steps` steps; `replayed`: the step's ops are recorded once (`Backend.record`)
  /// and replayed each step, only the AdamW hyper-parameters uploaded in between.
  /// `costs` collects each step's `ExecutionStatistics`.
  static func train(on b: Backend, steps: Int, replayed: Bool = false,
                    costs: ((ExecutionStatistics) -> Void)? = nil) throws -> Result {
    let (N, C, F, V, R) = (self.N, self.C, self.F, self.V, self.R)
    // Parameters (seeded, identical on every backend).
    let E = try b.random([V, C], seed: 100, -0.5, 0.5)
    let g1 = try b.random([C], seed: 101, 0.5, 1.5), g2 = try b.random([C], seed: 102, 0.5, 1.5)
    let scaleW: Float = 0.3
    let Wq = try b.random([C, C], seed: 103, -scaleW, scaleW), Wk = try b.random([C, C], seed: 104, -scaleW, scaleW)
    let Wv = try b.random([C, C], seed: 105, -scaleW, scaleW), Wo = try b.random([C, C], seed: 106, -scaleW, scaleW)
    let Wg = try b.random([F, C], seed: 107, -scaleW, scaleW), Wu = try b.random([F, C], seed: 108, -scaleW, scaleW)
    let Wd = try b.random([C, F], seed: 109, -scaleW, scaleW)
    let Aq = try b.random([R, C], seed: 110, -0.2, 0.2), Bq = try b.random([C, R], seed: 111, -0.2, 0.2)
    let trained = [E, g2, Aq, Bq]
    let grads = try trained.map { try b.allocate($0.shape) }
    let moments = try trained.map { (try b.zeros($0.shape), try b.zeros($0.shape)) }
    var ids = TestData.ints(N, seed: 112, upper: Int32(V))
    let targets = try b.ints(ids.enumerated().map { $0.offset % T == T - 1 ? -100 : ids[$0.offset + 1] })
    ids[3] = ids[7]  // a repeated token: the embedding backward must accumulate it
    let idT = try b.ints(ids)
    let pos = try b.ints((0..<N).map { Int32($0 % T) })
    let inv = try b.tensor(RoPE.inverseFrequencies(headDim: C, theta: 10000), shape: [C / 2])

    // Activations.
    func act(_ shape: [Int]) throws -> Tensor { try b.allocate(shape) }
    let x0 = try act([N, C]), h1 = try act([N, C]), rstd1 = try act([N]), q = try act([N, C])
    let xaq = try act([N, R]), k = try act([N, C]), v = try act([N, C]), qr = try act([N, C])
    let kr = try act([N, C]), S = try act([B, T, T]), P = try act([B, T, T]), O = try act([N, C])
    let x1 = try act([N, C]), h2 = try act([N, C]), rstd2 = try act([N]), gt = try act([N, F])
    let up = try act([N, F]), m = try act([N, F]), x2 = try act([N, C]), logits = try act([N, V])
    let losses = try act([N]), dLogits = try act([N, V])
    // Gradients of activations.
    let dx2 = try act([N, C]), dm = try act([N, F]), dgt = try act([N, F]), dup = try act([N, F])
    let dh2 = try act([N, C]), tmp = try act([N, C]), dO = try act([N, C]), dP = try act([B, T, T])
    let dv = try act([N, C]), dS = try act([B, T, T]), dqr = try act([N, C]), dkr = try act([N, C])
    let dq = try act([N, C]), dk = try act([N, C]), dxa = try act([N, R]), dh1 = try act([N, C])
    let sumSq = try act([1]), hyper = try act([AdamWHyperParameters.count])
    func heads(_ t: Tensor) throws -> Tensor { try t.reshaped([N, 1, C]) }
    func seqs(_ t: Tensor) throws -> Tensor { try t.reshaped([B, T, C]) }
    let attnScale = 1 / Float(C).squareRoot()

    var result = Result(losses: [], firstGradients: [], parameters: [])
    func runStep() throws {
      // MARK: forward
      try b.embedding(ids: idT, table: E, into: x0)
      try b.rmsNorm(x0, weight: g1, eps: 1e-5, into: h1, rstd: rstd1)
      try b.loraForward(h1, loraX: nil, base: .dense(Wq), a: Aq, b: Bq, scale: loraScale, into: q, xa: xaq)
      try b.matmul(h1, Wk, into: k, transposeB: true)
      try b.matmul(h1, Wv, into: v, transposeB: true)
      try b.rope(try heads(q), positions: pos, invFreq: inv, into: try heads(qr))
      try b.rope(try heads(k), positions: pos, invFreq: inv, into: try heads(kr))
      try b.matmul(try seqs(qr), try seqs(kr), into: S, transposeB: true)
      try b.causalSoftmax(S, scale: attnScale, into: P)
      try b.matmul(P, try seqs(v), into: try seqs(O))
      try b.matmul(O, Wo, into: x1, transposeB: true)
      try b.add(x1, x0, into: x1)                                        // residual
      try b.rmsNorm(x1, weight: g2, eps: 1e-5, into: h2, rstd: rstd2)
      try b.matmul(h2, Wg, into: gt, transposeB: true)
      try b.matmul(h2, Wu, into: up, transposeB: true)
      try b.swiglu(gate: gt, up: up, into: m)
      try b.matmul(m, Wd, into: x2, transposeB: true)
      try b.add(x2, x1, into: x2)                                        // residual
      try b.matmul(x2, E, into: logits, transposeB: true)                // tied LM head
      try b.crossEntropy(logits: logits, targets: targets, ignoreIndex: -100, normalizer: nil,
                         losses: losses, dLogits: dLogits)
      // MARK: backward (input gradients overwrite, parameter gradients accumulate)
      for g in grads { try b.fill(g, value: 0) }
      try b.matmul(dLogits, E, into: dx2)
      try b.matmul(dLogits, x2, into: grads[0], transposeA: true)        // dE from the LM head
      try b.matmul(dx2, Wd, into: dm)
      try b.swigluBackward(dm, gate: gt, up: up, dGate: dgt, dUp: dup)
      try b.matmul(dgt, Wg, into: dh2)
      try b.matmul(dup, Wu, into: dh2, transposeA: false, transposeB: false, alpha: 1, beta: 1)
      try b.rmsNormBackward(dh2, x: x1, weight: g2, rstd: rstd2, dx: tmp, dWeight: grads[1])
      try b.add(dx2, tmp, into: tmp)                                     // dx1 = dx2 + norm path
      try b.matmul(tmp, Wo, into: dO)
      try b.matmul(try seqs(dO), try seqs(v), into: dP, transposeB: true)
      try b.matmul(P, try seqs(dO), into: try seqs(dv), transposeA: true)
      try b.causalSoftmaxBackward(dP, out: P, scale: attnScale, into: dS)
      try b.matmul(dS, try seqs(kr), into: try seqs(dqr))
      try b.matmul(dS, try seqs(qr), into: try seqs(dkr), transposeA: true)
      try b.ropeBackward(try heads(dqr), positions: pos, invFreq: inv, into: try heads(dq))
      try b.ropeBackward(try heads(dkr), positions: pos, invFreq: inv, into: try heads(dk))
      try b.matmul(dq, xaq, into: grads[3], transposeA: true, transposeB: false, alpha: loraScale, beta: 1)
      try b.matmul(dq, Bq, into: dxa)
      try b.matmul(dxa, h1, into: grads[2], transposeA: true, transposeB: false, alpha: loraScale, beta: 1)
      try b.matmul(dq, Wq, into: dh1)
      try b.matmul(dxa, Aq, into: dh1, transposeA: false, transposeB: false, alpha: loraScale, beta: 1)
      try b.matmul(dk, Wk, into: dh1, transposeA: false, transposeB: false, alpha: 1, beta: 1)
      try b.matmul(dv, Wv, into: dh1, transposeA: false, transposeB: false, alpha: 1, beta: 1)
      let dx0 = dh2  // reuse: dh2 is dead
      try b.rmsNormBackward(dh1, x: x0, weight: g1, rstd: rstd1, dx: dx0, dWeight: nil)
      try b.add(dx0, tmp, into: dx0)                                     // + residual path
      try b.embeddingBackward(ids: idT, dOut: dx0, dTable: grads[0])
      // MARK: clip + AdamW (hyper holds this step's values)
      try b.fill(sumSq, value: 0)
      for g in grads { try b.sumOfSquares(g, into: sumSq) }
      for (i, p) in trained.enumerated() {
        try b.adamW(param: p, grad: grads[i], m: moments[i].0, v: moments[i].1, hyper: hyper,
                    gradSumOfSquares: sumSq)
      }
    }
    let recording = replayed ? try b.record(runStep) : nil
    for step in 1...steps {
      let before = b.statistics
      let h = AdamWHyperParameters(lr: 1e-3, weightDecay: 0.01, step: step, maxGradNorm: 1)
      try b.upload(h.packed, to: hyper)
      if let recording { try b.replay([recording]) } else { try runStep() }
      result.losses.append(try b.floats(losses).reduce(0, +))
      costs?(b.statistics - before)
      if step == 1 { result.firstGradients = try grads.map { try b.floats($0) } }
    }
    result.parameters = try trained.map { try b.floats($0) }
    return result
  }
}

import Foundation
