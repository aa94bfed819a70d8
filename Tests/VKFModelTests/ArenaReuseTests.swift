import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// Batches of varying length reuse one activation allocation (it only grows): results after
/// shape changes equal a fresh model's, bit for bit (same ops on the same inputs).
final class ArenaReuseTests: XCTestCase {
  func test_shrinkingAndGrowingShapes_equalFreshModel_cpu() throws { try check(on: TestBackends.cpu) }
  func test_shrinkingAndGrowingShapes_equalFreshModel_vulkan() throws { try check(on: try ModelFixtures.vulkanOrSkip()) }

  private func check(on backend: Backend) throws {
    let g = try GoldenCase.load("qwen2_tied")
    let ids = try g.ids, targets = try g.targets, t = ids.count / g.batch
    func run(_ model: DecoderModel, _ i: [Int32], _ tg: [Int32], _ b: Int) throws -> (Float, [String: [Float]]) {
      try model.zeroGradients()
      try model.forward(ids: i, targets: tg, batch: b, computeGradients: true)
      let loss = try model.loss()
      try model.backward()
      return (loss, try ModelFixtures.gradients(of: model))
    }
    // A shorter batch: the first row cut to 4 tokens.
    let shortIDs = Array(ids[0..<4]), shortTargets = Array(targets[0..<3]) + [DecoderModel.ignoreIndex]
    let reused = try g.model(on: backend)
    _ = try run(reused, ids, targets, g.batch)              // allocate for (2, 7)
    let short = try run(reused, shortIDs, shortTargets, 1)   // (1, 4) inside that allocation
    let long = try run(reused, ids, targets, g.batch)        // back to (2, 7)
    let freshShort = try run(try g.model(on: backend), shortIDs, shortTargets, 1)
    let freshLong = try run(try g.model(on: backend), ids, targets, g.batch)
    XCTAssertEqual(short.0, freshShort.0)
    XCTAssertEqual(short.1, freshShort.1, "gradients of the short batch")
    XCTAssertEqual(long.0, freshLong.0)
    XCTAssertEqual(long.1, freshLong.1, "gradients after growing back")
    XCTAssertEqual(t, 7)
  }
}
