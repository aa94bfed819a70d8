import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of swiglu.comp and swiglu_back.comp against the CPU backend.

final class SwiGLUShaderTests: XCTestCase {
  func testPushStructs_matchShaderBlocks() {
    XCTAssertEqual(MemoryLayout<SwiGLUPush>.size, 4)
    XCTAssertEqual(MemoryLayout<SwiGLUBackPush>.size, 4)
  }

  func testSwiGLU_forwardAndBackward_matchesCPU() throws {
    for n in [1, 7, 67, 257, 1000, 3 * 1000] {
      // Gates up to ±30 reach σ's saturated tails (exp(−g) overflows to inf there).
      let g = TestData.uniform(n, seed: UInt64(n), -30, 30), u = TestData.uniform(n, seed: UInt64(n) + 1)
      let dy = TestData.uniform(n, seed: UInt64(n) + 2)
      let r = try BlockCheck.both { be in
        let gt = try be.tensor(g, shape: [n]), ut = try be.tensor(u, shape: [n])
        let out = try be.allocate([n]), dyt = try be.tensor(dy, shape: [n])
        let dg = try be.allocate([n]), du = try be.allocate([n])
        try be.swiglu(gate: gt, up: ut, into: out)
        try be.swigluBackward(dyt, gate: gt, up: ut, dGate: dg, dUp: du)
        return [try be.floats(out), try be.floats(dg), try be.floats(du)]
      }
      // |silu(g)| ≤ 30 here: scale the absolute guard with it.
      BlockCheck.assertClose(r, nmse: BlockCheck.transcendentalNMSE,
                             maxAbs: 30 * BlockCheck.transcendentalMaxAbs, "swiglu n \(n)")
    }
  }

  /// GeGLU (ACT = 1, Gemma's gelu_pytorch_tanh): gates to ±30 reach tanh's saturated tails.
  func testGeGLU_forwardAndBackward_matchesCPU() throws {
    for n in [1, 67, 1000] {
      let g = TestData.uniform(n, seed: UInt64(n) + 5, -30, 30), u = TestData.uniform(n, seed: UInt64(n) + 6)
      let dy = TestData.uniform(n, seed: UInt64(n) + 7)
      let r = try BlockCheck.both { be in
        let gt = try be.tensor(g, shape: [n]), ut = try be.tensor(u, shape: [n])
        let out = try be.allocate([n]), dyt = try be.tensor(dy, shape: [n])
        let dg = try be.allocate([n]), du = try be.allocate([n])
        try be.gatedActivation(.geluTanh, gate: gt, up: ut, into: out)
        try be.gatedActivationBackward(.geluTanh, dyt, gate: gt, up: ut, dGate: dg, dUp: du)
        return [try be.floats(out), try be.floats(dg), try be.floats(du)]
      }
      BlockCheck.assertClose(r, nmse: BlockCheck.transcendentalNMSE,
                             maxAbs: 30 * BlockCheck.transcendentalMaxAbs, "geglu n \(n)")
    }
  }

  /// dGate/dUp may overwrite gate/up: every input is read before an output is written.
  func testSwiGLUBackward_outputsAliasInputs_matchesCPU() throws {
    let n = 300
    let g = TestData.uniform(n, seed: 1, -6, 6), u = TestData.uniform(n, seed: 2)
    let dy = TestData.uniform(n, seed: 3)
    let r = try BlockCheck.both { be in
      let gt = try be.tensor(g, shape: [n]), ut = try be.tensor(u, shape: [n])
      let dyt = try be.tensor(dy, shape: [n])
      try be.swigluBackward(dyt, gate: gt, up: ut, dGate: gt, dUp: ut)
      return [try be.floats(gt), try be.floats(ut)]
    }
    BlockCheck.assertClose(r, nmse: BlockCheck.transcendentalNMSE,
                           maxAbs: BlockCheck.transcendentalMaxAbs, "swigluBackward in place")
  }
}
